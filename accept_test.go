// Tests of accepting on blocking event loops (WithBlockingEventLoops),
// where a loop's epoll set watches the listener (see Server.acceptGate).

package msgnet_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

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
