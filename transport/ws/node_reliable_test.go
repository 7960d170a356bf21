package ws_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/internal/testenv"
	"github.com/msgnet/msgnet/transport/transporttest"
	"github.com/msgnet/msgnet/transport/ws"
)

// Acknowledged delivery (docs/PROTOCOL.md 6.7) of web/msgnet.js, run in
// Node by testdata/reliable.mjs against a real server over WebSocket.

// nodeRun is a node process whose output lines the test reads as they
// come; it is killed, if still running, when the test ends.
type nodeRun struct {
	t      *testing.T
	ctx    context.Context
	lines  chan string
	done   chan struct{} // closed when node has exited; then err is set
	err    error
	stdout syncBuffer
	stderr syncBuffer
}

// startNode runs node with args, for at most limit.
func startNode(t *testing.T, limit time.Duration, node string, args ...string) *nodeRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	r := &nodeRun{t: t, ctx: ctx, lines: make(chan string, 1024), done: make(chan struct{})}
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Stderr = &r.stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(io.TeeReader(pipe, &r.stdout))
		for sc.Scan() {
			select {
			case r.lines <- sc.Text():
			default: // nobody reads that many: the test has failed
			}
		}
		close(r.lines)
		r.err = cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// fail ends the test with what node printed.
func (r *nodeRun) fail(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf("%s\nnode stdout:\n%s\nnode stderr:\n%s", fmt.Sprintf(format, args...), r.stdout.String(), r.stderr.String())
}

// step waits for node to print a line starting with prefix, and returns it.
func (r *nodeRun) step(prefix string) string {
	r.t.Helper()
	for {
		select {
		case l, ok := <-r.lines:
			if !ok {
				<-r.done
				r.fail("node ended before printing %q: %v", prefix, r.err)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-r.ctx.Done():
			r.fail("timed out waiting for node to print %q", prefix)
		}
	}
}

// wait waits for node to exit, and fails the test unless it exited 0.
func (r *nodeRun) wait() {
	r.t.Helper()
	<-r.done
	if r.err != nil {
		r.fail("node: %v", r.err)
	}
}

// goReliable connects a reliable Go client on TCP; what its subscriptions
// deliver is kept in got.
type goRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (g *goRecorder) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.msgs)
}

func goReliable(t *testing.T, id, addr string) (*msgnet.Client, *goRecorder) {
	t.Helper()
	got := &goRecorder{}
	c := msgnet.NewClient(id, msgnet.WithReliable(msgnet.ReliableOptions{}),
		msgnet.WithReconnect(5*time.Millisecond, 50*time.Millisecond, 0))
	c.OnStream(func(m msgnet.StreamMessage) {
		got.mu.Lock()
		got.msgs = append(got.msgs, string(m.Payload))
		got.mu.Unlock()
	})
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.Connect(ctx, addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, got
}

// TestJSReliableAcrossCuts: a Node client subscribes to a group's stream
// and publishes 2,000 messages to it through a proxy that resets its
// WebSocket's TCP connection every few tens of milliseconds. It gets each
// message once, in order (reliable.mjs checks), and the stream holds each
// once: a Go subscriber on TCP, never cut, sees them so.
func TestJSReliableAcrossCuts(t *testing.T) {
	node, _ := jsPackage(t)
	srv := newServer(t)
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	hs := serveWS(t, srv)
	shutdown(t, srv)
	proxy := testenv.NewCutProxy(t, hs.Listener.Addr().String())

	watcher, seen := goReliable(t, "go_watcher", srv.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := watcher.Subscribe(ctx, msgnet.GroupStream("room")); err != nil {
		t.Fatal(err)
	}

	const n = 2000
	r := startNode(t, 14*time.Second, node, filepath.Join("testdata", "reliable.mjs"), "cuts", "ws://"+proxy.Addr()+"/ws", strconv.Itoa(n))
	r.step("SUBSCRIBED")
	stop := make(chan struct{})
	cutterDone := make(chan struct{})
	go func() {
		defer close(cutterDone)
		rng := rand.New(rand.NewPCG(7, 11))
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(15+rng.IntN(40)) * time.Millisecond):
				proxy.Cut()
			}
		}
	}()
	r.step("PUBLISHED")
	received := r.step("RECEIVED ")
	close(stop)
	<-cutterDone
	r.step("DONE")
	r.wait()
	m := regexp.MustCompile(`reconnects=(\d+)`).FindStringSubmatch(received)
	if reconnects, _ := strconv.Atoi(m[1]); proxy.Cuts() < 5 || reconnects < 3 {
		r.fail("%d cuts, %d reconnections: the test did not test reconnecting", proxy.Cuts(), reconnects)
	}
	t.Logf("%d cuts; node: %s", proxy.Cuts(), received)

	transporttest.Await(t, "the Go subscriber to see all", func() bool { return seen.count() >= n })
	seen.mu.Lock()
	defer seen.mu.Unlock()
	if len(seen.msgs) != n {
		t.Fatalf("the stream holds %d messages, want %d", len(seen.msgs), n)
	}
	for i, s := range seen.msgs {
		if want := fmt.Sprint("m-", i+1); s != want {
			t.Fatalf("the stream's message %d is %q, want %q", i+1, s, want)
		}
	}
}

