package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// run is Run with a failure on error.
func run(t *testing.T, cfg Config) *Result {
	t.Helper()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run(%s): %v", cfg.Mode, err)
	}
	return res
}

// noErrors fails the test when the result counted errors.
func noErrors(t *testing.T, res *Result) {
	t.Helper()
	if res.Errors != 0 {
		t.Fatalf("%d errors: %v", res.Errors, res.ErrorSamples)
	}
}

func TestThroughput(t *testing.T) {
	s := startServer(t, serverOpts{})
	res := run(t, Config{Mode: ModeThroughput, Addr: s.addr(), Conns: 4, Inflight: 8,
		Size: 64, Duration: 400 * time.Millisecond, Warmup: 100 * time.Millisecond, PID: os.Getpid()})
	noErrors(t, res)
	if res.Messages <= 0 {
		t.Fatalf("no messages: %+v", res)
	}
	if res.Latency.Count != res.Messages {
		t.Errorf("histogram holds %d round trips, result counts %d", res.Latency.Count, res.Messages)
	}
	if got := s.echoed.Load(); got < res.Messages {
		t.Errorf("server echoed %d frames, fewer than the %d round trips counted", got, res.Messages)
	}
	if s.hellos.Load() != 4 {
		t.Errorf("server saw %d hellos, want 4", s.hellos.Load())
	}
	if want := float64(res.Messages) / res.Seconds; res.MsgsPerSec != want {
		t.Errorf("msgs/s %v, want messages/seconds = %v", res.MsgsPerSec, want)
	}
	if want := res.MsgsPerSec * 64 / 1e6; res.MBPerSec != want {
		t.Errorf("MB/s %v, want %v", res.MBPerSec, want)
	}
	if res.Seconds <= 0 || res.Seconds > 0.4+1e-9 {
		t.Errorf("window %v s, want (0, 0.4]", res.Seconds)
	}
	// The echo server runs in this process too: the load tool's own CPU
	// time over a window of full-speed echoing is not zero.
	if res.LoadCPUSeconds <= 0 {
		t.Errorf("load tool CPU %v s", res.LoadCPUSeconds)
	}
	if res.Server == nil || res.Server.PID != os.Getpid() || res.Server.RSSAfter <= 0 {
		t.Fatalf("server stats missing: %+v", res.Server)
	}
	if res.Server.CPUSeconds > 0 && res.Server.MsgsPerCPUSecond != float64(res.Messages)/res.Server.CPUSeconds {
		t.Errorf("msgs per CPU-second %v inconsistent with %d msgs / %v s", res.Server.MsgsPerCPUSecond, res.Messages, res.Server.CPUSeconds)
	}
	if !(res.Latency.P50 <= res.Latency.P99 && res.Latency.P99 <= res.Latency.Max && res.Latency.Min <= res.Latency.P50) {
		t.Errorf("percentiles out of order: %+v", res.Latency)
	}
}

func TestThroughputPayloadSizes(t *testing.T) {
	s := startServer(t, serverOpts{})
	for _, size := range []int{EmptyPayload, 3, 1024, 100 << 10} {
		res := run(t, Config{Mode: ModeThroughput, Addr: s.addr(), Conns: 2, Inflight: 4,
			Size: size, Duration: 200 * time.Millisecond})
		noErrors(t, res)
		if res.Messages <= 0 || res.Latency.Count != res.Messages {
			t.Errorf("size %d: %d messages, %d latencies", size, res.Messages, res.Latency.Count)
		}
		if want := max(size, 0); res.Size != want {
			t.Errorf("size %d reported as %d", size, res.Size)
		}
	}
}

func TestLatencyClosedLoop(t *testing.T) {
	s := startServer(t, serverOpts{})
	res := run(t, Config{Mode: ModeLatency, Addr: s.addr(), Conns: 3, Duration: 300 * time.Millisecond, Warmup: 50 * time.Millisecond})
	noErrors(t, res)
	if res.Messages <= 0 {
		t.Fatal("no round trips")
	}
	if res.Latency.Count != res.Messages {
		t.Errorf("histogram holds %d round trips, result counts %d", res.Latency.Count, res.Messages)
	}
	if res.Inflight != 1 || res.OpenLoop {
		t.Errorf("inflight %d open %v, want a closed loop of 1", res.Inflight, res.OpenLoop)
	}
}

