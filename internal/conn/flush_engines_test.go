//go:build linux

package conn

// The shared flusher (flush.go) where it meets the event loop, the parked
// reader, the close path and the budget.

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/internal/netpoll"
)

// echoHandler echoes every DATA frame it is given back on its connection
// (on an event loop: a staged send; parked: a send from the reader
// goroutine), and records the end as recorder does.
type echoHandler struct {
	*recorder
	c       *Conn
	echoErr atomic.Int64
}

func (h *echoHandler) Ingest(b []byte) (int, int) {
	used := 0
	for {
		total, err := frame.Split(b[used:], 1<<20)
		if err != nil {
			h.c.Close(err, Abort, nil)
			return len(b), 0
		}
		if total == 0 || total > len(b)-used {
			return used, total
		}
		f := frame.Decode(b[used : used+total])
		if err := h.c.Send(f.Payload); err != nil {
			h.echoErr.Add(1)
		}
		used += total
	}
}

// runPoller makes and runs a poller (an event loop when loop is set) for
// the test's life.
func runPoller(t *testing.T, loop bool) *netpoll.Poller {
	t.Helper()
	p, err := netpoll.New(false)
	if err != nil {
		t.Fatal(err)
	}
	if loop {
		PrepareLoop(p)
	}
	done := make(chan struct{})
	go func() { p.Run(); close(done) }()
	t.Cleanup(func() { p.Close(); <-done; p.Release() })
	return p
}

// registeredEcho is an echoing Conn on one end of a loopback TCP
// connection, registered with p as the server registers it, and the
// other end.
func registeredEcho(t *testing.T, sh *Shared, p *netpoll.Poller, gen uint32, loop bool) (*Conn, *echoHandler, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close(); peer.Close() })
	c := new(Conn)
	h := &echoHandler{recorder: newRecorder(), c: c}
	c.Init(h, nc, &Config{MaxPayload: 1 << 20, QueueLimit: 16 << 20, Drain: 5 * time.Second, Mode: frame.ModeBinary, Shared: sh})
	if !c.Register(p, gen, loop) {
		t.Fatal("not registered")
	}
	return c, h, peer.(*net.TCPConn)
}

// The flusher meets the connection's own reader, parked or on an event
// loop: a peer's requests are echoed by the handler (staged on the loop)
// while other goroutines send to the same connections through the
// flusher. Each source's frames arrive whole and in order (two writers at
// once would interleave or reorder them), a Notify close writes its last
// word after all of them, every connection ends once, the flushers exit
// and the budget is released. The existing flusher tests never register a
// connection: no event loop turn or parked reader runs beside the flusher.
func TestFlusherFlusherBesideReaders(t *testing.T) {
	for _, loop := range []bool{true, false} {
		name := map[bool]string{true: "loop", false: "parked"}[loop]
		t.Run(name, func(t *testing.T) {
			const conns, senders, msgs, requests = 8, 3, 400, 400
			b := NewBudget(0)
			sh := &Shared{Budget: b}
			p := runPoller(t, loop)
			cs := make([]*Conn, conns)
			hs := make([]*echoHandler, conns)
			peers := make([]*net.TCPConn, conns)
			for i := range conns {
				cs[i], hs[i], peers[i] = registeredEcho(t, sh, p, uint32(i+1), loop)
			}
			type result struct {
				frames []frame.Frame
				err    error
			}
			got := make([]chan result, conns)
			echoed := make([]chan struct{}, conns)
			for i := range conns {
				got[i], echoed[i] = make(chan result, 1), make(chan struct{})
				peer := peers[i]
				// The peer's requests, source 0xffff, in small bursts.
				go func() {
					var out []byte
					for n := range requests {
						pl := numbered(0xffff, n)
						out = frame.Append(out, frame.KindData, 0, pl[:])
						if n%7 == 6 || n == requests-1 {
							if _, err := peer.Write(out); err != nil {
								return
							}
							out = out[:0]
						}
					}
				}()
				go func() {
					peer.SetReadDeadline(time.Now().Add(20 * time.Second))
					fr := frame.NewReader(peer, 1<<20)
					var res result
					echoes := 0
					for {
						f, err := fr.ReadFrame()
						if err != nil {
							if err != io.EOF {
								res.err = err
							}
							break
						}
						f.Payload = append([]byte(nil), f.Payload...)
						res.frames = append(res.frames, f)
						if f.Kind == frame.KindData && binary.BigEndian.Uint16(f.Payload) == 0xffff {
							if echoes++; echoes == requests {
								close(echoed[i])
							}
						}
					}
					got[i] <- res
				}()
			}
			fanOutAll(t, cs, senders, msgs)
			for i := range conns {
				select {
				case <-echoed[i]:
				case <-time.After(10 * time.Second):
					t.Fatalf("conn %d: the peer's requests were not all echoed (echo errors %d)", i, hs[i].echoErr.Load())
				}
				cs[i].Close(errors.New("bye"), Notify, nil)
			}
			for i := range conns {
				var res result
				select {
				case res = <-got[i]:
				case <-time.After(10 * time.Second):
					t.Fatalf("conn %d: the peer did not get to the end", i)
				}
				if res.err != nil {
					t.Fatalf("conn %d: after %d frames: %v", i, len(res.frames), res.err)
				}
				fs := res.frames
				if len(fs) != senders*msgs+requests+1 {
					t.Fatalf("conn %d: %d frames, want %d", i, len(fs), senders*msgs+requests+1)
				}
				if last := fs[len(fs)-1]; last.Kind != frame.KindDisconnect {
					t.Fatalf("conn %d: last frame %v, want DISCONNECT", i, last.Kind)
				}
				next := map[uint16]uint16{}
				for _, f := range fs[:len(fs)-1] {
					src, n := binary.BigEndian.Uint16(f.Payload), binary.BigEndian.Uint16(f.Payload[2:])
					if f.Kind != frame.KindData || n != next[src] {
						t.Fatalf("conn %d, source %#x: %v message %d, want %d", i, src, f.Kind, n, next[src])
					}
					next[src]++
				}
				hs[i].waitEnded(t)
			}
			checkReleased(t, sh, b)
		})
	}
}

