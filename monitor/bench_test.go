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

// scrapeInterval is how often "metrics on" scrapes /metrics: 150 times as
// often as Prometheus's default of 15s, so that the cost of scraping, if
// any, shows.
const scrapeInterval = 100 * time.Millisecond

// benchServer is an echo server with the monitor's handler served over
// loopback HTTP. The handler costs nothing until scraped; scraping runs
// only between startScraping and the call of the function it returns.
type benchServer struct {
	srv *msgnet.Server
	url string
	hc  *http.Client
}

func newBenchServer(b *testing.B) *benchServer {
	srv := msgnet.NewServer("bench")
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.Send(msg) })
	if err := srv.Start("127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(monitor.New(srv))
	hc := ts.Client()
	b.Cleanup(func() {
		hc.CloseIdleConnections()
		ts.Close()
		srv.Close()
	})
	return &benchServer{srv: srv, url: ts.URL + "/metrics", hc: hc}
}

// startScraping scrapes /metrics every scrapeInterval until the returned
// function is called.
func (bs *benchServer) startScraping(b *testing.B) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(scrapeInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			resp, err := bs.hc.Get(bs.url)
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
	return func() { close(done); wg.Wait() }
}

func (bs *benchServer) dial(b *testing.B) net.Conn {
	nc, err := net.Dial("tcp", bs.srv.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { nc.Close() })
	return nc
}

// echoLoad is one benchmark's traffic on one connection: run sends n
// messages and waits for their echoes.
type echoLoad interface {
	run(b *testing.B, n int)
}

// pipelined sends 64 B frames with up to window in flight, reading the
// echoes on another goroutine.
type pipelined struct {
	nc       net.Conn
	batch    []byte
	frameLen int
	window   int
}

func newPipelined(nc net.Conn, size, window int) *pipelined {
	one := frame.Append(nil, frame.KindData, 0, make([]byte, size))
	return &pipelined{nc: nc, batch: bytes.Repeat(one, window), frameLen: len(one), window: window}
}

func (p *pipelined) run(b *testing.B, n int) {
	echoed := make(chan int, p.window)
	readErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 256<<10)
		want, got := n*p.frameLen, 0
		for got < want {
			k, err := p.nc.Read(buf)
			if err != nil {
				readErr <- err
				return
			}
			framesBefore := got / p.frameLen
			got += k
			if d := got/p.frameLen - framesBefore; d > 0 {
				echoed <- d
			}
		}
		close(echoed)
	}()
	// A server that stops echoing fails the benchmark after a while
	// instead of hanging it; checked once a second, off the message path.
	stall := time.NewTicker(time.Second)
	defer stall.Stop()
	quiet := 0 // ticks without an echo
	sent, inflight := 0, 0
	for sent < n || inflight > 0 {
		if k := min(p.window-inflight, n-sent); k > 0 {
			if _, err := p.nc.Write(p.batch[:k*p.frameLen]); err != nil {
				b.Fatal(err)
			}
			sent += k
			inflight += k
		}
		select {
		case d, ok := <-echoed:
			quiet = 0
			if !ok {
				inflight = 0
				continue
			}
			inflight -= d
		case err := <-readErr:
			b.Fatal(err)
		case <-stall.C:
			if quiet++; quiet >= stallSeconds {
				b.Fatalf("no echo for %ds: %d of %d frames sent, %d in flight", stallSeconds, sent, n, inflight)
			}
		}
	}
}

// stallSeconds is how long pipelined waits for an echo.
const stallSeconds = 10

// roundTrip sends one 64 B frame at a time and waits for its echo.
type roundTrip struct {
	nc       net.Conn
	one, buf []byte
}

func newRoundTrip(nc net.Conn) *roundTrip {
	one := frame.Append(nil, frame.KindData, 0, make([]byte, 64))
	return &roundTrip{nc: nc, one: one, buf: make([]byte, len(one))}
}