func TestLatencyOpenLoop(t *testing.T) {
	s := startServer(t, serverOpts{})
	const rate, conns = 2000, 2
	res := run(t, Config{Mode: ModeLatency, Addr: s.addr(), Conns: conns, Rate: rate,
		Duration: 500 * time.Millisecond, Warmup: 100 * time.Millisecond})
	noErrors(t, res)
	// The schedule decides how many frames are due in the window: the rate
	// times the window, give or take one per connection at each end.
	if want := int64(rate * 0.5); res.Sent < want-2*conns || res.Sent > want+2*conns {
		t.Errorf("%d frames scheduled in the window, want %d ± %d", res.Sent, want, 2*conns)
	}
	if res.Messages+res.Unanswered != res.Sent {
		t.Errorf("answered %d + unanswered %d != scheduled %d", res.Messages, res.Unanswered, res.Sent)
	}
	if res.Latency.Count != res.Sent {
		t.Errorf("histogram holds %d samples, want one per scheduled frame (%d)", res.Latency.Count, res.Sent)
	}
	if !res.OpenLoop || res.Rate != rate {
		t.Errorf("open %v rate %v", res.OpenLoop, res.Rate)
	}
}

// A server that stalls once for 300ms: the closed loop records one slow
// sample, the open loop charges the stall to every frame that was due during
// it.
func TestOpenLoopCorrectsCoordinatedOmission(t *testing.T) {
	const stall = 300 * time.Millisecond
	count := func(res *Result) int64 {
		var n int64
		for _, b := range res.Histogram.Distribution() {
			if b.From >= int64(stall/3) {
				n += b.Count
			}
		}
		return n
	}
	// The stall comes early (the 20th frame) so that it falls inside the
	// window even when a loaded machine makes every round trip slow.
	s := startServer(t, serverOpts{stallAt: 20, stallFor: stall})
	open := run(t, Config{Mode: ModeLatency, Addr: s.addr(), Conns: 1, Rate: 1000, Duration: time.Second})
	noErrors(t, open)
	// Frames due in the first two thirds of the stall waited at least a
	// third of it: about 200 at 1000/s.
	if n := count(open); n < 100 {
		t.Errorf("open loop: %d samples >= %v, want >= 100", n, stall/3)
	}

	s2 := startServer(t, serverOpts{stallAt: 20, stallFor: stall})
	closed := run(t, Config{Mode: ModeLatency, Addr: s2.addr(), Conns: 1, Duration: time.Second})
	noErrors(t, closed)
	// The closed loop sees the stall as one slow round trip (more only if
	// the machine itself stalls): an order of magnitude fewer than the open
	// loop's.
	if n, o := count(closed), count(open); n < 1 || n*10 > o {
		t.Errorf("closed loop: %d samples >= %v, want at least the stalled one and under a tenth of the open loop's %d", n, stall/3, o)
	}
}

func TestConnRate(t *testing.T) {
	s := startServer(t, serverOpts{})
	res := run(t, Config{Mode: ModeConnRate, Addr: s.addr(), Conns: 2, Duration: 300 * time.Millisecond, PID: os.Getpid()})
	noErrors(t, res)
	if res.Connections <= 0 {
		t.Fatal("no connections")
	}
	if res.Latency.Count != res.Connections || res.Messages != res.Connections {
		t.Errorf("connections %d, latencies %d, round trips %d: want all equal", res.Connections, res.Latency.Count, res.Messages)
	}
	// The first, fail-fast connection is not counted.
	if got := s.accepted.Load(); got < res.Connections+1 {
		t.Errorf("server accepted %d connections, fewer than the %d counted", got, res.Connections+1)
	}
	if want := float64(res.Connections) / res.Seconds; res.ConnsPerSec != want {
		t.Errorf("conns/s %v, want %v", res.ConnsPerSec, want)
	}
	if res.Server.CPUSeconds > 0 && res.Server.CPUMicrosPerConn != res.Server.CPUSeconds*1e6/float64(res.Connections) {
		t.Errorf("CPU-µs per connection %v inconsistent", res.Server.CPUMicrosPerConn)
	}
}