// Close(Notify) lands while other goroutines fan out to the connections:
// every send that was accepted is written, in order, before the last
// word, the peer sees the write side shut (a lingering close), each
// connection ends once and its budget charge is released. The existing
// flusher tests close only after every send has returned.
func TestFlusherNotifyDuringFanout(t *testing.T) {
	const conns, senders, msgs = 16, 4, 2000
	b := NewBudget(0)
	sh := &Shared{Budget: b}
	cs := make([]*Conn, conns)
	rs := make([]*recorder, conns)
	type result struct {
		frames []frame.Frame
		err    error
	}
	got := make([]chan result, conns)
	for i := range conns {
		c, r, peer := tcpConn(t, sh)
		cs[i], rs[i], got[i] = c, r, make(chan result, 1)
		go func() {
			peer.SetReadDeadline(time.Now().Add(20 * time.Second))
			fr := frame.NewReader(peer, 1<<20)
			var res result
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					if err != io.EOF {
						res.err = err
					}
					break
				}
				f.Payload = append([]byte(nil), f.Payload...)
				res.frames = append(res.frames, f)
			}
			got[i] <- res
		}()
	}
	// accepted[g][i] is how many of sender g's messages conn i accepted.
	var accepted [senders][conns]int
	var wg sync.WaitGroup
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range msgs {
				pl := numbered(g, n)
				for i, c := range cs {
					if c.Send(pl[:]) == nil {
						if accepted[g][i] != n {
							t.Errorf("sender %d, conn %d: message %d accepted after one refused", g, i, n)
						}
						accepted[g][i] = n + 1
					}
				}
			}
		}()
	}
	for i, c := range cs {
		time.Sleep(time.Duration(i%4) * time.Millisecond) // spread the closes over the fanout
		c.Close(errors.New("bye"), Notify, &frame.ErrorBody{Code: "test_code", Message: "m"})
	}
	wg.Wait()
	for i := range conns {
		var res result
		select {
		case res = <-got[i]:
		case <-time.After(10 * time.Second):
			t.Fatalf("conn %d: the peer did not get to the end", i)
		}
		if res.err != nil {
			t.Fatalf("conn %d: after %d frames: %v", i, len(res.frames), res.err)
		}
		fs := res.frames
		want := 2
		for g := range senders {
			want += accepted[g][i]
		}
		if len(fs) != want {
			t.Fatalf("conn %d: %d frames, want %d accepted and the last word", i, len(fs), want)
		}
		if fs[len(fs)-2].Kind != frame.KindError || fs[len(fs)-1].Kind != frame.KindDisconnect {
			t.Fatalf("conn %d: ends with %v %v, want ERROR DISCONNECT", i, fs[len(fs)-2].Kind, fs[len(fs)-1].Kind)
		}
		var next [senders]int
		for _, f := range fs[:len(fs)-2] {
			g, n := binary.BigEndian.Uint16(f.Payload), int(binary.BigEndian.Uint16(f.Payload[2:]))
			if n != next[g] {
				t.Fatalf("conn %d, sender %d: message %d, want %d", i, g, n, next[g])
			}
			next[g]++
		}
		if reason := rs[i].waitEnded(t); reason.Error() != "bye" {
			t.Fatalf("conn %d ended with %v", i, reason)
		}
		if q := cs[i].QueuedBytes(); q != 0 {
			t.Fatalf("conn %d: %d bytes queued after the end", i, q)
		}
	}
	checkReleased(t, sh, b)
}

