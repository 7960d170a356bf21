// Tests of the event loop's lock-free staging of a handler's own sends
// (see Session.enqueue and endTurn), written by a review of the first
// version: concurrent senders, closes and shutdowns during a turn, mixed
// frame kinds, request/reply, two sessions on one loop, a slow peer, and
// the queue size a handler sees.

package msgnet_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

func loopOpts(extra ...msgnet.Option) []msgnet.Option {
	return append([]msgnet.Option{msgnet.WithEngine(msgnet.EngineLoop)}, extra...)
}

func tagMsg(src byte, seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{src}, seq)
}

// A handler staging its replies while three goroutines send
// to the same session and a fourth disconnects it. Per sender, frames
// arrive in order with no gap, every send that returned nil arrives before
// DISCONNECT, and nothing follows it.
func TestStagingConcurrentSendersAndDisconnect(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		for iter := 0; iter < 15; iter++ {
			t.Run(fmt.Sprint(iter), func(t *testing.T) {
				srv, addr := startServer(t, append(opts, msgnet.WithSendQueueBytes(64<<20), msgnet.WithIdleTimeout(0))...)
				const senders = 3
				var accepted [senders + 1]atomic.Uint64
				var handlerSeq uint64 // handler-owned (one session)
				var once sync.Once
				var wg sync.WaitGroup
				ended := make(chan struct{})
				srv.OnDisconnect(func(*msgnet.Session, error) { close(ended) })
				srv.OnMessage(func(s *msgnet.Session, msg []byte) {
					once.Do(func() {
						for k := 1; k <= senders; k++ {
							wg.Add(1)
							go func() {
								defer wg.Done()
								for seq := uint64(0); ; seq++ {
									if s.Send(tagMsg(byte(k), seq)) != nil {
										return
									}
									accepted[k].Add(1)
									if seq%16 == 0 {
										runtime.Gosched()
									}
								}
							}()
						}
						wg.Add(1)
						go func() {
							defer wg.Done()
							time.Sleep(time.Duration(2+iter) * time.Millisecond)
							s.Disconnect("enough")
						}()
					})
					for range 4 {
						if s.Send(tagMsg(0, handlerSeq)) != nil {
							return
						}
						handlerSeq++
						accepted[0].Add(1)
					}
				})
				r := dialRaw(t, addr)
				r.hello("c")
				go func() {
					var buf []byte
					for i := 0; i < 150; i++ { // bounded: a closing session discards at most 256 KiB of input before closing; more resets the connection
						buf = frame.Append(buf[:0], frame.KindData, 0, seqMsg(i))
						for j := 0; j < 20; j++ {
							buf = frame.Append(buf, frame.KindData, 0, seqMsg(i))
						}
						r.nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
						if _, err := r.nc.Write(buf); err != nil {
							return
						}
					}
				}()
				var next [senders + 1]uint64
				for {
					k, p, err := r.next()
					if err != nil {
						t.Fatalf("before DISCONNECT: %v (received %v)", err, next)
					}
					if k == frame.KindDisconnect {
						break
					}
					if k != frame.KindData || len(p) != 9 || p[0] > senders {
						t.Fatalf("unexpected %v %x", k, p)
					}
					src, seq := p[0], binary.BigEndian.Uint64(p[1:])
					if seq != next[src] {
						t.Fatalf("sender %d: got seq %d, want %d", src, seq, next[src])
					}
					next[src]++
				}
				if k, p, err := r.next(); err == nil {
					t.Fatalf("after DISCONNECT: %v %x", k, p)
				}
				r.nc.Close() // ends the server's linger
				wg.Wait()
				<-ended // the handlers have returned
				for k := range next {
					if a := accepted[k].Load(); a != next[k] {
						t.Fatalf("sender %d: %d sends accepted, %d arrived", k, a, next[k])
					}
				}
			})
		}
	})
}

