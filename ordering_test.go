package msgnet_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

// Connections come and go while the event loops read and write them and
// other goroutines close them mid-turn: a closed session's descriptor
// number is soon reused by a new connection, and the loop must never read
// or write a session's bytes on another's socket. Every connection sends
// messages carrying its own token and must get back only its own, in
// order. (A stress test: closes during a turn mostly stop the loop's I/O
// through stopRead already, so it passes even with closeFdLocked's deferral
// removed; it guards the whole close and reuse path, not that window.)
func TestLoopNoCrossTalkUnderCloseAndReuse(t *testing.T) {
	srv, addr := startServer(t, loopOpts(msgnet.WithIdleTimeout(0), msgnet.WithSendQueueBytes(64<<10),
		msgnet.WithSlowConsumerPolicy(msgnet.SlowConsumerDisconnect))...)
	srv.OnMessage(func(s *msgnet.Session, msg []byte) {
		if len(msg) == 16 && binary.BigEndian.Uint64(msg[8:])%20 == 0 {
			// Widen the turn, so that closes and accepts land inside it.
			time.Sleep(300 * time.Microsecond)
		}
		for range 3 {
			if s.Send(msg) != nil {
				return
			}
		}
	})
	stop := make(chan struct{})
	var killer sync.WaitGroup
	killer.Add(1)
	go func() { // closes sessions from outside the loop, in all the ways
		defer killer.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			for j, s := range srv.Sessions() {
				if (i+j)%7 == 0 {
					switch j % 3 {
					case 0:
						s.Disconnect("kill")
					case 1:
						// Past the queue bound: a slow-consumer abort,
						// which closes the socket at once.
						for s.Send(make([]byte, 16<<10)) == nil {
						}
					default:
						s.Send(nil) // keeps a writer busy alongside
					}
				}
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	const clients = 16
	deadline := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	var conns atomic.Int64
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; time.Now().Before(deadline); k++ {
				conns.Add(1)
				token := uint64(c)<<32 | uint64(k)
				r := dialRaw(t, addr)
				r.send(frame.KindControl, `{"op":"hello","client_id":"c"}`)
				go func() {
					var buf []byte
					for i := range 200 {
						p := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, token), uint64(i))
						buf = frame.Append(buf, frame.KindData, 0, p)
						if i%20 == 19 {
							if _, err := r.nc.Write(buf); err != nil {
								return
							}
							buf = buf[:0]
						}
					}
				}()
				var next, got uint64
				for {
					kind, p, err := r.next()
					if err != nil || kind == frame.KindDisconnect {
						break
					}
					if kind != frame.KindData || len(p) == 0 || len(p) == 16<<10 { // the killer's sends
						continue
					}
					if len(p) != 16 || binary.BigEndian.Uint64(p) != token {
						t.Errorf("connection %x got a message for %x", token, binary.BigEndian.Uint64(p))
						break
					}
					if seq := binary.BigEndian.Uint64(p[8:]); seq != next {
						t.Errorf("connection %x: got seq %d, want %d", token, seq, next)
						break
					}
					if got++; got%3 == 0 {
						next++
					}
					if next == 200 {
						break
					}
				}
				r.nc.Close()
			}
		}()
	}
	wg.Wait()
	close(stop)
	killer.Wait()
	waitFor(t, "every session to end", func() bool { return srv.ConnectionCount() == 0 })
	t.Logf("%d connections", conns.Load())
}

// Several slow readers on the same loops, each sent replies far larger
// than its socket takes at once: the loop's one write is partial, its rest
// goes to a writer goroutine, and the loop goes on with other sessions.
// Every client must get exactly its own replies, whole and in order: a
// rest that shared memory with the loop's scratch would be overwritten by
// the next session's turn.
func TestLoopPartialWritesKeepEachSessionsBytes(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		_, addr := echoServer(t, append(opts, msgnet.WithSendQueueBytes(64<<20))...)
		const clients, requests, size = 6, 96, 48 << 10
		var wg sync.WaitGroup
		for c := range clients {
			r := dialRaw(t, addr)
			r.hello(fmt.Sprint("slow-", c))
			wg.Add(1)
			go func() {
				defer wg.Done()
				want := bytes.Repeat([]byte{byte('a' + c)}, size)
				var batch []byte
				for i := range requests {
					p := append([]byte(nil), want...)
					p[0], p[1] = byte(i), byte(c)
					batch = frame.Append(batch, frame.KindData, 0, p)
				}
				if _, err := r.nc.Write(batch); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(100 * time.Millisecond) // let the replies pile up
				for i := range requests {
					k, got, err := r.next()
					if err != nil {
						t.Errorf("client %d reply %d: %v", c, i, err)
						return
					}
					if k != frame.KindData || len(got) != size || got[0] != byte(i) || got[1] != byte(c) ||
						!bytes.Equal(got[2:], want[2:]) {
						t.Errorf("client %d reply %d: kind %v, %d bytes, starts %q", c, i, k, len(got), got[:min(8, len(got))])
						return
					}
				}
			}()
		}
		wg.Wait()
	})
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
				// The handlers have returned; and ended orders the handler's
				// wg.Add before this Wait (the DISCONNECT read from the
				// socket is no ordering the race detector sees).
				<-ended
				wg.Wait()
				for k := range next {
					if a := accepted[k].Load(); a != next[k] {
						t.Fatalf("sender %d: %d sends accepted, %d arrived", k, a, next[k])
					}
				}
			})
		}
	})
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