func TestIdle(t *testing.T) {
	s := startServer(t, serverOpts{})
	res := run(t, Config{Mode: ModeIdle, Addr: s.addr(), Conns: 60, DialConcurrency: 7,
		Hold: 300 * time.Millisecond, Heartbeat: 50 * time.Millisecond, PID: os.Getpid()})
	noErrors(t, res)
	if res.Connections != 60 || res.Dropped != 0 {
		t.Fatalf("held %d connections, %d dropped; want 60 and 0", res.Connections, res.Dropped)
	}
	if got := s.hellos.Load(); got != 60 {
		t.Errorf("server saw %d hellos, want 60", got)
	}
	if res.Latency.Count != 60 {
		t.Errorf("%d connect latencies, want 60", res.Latency.Count)
	}
	if s.heartbeats.Load() < 60 {
		t.Errorf("server saw %d heartbeats, want at least one per connection", s.heartbeats.Load())
	}
	st := res.Server
	if st == nil || st.RSSPerConn != float64(st.RSSAfter-st.RSSBefore)/60 {
		t.Errorf("RSS per connection inconsistent: %+v", st)
	}
}

func TestIdleNoticesDroppedConnections(t *testing.T) {
	s := startServer(t, serverOpts{})
	// Once all ten are welcomed, the server drops them: during the hold.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if s.welcomed.Load() == 10 {
				s.dropAll()
				return
			}
		}
	}()
	res := run(t, Config{Mode: ModeIdle, Addr: s.addr(), Conns: 10, Hold: 2 * time.Second, Heartbeat: -1})
	<-done // cannot block for good: the watcher gives up after its own 10s deadline
	if res.Connections != 10 || res.Dropped != 10 {
		t.Errorf("opened %d, dropped %d; want 10 and 10", res.Connections, res.Dropped)
	}
	if res.Errors == 0 {
		t.Error("dropped connections were not reported as an error")
	}
}

func TestFanout(t *testing.T) {
	for _, opts := range []serverOpts{{}, {joinNotice: true, groupToAll: true}} {
		s := startServer(t, opts)
		res := run(t, Config{Mode: ModeFanout, Addr: s.addr(), Conns: 5, Rate: 200,
			Duration: 500 * time.Millisecond, Warmup: 100 * time.Millisecond, Drain: 2 * time.Second, JoinWait: 100 * time.Millisecond})
		noErrors(t, res)
		if want := int64(200 * 0.5); res.Sent < want-1 || res.Sent > want+1 {
			t.Errorf("sent %d in the window, want %d ± 1", res.Sent, want)
		}
		if res.Expected != res.Sent*5 {
			t.Errorf("expected %d, want sent x receivers = %d", res.Expected, res.Sent*5)
		}
		if res.Messages != res.Expected || res.Lost != 0 {
			t.Errorf("delivered %d of %d (lost %d); the test server loses none", res.Messages, res.Expected, res.Lost)
		}
		if res.Latency.Count != res.Messages {
			t.Errorf("%d latencies for %d deliveries", res.Latency.Count, res.Messages)
		}
		if want := polledWant(5); res.Fanout == nil || res.Fanout.Polled != want {
			t.Errorf("fanout stats %+v, want %d receivers polled", res.Fanout, want)
		}
	}
}

// polledWant is how many of n plain-TCP receivers the polled readers take
// on this system: all on Linux, none elsewhere.
func polledWant(n int) int {
	if runtime.GOOS == "linux" {
		return n
	}
	return 0
}

func TestFanoutReportsRefusedSender(t *testing.T) {
	s := startServer(t, serverOpts{noGroups: true})
	res := run(t, Config{Mode: ModeFanout, Addr: s.addr(), Conns: 2, Rate: 100,
		Duration: 200 * time.Millisecond, JoinWait: 50 * time.Millisecond, Drain: 100 * time.Millisecond})
	if res.Messages != 0 || res.Lost != res.Expected || res.Expected == 0 {
		t.Errorf("delivered %d, lost %d of %d; want none delivered", res.Messages, res.Lost, res.Expected)
	}
	if res.Errors == 0 || len(res.ErrorSamples) == 0 || !strings.Contains(res.ErrorSamples[0], "not a member") {
		t.Errorf("the server's refusal was not reported: %d errors %v", res.Errors, res.ErrorSamples)
	}
}

