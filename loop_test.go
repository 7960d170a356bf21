package msgnet_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

// A peer that writes a great deal before it reads anything: the replies
// outgrow the socket buffers, so the event loop's one non-blocking write
// leaves a rest that a writer goroutine must finish, while the loop keeps
// reading. Every reply arrives, whole and in order; a reader that waited
// on its own writes would deadlock here, both sides' buffers being full.
func TestRepliesLargerThanSocketBuffers(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		// Mostly small messages, so that a burst's replies span several
		// chunks (one writev), with a large one in every 50 to fill the
		// socket buffers: about 11 MB each way, far past loopback's.
		const n = 10000
		size := func(i int) int {
			if i%50 == 0 {
				return 60 << 10
			}
			return 100
		}
		opts = append(opts, msgnet.WithSendQueueBytes(64<<20), msgnet.WithMessageSizeLimit(1<<20))
		_, addr := echoServer(t, opts...)
		r := dialRaw(t, addr)
		r.hello("bulk")

		var wg sync.WaitGroup
		wg.Add(1)
		writeErr := make(chan error, 1)
		go func() { // writes everything without reading
			defer wg.Done()
			var buf []byte
			for i := range n {
				payload := make([]byte, size(i))
				binary.BigEndian.PutUint64(payload, uint64(i))
				buf = frame.Append(buf, frame.KindData, 0, payload)
				if len(buf) < 32<<10 && i < n-1 {
					continue
				}
				_, err := r.nc.Write(buf)
				buf = buf[:0]
				if err != nil {
					writeErr <- err
					return
				}
			}
		}()
		time.Sleep(200 * time.Millisecond) // let both directions fill up
		for i := range n {
			p := r.expect(frame.KindData)
			if len(p) != size(i) || binary.BigEndian.Uint64(p) != uint64(i) || !bytes.Equal(p[8:], make([]byte, size(i)-8)) {
				t.Fatalf("reply %d: %d bytes, sequence %d", i, len(p), binary.BigEndian.Uint64(p))
			}
		}
		wg.Wait()
		select {
		case err := <-writeErr:
			t.Fatal(err)
		default:
		}
	})
}

// A session closed by another goroutine while its handlers run: every
// reply a handler's Send accepted reaches the peer, in order, before the
// DISCONNECT, and nothing comes after it.
func TestCloseDuringDispatchKeepsAcceptedReplies(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, opts...)
		var accepted atomic.Int64
		got := make(chan *msgnet.Session, 1)
		asked := make(chan struct{})
		srv.OnMessage(func(s *msgnet.Session, msg []byte) {
			if binary.BigEndian.Uint64(msg) == 100 {
				// Hold this handler until the close has been asked for,
				// so that the close lands while handlers run.
				got <- s
				<-asked
			}
			if s.Send(msg) == nil {
				accepted.Add(1)
			}
		})
		r := dialRaw(t, addr)
		r.hello("closing")
		const n = 20000
		go func() { // pipelines everything; the server closes midway
			var buf []byte
			for i := range n {
				buf = frame.Append(buf, frame.KindData, 0, seqMsg(i))
				if len(buf) > 16<<10 || i == n-1 {
					if _, err := r.nc.Write(buf); err != nil {
						return
					}
					buf = buf[:0]
				}
			}
		}()
		s := <-got
		s.Disconnect("enough")
		// Give a writer the close might (wrongly) start time to run before
		// the handler goes on: what the handler had sent must still come
		// first.
		time.Sleep(20 * time.Millisecond)
		close(asked)
		next := 0
		for {
			k, p, err := r.next()
			if err != nil {
				t.Fatalf("after %d replies: %v, want DISCONNECT", next, err)
			}
			if k == frame.KindDisconnect {
				break
			}
			if k != frame.KindData || binary.BigEndian.Uint64(p) != uint64(next) {
				t.Fatalf("reply %d: got %v %x", next, k, p)
			}
			next++
		}
		if k, p, err := r.next(); err == nil {
			t.Fatalf("after DISCONNECT: %v %q", k, p)
		}
		if int64(next) != accepted.Load() {
			t.Fatalf("%d replies arrived, %d sends were accepted", next, accepted.Load())
		}
	})
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