// A Shutdown that lands while a handler holds its turn.
// What the handler staged before goes out before the DISCONNECT, the
// handler's sends after it fail, and the session ends.
func TestStagingShutdownDuringTurn(t *testing.T) {
	srv := msgnet.NewServer("s", loopOpts()...)
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	inHandler, release := make(chan struct{}), make(chan struct{})
	afterErr := make(chan error, 1)
	var ended atomic.Int32
	srv.OnDisconnect(func(s *msgnet.Session, err error) { ended.Add(1) })
	srv.OnMessage(func(s *msgnet.Session, msg []byte) {
		for i := range 5 {
			s.Send(seqMsg(i))
		}
		close(inHandler)
		<-release
		afterErr <- s.Send(seqMsg(99))
	})
	r := dialRaw(t, srv.Addr().String())
	r.hello("c")
	r.send(frame.KindData, "go")
	<-inHandler
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	waitFor(t, "shutdown under way", func() bool { return !srv.IsRunning() })
	time.Sleep(20 * time.Millisecond) // let a wrongly started writer run
	close(release)
	if err := <-afterErr; !errors.Is(err, msgnet.ErrSessionClosed) {
		t.Errorf("send after shutdown began: %v, want ErrSessionClosed", err)
	}
	for i := range 5 {
		if p := r.expect(frame.KindData); binary.BigEndian.Uint64(p) != uint64(i) {
			t.Fatalf("reply %d: %x", i, p)
		}
	}
	r.expect(frame.KindDisconnect)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ended.Load() != 1 {
		t.Fatalf("OnDisconnect ran %d times", ended.Load())
	}
}

// The idle sweeper closes a session whose (slow) handler
// holds its turn: the staged replies still precede the DISCONNECT.
func TestStagingIdleSweepDuringTurn(t *testing.T) {
	srv, addr := startServer(t, loopOpts(msgnet.WithIdleTimeout(30*time.Millisecond))...)
	srv.OnMessage(func(s *msgnet.Session, msg []byte) {
		s.Send([]byte("a"))
		// long enough for the sweeper to find the session idle
		waitFor(t, "idle close", func() bool { return !s.IsConnected() })
		s.Send([]byte("b")) // fails
	})
	r := dialRaw(t, addr)
	r.hello("c")
	r.send(frame.KindData, "go")
	if p := r.expect(frame.KindData); string(p) != "a" {
		t.Fatalf("got %q", p)
	}
	r.expect(frame.KindDisconnect)
	r.expectEOF()
}

// Frames the loop queues under the lock in the middle of a
// turn (PONG, ERROR, a broadcast, a message too large for the stage, a
// request's reply) keep their place between the staged DATA.
func TestStagingMixedKindsInOneTurn(t *testing.T) {
	srv, addr := startServer(t, loopOpts(msgnet.WithMessageSizeLimit(1<<20))...)
	big := bytes.Repeat([]byte{'B'}, 300<<10) // more than the stage holds
	srv.OnMessage(func(s *msgnet.Session, msg []byte) {
		switch string(msg) {
		case "big":
			s.Send([]byte("before-big"))
			s.Send(big)
			s.Send([]byte("after-big"))
		case "bcast":
			s.Send([]byte("before-bcast"))
			srv.Broadcast([]byte("bcast"))
			s.Send([]byte("after-bcast"))
		default:
			s.Send(append([]byte("echo-"), msg...))
		}
	})
	r := dialRaw(t, addr)
	r.hello("c")
	var buf []byte
	buf = frame.Append(buf, frame.KindData, 0, []byte("1"))
	buf = frame.Append(buf, frame.KindPing, 0, []byte("p"))
	buf = frame.Append(buf, frame.KindData, 0, []byte("2"))
	buf = frame.Append(buf, frame.Kind(0x77), 0, nil)
	buf = frame.Append(buf, frame.KindData, 0, []byte("3"))
	buf = frame.Append(buf, frame.KindData, 0, []byte("big"))
	buf = frame.Append(buf, frame.KindData, 0, []byte("bcast"))
	buf = frame.Append(buf, frame.KindData, 0, []byte("4"))
	r.write(buf)
	want := []struct {
		k frame.Kind
		p string
	}{
		{frame.KindData, "echo-1"}, {frame.KindPong, "p"}, {frame.KindData, "echo-2"},
		{frame.KindError, ""}, {frame.KindData, "echo-3"},
		{frame.KindData, "before-big"}, {frame.KindData, string(big)}, {frame.KindData, "after-big"},
		{frame.KindData, "before-bcast"}, {frame.KindData, "bcast"}, {frame.KindData, "after-bcast"},
		{frame.KindData, "echo-4"},
	}
	for i, w := range want {
		k, p, err := r.next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if k != w.k || (w.k != frame.KindError && string(p) != w.p) {
			t.Fatalf("frame %d: got %v %.20q, want %v %.20q", i, k, p, w.k, w.p)
		}
	}
}

