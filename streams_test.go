package msgnet_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/internal/testenv"
)

// reliableClient connects a reliable, reconnecting client through addr and
// records what its subscriptions deliver.
type streamRecorder struct {
	mu   sync.Mutex
	msgs []string
	lost []*msgnet.ContinuityLost
}

func (r *streamRecorder) add(m msgnet.StreamMessage) {
	r.mu.Lock()
	r.msgs = append(r.msgs, string(m.Payload))
	r.mu.Unlock()
}

func (r *streamRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

func reliableClient(t *testing.T, id, addr string) (*msgnet.Client, *streamRecorder) {
	t.Helper()
	r := &streamRecorder{}
	c := msgnet.NewClient(id, msgnet.WithReliable(msgnet.ReliableOptions{}),
		msgnet.WithReconnect(5*time.Millisecond, 50*time.Millisecond, 0),
		msgnet.WithConnectTimeout(2*time.Second))
	c.OnStream(r.add)
	c.OnContinuityLost(func(l *msgnet.ContinuityLost) {
		r.mu.Lock()
		r.lost = append(r.lost, l)
		r.mu.Unlock()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx, addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, r
}

// publishAll publishes n numbered messages, waiting when the client's
// store of unacknowledged publishes is full; with pace set, it pauses after
// every tenth, so that the flow lasts long enough to be cut many times.
func publishAll(t *testing.T, c *msgnet.Client, stream string, n int, pace time.Duration) {
	t.Helper()
	for i := 1; i <= n; {
		if pace > 0 && i%10 == 0 {
			time.Sleep(pace)
		}
		err := c.Publish(stream, []byte(fmt.Sprint("m-", i)))
		switch {
		case err == nil:
			i++
		case errors.Is(err, msgnet.ErrBufferFull), errors.Is(err, msgnet.ErrQueueFull):
			time.Sleep(time.Millisecond) // the acknowledgements, or the writer, free room
		default:
			t.Fatalf("publish %d: %v", i, err)
		}
	}
}

// checkExactlyOnce checks that r got m-1 ... m-n, each once, in order.
func checkExactlyOnce(t *testing.T, r *streamRecorder, n int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.lost) > 0 {
		t.Errorf("continuity lost: %v", r.lost[0])
	}
	if len(r.msgs) != n {
		t.Fatalf("got %d messages, want %d", len(r.msgs), n)
	}
	for i, m := range r.msgs {
		if want := fmt.Sprint("m-", i+1); m != want {
			t.Fatalf("message %d is %q, want %q", i, m, want)
		}
	}
}

// Reliable publish and subscribe across a network that keeps failing: a
// proxy cuts both clients' connections at random points while 5,000
// messages flow. The subscriber gets each exactly once, in order: the
// publisher's retries are de-duplicated, and the subscriber resumes where
// it left off.
func TestReliableAcrossCutConnections(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		_, addr := startServer(t, opts...)
		proxy := testenv.NewCutProxy(t, addr)
		sub, got := reliableClient(t, "subscriber", proxy.Addr())
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := sub.Subscribe(ctx, msgnet.GroupStream("room")); err != nil {
			t.Fatal(err)
		}
		pub, _ := reliableClient(t, "publisher", proxy.Addr())
		const n = 5000
		stop := make(chan struct{})
		cutterDone := make(chan struct{})
		go func() {
			defer close(cutterDone)
			rng := rand.New(rand.NewPCG(1, 2))
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(5+rng.IntN(40)) * time.Millisecond):
					proxy.Cut()
				}
			}
		}()
		publishAll(t, pub, msgnet.GroupStream("room"), n, 2*time.Millisecond)
		if err := pub.WaitPublished(ctx); err != nil {
			t.Fatalf("publishes not acknowledged: %v (%d pending)", err, pub.Pending())
		}
		close(stop)
		<-cutterDone
		deadline := time.Now().Add(30 * time.Second)
		for got.count() < n && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		checkExactlyOnce(t, got, n)
		t.Logf("%d cuts while %d messages flowed", proxy.Cuts(), n)
		if proxy.Cuts() < 3 {
			t.Fatalf("only %d cuts: the test did not test reconnection", proxy.Cuts())
		}
	})
}

