package conn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/internal/testenv"
)

// tcpConn is a Conn on one end of a loopback TCP connection, with its
// descriptor known (as Register makes it), so that what other goroutines
// queue goes through the flusher; and the other end for the test to read.
func tcpConn(t *testing.T, sh *Shared) (*Conn, *recorder, *net.TCPConn) {
	return tcpConnBuf(t, sh, 0)
}

// tcpConnBuf is tcpConn with the peer's receive buffer set to rcvbuf
// bytes before it connects (0: the system's): a buffer shrunk after the
// handshake can leave the sender waiting on a window that never reopens.
func tcpConnBuf(t *testing.T, sh *Shared, rcvbuf int) (*Conn, *recorder, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		if rcvbuf > 0 {
			rc.Control(func(fd uintptr) { testenv.SetRcvBuf(fd, rcvbuf) })
		}
		return nil
	}}
	peer, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close(); peer.Close() })
	c := new(Conn)
	r := newRecorder()
	c.Init(r, nc, &Config{MaxPayload: 1 << 20, QueueLimit: 16 << 20, Drain: 5 * time.Second, Mode: frame.ModeBinary, Shared: sh})
	rc, err := nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	c.rc = rc
	rc.Control(func(fd uintptr) { c.fd = int32(fd) })
	return c, r, peer.(*net.TCPConn)
}

// Many goroutines send to many connections, as group sends do: each peer
// gets every message, each sender's in its order, and the connections
// end cleanly.
func TestFlusherKeepsEachSendersOrder(t *testing.T) {
	const conns, senders, msgs = 40, 4, 300
	sh := &Shared{}
	cs := make([]*Conn, conns)
	rs := make([]*recorder, conns)
	got := make([]chan []frame.Frame, conns)
	for i := range conns {
		c, r, peer := tcpConn(t, sh)
		cs[i], rs[i], got[i] = c, r, make(chan []frame.Frame, 1)
		go func() { got[i] <- readAll(t, peer) }()
	}
	fanOutAll(t, cs, senders, msgs)
	for _, c := range cs {
		c.Close(errors.New("done"), Drain, nil)
	}
	for i := range conns {
		var frames []frame.Frame
		select {
		case frames = <-got[i]:
		case <-time.After(10 * time.Second):
			t.Fatalf("conn %d: the peer did not get to the end", i)
		}
		if len(frames) != senders*msgs {
			t.Fatalf("conn %d: %d frames, want %d", i, len(frames), senders*msgs)
		}
		var next [senders]uint16
		for _, f := range frames {
			g, n := binary.BigEndian.Uint16(f.Payload), binary.BigEndian.Uint16(f.Payload[2:])
			if n != next[g] {
				t.Fatalf("conn %d, sender %d: message %d, want %d", i, g, n, next[g])
			}
			next[g]++
		}
		rs[i].waitEnded(t)
	}
}

// A peer that does not read fills its socket; its writing is handed to a
// writer of its own, and the flusher goes on serving the others at once.
// Once the slow peer reads, it gets every byte, in order.
func TestFlusherSlowPeerDoesNotHoldOthers(t *testing.T) {
	sh := &Shared{}
	slow, slowR, slowPeer := tcpConnBuf(t, sh, 4<<10)
	fast, fastR, fastPeer := tcpConn(t, sh)
	body := bytes.Repeat([]byte("s"), 60<<10)
	for i := range 100 { // 6 MB: far more than both socket buffers
		body[0] = byte(i)
		if err := slow.Send(body); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 100 {
		if err := fast.Send([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	fastPeer.SetReadDeadline(time.Now().Add(5 * time.Second))
	fr := frame.NewReader(fastPeer, 1<<20)
	for i := range 100 {
		f, err := fr.ReadFrame()
		if err != nil || f.Payload[0] != byte(i) {
			t.Fatalf("fast peer, message %d, while the slow one does not read: %v %v", i, f.Payload, err)
		}
	}
	if q := slow.QueuedBytes(); q == 0 {
		t.Fatal("the slow peer's queue is empty: the test tested nothing")
	}
	slowPeer.SetReadDeadline(time.Now().Add(10 * time.Second))
	sr := frame.NewReader(slowPeer, 1<<20)
	for i := range 100 {
		f, err := sr.ReadFrame()
		if err != nil || f.Payload[0] != byte(i) || len(f.Payload) != len(body) {
			t.Fatalf("slow peer, message %d: %d bytes, %v", i, len(f.Payload), err)
		}
	}
	slow.Close(errors.New("done"), Drain, nil)
	fast.Close(errors.New("done"), Drain, nil)
	go io.Copy(io.Discard, slowPeer)
	go io.Copy(io.Discard, fastPeer)
	slowR.waitEnded(t)
	fastR.waitEnded(t)
}

// A peer that resets its connection while the flusher writes to it: the
// connection ends once, as closed by the peer, and sends after that fail.
func TestFlusherPeerReset(t *testing.T) {
	c, r, peer := tcpConn(t, &Shared{})
	peer.SetLinger(0)
	peer.Close()
	// Send until the flusher has met the reset and the connection is
	// closed (a full queue meanwhile is no answer).
	deadline := time.Now().Add(5 * time.Second)
	for !errors.Is(c.Send(make([]byte, 1<<10)), ErrSessionClosed) {
		if time.Now().After(deadline) {
			t.Fatal("sends still accepted 5 s after the peer's reset")
		}
		runtime.Gosched()
	}
	if reason := r.waitEnded(t); !errors.Is(reason, ErrPeerClosed) {
		t.Fatalf("ended with %v, want ErrPeerClosed", reason)
	}
	if err := c.Send([]byte("late")); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("send after the end: %v", err)
	}
}

// numbered is sender g's message n: two big-endian uint16s, so that the
// peer can check each sender's order.
func numbered(g, n int) [4]byte {
	var p [4]byte
	binary.BigEndian.PutUint16(p[:], uint16(g))
	binary.BigEndian.PutUint16(p[2:], uint16(n))
	return p
}

// fanOutAll has senders goroutines each send msgs numbered messages to
// every connection of cs, failing the test on a refused send, and returns
// once all are sent.
func fanOutAll(t *testing.T, cs []*Conn, senders, msgs int) {
	t.Helper()
	var wg sync.WaitGroup
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range msgs {
				p := numbered(g, n)
				for _, c := range cs {
					if err := c.Send(p[:]); err != nil {
						t.Errorf("send: %v", err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

// checkReleased waits for the flushers to exit and checks that nothing
// stays charged to b once every connection has ended.
func checkReleased(t *testing.T, sh *Shared, b *Budget) {
	t.Helper()
	waitFlushersIdle(t, sh)
	if u := b.Used(); u != 0 {
		t.Fatalf("%d bytes still charged to the budget after every connection ended", u)
	}
}

// waitFlushersIdle waits until no flusher of sh runs, and checks that none
// holds on to a connection.
func waitFlushersIdle(t *testing.T, sh *Shared) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for i := range sh.flush.shards {
		f := &sh.flush.shards[i]
		for {
			f.mu.Lock()
			running, n := f.running, len(f.list)
			var kept int
			for _, c := range f.list[:cap(f.list)] {
				if c != nil {
					kept++
				}
			}
			for _, c := range f.spare[:cap(f.spare)] {
				if c != nil {
					kept++
				}
			}
			f.mu.Unlock()
			if !running && n == 0 {
				if kept > 0 {
					t.Fatalf("idle flusher %d still references %d connections", i, kept)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("flusher %d still running (%d listed) 5 s after the last send", i, n)
			}
			time.Sleep(time.Millisecond)
		}
	}
}