// serveGated serves srv's WebSocket handler behind a gate that holds
// reconnections while shut.
func serveGated(t *testing.T, srv *msgnet.Server) (*httptest.Server, *testenv.Gate) {
	t.Helper()
	gate := &testenv.Gate{}
	mux := http.NewServeMux()
	mux.Handle("/ws", gate.Handler(ws.Handler(srv)))
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return hs, gate
}

// TestJSReliableContinuityLost: with streams keeping 50 messages, a Node
// client is kept away while a Go client publishes 70; when it comes back,
// it is told that 20 were lost (continuitylost, from the subscribed
// answer) and gets the 50 kept, in order. Then it stops reading, without
// acknowledging, while 1,220 more are published: the server's window
// fills, retention overtakes its position, and it is told so (the lost
// operation) and goes on from what is kept.
func TestJSReliableContinuityLost(t *testing.T) {
	node, _ := jsPackage(t)
	srv := newServer(t, msgnet.WithRetention(msgnet.Retention{MaxMessages: 50}))
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	hs, gate := serveGated(t, srv)
	shutdown(t, srv)
	t.Cleanup(gate.Open) // before the server and HTTP server close

	news := msgnet.GroupStream("news")
	publish := func(from, to int) {
		for i := from; i <= to; i++ {
			if _, err := srv.Publish(news, []byte(fmt.Sprint("m-", i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	unblock := filepath.Join(t.TempDir(), "unblock")
	r := startNode(t, 14*time.Second, node, filepath.Join("testdata", "reliable.mjs"), "lost", wsURL(hs), unblock)
	r.step("SUBSCRIBED")
	publish(1, 10)
	r.step("GOT 10")

	// Cut off, and kept away, while a Go client publishes 70.
	gate.Shut()
	s, ok := srv.SessionByClientID("js_lost")
	if !ok {
		r.fail("no session for js_lost")
	}
	s.Disconnect("cut off by the test")
	transporttest.Await(t, "the session to end", func() bool { _, ok := srv.SessionByClientID("js_lost"); return !ok })
	pub, _ := goReliable(t, "go_publisher", srv.Addr().String())
	for i := 11; i <= 80; i++ {
		if err := pub.Publish(news, []byte(fmt.Sprint("m-", i))); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := pub.WaitPublished(ctx); err != nil {
		t.Fatalf("the Go client's publishes: %v (%d pending)", err, pub.Pending())
	}
	gate.Open()
	r.step("RESUMED")

	// A live subscription that falls behind.
	publish(81, 81)
	r.step("BLOCKED")
	publish(82, 1300)
	if err := os.WriteFile(unblock, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("node: %s", r.step("LIVE_LOST"))
	r.step("DONE")
	r.wait()
}

// flakyStore is a memory store whose logs fail the append of "boom" once:
// a store that is briefly unavailable.
type flakyStore struct {
	msgnet.Store
	failed atomic.Bool
}

func (s *flakyStore) Open(name string, r msgnet.Retention) (msgnet.StreamLog, error) {
	l, err := s.Store.Open(name, r)
	if err != nil {
		return nil, err
	}
	return &flakyLog{l, s}, nil
}

type flakyLog struct {
	msgnet.StreamLog
	s *flakyStore
}

func (l *flakyLog) Append(p []byte, key string) (uint64, bool, error) {
	if string(p) == "boom" && l.s.failed.CompareAndSwap(false, true) {
		return 0, false, errors.New("disk on fire")
	}
	return l.StreamLog.Append(p, key)
}

// TestJSReliableRefusedAndStoreUnavailable: a publish to a stream name the
// server refuses rejects its promise, and so does a subscription to
// another client's stream; a publish the store fails ends the session with
// store_unavailable, which the client takes as a lost connection: it
// reconnects, sends it again with what followed, and nothing fails or
// arrives twice (reliable.mjs checks).
func TestJSReliableRefusedAndStoreUnavailable(t *testing.T) {
	node, _ := jsPackage(t)
	store := &flakyStore{Store: msgnet.MemoryStore()}
	srv := newServer(t, msgnet.WithStore(store))
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	hs := serveWS(t, srv)
	shutdown(t, srv)
	r := startNode(t, 14*time.Second, node, filepath.Join("testdata", "reliable.mjs"), "refused", wsURL(hs))
	r.step("PUBLISH_REFUSED")
	r.step("SUBSCRIBE_REFUSED")
	r.step("STORE_RECOVERED")
	r.step("DONE")
	r.wait()
	if !store.failed.Load() {
		t.Fatal("the store never failed: the test did not test store_unavailable")
	}
}