func TestParseDelivery(t *testing.T) {
	for _, tc := range []struct {
		in      string
		seq     uint64
		ts      int64
		ok      bool
		comment string
	}{
		{"[bench] c1: 12:1700000000000000000", 12, 1700000000000000000, true, "decorated by the server"},
		{"GROUP:bench:3:17", 3, 17, true, "forwarded whole"},
		{"3:17", 3, 17, true, "just the text"},
		{" 5 : 99 \n", 5, 99, true, "spaces"},
		{"joined bench", 0, 0, false, "no colon"},
		{"a:b", 0, 0, false, "not numbers"},
		{"17", 0, 0, false, "one field"},
		{"x:-1:5", 0, 0, false, "negative seq"},
		{"1:0", 0, 0, false, "zero time"},
	} {
		seq, ts, ok := parseDelivery([]byte(tc.in))
		if ok != tc.ok || (ok && (seq != tc.seq || ts != tc.ts)) {
			t.Errorf("%s: parseDelivery(%q) = %d, %d, %v; want %d, %d, %v", tc.comment, tc.in, seq, ts, ok, tc.seq, tc.ts, tc.ok)
		}
	}
}

func TestNoHello(t *testing.T) {
	s := startServer(t, serverOpts{})
	res := run(t, Config{Mode: ModeLatency, Addr: s.addr(), Conns: 1, NoHello: true, Duration: 100 * time.Millisecond})
	noErrors(t, res)
	if res.Messages == 0 || s.hellos.Load() != 0 {
		t.Errorf("%d round trips, %d hellos; want some and none", res.Messages, s.hellos.Load())
	}
}

func TestServerWithoutWelcome(t *testing.T) {
	s := startServer(t, serverOpts{noWelcome: true})
	_, err := Run(context.Background(), Config{Mode: ModeThroughput, Addr: s.addr(), Conns: 2,
		Duration: 100 * time.Millisecond, DialTimeout: 200 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "welcome") {
		t.Errorf("err = %v, want one about the missing welcome", err)
	}
}

func TestNothingListening(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	for _, m := range Modes {
		_, err := Run(context.Background(), Config{Mode: m, Addr: addr, Conns: 2, Duration: 100 * time.Millisecond})
		if err == nil {
			t.Errorf("%s: no error with nothing listening", m)
		}
	}
}

func TestCancelStopsEarly(t *testing.T) {
	s := startServer(t, serverOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	res, err := Run(ctx, Config{Mode: ModeThroughput, Addr: s.addr(), Conns: 2, Duration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if res.Seconds >= 10 {
		t.Errorf("window of %v s after cancelling at 0.2 s", res.Seconds)
	}
	noErrors(t, res)
}

func TestTLS(t *testing.T) {
	srvCfg, caPEM := selfSignedTLS(t)
	s := startServer(t, serverOpts{tls: srvCfg})
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, flags := range [][]string{
		{"--tls", "--tls-ca", ca},
		{"--tls-ca", ca, "--tls-server-name", "msgnet.test"},
		{"--tls", "--tls-insecure"},
	} {
		var out, errOut bytes.Buffer
		args := append([]string{"throughput", "--addr", s.addr(), "--conns", "2", "--duration", "150ms", "--warmup", "0s", "--json", "--quiet"}, flags...)
		if code := Main(context.Background(), args, &out, &errOut); code != 0 {
			t.Fatalf("%v: exit %d: %s", flags, code, errOut.String())
		}
		var res Result
		if err := json.Unmarshal(out.Bytes(), &res); err != nil {
			t.Fatal(err)
		}
		if !res.TLS || res.Messages == 0 || res.Errors != 0 {
			t.Errorf("%v: tls %v, %d messages, %d errors", flags, res.TLS, res.Messages, res.Errors)
		}
	}
	// Without the CA the certificate is not trusted: nothing connects.
	var out, errOut bytes.Buffer
	code := Main(context.Background(), []string{"latency", "--addr", s.addr(), "--conns", "1", "--duration", "100ms", "--tls", "--quiet"}, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "certificate") {
		t.Errorf("untrusted certificate: exit %d, stderr %q", code, errOut.String())
	}
}

func TestMainJSONAndChart(t *testing.T) {
	s := startServer(t, serverOpts{})
	svg := filepath.Join(t.TempDir(), "lat.svg")
	var out, errOut bytes.Buffer
	code := Main(context.Background(), []string{"throughput", "--addr", s.addr(), "--conns", "2", "--inflight", "4",
		"--size", "1KiB", "--duration", "300ms", "--warmup", "0s", "--json", "--chart", svg}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var res map[string]any
	dec := json.NewDecoder(&out)
	if err := dec.Decode(&res); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, out.String())
	}
	if dec.More() {
		t.Error("more than one JSON value on stdout")
	}
	if res["mode"] != "throughput" || res["size"] != float64(1024) || res["messages"].(float64) <= 0 {
		t.Errorf("unexpected result: %v", res)
	}
	lat := res["latency"].(map[string]any)
	if lat["count"] != res["messages"] {
		t.Errorf("latency count %v != messages %v", lat["count"], res["messages"])
	}
	checkSVG(t, svg)
}

// checkSVG fails unless path is well-formed XML with an svg root and a
// polyline.
func checkSVG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := xml.NewDecoder(f)
	var root string
	polylines := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s is not well-formed XML: %v", path, err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			// encoding/xml does not reject a repeated attribute; XML does.
			seen := map[xml.Name]bool{}
			for _, a := range se.Attr {
				if seen[a.Name] {
					t.Fatalf("%s: attribute %s repeated in <%s>", path, a.Name.Local, se.Name.Local)
				}
				seen[a.Name] = true
			}
			if root == "" {
				root = se.Name.Local
			}
			if se.Name.Local == "polyline" {
				polylines++
			}
		}
	}
	if root != "svg" || polylines == 0 {
		t.Errorf("root %q with %d polylines, want svg with a polyline", root, polylines)
	}
}