// A handler that mixes Send with a broadcast (which reaches the same
// session another way) keeps its order.
func TestHandlerSendsKeepOrderAcrossPaths(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, opts...)
		srv.OnMessage(func(s *msgnet.Session, msg []byte) {
			i := binary.BigEndian.Uint64(msg)
			s.Send(seqMsg(int(3 * i)))
			srv.Broadcast(seqMsg(int(3*i + 1)))
			s.Send(seqMsg(int(3*i + 2)))
		})
		r := dialRaw(t, addr)
		r.hello("mixed")
		const n = 2000
		var buf []byte
		for i := range n {
			buf = frame.Append(buf, frame.KindData, 0, seqMsg(i))
		}
		r.write(buf)
		for want := range 3 * n {
			p := r.expect(frame.KindData)
			if got := binary.BigEndian.Uint64(p); got != uint64(want) {
				t.Fatalf("message %d: got %d", want, got)
			}
		}
	})
}

// Another goroutine's send to a session whose handler is running is
// accepted like any other: nothing about the dispatch counts against the
// queue bound.
func TestSendFromAnotherGoroutineDuringDispatch(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		opts = append(opts, msgnet.WithSendQueueBytes(64<<10),
			msgnet.WithSlowConsumerPolicy(msgnet.SlowConsumerDisconnect))
		srv, addr := startServer(t, opts...)
		errc := make(chan error, 1)
		srv.OnMessage(func(s *msgnet.Session, msg []byte) {
			// Another goroutine sends to this session while the handler
			// runs (it waits for it only to fix the interleaving).
			done := make(chan error)
			go func() { done <- s.Send([]byte("from elsewhere")) }()
			errc <- <-done
			s.Send(msg)
		})
		r := dialRaw(t, addr)
		r.hello("c")
		r.send(frame.KindData, "hi")
		if err := <-errc; err != nil {
			t.Fatalf("a 14-byte send to an idle session with a 64 KiB queue: %v", err)
		}
	})
}

// A handler's Send happens before the send of a goroutine the handler
// started; the session's contract is that frames go out in the order their
// sends were called.
func TestSendOrderAcrossGoroutines(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, opts...)
		srv.OnMessage(func(s *msgnet.Session, msg []byte) {
			s.Send([]byte("A"))
			done := make(chan struct{})
			go func() { s.Send([]byte("B")); close(done) }()
			<-done // only to fix the interleaving; a worker picking it up from a queue does the same
		})
		r := dialRaw(t, addr)
		r.hello("c")
		r.send(frame.KindData, "go")
		first := r.expect(frame.KindData)
		if string(first) != "A" {
			t.Fatalf("first reply %q, want A (sent first)", first)
		}
	})
}

// The other way round from TestSendOrderAcrossGoroutines: a goroutine's
// send that happens before the handler's (the handler waits for it) goes
// out first, also when the handler had sent something earlier in the same
// dispatch. On an event loop the handler's first send is staged without the
// lock, the goroutine's is queued under it, and the handler's second must
// see that and go behind both.
func TestSendOrderWithAnotherGoroutineInBetween(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, opts...)
		srv.OnMessage(func(s *msgnet.Session, msg []byte) {
			s.Send([]byte("A0"))
			done := make(chan struct{})
			go func() { s.Send([]byte("X")); close(done) }()
			<-done
			s.Send([]byte("A1"))
		})
		r := dialRaw(t, addr)
		r.hello("c")
		for range 3 {
			r.send(frame.KindData, "go")
			for _, want := range []string{"A0", "X", "A1"} {
				if got := r.expect(frame.KindData); string(got) != want {
					t.Fatalf("got %q, want %q (order A0, X, A1)", got, want)
				}
			}
		}
	})
}

// 100 clients each send 1,000 numbered messages and get every echo back,
// in order, none lost.
func TestEchoManyClientsInOrder(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		const clients, perClient = 100, 1000
		_, addr := echoServer(t, opts...)
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for c := 0; c < clients; c++ {
			wg.Add(1)
			go func(c int) {
				defer wg.Done()
				next := 0
				done := make(chan struct{})
				cl := msgnet.NewClient(fmt.Sprintf("client_%03d", c))
				cl.OnMessage(func(msg []byte) {
					if got := int(binary.BigEndian.Uint64(msg)); got != next {
						errs <- fmt.Errorf("client %d: got message %d, want %d", c, got, next)
					}
					next++
					if next == perClient {
						close(done)
					}
				})
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := cl.Connect(ctx, addr); err != nil {
					errs <- err
					return
				}
				defer cl.Close()
				for i := 0; i < perClient; i++ {
					if err := cl.Send(seqMsg(i)); err != nil {
						errs <- fmt.Errorf("client %d send %d: %w", c, i, err)
						return
					}
				}
				select {
				case <-done:
				case <-ctx.Done():
					errs <- fmt.Errorf("client %d: %d of %d echoes arrived", c, next, perClient)
				}
			}(c)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}
