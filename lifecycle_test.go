package msgnet_test

import (
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

// Handlers may block. Shutdown still returns when its context ends, and
// Close returns at once; the session whose handler is blocked ends when
// the handler returns, and Wait tells when that has happened. Before,
// both waited for the handler forever.
func TestStopWithBlockedHandler(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		for _, stop := range []string{"Shutdown", "Close"} {
			t.Run(stop, func(t *testing.T) {
				srv := msgnet.NewServer("blocked", opts...)
				if err := srv.Start("127.0.0.1:0"); err != nil {
					t.Fatal(err)
				}
				inHandler, release := make(chan struct{}), make(chan struct{})
				ended := make(chan error, 1)
				srv.OnMessage(func(s *msgnet.Session, msg []byte) {
					close(inHandler)
					<-release
				})
				srv.OnDisconnect(func(s *msgnet.Session, reason error) { ended <- reason })
				r := dialRaw(t, srv.Addr().String())
				r.hello("c")
				r.send(frame.KindData, "block")
				select {
				case <-inHandler:
				case <-time.After(5 * time.Second):
					t.Fatal("the handler never ran")
				}

				returned := make(chan error, 1)
				go func() {
					if stop == "Close" {
						returned <- srv.Close()
						return
					}
					ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
					defer cancel()
					returned <- srv.Shutdown(ctx)
				}()
				select {
				case err := <-returned:
					if stop == "Shutdown" && !errors.Is(err, context.DeadlineExceeded) {
						t.Fatalf("Shutdown: %v, want its context's error", err)
					}
				case <-time.After(5 * time.Second):
					close(release)
					t.Fatalf("%s did not return while a handler was blocked", stop)
				}
				select {
				case <-srv.Done():
					t.Fatal("the server says it stopped while a handler still runs")
				default:
				}
				close(release)
				select {
				case <-srv.Done():
				case <-time.After(5 * time.Second):
					t.Fatal("the server did not finish once the handler returned")
				}
				select {
				case reason := <-ended:
					want := map[string]error{"Close": msgnet.ErrServerClosed, "Shutdown": msgnet.ErrServerShutdown}[stop]
					if !errors.Is(reason, want) {
						t.Fatalf("session ended with %v, want %v", reason, want)
					}
				default:
					t.Fatal("the disconnect handler had not run when Done closed")
				}
			})
		}
	})
}