// Messages addressed to a client id while it is away are kept, and it gets
// them when it comes back; SendTo succeeds meanwhile.
func TestInboxKeptWhileAway(t *testing.T) {
	srv, addr := startServer(t)
	c, got := reliableClient(t, "phone", addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Subscribe(ctx, msgnet.ClientStream("phone")); err != nil {
		t.Fatal(err)
	}
	if err := srv.SendTo("phone", []byte("m-1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first message", func() bool { return got.count() == 1 })
	c.Close()
	waitFor(t, "the session to end", func() bool { return srv.ConnectionCount() == 0 })
	for i := 2; i <= 5; i++ {
		if err := srv.SendTo("phone", []byte(fmt.Sprint("m-", i))); err != nil {
			t.Fatalf("SendTo while the client is away: %v", err)
		}
	}
	// The same client process comes back (a new Client keeps no position:
	// it names none, and gets everything kept for its id).
	c2, got2 := reliableClient(t, "phone", addr)
	if err := c2.Subscribe(ctx, msgnet.ClientStream("phone")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "what was kept", func() bool { return got2.count() == 5 })
	checkExactlyOnce(t, got2, 5)
}

// A subscriber that comes back after its position left retention is told,
// explicitly, and goes on from what is kept.
func TestContinuityLostWhenRetentionOverflows(t *testing.T) {
	srv, addr := startServer(t, msgnet.WithRetention(msgnet.Retention{MaxMessages: 10}))
	got := &streamRecorder{}
	sub := msgnet.NewClient("late", msgnet.WithReliable(msgnet.ReliableOptions{}),
		msgnet.WithReconnect(500*time.Millisecond, time.Second, 0)) // away long enough
	sub.OnStream(got.add)
	sub.OnContinuityLost(func(l *msgnet.ContinuityLost) {
		got.mu.Lock()
		got.lost = append(got.lost, l)
		got.mu.Unlock()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sub.Connect(ctx, addr); err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := sub.Subscribe(ctx, msgnet.GroupStream("news")); err != nil {
		t.Fatal(err)
	}
	srv.Publish(msgnet.GroupStream("news"), []byte("m-1"))
	waitFor(t, "the first message", func() bool { return got.count() == 1 })
	s, _ := srv.SessionByClientID("late")
	s.Disconnect("go away for a moment")
	for i := 2; i <= 31; i++ { // meanwhile: 30 more, of which 10 are kept
		srv.Publish(msgnet.GroupStream("news"), []byte(fmt.Sprint("m-", i)))
	}
	waitFor(t, "the continuity-lost signal", func() bool {
		got.mu.Lock()
		defer got.mu.Unlock()
		return len(got.lost) == 1
	})
	waitFor(t, "the kept messages", func() bool { return got.count() == 11 })
	got.mu.Lock()
	defer got.mu.Unlock()
	l := got.lost[0]
	if l.Missed != 2 || l.Next != 22 || l.Stream != msgnet.GroupStream("news") {
		t.Fatalf("lost %+v, want missed 2, next 22", l)
	}
	if got.msgs[1] != "m-22" || got.msgs[10] != "m-31" {
		t.Fatalf("after the loss: %v", got.msgs)
	}
}

// A hello with an overlong publisher id is refused; publishes from a
// session without one are de-duplicated within that session only, so that
// a process that counts from 1 again is not taken for a retry.
func TestPublisherIDs(t *testing.T) {
	_, addr := startServer(t)
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	hello := fmt.Sprintf(`{"op":"hello","features":["reliable"],"publisher":%q}`, strings.Repeat("p", 65))
	nc.Write(frame.Append(nil, frame.KindControl, 0, []byte(hello)))
	rd := frame.NewReader(nc, 1<<20)
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := rd.ReadFrame()
	if err != nil || f.Kind != frame.KindError || !strings.Contains(string(f.Payload), msgnet.CodeBadControl) {
		t.Fatalf("a 65-byte publisher id: got %v %q, %v; want ERROR bad_control", f.Kind, f.Payload, err)
	}

	// Two sessions of one client id in turn, without a publisher id (a
	// restarted process that counts from 1 again), each publishing its seq
	// 1: both are stored.
	sub, got := reliableClient(t, "watcher", addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sub.Subscribe(ctx, msgnet.GroupStream("anon")); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(frame.Append(nil, frame.KindControl, 0, []byte(`{"op":"hello","client_id":"same","features":["reliable"]}`)))
		name := msgnet.GroupStream("anon")
		p := binary.BigEndian.AppendUint64(nil, 1)
		p = append(p, byte(len(name)))
		p = append(p, name...)
		p = append(p, fmt.Sprint("anon-", i)...)
		c.Write(frame.Append(nil, frame.KindData, frame.FlagPublish, p))
		deadline := time.Now().Add(10 * time.Second)
		for got.count() < i+1 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if n := got.count(); n != 2 {
		t.Fatalf("two sessions without a publisher id, seq 1 each: %d stored, want 2", n)
	}
}

// The memory store's bound is for all streams together: a stream makes
// room by dropping its own oldest messages, and a publish to a stream with
// nothing to drop is refused, and its publisher told (store_full).
func TestMemoryStoreBound(t *testing.T) {
	srv, addr := startServer(t, msgnet.WithStore(msgnet.NewMemoryStore(100*(1000+48))))
	big := make([]byte, 1000)
	for i := range 150 { // 100 fit; the stream drops its oldest for the rest
		if _, err := srv.Publish(msgnet.GroupStream("a"), big); err != nil {
			t.Fatalf("publish %d to a: %v", i, err)
		}
	}
	if _, err := srv.Publish(msgnet.GroupStream("b"), big); !errors.Is(err, msgnet.ErrStoreFull) {
		t.Fatalf("a publish to b, with a holding everything: %v, want ErrStoreFull", err)
	}
	// A client's publish refused that way reaches OnPublishFailed.
	c, _ := reliableClient(t, "pub", addr)
	failed := make(chan error, 1)
	c.OnPublishFailed(func(stream string, payload []byte, err error) { failed <- err })
	if err := c.Publish(msgnet.GroupStream("b"), big); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-failed:
		if !strings.Contains(err.Error(), msgnet.CodeStoreFull) {
			t.Fatalf("OnPublishFailed: %v, want store_full", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the refused publish was not reported")
	}
}

// Past Limits.MaxStreams, a publish that needs a new stream is refused,
// and a subscription too; existing streams go on.
func TestMaxStreams(t *testing.T) {
	srv, addr := startServer(t, msgnet.WithMaxStreams(3))
	for i := range 3 {
		if _, err := srv.Publish(msgnet.GroupStream(fmt.Sprint("g", i)), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	var pe *msgnet.ProtocolError
	if _, err := srv.Publish(msgnet.GroupStream("g3"), []byte("x")); !errors.As(err, &pe) || pe.Code != msgnet.CodeBadStream {
		t.Fatalf("a fourth stream: %v, want bad_stream", err)
	}
	if _, err := srv.Publish(msgnet.GroupStream("g0"), []byte("y")); err != nil {
		t.Fatalf("an existing stream: %v", err)
	}
	c, _ := reliableClient(t, "sub", addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Subscribe(ctx, msgnet.GroupStream("g4")); err == nil || !strings.Contains(err.Error(), msgnet.CodeBadStream) {
		t.Fatalf("subscribing to a fourth stream: %v, want bad_stream", err)
	}
	if err := c.Subscribe(ctx, msgnet.GroupStream("g1")); err != nil {
		t.Fatalf("subscribing to an existing stream: %v", err)
	}
}

// A reliable publisher over the server's message rate is not refused for
// good: its session ends (rate_limited), and it resends once reconnected,
// so every message is stored once and in order, at the rate allowed.
func TestReliablePublisherOverTheRate(t *testing.T) {
	srv, addr := startServer(t, msgnet.WithMessageRate(2000, 50))
	sub, got := reliableClient(t, "subscriber", addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sub.Subscribe(ctx, msgnet.GroupStream("room")); err != nil {
		t.Fatal(err)
	}
	pub, _ := reliableClient(t, "publisher", addr)
	var failed atomic.Int64
	pub.OnPublishFailed(func(string, []byte, error) { failed.Add(1) })
	const n = 600
	publishAll(t, pub, msgnet.GroupStream("room"), n, 0)
	if err := pub.WaitPublished(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for got.count() < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if failed.Load() != 0 {
		t.Fatalf("%d publishes failed for good", failed.Load())
	}
	checkExactlyOnce(t, got, n)
	// A fresh session gets a fresh burst: the rate ended a few of them.
	if d := srv.Stats().Disconnects["protocol:"+msgnet.CodeRateLimited]; d == 0 {
		t.Fatalf("no session ended over the rate (%v): the test did not test it", srv.Stats().Disconnects)
	} else {
		t.Logf("%d sessions ended over the rate", d)
	}
}

// A publish that ages past MaxAge while the client is away is given up
// and reported, not sent when the connection comes back (past the
// server's de-duplication window it could be stored twice).
func TestPublishExpiresWhileAway(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	srv := msgnet.NewServer("first")
	go srv.Serve(l)
	c := msgnet.NewClient("away", msgnet.WithReliable(msgnet.ReliableOptions{MaxAge: 300 * time.Millisecond}),
		msgnet.WithReconnect(50*time.Millisecond, 100*time.Millisecond, 0))
	failed := make(chan error, 1)
	c.OnPublishFailed(func(_ string, _ []byte, err error) { failed <- err })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx, addr); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv.Close()
	srv.Wait()
	waitFor(t, "the client to notice", func() bool { return c.State() != msgnet.StateConnected })
	if err := c.Publish(msgnet.GroupStream("g"), []byte("late")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-failed:
		if !errors.Is(err, msgnet.ErrPublishExpired) {
			t.Fatalf("OnPublishFailed: %v, want ErrPublishExpired", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the publish did not expire while the client was away")
	}
	if n := c.Pending(); n != 0 {
		t.Fatalf("%d publishes still pending", n)
	}
}

// A publish that the connection's send queue refuses is not kept: a later
// publish's acknowledgement would otherwise count it done though it was
// never sent. Big payloads through a small send queue: every one arrives.
func TestReliablePublishQueueFull(t *testing.T) {
	_, addr := startServer(t)
	sub, got := reliableClient(t, "subscriber", addr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := sub.Subscribe(ctx, msgnet.GroupStream("big")); err != nil {
		t.Fatal(err)
	}
	pub := msgnet.NewClient("publisher", msgnet.WithReliable(msgnet.ReliableOptions{}), msgnet.WithSendQueueBytes(64<<10))
	if err := pub.Connect(ctx, addr); err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	const n = 400
	full := 0
	for i := 1; i <= n; {
		p := make([]byte, 16<<10)
		copy(p, fmt.Sprint("m-", i))
		switch err := pub.Publish(msgnet.GroupStream("big"), p); {
		case err == nil:
			i++
		case errors.Is(err, msgnet.ErrQueueFull), errors.Is(err, msgnet.ErrBufferFull):
			full++
			time.Sleep(time.Millisecond)
		default:
			t.Fatal(err)
		}
	}
	if err := pub.WaitPublished(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for got.count() < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	got.mu.Lock()
	for i, m := range got.msgs {
		got.msgs[i] = strings.TrimRight(m, "\x00")
	}
	got.mu.Unlock()
	checkExactlyOnce(t, got, n)
	if full == 0 {
		t.Fatal("the send queue never filled: the test did not test it")
	}
	t.Logf("the send queue refused %d publishes, retried", full)
}

// A windowed publisher: WaitPending holds it to a bounded number of
// unacknowledged publishes, and wakes it as acknowledgements arrive.
func TestWaitPendingWindow(t *testing.T) {
	_, addr := startServer(t)
	sub, got := reliableClient(t, "subscriber", addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := sub.Subscribe(ctx, msgnet.GroupStream("window")); err != nil {
		t.Fatal(err)
	}
	pub, _ := reliableClient(t, "publisher", addr)
	if err := pub.WaitPending(ctx, 0); err != nil {
		t.Fatalf("WaitPending with nothing pending: %v", err)
	}
	const n, window = 3000, 16
	most := 0
	for i := 1; i <= n; i++ {
		if err := pub.WaitPending(ctx, window-1); err != nil {
			t.Fatalf("WaitPending: %v (%d pending)", err, pub.Pending())
		}
		if err := pub.Publish(msgnet.GroupStream("window"), []byte(fmt.Sprint("m-", i))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		most = max(most, pub.Pending())
	}
	if most > window {
		t.Errorf("%d publishes pending at once, window %d", most, window)
	}
	if err := pub.WaitPending(ctx, 0); err != nil {
		t.Fatalf("publishes not acknowledged: %v (%d pending)", err, pub.Pending())
	}
	waitFor(t, "every message", func() bool { return got.count() == n })
	checkExactlyOnce(t, got, n)
	// A window that stays full waits until ctx ends.
	done, stop := context.WithCancel(ctx)
	stop()
	if err := pub.Publish(msgnet.GroupStream("window"), []byte("last")); err != nil {
		t.Fatal(err)
	}
	if err := pub.WaitPending(done, -1); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitPending(-1) on an ended context: %v, want context.Canceled", err)
	}
}

// A stream subscription the client renews after reconnecting, and that the
// new server refuses, is not dropped unseen: OnError reports it.
func TestResubscriptionRefusedIsReported(t *testing.T) {
	srvA, addrA := startServer(t)
	_, addrB := startServer(t, msgnet.WithMaxGroupsPerSession(1))
	c := msgnet.NewClient("resub", msgnet.WithReliable(msgnet.ReliableOptions{}),
		msgnet.WithReconnect(5*time.Millisecond, 50*time.Millisecond, 0),
		msgnet.WithConnectTimeout(2*time.Second))
	refused := make(chan *msgnet.ProtocolError, 4)
	c.OnError(func(e *msgnet.ProtocolError) { refused <- e })
	if err := c.Connect(ctx5s(t), addrA, addrB); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	for _, g := range []string{"one", "two"} {
		if err := c.Subscribe(ctx5s(t), msgnet.GroupStream(g)); err != nil {
			t.Fatal(err)
		}
	}
	srvA.Close() // the client moves to B, which takes one subscription per session
	select {
	case e := <-refused:
		if e.Code != msgnet.CodeTooManyGroups {
			t.Fatalf("reported %v, want %s", e, msgnet.CodeTooManyGroups)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the refused resubscription was not reported")
	}
}
