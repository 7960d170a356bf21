package msgnet_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

// A peer that stops reading cannot keep a closing session (and Shutdown)
// waiting forever: the drain timeout bounds the blocked write, on every
// engine (on the event loops, the writer waits on the socket's blocking
// duplicate, which takes the deadline set before it existed).
func TestCloseDoesNotWaitForeverOnAStuckPeer(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv := msgnet.NewServer("s", append(opts, msgnet.WithDrainTimeout(200*time.Millisecond), msgnet.WithSendQueueBytes(64<<20))...)
		sessions := make(chan *msgnet.Session, 1)
		srv.OnConnect(func(s *msgnet.Session) { sessions <- s })
		if err := srv.Start("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		r := dialRaw(t, srv.Addr().String())
		r.nc.(*net.TCPConn).SetReadBuffer(4096)
		r.hello("stuck")
		s := <-sessions
		for i := 0; i < 4000; i++ { // far more than the socket buffers hold
			s.Send(make([]byte, 4096))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		if err := srv.Shutdown(ctx); err != nil {
			t.Fatalf("shutdown waited on a peer that never reads: %v", err)
		}
		t.Logf("shutdown took %v with a 200ms drain timeout", time.Since(start))
	})
}

// Server.Close cuts a lingering close short ("at once"), as does Shutdown
// once its context is done. On an event loop abort cuts it with an expired
// read deadline instead of closing the socket; the linger's own deadline
// must not undo that when the lingering goroutine starts after abort. One
// processor makes that order certain: Shutdown's close starts the linger
// goroutine, and with its context already done goes on to Close, which
// aborts the session, before that goroutine runs.
// The silent peer never ends the linger itself, so only the cut, or the
// linger's own limit of one second, can end it; the bound below is half of
// that limit, not a measure of speed.
func TestLoopCloseCutsLinger(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	srv := msgnet.NewServer("test_server", loopOpts(msgnet.WithIdleTimeout(0))...)
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	sess := make(chan *msgnet.Session, 1)
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { sess <- s })
	r := dialRaw(t, srv.Addr().String())
	r.write([]byte("hello\n")) // text mode: Disconnect queues nothing and lingers at once
	s := <-sess
	waitFor(t, "the turn to end", func() bool { return s.Info().MsgsIn == 1 })
	time.Sleep(10 * time.Millisecond)

	closed := make(chan struct{})
	go func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		srv.Shutdown(ctx)
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(500 * time.Millisecond):
		<-closed
		t.Fatal("Close waited for the linger's own deadline instead of cutting it")
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

func TestIdleTimeout(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := echoServer(t, append(opts, msgnet.WithIdleTimeout(200*time.Millisecond))...)
		reasons := make(chan error, 4)
		srv.OnDisconnect(func(_ *msgnet.Session, reason error) { reasons <- reason })

		r := dialRaw(t, addr)
		r.hello("idle")
		if got := string(r.expect(frame.KindDisconnect)); got != "idle timeout" {
			t.Fatalf("DISCONNECT %q", got)
		}
		r.expectEOF()
		if reason := <-reasons; !errors.Is(reason, msgnet.ErrIdleTimeout) {
			t.Fatalf("reason %v", reason)
		}

		// A connection that never sends a byte is closed without a word.
		silent := dialRaw(t, addr)
		silent.expectEOF()

		// Text mode: closed without writing.
		txt := dialRaw(t, addr)
		txt.write([]byte("hi\n"))
		line, err := bufio.NewReader(txt.nc).ReadString('\n')
		if line != "hi\n" || err != nil {
			t.Fatalf("text echo %q %v", line, err)
		}
		waitFor(t, "text session closed", func() bool { return srv.ConnectionCount() == 0 })
	})
}

func TestHandlerPanicClosesOnlyItsSession(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, opts...)
		srv.OnMessage(func(s *msgnet.Session, msg []byte) {
			if string(msg) == "boom" {
				panic("handler exploded")
			}
			s.Send(msg)
		})
		reasons := make(chan error, 2)
		srv.OnDisconnect(func(_ *msgnet.Session, reason error) { reasons <- reason })
		ok := dialRaw(t, addr)
		ok.hello("ok")
		bad := dialRaw(t, addr)
		bad.hello("bad")
		bad.send(frame.KindData, "boom")
		if got := string(bad.expect(frame.KindDisconnect)); !strings.Contains(got, "handler panic") {
			t.Fatalf("DISCONNECT %q", got)
		}
		bad.expectEOF()
		var hp *msgnet.HandlerPanicError
		if reason := <-reasons; !errors.As(reason, &hp) {
			t.Fatalf("reason %v", reason)
		}
		ok.send(frame.KindData, "fine")
		if got := ok.expect(frame.KindData); string(got) != "fine" {
			t.Fatalf("other session got %q", got)
		}
	})
}