// A server stopped right after Start: serve's goroutine may reach
// acceptGate only after Shutdown has closed the listener and finishStop has
// taken the (still empty) list of pollers; acceptGate then starts pollers
// that nobody closes, and Shutdown waits for them for ever.
func TestShutdownRightAfterStartBlockingLoops(t *testing.T) {
	for i := range 200 {
		srv := msgnet.NewServer("t", loopOpts(msgnet.WithEngine(msgnet.EngineLoopBlocking))...)
		if err := srv.Start("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			done <- srv.Shutdown(ctx)
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("iteration %d: Shutdown: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("iteration %d: Shutdown hangs (its ctx had 3 s)", i)
		}
	}
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

// Connections keep being accepted after the listener was quiet for longer
// than the gate waits, when Accept waits on the runtime's poller on its
// own, and several more after that, through the gate again.
func TestLoopAcceptAfterQuietListener(t *testing.T) {
	_, addr := echoServer(t, blockingLoopOpts()...)
	r := dialRaw(t, addr)
	r.hello("first")
	time.Sleep(1300 * time.Millisecond) // past the gate's idle wait (1 s)
	for i := range 3 {
		r := dialRaw(t, addr)
		r.hello("after-quiet")
		r.send(frame.KindData, "ping")
		if got := r.expect(frame.KindData); string(got) != "ping" {
			t.Fatalf("connection %d: got %q", i, got)
		}
	}
}

// Many connections at once, with all of them opened before any is used:
// every one is accepted, though the gate lets one Accept through per
// report.
func TestLoopAcceptBurst(t *testing.T) {
	_, addr := echoServer(t, blockingLoopOpts(msgnet.WithMaxConnections(1000))...)
	const n = 200
	conns := make([]*raw, n)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			conns[i] = &raw{t: t, nc: nc, r: frame.NewReader(nc, frame.DefaultMaxPayload)}
			t.Cleanup(func() { nc.Close() })
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for i, r := range conns {
		r.hello(fmt.Sprint("burst-", i)) // the newest session of a client id replaces the older
	}
	for i, r := range conns {
		r.send(frame.KindData, "x")
		if got := r.expect(frame.KindData); string(got) != "x" {
			t.Fatalf("connection %d: got %q", i, got)
		}
	}
}

// Serve ends with Accept's error when its owner closes the listener: the
// listener leaves the loop's epoll set without a report, so the gate's
// idle wait is what lets Accept see the close.
func TestLoopServeEndsWhenListenerClosed(t *testing.T) {
	srv := msgnet.NewServer("test_server", blockingLoopOpts()...)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	r := dialRaw(t, ln.Addr().String())
	r.hello("one") // served: the loops and the gate are running
	ln.Close()
	select {
	case err := <-done:
		if err == nil || errors.Is(err, msgnet.ErrServerClosed) {
			t.Fatalf("Serve returned %v, want the listener's error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its listener was closed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

func blockingLoopOpts(extra ...msgnet.Option) []msgnet.Option {
	return loopOpts(append([]msgnet.Option{msgnet.WithEngine(msgnet.EngineLoopBlocking)}, extra...)...)
}

// Shutdown writes every frame queued before it, then DISCONNECT.
func TestShutdownDeliversQueuedFrames(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		const n = 20000
		srv := msgnet.NewServer("s", append(opts, msgnet.WithSendQueueBytes(64<<20))...)
		queued := make(chan struct{})
		srv.OnConnect(func(s *msgnet.Session) {
			for i := 0; i < n; i++ {
				if err := s.Send(seqMsg(i)); err != nil {
					t.Errorf("send %d: %v", i, err)
				}
			}
			close(queued)
		})
		if err := srv.Start("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		r := dialRaw(t, srv.Addr().String())
		r.hello("c")
		<-queued
		stopped := make(chan error)
		go func() { stopped <- srv.Shutdown(context.Background()) }()
		for i := 0; i < n; i++ {
			p := r.expect(frame.KindData)
			if got := binary.BigEndian.Uint64(p); got != uint64(i) {
				t.Fatalf("frame %d carried %d", i, got)
			}
		}
		if got := string(r.expect(frame.KindDisconnect)); got != "server shutting down" {
			t.Fatalf("DISCONNECT %q", got)
		}
		r.nc.Close()
		if err := <-stopped; err != nil {
			t.Fatal(err)
		}
		if srv.IsRunning() {
			t.Fatal("still running after Shutdown")
		}
	})
}

func TestServeReturnsErrServerClosed(t *testing.T) {
	srv := msgnet.NewServer("s")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error)
	go func() { served <- srv.Serve(l) }()
	waitFor(t, "running", srv.IsRunning)
	c := msgnet.NewClient("c")
	if err := c.Connect(context.Background(), l.Addr().String()); err != nil {
		t.Fatal(err)
	}
	gone := make(chan error, 1)
	c.OnDisconnect(func(reason error) { gone <- reason })
	srv.Close()
	if err := <-served; !errors.Is(err, msgnet.ErrServerClosed) {
		t.Fatalf("Serve returned %v", err)
	}
	<-gone
	srv.Wait()
	c.Close()
}

// A server fed only through ServeConn (as the WebSocket and HTTP/2
// transports feed it) still runs its sweeper: idle timeouts hold.
func TestServeConnOnlyServerEnforcesTimeouts(t *testing.T) {
	srv := msgnet.NewServer("pipes", msgnet.WithIdleTimeout(150*time.Millisecond))
	defer srv.Close()
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.Send(msg) })
	client, server := net.Pipe()
	defer client.Close()
	srv.ServeConn(server)
	if !srv.IsRunning() {
		t.Fatal("a server serving a connection does not say it is running")
	}
	r := &raw{t: t, nc: client, r: frame.NewReader(client, 1<<20)}
	r.hello("piped")
	if got := string(r.expect(frame.KindDisconnect)); got != "idle timeout" {
		t.Fatalf("DISCONNECT %q", got)
	}
}
