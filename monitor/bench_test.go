package monitor_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/monitor"
	"github.com/prometheus/client_golang/prometheus"
)

// scrapeInterval is how often the "metrics=on" runs scrape /metrics:
// 150 times as often as Prometheus's default of 15s, so that the cost of
// scraping, if any, shows.
const scrapeInterval = 100 * time.Millisecond

// withMetrics runs f against an echo server, with the monitor serving and
// scraped every scrapeInterval when on.
func withMetrics(b *testing.B, on bool, f func(srv *msgnet.Server, addr string)) {
	srv := msgnet.NewServer("bench")
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.Send(msg) })
	if err := srv.Start("127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	if on {
		ts := httptest.NewServer(monitor.New(srv))
		defer ts.Close()
		hc := ts.Client()
		defer hc.CloseIdleConnections()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(scrapeInterval)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
				}
				resp, err := hc.Get(ts.URL + "/metrics")
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("/metrics: %s", resp.Status)
					return
				}
			}
		}()
		defer func() { close(stop); wg.Wait() }()
	}
	f(srv, srv.Addr().String())
}

var metricsModes = []struct {
	name string
	on   bool
}{{"metrics=off", false}, {"metrics=on", true}}

// BenchmarkEchoMetrics is the pipelined echo (64 B payloads, 64 frames in
// flight on one raw TCP connection) with the monitor off and on. Run with
// -count and compare with benchstat -col /metrics.
func BenchmarkEchoMetrics(b *testing.B) {
	for _, m := range metricsModes {
		b.Run(m.name, func(b *testing.B) {
			withMetrics(b, m.on, func(_ *msgnet.Server, addr string) { pipelinedEcho(b, addr, 64, 64) })
		})
	}
}

// BenchmarkRoundTripMetrics is one 64 B frame in flight, with the monitor
// off and on.
func BenchmarkRoundTripMetrics(b *testing.B) {
	for _, m := range metricsModes {
		b.Run(m.name, func(b *testing.B) {
			withMetrics(b, m.on, func(_ *msgnet.Server, addr string) {
				nc, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				defer nc.Close()
				one := frame.Append(nil, frame.KindData, 0, make([]byte, 64))
				buf := make([]byte, len(one))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := nc.Write(one); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(nc, buf); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
			})
		})
	}
}

// pipelinedEcho writes frames of size bytes, at most window in flight, and
// reads their echoes on another goroutine.
func pipelinedEcho(b *testing.B, addr string, size, window int) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	one := frame.Append(nil, frame.KindData, 0, make([]byte, size))
	batch := bytes.Repeat(one, window)
	frameLen := len(one)

	echoed := make(chan int, window)
	readErr := make(chan error, 1)
	b.SetBytes(int64(frameLen))
	b.ReportAllocs()
	b.ResetTimer()
	go func() {
		buf := make([]byte, 256<<10)
		want, got := b.N*frameLen, 0
		for got < want {
			n, err := nc.Read(buf)
			if err != nil {
				readErr <- err
				return
			}
			framesBefore := got / frameLen
			got += n
			if k := got/frameLen - framesBefore; k > 0 {
				echoed <- k
			}
		}
		close(echoed)
	}()
	sent, inflight := 0, 0
	for sent < b.N || inflight > 0 {
		if k := min(window-inflight, b.N-sent); k > 0 {
			if _, err := nc.Write(batch[:k*frameLen]); err != nil {
				b.Fatal(err)
			}
			sent += k
			inflight += k
		}
		select {
		case k, ok := <-echoed:
			if !ok {
				inflight = 0
				continue
			}
			inflight -= k
		case err := <-readErr:
			b.Fatal(err)
		}
	}
	b.StopTimer()
}

// BenchmarkCollect is the cost of one scrape of the msgnet collector alone
// with 100 open sessions: what "metrics on" adds, once per scrape, off the
// message path.
func BenchmarkCollect(b *testing.B) {
	withMetrics(b, false, func(srv *msgnet.Server, addr string) {
		var conns []net.Conn
		for i := 0; i < 100; i++ {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			defer nc.Close()
			nc.Write([]byte("hi\n"))
			conns = append(conns, nc)
		}
		buf := make([]byte, 16)
		for _, nc := range conns {
			if _, err := nc.Read(buf); err != nil { // the echo: the session is established
				b.Fatal(err)
			}
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(monitor.NewCollector(srv))
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := reg.Gather(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkScrape is one whole GET /metrics of monitor.New's handler (the
// msgnet, Go runtime and process collectors, text encoding), served
// in-process: the CPU the "metrics=on" runs spend per scrape.
func BenchmarkScrape(b *testing.B) {
	withMetrics(b, false, func(srv *msgnet.Server, addr string) {
		h := monitor.New(srv)
		req := httptest.NewRequest("GET", "/metrics", nil)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				b.Fatal(w.Code)
			}
		}
	})
}