// A peer that sends its last message and closes at once: the data and the
// FIN can arrive in one edge-triggered report, and the short read of the
// data must not end the loop's turn, or nothing would ever report the EOF.
func TestLastMessageThenClose(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, opts...)
		var got, ended atomic.Int64
		srv.OnMessage(func(s *msgnet.Session, msg []byte) { got.Add(1) })
		srv.OnDisconnect(func(s *msgnet.Session, err error) { ended.Add(1) })
		const n = 300
		for i := 0; i < n; i++ {
			r := dialRaw(t, addr)
			r.hello(fmt.Sprint("c", i)) // distinct: the newest session of a client id replaces the older
			// one write with the message, then close right away
			r.write(frame.Append(nil, frame.KindData, 0, []byte("last words")))
			r.nc.Close()
		}
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) && (ended.Load() < n || got.Load() < n) {
			time.Sleep(10 * time.Millisecond)
		}
		if ended.Load() != n || got.Load() != n {
			t.Errorf("%d peers closed: %d messages handled, %d sessions ended, %d still open",
				n, got.Load(), ended.Load(), srv.ConnectionCount())
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

// Send after the handler's own Disconnect fails with ErrSessionClosed.
func TestSendAfterOwnDisconnect(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, opts...)
		errc := make(chan error, 1)
		srv.OnMessage(func(s *msgnet.Session, msg []byte) {
			s.Disconnect("bye")
			errc <- s.Send([]byte("after"))
		})
		r := dialRaw(t, addr)
		r.hello("c")
		r.send(frame.KindData, "go")
		err := <-errc
		if !errors.Is(err, msgnet.ErrSessionClosed) {
			// was it delivered?
			k, p, rerr := r.next()
			t.Fatalf("Send after Disconnect returned %v; next frame %v %q %v", err, k, p, rerr)
		}
	})
}

// The counterpart of TestLastMessageThenClose: the FIN comes in a report
// of its own, after the loop has read the data (the pause only makes that
// the likely order; the session must end either way).
func TestLoopLastMessagePauseThenClose(t *testing.T) {
	srv, addr := startServer(t, msgnet.WithEngine(msgnet.EngineLoop))
	var ended atomic.Int64
	srv.OnDisconnect(func(s *msgnet.Session, err error) { ended.Add(1) })
	const n = 50
	for i := 0; i < n; i++ {
		r := dialRaw(t, addr)
		r.hello("c")
		r.write(frame.Append(nil, frame.KindData, 0, []byte("last words")))
		time.Sleep(5 * time.Millisecond)
		r.nc.Close()
	}
	waitFor(t, "all ended", func() bool { return ended.Load() == n })
}

// Another goroutine disconnects a session whose handler is running, then
// sends to it: the send fails.
func TestSendAfterForeignDisconnect(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, opts...)
		errc := make(chan error, 1)
		srv.OnMessage(func(s *msgnet.Session, msg []byte) {
			done := make(chan struct{})
			go func() {
				s.Disconnect("bye")
				errc <- s.Send([]byte("after disconnect"))
				close(done)
			}()
			<-done
		})
		r := dialRaw(t, addr)
		r.hello("c")
		r.send(frame.KindData, "go")
		if err := <-errc; err == nil {
			k, p, _ := r.next()
			t.Fatalf("Send after Disconnect returned nil; next frame %v %q", k, p)
		}
	})
}