// Request/reply on a loop: the handler's reply is staged;
// A request from another goroutine and SendContainer keep their order.
func TestStagingRequestReplyOnLoop(t *testing.T) {
	srv, addr := startServer(t, loopOpts()...)
	srv.OnRequest(func(s *msgnet.Session, req []byte) ([]byte, error) {
		s.Send([]byte("before-reply"))
		return append([]byte("re:"), req...), nil
	})
	c := msgnet.NewClient("req")
	var got []string
	var mu sync.Mutex
	c.OnMessage(func(msg []byte) { mu.Lock(); got = append(got, string(msg)); mu.Unlock() })
	if err := c.Connect(context.Background(), addr); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 20 {
		rep, err := c.Request(context.Background(), []byte(fmt.Sprint(i)))
		if err != nil || string(rep) != "re:"+fmt.Sprint(i) {
			t.Fatalf("request %d: %q %v", i, rep, err)
		}
		// the message sent before the reply was handled before the reply
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n != i+1 {
			t.Fatalf("after reply %d: %d messages before it", i, n)
		}
	}
	waitFor(t, "msgs out counted", func() bool {
		st := srv.Stats()
		return st.MsgsOut >= 41 // welcome + 20 replies + 20 messages
	})
}

// Two sessions on the one event loop (GOMAXPROCS 1), each
// handler sending to itself and to the other: per session and per source,
// the order holds, and the counters see every staged message.
func TestStagingTwoSessionsOneLoop(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	srv, addr := startServer(t, loopOpts(msgnet.WithSendQueueBytes(64<<20))...)
	var mu sync.Mutex
	peers := map[string]*msgnet.Session{}
	srv.OnConnect(func(s *msgnet.Session) { mu.Lock(); peers[s.ClientID()] = s; mu.Unlock() })
	srv.OnMessage(func(s *msgnet.Session, msg []byte) {
		other := "a"
		if s.ClientID() == "a" {
			other = "b"
		}
		mu.Lock()
		o := peers[other]
		mu.Unlock()
		s.Send(append([]byte{'S'}, msg...))
		if o != nil {
			o.Send(append([]byte{'O'}, msg...))
		}
		s.Send(append([]byte{'T'}, msg...))
	})
	a, b := dialRaw(t, addr), dialRaw(t, addr)
	a.hello("a")
	b.hello("b")
	const n = 500
	for _, r := range []*raw{a, b} {
		go func() {
			var buf []byte
			for i := range n {
				buf = frame.Append(buf, frame.KindData, 0, seqMsg(i))
			}
			r.write(buf)
		}()
	}
	check := func(r *raw) {
		var nextOwn, nextOther uint64
		for range 3 * n {
			p := r.expect(frame.KindData)
			seq := binary.BigEndian.Uint64(p[1:])
			switch p[0] {
			case 'S':
				if seq != nextOwn {
					t.Errorf("own S %d, want %d", seq, nextOwn)
					return
				}
			case 'T':
				if seq != nextOwn {
					t.Errorf("own T %d, want %d", seq, nextOwn)
					return
				}
				nextOwn++
			case 'O':
				if seq != nextOther {
					t.Errorf("other %d, want %d", seq, nextOther)
					return
				}
				nextOther++
			}
		}
	}
	check(a)
	check(b)
	for _, s := range srv.Sessions() {
		if info := s.Info(); info.MsgsOut != 3*n+1 {
			t.Errorf("%s: MsgsOut %d, want %d", info.ClientID, info.MsgsOut, 3*n+1)
		}
	}
}

// As TestStagingConcurrentSendersAndDisconnect, with
// A peer that reads slowly, so that the loop's one write leaves a rest for
// A writer goroutine and later turns find a writer running.
func TestStagingSlowPeerWithWriter(t *testing.T) {
	for iter := 0; iter < 5; iter++ {
		t.Run(fmt.Sprint(iter), func(t *testing.T) {
			srv, addr := startServer(t, loopOpts(msgnet.WithSendQueueBytes(256<<20), msgnet.WithIdleTimeout(0))...)
			var accepted [2]atomic.Uint64
			var handlerSeq uint64
			ended := make(chan struct{})
			srv.OnDisconnect(func(*msgnet.Session, error) { close(ended) })
			var once sync.Once
			var wg sync.WaitGroup
			pad := make([]byte, 2000)
			srv.OnMessage(func(s *msgnet.Session, msg []byte) {
				once.Do(func() {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for seq := uint64(0); ; seq++ {
							if s.Send(append(tagMsg(1, seq), pad...)) != nil {
								return
							}
							accepted[1].Add(1)
							if seq == 3000 {
								s.Disconnect("enough")
							}
							if seq%8 == 0 {
								time.Sleep(10 * time.Microsecond)
							}
						}
					}()
				})
				for range 3 {
					if s.Send(append(tagMsg(0, handlerSeq), pad...)) != nil {
						return
					}
					handlerSeq++
					accepted[0].Add(1)
				}
			})
			r := dialRaw(t, addr)
			r.hello("c")
			go func() {
				var buf []byte
				for i := 0; i < 2000; i++ {
					buf = frame.Append(buf[:0], frame.KindData, 0, seqMsg(i))
					r.nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
					if _, err := r.nc.Write(buf); err != nil {
						return
					}
					time.Sleep(20 * time.Microsecond)
				}
			}()
			var next [2]uint64
			for n := 0; ; n++ {
				if n%200 == 0 {
					time.Sleep(2 * time.Millisecond) // fall behind now and then
				}
				k, p, err := r.next()
				if err != nil {
					t.Fatalf("before DISCONNECT: %v (received %v)", err, next)
				}
				if k == frame.KindDisconnect {
					break
				}
				src, seq := p[0], binary.BigEndian.Uint64(p[1:9])
				if seq != next[src] {
					t.Fatalf("sender %d: got seq %d, want %d", src, seq, next[src])
				}
				next[src]++
			}
			r.nc.Close()
			wg.Wait()
			<-ended
			for k := range next {
				if a := accepted[k].Load(); a != next[k] {
					t.Fatalf("sender %d: %d sends accepted, %d arrived", k, a, next[k])
				}
			}
		})
	}
}

