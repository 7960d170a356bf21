package monitor_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/monitor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Counters move by exactly the traffic sent, and no counter goes down in
// scrapes taken while the traffic flows.
func TestMetricsFollowTraffic(t *testing.T) {
	srv := echoServer(t)
	base, hc := serveMonitor(t, srv)
	before := scrape(t, hc, base)

	// The traffic goes in rounds; after each, the test waits for a scrape
	// that began once the round's echoes had all arrived, so there are at
	// least as many scrapes as rounds, and each must show its round's
	// frames. The scraper does not wait in between: most of its scrapes
	// overlap the traffic. No counter may go down from one scrape to the
	// next.
	const rounds, batch, size = 10, 10, 10
	const n = rounds * batch
	const dataIn = `msgnet_frames_received_total{kind="DATA"}`
	type sample struct {
		round  int64 // rounds complete when the scrape began
		dataIn float64
	}
	var (
		round   atomic.Int64
		mu      sync.Mutex
		samples []sample
	)
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		prev := before
		for {
			select {
			case <-stop:
				return
			default:
			}
			r := round.Load()
			cur, err := scrapeErr(hc, base)
			if err != nil {
				t.Errorf("scrape while the traffic flowed: %v", err)
				return
			}
			for k, v := range cur {
				if isCounter(k) && v < prev[k] {
					t.Errorf("%s went down from %v to %v", k, prev[k], v)
				}
			}
			prev = cur
			mu.Lock()
			samples = append(samples, sample{r, cur[dataIn]})
			mu.Unlock()
		}
	}()
	// stopScraper runs before the monitor's server closes, also when the
	// test fails early.
	var stopOnce sync.Once
	stopScraper := func() {
		stopOnce.Do(func() {
			close(stop)
			select {
			case <-stopped:
			case <-time.After(10 * time.Second):
				t.Error("the scraper did not stop within 10s")
			}
		})
	}
	t.Cleanup(stopScraper)
	// scrapedAfter waits for the first scrape that began after round r.
	scrapedAfter := func(r int64) sample {
		t.Helper()
		var s sample
		waitFor(t, fmt.Sprintf("a scrape begun after round %d", r), func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, x := range samples {
				if x.round >= r {
					s = x
					return true
				}
			}
			return false
		})
		return s
	}

	c, got := connect(t, srv, "alice")
	msg := bytes.Repeat([]byte("x"), size)
	for r := int64(1); r <= rounds; r++ {
		for i := 0; i < batch; i++ {
			if err := c.Send(msg); err != nil {
				t.Fatal(err)
			}
		}
		receive(t, got, batch)
		round.Store(r)
		// Every frame of rounds 1..r has been read, and round r+1 is not
		// sent until this scrape has ended: the count is exact.
		if s := scrapedAfter(r); s.dataIn-before[dataIn] != float64(r*batch) {
			t.Errorf("a scrape begun after round %d counts %v DATA frames received, want %d", r, s.dataIn-before[dataIn], r*batch)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	stopScraper()
	mu.Lock()
	scrapes := len(samples)
	var first, last float64
	if scrapes > 0 {
		first, last = samples[0].dataIn, samples[scrapes-1].dataIn
	}
	mu.Unlock()
	if scrapes < rounds {
		t.Fatalf("%d scrapes while the traffic flowed, want at least %d", scrapes, rounds)
	}
	// The first scrape saw at most round 1's frames, the last all of them.
	if last-first < n-batch {
		t.Errorf("DATA frames received moved by %v across the scrapes, want at least %d", last-first, n-batch)
	}
	t.Logf("%d scrapes while the traffic flowed", scrapes)

	frameBytes := float64(n * (frame.HeaderLen + size))
	var after metrics
	// The echo can reach the client a moment before the server has
	// counted it as sent; wait for that count, then check every count.
	waitFor(t, "100 DATA frames counted as sent", func() bool {
		after = scrape(t, hc, base)
		return after[`msgnet_frames_sent_total{kind="DATA"}`]-before[`msgnet_frames_sent_total{kind="DATA"}`] >= n
	})
	checkDeltas(t, before, after, map[string]float64{
		`msgnet_frames_received_total{kind="DATA"}`:    n,
		`msgnet_frames_sent_total{kind="DATA"}`:        n,
		`msgnet_received_bytes_total{kind="DATA"}`:     frameBytes,
		`msgnet_sent_bytes_total{kind="DATA"}`:         frameBytes,
		`msgnet_frames_received_total{kind="PING"}`:    1,
		`msgnet_frames_sent_total{kind="PONG"}`:        1,
		`msgnet_received_bytes_total{kind="PING"}`:     after[`msgnet_sent_bytes_total{kind="PONG"}`] - before[`msgnet_sent_bytes_total{kind="PONG"}`],
		`msgnet_frames_received_total{kind="CONTROL"}`: 1, // hello
		`msgnet_frames_sent_total{kind="CONTROL"}`:     1, // welcome
		`msgnet_connections_accepted_total`:            1,
	})
	if v := after["msgnet_sessions_open"]; v != 1 {
		t.Errorf("msgnet_sessions_open = %v, want 1", v)
	}
	if v := after["msgnet_server_running"]; v != 1 {
		t.Errorf("msgnet_server_running = %v, want 1", v)
	}

	// The client leaves: the session ends with the client's DISCONNECT.
	c.Close()
	waitFor(t, "the session to end", func() bool {
		after = scrape(t, hc, base)
		return after["msgnet_sessions_open"] == 0
	})
	checkDeltas(t, before, after, map[string]float64{
		`msgnet_disconnects_total{reason="peer_disconnect"}`: 1,
		`msgnet_frames_received_total{kind="DISCONNECT"}`:    1,
		`msgnet_frames_received_total{kind="DATA"}`:          n, // the ended session's counts stay
		`msgnet_frames_sent_total{kind="DATA"}`:              n,
	})
}

// isCounter says whether a flattened series is a counter (or a histogram's
// cumulative part), which must never go down.
func isCounter(series string) bool {
	name, _, _ := strings.Cut(series, "{")
	return strings.HasSuffix(name, "_total") || strings.HasSuffix(name, "_bucket") ||
		strings.HasSuffix(name, "_count") || strings.HasSuffix(name, "_sum")
}

// The collector passes the client library's linter, with every metric
// family present (cluster included) and a histogram with observations.
func TestCollectorLint(t *testing.T) {
	bus := &fakeBus{stats: msgnet.ClusterStats{
		Nodes:     3,
		Published: map[string]uint64{"broadcast": 4, "group": 2},
		Received:  map[string]uint64{"direct": 7},
		Errors:    1,
	}}
	srv := echoServer(t, msgnet.WithBus(bus))
	c, got := connect(t, srv, "lint")
	for i := 0; i < 200; i++ {
		c.SendString("m")
	}
	receive(t, got, 200)
	gone, _ := connect(t, srv, "gone") // for a disconnect
	gone.Close()
	waitFor(t, "a session to end", func() bool { return srv.ConnectionCount() == 1 })
	col := monitor.NewCollector(srv)
	problems, err := testutil.CollectAndLint(col)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	// Every metric the collector describes is collected here.
	names := map[string]bool{}
	descs := make(chan *prometheus.Desc, 100)
	col.Describe(descs)
	close(descs)
	for d := range descs {
		s := d.String()
		_, rest, _ := strings.Cut(s, `fqName: "`)
		name, _, _ := strings.Cut(rest, `"`)
		names[name] = true
	}
	for name := range names {
		if testutil.CollectAndCount(col, name) == 0 {
			t.Errorf("%s is described but not collected", name)
		}
	}
	if len(names) != 26 {
		t.Errorf("%d metrics described, want 26 (update docs/MONITORING.md when this changes)", len(names))
	}
}

// The cluster's counters come from the bus's Stats.
func TestClusterMetrics(t *testing.T) {
	bus := &fakeBus{stats: msgnet.ClusterStats{
		Nodes:     3,
		Published: map[string]uint64{"broadcast": 4, "group": 2},
		Received:  map[string]uint64{"direct": 7},
		Errors:    1,
	}}
	srv := startServer(t, msgnet.WithBus(bus))
	base, hc := serveMonitor(t, srv)
	m := scrape(t, hc, base)
	want := map[string]float64{
		"msgnet_cluster_nodes": 3,
		`msgnet_cluster_messages_published_total{kind="broadcast"}`: 4,
		`msgnet_cluster_messages_published_total{kind="group"}`:     2,
		`msgnet_cluster_messages_published_total{kind="direct"}`:    0,
		`msgnet_cluster_messages_received_total{kind="direct"}`:     7,
		"msgnet_cluster_errors_total":                               1,
	}
	checkDeltas(t, metrics{}, m, want)

	// Without a bus there is no cluster metric.
	plain := startServer(t)
	base2, hc2 := serveMonitor(t, plain)
	for k := range scrape(t, hc2, base2) {
		if strings.HasPrefix(k, "msgnet_cluster_") {
			t.Errorf("%s exported without a cluster", k)
		}
	}
}

// The handler latency histogram is in seconds: a handler that sleeps 2ms
// has no observation at or below 1ms, and all of them at or below 1 hour.
func TestHandlerLatencyHistogram(t *testing.T) {
	srv := startServer(t)
	srv.OnMessage(func(s *msgnet.Session, msg []byte) {
		time.Sleep(2 * time.Millisecond)
		s.Send(msg)
	})
	base, hc := serveMonitor(t, srv)
	c, got := connect(t, srv, "slow")
	for i := 0; i < 130; i++ { // one call in 64 is timed
		c.SendString("m")
	}
	receive(t, got, 130)
	m := scrape(t, hc, base)
	st := srv.Stats().HandlerLatency
	count := m["msgnet_message_handler_duration_seconds_count"]
	if count < 2 || count != float64(st.Count) {
		t.Fatalf("histogram count %v; Stats says %d; want >= 2 and equal", count, st.Count)
	}
	if v := m[`msgnet_message_handler_duration_seconds_bucket{le="0.001048576"}`]; v != 0 {
		t.Errorf("%v observations at or below 1.05ms from a handler that sleeps 2ms", v)
	}
	if v := m[`msgnet_message_handler_duration_seconds_bucket{le="+Inf"}`]; v != count {
		t.Errorf("+Inf bucket %v, count %v", v, count)
	}
	if v := m[`msgnet_message_handler_duration_seconds_bucket{le="8.589934592"}`]; v != count {
		t.Errorf("bucket le=8.59s holds %v of %v observations of ~2ms", v, count)
	}
	sum := m["msgnet_message_handler_duration_seconds_sum"]
	if sum < 0.002*count || sum != st.Sum.Seconds() {
		t.Errorf("sum %vs for %v calls of >= 2ms; Stats says %v", sum, count, st.Sum)
	}
}

// Refusals, ERROR frames both ways and request outcomes are counted by
// label.
func TestErrorAndRequestCounters(t *testing.T) {
	srv := echoServer(t, msgnet.WithMaxConnections(1))
	srv.OnRequest(func(s *msgnet.Session, req []byte) ([]byte, error) {
		if string(req) == "fail" {
			return nil, errors.New("no")
		}
		return req, nil
	})
	base, hc := serveMonitor(t, srv)
	before := scrape(t, hc, base)
	c, _ := connect(t, srv, "first")

	// A second connection is refused: the server is full.
	c2 := msgnet.NewClient("second")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c2.Connect(ctx, srv.Addr().String()); !errors.Is(err, msgnet.ErrServerFull) {
		t.Fatalf("second connect: %v, want ErrServerFull", err)
	}
	c2.Close()

	// Requests: two answered, one with a handler error.
	if _, err := c.Request(ctx, []byte("ok")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Request(ctx, []byte("fail")); err == nil {
		t.Fatal("request answered by a failing handler succeeded")
	}

	// ERROR frames from the peer: one of msgnet's codes, one not.
	for _, code := range []string{frame.CodeBadControl, "made_up_code"} {
		raw := frame.Append(nil, frame.KindError, 0, frame.AppendError(nil, code, "test"))
		if err := c.SendRaw(raw); err != nil {
			t.Fatal(err)
		}
	}
	// A frame kind the server does not know draws ERROR unknown_type.
	if err := c.SendRaw(frame.Append(nil, frame.Kind(0x7e), 0, nil)); err != nil {
		t.Fatal(err)
	}
	var after metrics
	waitFor(t, "the ERROR frames to be counted", func() bool {
		after = scrape(t, hc, base)
		return after[`msgnet_errors_received_total{code="other"}`]-before[`msgnet_errors_received_total{code="other"}`] >= 1 &&
			after[`msgnet_errors_sent_total{code="unknown_type"}`]-before[`msgnet_errors_sent_total{code="unknown_type"}`] >= 1
	})
	checkDeltas(t, before, after, map[string]float64{
		`msgnet_connections_refused_total{reason="server_full"}`: 1,
		`msgnet_connections_accepted_total`:                      1,
		`msgnet_requests_handled_total{outcome="ok"}`:            1,
		`msgnet_requests_handled_total{outcome="error"}`:         1,
		`msgnet_errors_received_total{code="bad_control"}`:       1,
		`msgnet_errors_received_total{code="other"}`:             1,
		`msgnet_errors_sent_total{code="unknown_type"}`:          1,
		`msgnet_frames_received_total{kind="ERROR"}`:             2,
		`msgnet_frames_received_total{kind="KIND(0x7E)"}`:        1,
	})
	if _, ok := after[`msgnet_errors_received_total{code="made_up_code"}`]; ok {
		t.Error("a code made up by a peer became a label value")
	}

	// Requests the server sends: one answered, one that times out.
	s, ok := srv.SessionByClientID("first")
	if !ok {
		t.Fatal("no session for client first")
	}
	release := make(chan struct{})
	c.OnRequest(func(req []byte) ([]byte, error) {
		if string(req) == "hang" {
			select {
			case <-release:
			case <-time.After(10 * time.Second):
				t.Error("the hanging request was never released")
			}
		}
		return req, nil
	})
	if _, err := s.Request(ctx, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err := s.Request(short, []byte("hang"))
	cancelShort()
	close(release)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hanging request: %v, want a deadline error", err)
	}
	waitFor(t, "the late reply", func() bool {
		after = scrape(t, hc, base)
		return after["msgnet_late_replies_total"]-before["msgnet_late_replies_total"] >= 1
	})
	checkDeltas(t, before, after, map[string]float64{
		`msgnet_requests_sent_total`:                         2,
		`msgnet_requests_completed_total{outcome="ok"}`:      1,
		`msgnet_requests_completed_total{outcome="timeout"}`: 1,
		`msgnet_late_replies_total`:                          1,
	})
}

// A peer that stops reading fills its send queue: the queue gauge shows
// the bytes waiting and each refused send is a slow-consumer event.
func TestSendQueueAndSlowConsumer(t *testing.T) {
	const queueLimit = 256 << 10
	srv := startServer(t, msgnet.WithSendQueueBytes(queueLimit))
	base, hc := serveMonitor(t, srv)
	before := scrape(t, hc, base)

	s := rawPeer(t, srv)
	var after metrics
	refused := fillQueue(t, s, func() bool {
		after = scrape(t, hc, base)
		q := after["msgnet_send_queue_bytes"]
		return q > 0 && q == float64(s.Info().QueueBytes)
	})
	if q := after["msgnet_send_queue_bytes"]; q > queueLimit {
		t.Errorf("msgnet_send_queue_bytes = %v, over the bound %d", q, queueLimit)
	}
	checkDeltas(t, before, after, map[string]float64{
		"msgnet_slow_consumer_events_total": float64(refused),
	})
	t.Logf("%d refusals, %v bytes queued", refused, after["msgnet_send_queue_bytes"])
}

// rawPeer opens a text-mode connection to srv that never reads, and
// returns its session.
func rawPeer(t *testing.T, srv *msgnet.Server) *msgnet.Session {
	t.Helper()
	old := map[string]bool{}
	for _, s := range srv.Sessions() {
		old[s.ID()] = true
	}
	nc, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if _, err := nc.Write([]byte("hello\n")); err != nil { // text mode: the server may write
		t.Fatal(err)
	}
	var s *msgnet.Session
	waitFor(t, "the raw peer's session in text mode", func() bool {
		for _, x := range srv.Sessions() {
			if !old[x.ID()] && x.Info().Mode == "text" {
				s = x
				return true
			}
		}
		return false
	})
	return s
}

// fillQueue sends 32 KiB lines to s until its queue refuses one, and again
// until full() holds: the writer takes the whole queue for each write, and
// the kernel's buffers for the socket grow for a while, so a queue that
// refused a send may be empty a moment later. It returns the refusals.
func fillQueue(t *testing.T, s *msgnet.Session, full func() bool) int {
	t.Helper()
	line := bytes.Repeat([]byte("y"), 32<<10)
	refused := 0
	deadline := time.Now().Add(20 * time.Second)
	for {
		for n := refused; refused == n; {
			if err := s.Send(line); errors.Is(err, msgnet.ErrQueueFull) {
				refused++
			} else if err != nil {
				t.Fatal(err)
			}
		}
		if full() {
			return refused
		}
		if time.Now().After(deadline) {
			t.Fatal("the send queue never stayed full")
		}
	}
}

// fakeBus is a cluster bus that only reports fixed traffic.
type fakeBus struct{ stats msgnet.ClusterStats }

func (b *fakeBus) Attach(msgnet.ClusterNode) error     { return nil }
func (b *fakeBus) Publish(msgnet.ClusterMessage) error { return nil }
func (b *fakeBus) ClientUp(string, string)             {}
func (b *fakeBus) ClientDown(string, string)           {}
func (b *fakeBus) GroupUp(string)                      {}
func (b *fakeBus) GroupDown(string)                    {}
func (b *fakeBus) Stats() msgnet.ClusterStats          { return b.stats }
func (b *fakeBus) Close() error                        { return nil }