func TestWriteChartEscapesAndHandlesEmpty(t *testing.T) {
	h := newHist()
	for i := int64(1); i <= 1000; i++ {
		h.RecordValue(i * 1000)
	}
	path := filepath.Join(t.TempDir(), "c.svg")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	err = WriteChart(f, `a <b> & "c"`, ChartSeries{Name: "x<y", Histogram: h}, ChartSeries{Name: "empty", Histogram: newHist()}, ChartSeries{Name: "nil"})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	checkSVG(t, path)
}

func TestMainTextAndProgress(t *testing.T) {
	s := startServer(t, serverOpts{})
	var out, errOut bytes.Buffer
	code := Main(context.Background(), []string{"latency", "--addr", s.addr(), "--conns", "1", "--duration", "1200ms", "--warmup", "0s"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	text := out.String()
	for _, want := range []string{"latency, closed loop", "p99", "round trips", "errors      0"} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
	// Not a terminal: plain progress lines, no carriage returns.
	if !strings.Contains(text, "latency measure") || strings.Contains(text, "\r") {
		t.Errorf("want plain progress lines:\n%q", text)
	}
}

func TestProgressOnTerminalRewritesOneLine(t *testing.T) {
	s := startServer(t, serverOpts{})
	var buf bytes.Buffer
	run(t, Config{Mode: ModeThroughput, Addr: s.addr(), Conns: 1, Duration: 300 * time.Millisecond,
		Progress: &buf, ProgressTTY: true, ProgressInterval: 50 * time.Millisecond})
	p := buf.String()
	if !strings.HasPrefix(p, "\r") || strings.Count(p, "\n") != 1 || !strings.HasSuffix(p, "\n") {
		t.Errorf("want carriage-return updates ending in one newline, got %q", p)
	}
}

func TestMainUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{nil, 2},
		{[]string{"help"}, 0},
		{[]string{"nosuchmode"}, 2},
		{[]string{"throughput", "-h"}, 0},
		{[]string{"throughput", "--size", "12parsecs"}, 2},
		{[]string{"throughput", "--conns", "0"}, 2},
		{[]string{"throughput", "--inflight", "0"}, 2},
		{[]string{"latency", "--rate", "-5"}, 2},
		{[]string{"idle", "--inflight", "3"}, 2}, // not a flag of idle
		{[]string{"throughput", "extra"}, 2},
		{[]string{"fanout", "--tls-ca", "/nonexistent/ca.pem"}, 2},
	} {
		var out, errOut bytes.Buffer
		if code := Main(context.Background(), tc.args, &out, &errOut); code != tc.code {
			t.Errorf("Main(%q) = %d, want %d (stderr %q)", tc.args, code, tc.code, errOut.String())
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int{"64": 64, "0": 0, "1KiB": 1024, "1k": 1024, "4K": 4096, "1KB": 1000,
		"2MiB": 2 << 20, "1MB": 1e6, "10 B": 10} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "KiB", "-1", "1GiB", "1.5K", "99999999999999"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded", in)
		}
	}
}

