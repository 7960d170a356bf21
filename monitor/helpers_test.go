package monitor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/monitor"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startServer serves on a loopback port until the test ends.
func startServer(t testing.TB, opts ...msgnet.Option) *msgnet.Server {
	t.Helper()
	srv := msgnet.NewServer("mon_test", opts...)
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return srv
}

// echoServer answers every message with itself.
func echoServer(t testing.TB, opts ...msgnet.Option) *msgnet.Server {
	srv := startServer(t, opts...)
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.Send(msg) })
	return srv
}

// serveMonitor serves the monitor handler of srv over loopback HTTP until
// the test ends, and returns its base URL and an HTTP client for it.
func serveMonitor(t testing.TB, srv *msgnet.Server, opts ...monitor.Option) (string, *http.Client) {
	t.Helper()
	ts := httptest.NewServer(monitor.New(srv, opts...))
	hc := ts.Client()
	t.Cleanup(func() {
		hc.CloseIdleConnections()
		ts.Close()
	})
	return ts.URL, hc
}

// connect returns a client of srv that counts what it receives on got.
func connect(t testing.TB, srv *msgnet.Server, id string, opts ...msgnet.Option) (*msgnet.Client, chan []byte) {
	t.Helper()
	got := make(chan []byte, 4096)
	c := msgnet.NewClient(id, opts...)
	c.OnMessage(func(msg []byte) { got <- append([]byte(nil), msg...) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Connect(ctx, srv.Addr().String()); err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	t.Cleanup(func() { c.Close() })
	return c, got
}

// receive waits for n messages on got.
func receive(t testing.TB, got chan []byte, n int) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case <-got:
		case <-timeout:
			t.Fatalf("received %d of %d messages", i, n)
		}
	}
}

// get fetches url and returns the status and body.
func get(t testing.TB, hc *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// getJSON fetches url, expects 200 and decodes the body into v.
func getJSON(t testing.TB, hc *http.Client, url string, v any) {
	t.Helper()
	code, body := get(t, hc, url)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v\n%s", url, err, body)
	}
}

// metrics is one scrape: the value of every sample, by series.
type metrics map[string]float64

// scrape fetches /metrics and parses the text exposition.
func scrape(t testing.TB, hc *http.Client, base string) metrics {
	t.Helper()
	m, err := scrapeErr(hc, base)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// scrapeErr is scrape for goroutines other than the test's, which must not
// call t.Fatal.
func scrapeErr(hc *http.Client, base string) (metrics, error) {
	resp, err := hc.Get(base + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("GET /metrics: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET /metrics: reading: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %d %s", resp.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		return nil, fmt.Errorf("parsing /metrics: %v\n%s", err, b)
	}
	return flatten(mfs), nil
}

// flatten names each sample as the text format does:
// name{label="value",...}, labels sorted; histograms as _bucket{le=...},
// _count and _sum.
func flatten(mfs map[string]*dto.MetricFamily) metrics {
	out := metrics{}
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := func(suffix string, extra ...string) string {
				ls := append(append([]string(nil), labels...), extra...)
				sort.Strings(ls)
				if len(ls) == 0 {
					return name + suffix
				}
				return name + suffix + "{" + strings.Join(ls, ",") + "}"
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[key("")] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key("")] = m.GetGauge().GetValue()
			case dto.MetricType_UNTYPED:
				out[key("")] = m.GetUntyped().GetValue()
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				out[key("_count")] = float64(h.GetSampleCount())
				out[key("_sum")] = h.GetSampleSum()
				for _, b := range h.GetBucket() {
					out[key("_bucket", fmt.Sprintf("le=%q", fmt.Sprint(b.GetUpperBound())))] = float64(b.GetCumulativeCount())
				}
			}
		}
	}
	return out
}

// delta is after[k] - before[k] for each k in want, checked exactly.
func checkDeltas(t testing.TB, before, after metrics, want map[string]float64) {
	t.Helper()
	for k, w := range want {
		a, ok := after[k]
		if !ok {
			t.Errorf("%s: missing from /metrics", k)
			continue
		}
		if d := a - before[k]; d != w {
			t.Errorf("%s rose by %v, want %v (before %v, after %v)", k, d, w, before[k], a)
		}
	}
}

// waitFor polls cond until it holds or 10s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
