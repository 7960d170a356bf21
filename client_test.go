package msgnet_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
)

// A server killed mid-stream and restarted on the same port: the client
// reconnects by itself, and everything sent while it was down arrives in
// order on the new server.
func TestReconnectAfterServerRestart(t *testing.T) {
	type recv struct {
		mu  sync.Mutex
		got []uint64
	}
	record := func(r *recv) msgnet.MessageHandler {
		return func(_ *msgnet.Session, msg []byte) {
			r.mu.Lock()
			r.got = append(r.got, binary.BigEndian.Uint64(msg))
			r.mu.Unlock()
		}
	}
	var a, b recv
	srvA := msgnet.NewServer("a")
	srvA.OnMessage(record(&a))
	if err := srvA.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	addr := srvA.Addr().String()

	c := msgnet.NewClient("survivor", msgnet.WithReconnect(10*time.Millisecond, 100*time.Millisecond, 0))
	down := make(chan error, 1)
	back := make(chan struct{}, 1)
	c.OnDisconnect(func(reason error) { down <- reason })
	c.OnReconnect(func() { back <- struct{}{} })
	if err := c.Connect(context.Background(), addr); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	firstSession := c.SessionID()

	// Stream, then kill the server in the middle of the stream.
	const total = 3000
	i := 0
	for ; i < 1000; i++ {
		if err := c.Send(seqMsg(i)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	srvA.Close()
	reason := <-down
	if c.State() != msgnet.StateReconnecting {
		t.Fatalf("state %v after losing the server (%v)", c.State(), reason)
	}
	downFrom := i
	for ; i < 2000; i++ { // while the server is down: buffered
		if err := c.Send(seqMsg(i)); err != nil {
			t.Fatalf("send %d while down: %v", i, err)
		}
	}

	srvB := msgnet.NewServer("b")
	srvB.OnMessage(record(&b))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go srvB.Serve(l)
	defer srvB.Close()
	select {
	case <-back:
	case <-time.After(10 * time.Second):
		t.Fatal("client did not reconnect")
	}
	if c.SessionID() == firstSession {
		t.Fatal("still on the old session")
	}
	for ; i < total; i++ { // and after the reconnect
		if err := c.Send(seqMsg(i)); err != nil {
			t.Fatalf("send %d after reconnect: %v", i, err)
		}
	}
	waitFor(t, "every message on the new server", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.got) > 0 && b.got[len(b.got)-1] == total-1
	})
	b.mu.Lock()
	defer b.mu.Unlock()
	for k := 1; k < len(b.got); k++ {
		if b.got[k] != b.got[k-1]+1 {
			t.Fatalf("new server got %d after %d: out of order or a gap", b.got[k], b.got[k-1])
		}
	}
	if b.got[0] > uint64(downFrom) {
		t.Fatalf("new server starts at %d: messages sent while down (from %d) were lost", b.got[0], downFrom)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	lost := int(b.got[0]) - len(a.got)
	t.Logf("old server got %d, new server got %d..%d; %d lost in the dead socket", len(a.got), b.got[0], total-1, max(lost, 0))
	if lost < 0 {
		t.Logf("%d sent twice (queued again after a write the old server did read)", -lost)
	}
}

func TestReconnectBufferBoundAndGiveUp(t *testing.T) {
	srv := msgnet.NewServer("s")
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	c := msgnet.NewClient("c",
		// Backoffs long enough that the sends below certainly happen while
		// it reconnects (the first attempt waits at least 50ms).
		msgnet.WithReconnect(100*time.Millisecond, 200*time.Millisecond, 3),
		msgnet.WithReconnectBuffer(100))
	closed := make(chan error, 1)
	down := make(chan struct{}, 1)
	c.OnClosed(func(reason error) { closed <- reason })
	c.OnDisconnect(func(error) { down <- struct{}{} })
	if err := c.Connect(context.Background(), srv.Addr().String()); err != nil {
		t.Fatal(err)
	}
	// Hold the reconnect off while the buffer is tested: nothing listens.
	srv.Close()
	<-down
	if st := c.State(); st != msgnet.StateReconnecting {
		t.Fatalf("state %v", st)
	}
	if err := c.Send(make([]byte, 60)); err != nil {
		t.Fatalf("first buffered send: %v", err)
	}
	if err := c.Send(make([]byte, 60)); !errors.Is(err, msgnet.ErrBufferFull) {
		t.Fatalf("over the buffer bound: %v", err)
	}
	select {
	case reason := <-closed:
		if !errors.Is(reason, msgnet.ErrReconnectFailed) {
			t.Fatalf("closed with %v", reason)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("client never gave up")
	}
	if c.State() != msgnet.StateClosed {
		t.Fatalf("state %v", c.State())
	}
	if err := c.Send([]byte("x")); !errors.Is(err, msgnet.ErrClientClosed) {
		t.Fatalf("send after giving up: %v", err)
	}
	c.Close()
}

func TestConnectTriesAddressesInTurn(t *testing.T) {
	_, good := echoServer(t)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()
	c := msgnet.NewClient("c")
	if err := c.Connect(context.Background(), dead, good); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	c2 := msgnet.NewClient("c2")
	if err := c2.Connect(context.Background(), dead, dead); err == nil {
		t.Fatal("connected to nothing")
	}
}

// blackholeProxy forwards TCP between a client and a server until told to
// swallow everything, as a frozen peer or a half-open connection would.
type blackholeProxy struct {
	l     net.Listener
	dead  atomic.Bool
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newBlackholeProxy(t *testing.T, upstream string) *blackholeProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &blackholeProxy{l: l}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			down, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				down.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, down, up)
			p.mu.Unlock()
			p.wg.Add(2)
			go p.pipe(up, down)
			go p.pipe(down, up)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *blackholeProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.dead.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err == io.EOF {
				dst.(*net.TCPConn).CloseWrite()
			}
			return
		}
	}
}