// An abort lands while the flusher writes: each connection ends once,
// with the abort's reason, sends fail from then on, nothing stays queued
// or charged, and the flushers exit.
func TestFlusherAbortDuringFanout(t *testing.T) {
	const conns, senders, msgs = 16, 4, 2000
	b := NewBudget(0)
	sh := &Shared{Budget: b}
	cs := make([]*Conn, conns)
	rs := make([]*recorder, conns)
	for i := range conns {
		c, r, peer := tcpConn(t, sh)
		cs[i], rs[i] = c, r
		go io.Copy(io.Discard, peer)
	}
	var wg sync.WaitGroup
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pl := make([]byte, 200)
			for range msgs {
				for _, c := range cs {
					c.Send(pl)
				}
			}
		}()
	}
	cut := errors.New("cut")
	for i, c := range cs {
		time.Sleep(time.Duration(i%3) * time.Millisecond)
		c.Close(cut, Abort, nil)
	}
	wg.Wait()
	for i, c := range cs {
		if reason := rs[i].waitEnded(t); reason != cut {
			t.Fatalf("conn %d ended with %v", i, reason)
		}
		if err := c.Send([]byte("late")); !errors.Is(err, ErrSessionClosed) {
			t.Fatalf("conn %d: send after the end: %v", i, err)
		}
		if q := c.QueuedBytes(); q != 0 {
			t.Fatalf("conn %d: %d bytes queued after the end", i, q)
		}
	}
	checkReleased(t, sh, b)
}

// A peer that never reads, closed with Drain or Notify while what the
// flusher could not write waits: the drain deadline still bounds the
// close, whether the close comes while the flusher holds the connection
// or after it handed it to a writer goroutine. The existing slow-peer
// test lets the peer read everything before it closes.
func TestFlusherSlowPeerDrainDeadline(t *testing.T) {
	for _, tc := range []struct {
		name  string
		how   Ending
		delay time.Duration
	}{
		{"drain-at-once", Drain, 0},
		{"notify-at-once", Notify, 0},
		{"drain-after-handoff", Drain, 50 * time.Millisecond},
		{"notify-after-handoff", Notify, 50 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBudget(0)
			sh := &Shared{Budget: b}
			c, r, peer := tcpConnBuf(t, sh, 4<<10)
			cfg := *c.cfg
			cfg.Drain = 200 * time.Millisecond
			c.cfg = &cfg
			body := make([]byte, 60<<10)
			for range 60 { // 3.6 MB: far more than the socket buffers
				if err := c.Send(body); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(tc.delay)
			start := time.Now()
			c.Close(errors.New("bye"), tc.how, nil)
			r.waitEnded(t)
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("ended %v after the close, drain deadline 200 ms", d)
			}
			if u := b.Used(); u != 0 {
				t.Fatalf("%d bytes still charged after the end", u)
			}
			peer.Close()
			waitFlushersIdle(t, sh)
		})
	}
}

// A send that starts the writer of a connection whose mode is known from
// the start (Config.Mode) can race Register, which sets the RawConn the
// flusher writes through: Enqueue reads it under the lock, and the race
// detector holds it to that.
func TestFlusherRegisterRacesFirstSend(t *testing.T) {
	p := runPoller(t, false)
	sh := &Shared{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for i := range 300 {
		peer, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		nc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		c := new(Conn)
		r := newRecorder()
		c.Init(r, nc, &Config{MaxPayload: 1 << 20, QueueLimit: 16 << 20, Drain: time.Second, Mode: frame.ModeBinary, Shared: sh})
		var ready sync.WaitGroup
		ready.Add(2)
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			ready.Done()
			ready.Wait()
			c.Send([]byte("x")) // claims the writer: startWriter reads c.rc
		}()
		ready.Done()
		ready.Wait()
		c.Register(p, uint32(i+1), false)
		<-sent
		c.Close(errors.New("done"), Abort, nil)
		r.waitEnded(t)
		peer.Close()
	}
	waitFlushersIdle(t, sh)
}