// Loops under pipelined load, broadcasts and disconnects from another
// goroutine, then a shutdown: for the race detector and goleak.
func TestLoopStress(t *testing.T) {
	srv, addr := startServer(t, msgnet.WithEngine(msgnet.EngineLoop),
		msgnet.WithSendQueueBytes(1<<20), msgnet.WithIdleTimeout(0))
	var sessions sync.Map
	var received atomic.Int64 // bytes the clients read
	srv.OnConnect(func(s *msgnet.Session) { sessions.Store(s, true) })
	srv.OnDisconnect(func(s *msgnet.Session, err error) { sessions.Delete(s) })
	srv.OnMessage(func(s *msgnet.Session, msg []byte) {
		s.Send(msg)
		if msg[0]%7 == 0 {
			srv.Broadcast(msg)
		}
		if msg[0]%13 == 0 {
			s.Send(msg)
		}
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var raws []*raw
	for c := 0; c < 20; c++ {
		r := dialRaw(t, addr)
		r.hello("s")
		raws = append(raws, r)
	}
	for _, r := range raws {
		wg.Add(2)
		go func() {
			defer wg.Done()
			var buf []byte
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				buf = buf[:0]
				for j := 0; j < 50; j++ {
					buf = frame.Append(buf, frame.KindData, 0, []byte{byte(i + j), 1, 2, 3})
				}
				r.nc.SetWriteDeadline(time.Now().Add(time.Second))
				if _, err := r.nc.Write(buf); err != nil {
					return
				}
				time.Sleep(50 * time.Microsecond)
			}
		}()
		go func() {
			defer wg.Done()
			b := make([]byte, 64<<10)
			for {
				select {
				case <-stop:
					return
				default:
				}
				r.nc.SetReadDeadline(time.Now().Add(3 * time.Second))
				n, err := r.nc.Read(b)
				received.Add(int64(n))
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			srv.Broadcast([]byte{byte(i), 9})
			if i%3000 == 2999 {
				sessions.Range(func(k, v any) bool { k.(*msgnet.Session).Disconnect("x"); return false })
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	time.Sleep(time.Second)
	close(stop)
	for _, r := range raws {
		r.nc.SetReadDeadline(time.Now()) // a reader waiting in Read stops now
	}
	t0 := time.Now()
	wg.Wait()
	t.Logf("clients done after %v; %d bytes received", time.Since(t0), received.Load())
	if received.Load() < 1<<20 {
		t.Fatalf("the clients read %d bytes in a second of echoes and broadcasts", received.Load())
	}
	t0 = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown after %v: %v; %d sessions open", time.Since(t0), err, srv.ConnectionCount())
	}
	if n := srv.ConnectionCount(); n != 0 {
		t.Fatalf("%d sessions open after shutdown", n)
	}
}

// Peers that write without pause must not keep their loop from the other
// sessions: every read fills the buffer, so a loop that read until the
// socket was empty would never get back to epoll.
func TestFloodDoesNotStarveOthers(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, append(opts, msgnet.WithIdleTimeout(0))...)
		var handled atomic.Int64
		srv.OnMessage(func(s *msgnet.Session, msg []byte) {
			// a non-blocking handler with a little work (~1 µs)
			x := uint64(len(msg))
			for i := 0; i < 300; i++ {
				x = x*6364136223846793005 + 1442695040888963407
			}
			if x == 42 {
				s.Send(msg)
			}
			handled.Add(1)
		})
		// Several flooders, so that every loop has one whatever the placement.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for k := 0; k < 4; k++ {
			f := dialRaw(t, addr)
			f.hello("flood")
			var buf []byte
			for len(buf) < 256<<10 {
				buf = frame.Append(buf, frame.KindData, 0, []byte("x"))
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					f.nc.SetWriteDeadline(time.Now().Add(time.Second))
					if _, err := f.nc.Write(buf); err != nil {
						return
					}
				}
			}()
		}
		defer func() { close(stop); wg.Wait() }()
		time.Sleep(300 * time.Millisecond)
		for k := 0; k < 4; k++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			if _, err := c.Write(frame.Append(nil, frame.KindControl, 0, []byte(`{"op":"hello","client_id":"victim"}`))); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			rd := frame.NewReader(c, 1<<20)
			if _, err := rd.ReadFrame(); err != nil {
				t.Errorf("victim %d: no welcome after %v: %v (handled %d)", k, time.Since(start), err, handled.Load())
			} else {
				t.Logf("victim %d: welcome after %v", k, time.Since(start))
			}
		}
	})
}