// A peer that stops answering is found dead by heartbeats within three
// intervals.
func TestHeartbeatDetectsBlackhole(t *testing.T) {
	_, addr := echoServer(t)
	proxy := newBlackholeProxy(t, addr)
	const interval = 200 * time.Millisecond
	c := msgnet.NewClient("hb", msgnet.WithHeartbeat(interval, interval))
	down := make(chan error, 1)
	c.OnDisconnect(func(reason error) { down <- reason })
	if err := c.Connect(context.Background(), proxy.l.Addr().String()); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Heartbeats keep a quiet but healthy connection alive.
	time.Sleep(3 * interval)
	if !c.IsConnected() {
		t.Fatal("a healthy connection was declared dead")
	}
	proxy.dead.Store(true)
	start := time.Now()
	select {
	case reason := <-down:
		took := time.Since(start)
		if !errors.Is(reason, msgnet.ErrHeartbeatTimeout) {
			t.Fatalf("reason %v", reason)
		}
		t.Logf("dead connection detected after %v (interval %v)", took, interval)
		// Worst case: the next PING goes out up to an interval later, and
		// its missing PONG is noticed at the first tick after the timeout
		// (an interval), which can be the third tick: 3 intervals plus
		// scheduling. A fourth tells a heartbeat's detection from none.
		if took > 4*interval {
			t.Fatalf("detection took %v, more than four intervals", took)
		}
	case <-time.After(10 * interval):
		t.Fatal("dead connection not detected")
	}
}

// A first connection reset in the middle of the handshake is a network
// failure, not a refusal: Connect with WithReconnect tries again.
func TestConnectRetriesHandshakeReset(t *testing.T) {
	srv, addr := startServer(t)
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.Send(msg) })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer func() { l.Close(); wg.Wait() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			in, err := l.Accept()
			if err != nil {
				return
			}
			if i == 0 { // the hello arrives, then a reset
				in.Read(make([]byte, 16))
				in.(*net.TCPConn).SetLinger(0)
				in.Close()
				continue
			}
			out, err := net.Dial("tcp", addr)
			if err != nil {
				in.Close()
				return
			}
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(out, in); out.Close() }()
			go func() { defer wg.Done(); io.Copy(in, out); in.Close() }()
		}
	}()
	c := msgnet.NewClient("retry", msgnet.WithReconnect(10*time.Millisecond, 50*time.Millisecond, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx, l.Addr().String()); err != nil {
		t.Fatalf("Connect gave up after a reset handshake: %v", err)
	}
	c.Close()
	srv.Close()
}