func TestProcStats(t *testing.T) {
	rss, err := ProcRSS(os.Getpid())
	if err != nil || rss <= 0 {
		t.Fatalf("ProcRSS(self) = %d, %v", rss, err)
	}
	if _, err := ProcCPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	// A command name with spaces and parentheses must not shift the fields.
	dir := t.TempDir()
	old := procRoot
	procRoot = dir
	defer func() { procRoot = old }()
	os.MkdirAll(filepath.Join(dir, "42"), 0o755)
	stat := "42 (my (odd) server) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 1000 100000 500\n"
	os.WriteFile(filepath.Join(dir, "42", "stat"), []byte(stat), 0o644)
	os.WriteFile(filepath.Join(dir, "42", "status"), []byte("Name:\tx\nVmPeak:\t 900 kB\nVmRSS:\t    1234 kB\n"), 0o644)
	if cpu, err := ProcCPU(42); err != nil || cpu != 3250*time.Millisecond {
		t.Errorf("ProcCPU = %v, %v; want 3.25s (325 ticks)", cpu, err)
	}
	if rss, err := ProcRSS(42); err != nil || rss != 1234*1024 {
		t.Errorf("ProcRSS = %d, %v; want %d", rss, err, 1234*1024)
	}
	if _, err := ProcCPU(43); err == nil {
		t.Error("ProcCPU of a missing process succeeded")
	}
}

func TestDialRateSpacesConnections(t *testing.T) {
	s := startServer(t, serverOpts{})
	// 20 connections at 100/s cannot all be open before 190ms: check the
	// pacing through the connections' count, not through timing of the run.
	start := time.Now()
	res := run(t, Config{Mode: ModeIdle, Addr: s.addr(), Conns: 20, DialRate: 100, Hold: time.Millisecond})
	noErrors(t, res)
	if res.Connections != 20 {
		t.Fatalf("%d connections", res.Connections)
	}
	if el := time.Since(start); el < 190*time.Millisecond {
		t.Errorf("20 connections at 100/s opened in %v", el)
	}
}

// TestConnRateServerCloses runs connrate's other close order against a
// real msgnet server: each connection ends with DISCONNECT, and the
// worker waits for the server to close first.
func TestConnRateServerCloses(t *testing.T) {
	srv := msgnet.NewServer("loadgen-test")
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.Send(msg) })
	var byeCount atomic.Int64 // sessions the peer ended with DISCONNECT "bye"
	srv.OnDisconnect(func(s *msgnet.Session, reason error) {
		var de *msgnet.DisconnectError
		if errors.As(reason, &de) && de.Remote && de.Reason == "bye" {
			byeCount.Add(1)
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	res := run(t, Config{Mode: ModeConnRate, Addr: ln.Addr().String(), Conns: 2, Duration: 300 * time.Millisecond, ServerCloses: true})
	noErrors(t, res)
	if res.Connections <= 0 {
		t.Fatal("no connections")
	}
	// Every counted connection ended with the client's DISCONNECT (the
	// probe connection, closed at once, did not).
	// The handler runs once the socket is closed, maybe after the client
	// saw the close: wait for it, within a deadline.
	for deadline := time.Now().Add(5 * time.Second); byeCount.Load() < res.Connections && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if got := byeCount.Load(); got < res.Connections {
		t.Errorf("%d sessions ended by the client's DISCONNECT, fewer than the %d counted", got, res.Connections)
	}
}