func TestSessionInfoAndDisconnect(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, opts...)
		type info struct {
			id, client, remote string
			port               int
			connected          bool
		}
		infos := make(chan info, 1)
		reasons := make(chan error, 1)
		srv.OnMessage(func(s *msgnet.Session, msg []byte) {
			s.SetData("last", string(msg))
			v, _ := s.Data("last")
			infos <- info{s.ID(), s.ClientID(), s.RemoteAddr(), s.RemotePort(), s.IsConnected()}
			if v == "bye" {
				s.Disconnect("we are done")
			}
		})
		srv.OnDisconnect(func(_ *msgnet.Session, reason error) { reasons <- reason })
		c := msgnet.NewClient("client_42")
		gone := make(chan error, 1)
		c.OnDisconnect(func(reason error) { gone <- reason })
		if err := c.Connect(context.Background(), addr); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SendString("bye")
		in := <-infos
		local := c.SessionID()
		if in.id != local || in.client != "client_42" || in.remote != "127.0.0.1" || in.port == 0 || !in.connected {
			t.Fatalf("session info %+v (client sees session %q)", in, local)
		}
		var de *msgnet.DisconnectError
		if reason := <-gone; !errors.As(reason, &de) || de.Reason != "we are done" || !de.Remote {
			t.Fatalf("client got reason %v", reason)
		}
		if reason := <-reasons; !errors.As(reason, &de) || de.Reason != "we are done" {
			t.Fatalf("server got reason %v", reason)
		}
	})
}

func TestClientDisconnectReasonReachesServer(t *testing.T) {
	srv, addr := startServer(t)
	reasons := make(chan error, 1)
	srv.OnDisconnect(func(_ *msgnet.Session, reason error) { reasons <- reason })
	c := msgnet.NewClient("c")
	if err := c.Connect(context.Background(), addr); err != nil {
		t.Fatal(err)
	}
	rtt, err := c.Ping(context.Background())
	if err != nil || rtt <= 0 {
		t.Fatalf("ping: %v %v", rtt, err)
	}
	c.Close()
	var de *msgnet.DisconnectError
	if reason := <-reasons; !errors.As(reason, &de) || de.Reason != "client closed" || !de.Remote {
		t.Fatalf("server got %v", reason)
	}
	if err := c.SendString("x"); !errors.Is(err, msgnet.ErrClientClosed) {
		t.Fatalf("send after close: %v", err)
	}
}

// After the peer's own DISCONNECT the server still closes cleanly when
// frames follow it on the wire: it reads and drops them before closing,
// as after its own last word. It closed at once, and the kernel answered
// the unread frames with RST, which can destroy the replies before it.
func TestPeerDisconnectThenMoreInputClosesCleanly(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		_, addr := echoServer(t, opts...)
		for i := range 50 {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			var b []byte
			b = frame.Append(b, frame.KindData, 0, []byte("before"))
			b = frame.Append(b, frame.KindDisconnect, 0, []byte("bye"))
			nc.Write(b)
			var after []byte
			for range 10 {
				after = frame.Append(after, frame.KindData, 0, []byte("after"))
			}
			nc.Write(after)
			// Let the frames reach the server's socket before reading: the
			// reset came when they lay unread there as it closed.
			time.Sleep(20 * time.Millisecond)
			nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			fr := frame.NewReader(nc, 1<<20)
			f, err := fr.ReadFrame()
			if err != nil || string(f.Payload) != "before" {
				t.Fatalf("try %d: got %q, %v; want the echo of the frame before DISCONNECT", i, f.Payload, err)
			}
			if f, err := fr.ReadFrame(); err != io.EOF {
				t.Fatalf("try %d: got %v %q, %v after the echo; want a clean end of stream, not a reset", i, f.Kind, f.Payload, err)
			}
			nc.Close()
		}
	})
}

// A peer that sends DISCONNECT and then neither reads on nor closes its
// side does not hold its session: the server's linger ends after about a
// second (on an event loop, the sweeper cuts it), the peer sees the end
// of the stream, and the session ends.
func TestLingerEndsWithoutPeerClose(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, r := disconnectedPeer(t, opts...)
		start := time.Now()
		r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := io.Copy(io.Discard, r.nc)
		if err != nil {
			t.Fatalf("the peer saw %v, want the end of the stream", err)
		}
		waitFor(t, "session gone", func() bool { return srv.ConnectionCount() == 0 })
		t.Logf("closed after %v", time.Since(start))
	})
}

// A peer that floods after its DISCONNECT cannot keep its session
// lingering either: what it sends is dropped, and the close comes within
// the linger's bounds.
func TestLingerEndsUnderFlood(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, r := disconnectedPeer(t, opts...)
		junk := frame.Append(nil, frame.KindData, 0, make([]byte, 16<<10))
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			r.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			for {
				if _, err := r.nc.Write(junk); err != nil {
					return // the server closed: reset or broken pipe
				}
			}
		}()
		waitFor(t, "session gone", func() bool { return srv.ConnectionCount() == 0 })
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			t.Fatal("the flood's writes never failed: the socket was not closed")
		}
	})
}

// disconnectedPeer starts an echo server with opts and a raw peer that
// completes its hello and then sends DISCONNECT: the server is lingering
// (or about to) when it returns.
func disconnectedPeer(t *testing.T, opts ...msgnet.Option) (*msgnet.Server, *raw) {
	t.Helper()
	srv, addr := echoServer(t, opts...)
	r := dialRaw(t, addr)
	r.hello("leaving")
	waitFor(t, "session registered", func() bool { return srv.ConnectionCount() == 1 })
	r.send(frame.KindDisconnect, "bye")
	return srv, r
}