// What a handler has sent and the loop has not yet written is "yet to hand
// to the socket": Info().QueueBytes and Stats().QueueBytes, read by the
// handler, count the stage.
func TestStagingQueueBytesSeesStagedSends(t *testing.T) {
	srv, addr := startServer(t, loopOpts()...)
	got := make(chan [2]int, 1)
	srv.OnMessage(func(s *msgnet.Session, msg []byte) {
		for range 3 {
			s.Send(make([]byte, 1000))
		}
		got <- [2]int{s.Info().QueueBytes, srv.Stats().QueueBytes}
	})
	r := dialRaw(t, addr)
	r.hello("c")
	r.send(frame.KindData, "go")
	want := 3 * (frame.HeaderLen + 1000)
	if q := <-got; q[0] != want || q[1] != want {
		t.Fatalf("right after 3 sends of 1010 bytes: Info().QueueBytes %d, Stats().QueueBytes %d, want %d", q[0], q[1], want)
	}
}

// A close from another goroutine is deferred by the turn,
// then the handler's next send (here a SendRaw, which always takes the
// lock) ends the stage in the middle of the turn. The staged frame, then
// the DISCONNECT, must still go out and the session must end: the loop's
// flush no longer sees a turn, so it is the queued DISCONNECT that gets
// the writer going and closes the socket.
func TestStagingDeferredCloseThenStageEndsMidTurn(t *testing.T) {
	srv, addr := startServer(t, loopOpts()...)
	ended := make(chan error, 1)
	srv.OnDisconnect(func(s *msgnet.Session, err error) { ended <- err })
	errs := make(chan [2]error, 1)
	srv.OnMessage(func(s *msgnet.Session, msg []byte) {
		s.Send([]byte("staged"))
		done := make(chan struct{})
		go func() { s.Disconnect("from elsewhere"); close(done) }()
		<-done
		raw := frame.Append(nil, frame.KindData, 0, []byte("raw"))
		errs <- [2]error{s.SendRaw(raw), s.Send([]byte("late"))}
	})
	r := dialRaw(t, addr)
	r.hello("c")
	r.send(frame.KindData, "go")
	if p := r.expect(frame.KindData); string(p) != "staged" {
		t.Fatalf("got %q, want staged", p)
	}
	r.expect(frame.KindDisconnect)
	r.expectEOF()
	for _, err := range <-errs {
		if !errors.Is(err, msgnet.ErrSessionClosed) {
			t.Fatalf("send after Disconnect: %v", err)
		}
	}
	r.nc.Close()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("OnDisconnect never ran")
	}
}

// A handler's oversized send on its own loop is refused with
// ErrMessageTooLarge, though it would fit the stage, and nothing of it goes
// out; the replies staged around it do, in order.
func TestStagingRefusesOversizedSend(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, append(opts, msgnet.WithMessageSizeLimit(1024))...)
		errs := make(chan error, 1)
		srv.OnMessage(func(s *msgnet.Session, msg []byte) {
			s.Send([]byte("before"))
			errs <- s.Send(make([]byte, 2000))
			s.Send([]byte("after"))
		})
		r := dialRaw(t, addr)
		r.hello("big")
		r.send(frame.KindData, "go")
		if err := <-errs; !errors.Is(err, msgnet.ErrMessageTooLarge) {
			t.Fatalf("oversized send: %v, want ErrMessageTooLarge", err)
		}
		for _, want := range []string{"before", "after"} {
			if got := r.expect(frame.KindData); string(got) != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		}
	})
}