func (r *roundTrip) run(b *testing.B, n int) {
	for i := 0; i < n; i++ {
		if _, err := r.nc.Write(r.one); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(r.nc, r.buf); err != nil {
			b.Fatal(err)
		}
	}
}

func newEchoLoad(b *testing.B, bs *benchServer, kind string) echoLoad {
	nc := bs.dial(b)
	if kind == "pipelined" {
		return newPipelined(nc, 64, 64)
	}
	return newRoundTrip(nc)
}

// BenchmarkEchoMetrics is the echo with the monitor off and on, as two
// sub-benchmarks, for `benchstat -col /metrics`: pipelined (64 B frames,
// 64 in flight on one raw TCP connection) and round trip (one in flight).
// "on" scrapes /metrics every 100 ms. The B/op of "on" counts the
// scraper's allocations, spread over the messages; the message path
// allocates nothing either way.
func BenchmarkEchoMetrics(b *testing.B) {
	for _, kind := range []string{"pipelined", "roundtrip"} {
		for _, on := range []bool{false, true} {
			b.Run(kind+"/metrics="+map[bool]string{false: "off", true: "on"}[on], func(b *testing.B) {
				bs := newBenchServer(b)
				load := newEchoLoad(b, bs, kind)
				if kind == "pipelined" {
					b.SetBytes(int64(frame.HeaderLen + 64))
				}
				if on {
					defer bs.startScraping(b)()
				}
				b.ReportAllocs()
				b.ResetTimer()
				load.run(b, b.N)
				b.StopTimer()
			})
		}
	}
}

// BenchmarkEchoMetricsPaired measures off and on back to back on the same
// server and connection, in the order off, on, on, off (b.N/2 messages
// each), and reports each side's ns/op and their ratio (on/off). Go runs
// the -count repetitions of a sub-benchmark one after another, so the two
// sub-benchmarks of BenchmarkEchoMetrics are measured a minute or more
// apart; on a shared machine whose load changes from minute to minute,
// halves measured within seconds of each other, in an order that cancels
// a steady drift, compare better.
func BenchmarkEchoMetricsPaired(b *testing.B) {
	for _, kind := range []string{"pipelined", "roundtrip"} {
		b.Run(kind, func(b *testing.B) {
			bs := newBenchServer(b)
			load := newEchoLoad(b, bs, kind)
			load.run(b, 1000) // warm up the connection
			measure := func(scrape bool, n int) time.Duration {
				if scrape {
					defer bs.startScraping(b)()
				}
				start := time.Now()
				load.run(b, n)
				return time.Since(start)
			}
			n1 := b.N / 2
			n2 := b.N - n1
			b.ResetTimer()
			off := measure(false, n1)
			on := measure(true, n1)
			on += measure(true, n2)
			off += measure(false, n2)
			b.StopTimer()
			b.ReportMetric(float64(off.Nanoseconds())/float64(b.N), "off-ns/op")
			b.ReportMetric(float64(on.Nanoseconds())/float64(b.N), "on-ns/op")
			b.ReportMetric(float64(on)/float64(off), "on/off")
		})
	}
}

// BenchmarkCollect is the cost of one scrape of the msgnet collector alone
// with 100 open sessions: what "metrics on" adds, once per scrape, off the
// message path.
func BenchmarkCollect(b *testing.B) {
	bs := newBenchServer(b)
	var conns []net.Conn
	for i := 0; i < 100; i++ {
		nc := bs.dial(b)
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
	reg.MustRegister(monitor.NewCollector(bs.srv))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkScrape is one whole GET /metrics of monitor.New's handler (the
// msgnet, Go runtime and process collectors, text encoding, gzip as
// Prometheus asks for it), served in-process: the CPU a scrape costs.
func BenchmarkScrape(b *testing.B) {
	bs := newBenchServer(b)
	h := monitor.New(bs.srv)
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatal(w.Code)
		}
	}
}
