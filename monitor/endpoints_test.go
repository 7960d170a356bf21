package monitor_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/monitor"
	"github.com/prometheus/client_golang/prometheus"
)

// sessionIDs are the ids of srv's open sessions, sorted.
func sessionIDs(srv *msgnet.Server) []string {
	var ids []string
	for _, s := range srv.Sessions() {
		ids = append(ids, s.ID())
	}
	sort.Strings(ids)
	return ids
}

func connIDs(cz monitor.Connz) []string {
	var ids []string
	for _, c := range cz.Sessions {
		ids = append(ids, c.ID)
	}
	return ids
}

// /connz lists exactly the open sessions, pages through them in a stable
// order, sorts by each key, and forgets a session once it has ended.
func TestConnz(t *testing.T) {
	srv := echoServer(t)
	base, hc := serveMonitor(t, srv)

	var cz monitor.Connz
	getJSON(t, hc, base+"/connz", &cz)
	if cz.Total != 0 || cz.Count != 0 || cz.Sessions == nil {
		t.Fatalf("no sessions yet: total %d, count %d, sessions %v", cz.Total, cz.Count, cz.Sessions)
	}

	// Twelve clients; client i sends i messages of 100 bytes, so ordering
	// by traffic is known.
	const n = 12
	clients := make([]*msgnet.Client, n)
	for i := range clients {
		c, got := connect(t, srv, fmt.Sprintf("client-%02d", i))
		clients[i] = c
		for j := 0; j < i; j++ {
			c.Send(bytes.Repeat([]byte("z"), 100))
		}
		receive(t, got, i)
	}
	s5, _ := srv.SessionByClientID("client-05")
	if err := srv.Join(s5, "lobby"); err != nil {
		t.Fatal(err)
	}

	getJSON(t, hc, base+"/connz", &cz)
	ids := connIDs(cz)
	sortedIDs := slices.Clone(ids)
	sort.Strings(sortedIDs)
	if want := sessionIDs(srv); !slices.Equal(sortedIDs, want) {
		t.Fatalf("/connz lists %v, the server has %v", ids, want)
	}
	if cz.Total != n || cz.Count != n || cz.Sort != "id" || cz.Order != "asc" || cz.Limit != monitor.DefaultConnzLimit {
		t.Fatalf("/connz header: total %d count %d sort %q order %q limit %d", cz.Total, cz.Count, cz.Sort, cz.Order, cz.Limit)
	}
	// Sorted by id, numerically: the sessions were opened in client order.
	for i, c := range cz.Sessions {
		if want := fmt.Sprintf("client-%02d", i); c.ClientID != want {
			t.Fatalf("by id, position %d is %s, want %s", i, c.ClientID, want)
		}
		info, ok := srv.Session(c.ID)
		if !ok {
			t.Fatalf("session %s not found", c.ID)
		}
		in := info.Info()
		if c.RemoteAddr != "127.0.0.1" || c.RemotePort != in.RemotePort || c.RemotePort == 0 ||
			c.Transport != "tcp" || c.Mode != "binary" || !c.ConnectedAt.Equal(in.ConnectedAt) {
			t.Errorf("session %s: %+v; Info says %+v", c.ID, c, in)
		}
		if c.MsgsIn != uint64(i)+1 { // the hello, then i messages
			t.Errorf("%s: msgs_in %d, want %d", c.ClientID, c.MsgsIn, i+1)
		}
		wantGroups := []string{}
		if i == 5 {
			wantGroups = []string{"lobby"}
		}
		if !slices.Equal(c.Groups, wantGroups) {
			t.Errorf("%s: groups %v, want %v", c.ClientID, c.Groups, wantGroups)
		}
	}

	// Paging: pages of 5 cover the list once, in order.
	var paged []string
	for off := 0; off < n+5; off += 5 {
		var page monitor.Connz
		getJSON(t, hc, fmt.Sprintf("%s/connz?offset=%d&limit=5", base, off), &page)
		if page.Offset != off || page.Limit != 5 || page.Total != n || page.Count != len(page.Sessions) {
			t.Fatalf("page at %d: %+v", off, page)
		}
		wantCount := max(min(5, n-off), 0)
		if page.Count != wantCount {
			t.Fatalf("page at %d has %d sessions, want %d", off, page.Count, wantCount)
		}
		paged = append(paged, connIDs(page)...)
	}
	if !slices.Equal(paged, ids) {
		t.Fatalf("pages %v, whole list %v", paged, ids)
	}

	// Sorting: by bytes and msgs, the busiest first by default; asc on
	// request.
	order := func(query string) []string {
		var page monitor.Connz
		getJSON(t, hc, base+"/connz?"+query, &page)
		var cids []string
		for _, c := range page.Sessions {
			cids = append(cids, c.ClientID)
		}
		return cids
	}
	var busiest, quietest []string
	for i := n - 1; i >= 0; i-- {
		busiest = append(busiest, fmt.Sprintf("client-%02d", i))
	}
	quietest = slices.Clone(busiest)
	slices.Reverse(quietest)
	for _, q := range []string{"sort=bytes", "sort=msgs", "sort=bytes&order=desc"} {
		if got := order(q); !slices.Equal(got, busiest) {
			t.Errorf("%s: %v, want %v", q, got, busiest)
		}
	}
	for _, q := range []string{"sort=bytes&order=asc", "sort=msgs&order=asc", "sort=since", "sort=id", "sort=connected_at&order=asc"} {
		if got := order(q); !slices.Equal(got, quietest) {
			t.Errorf("%s: %v, want %v", q, got, quietest)
		}
	}
	if got := order("sort=since&order=desc"); !slices.Equal(got, busiest) {
		t.Errorf("sort=since&order=desc: %v, want %v", got, busiest)
	}
	// Last activity: client-03 sends once more and becomes the most recent.
	time.Sleep(2 * time.Millisecond) // clock granularity: the new activity must be later than every other
	s3, _ := srv.SessionByClientID("client-03")
	before := s3.LastActivity()
	clients[3].SendString("again")
	waitFor(t, "client-03's activity", func() bool { return s3.LastActivity().After(before) })
	if got := order("sort=last"); got[0] != "client-03" {
		t.Errorf("sort=last: %v, want client-03 first", got)
	}
	if got := order("sort=last&order=asc"); got[n-1] != "client-03" {
		t.Errorf("sort=last&order=asc: %v, want client-03 last", got)
	}
	// Queue: every queue is empty, so the order falls back to id.
	if got := order("sort=queue&order=asc"); !slices.Equal(got, quietest) {
		t.Errorf("sort=queue&order=asc: %v, want %v", got, quietest)
	}

	// A disconnected session disappears.
	gone := clients[7].SessionID()
	clients[7].Close()
	waitFor(t, "client-07's session to end", func() bool { return srv.ConnectionCount() == n-1 })
	getJSON(t, hc, base+"/connz", &cz)
	if cz.Total != n-1 || slices.Contains(connIDs(cz), gone) {
		t.Fatalf("after client-07 left: total %d, ids %v (gone: %s)", cz.Total, connIDs(cz), gone)
	}
	sortedIDs = connIDs(cz)
	sort.Strings(sortedIDs)
	if want := sessionIDs(srv); !slices.Equal(sortedIDs, want) {
		t.Fatalf("/connz lists %v, the server has %v", sortedIDs, want)
	}

	// Bad queries are refused with a reason.
	for _, q := range []string{"offset=-1", "limit=0", "limit=x", "sort=colour", "order=up"} {
		code, body := get(t, hc, base+"/connz?"+q)
		if code != http.StatusBadRequest || !strings.Contains(body, `"error"`) {
			t.Errorf("/connz?%s: %d %s, want 400 with an error", q, code, body)
		}
	}
}

// A session's queue depth shows in /connz and sorts it first by queue.
func TestConnzQueue(t *testing.T) {
	srv := startServer(t, msgnet.WithSendQueueBytes(1<<20))
	base, hc := serveMonitor(t, srv)
	connect(t, srv, "reader")
	blocked := rawPeer(t, srv)
	var cz monitor.Connz
	fillQueue(t, blocked, func() bool {
		getJSON(t, hc, base+"/connz?sort=queue", &cz)
		return len(cz.Sessions) == 2 && cz.Sessions[0].QueueBytes > 0
	})
	if cz.Sessions[0].ID != blocked.ID() || cz.Sessions[1].QueueBytes != 0 {
		t.Fatalf("sort=queue: %+v, want %s first with bytes queued", cz.Sessions, blocked.ID())
	}
}

// /varz reports the server's identity and the counters of Stats.
func TestVarz(t *testing.T) {
	srv := echoServer(t)
	base, hc := serveMonitor(t, srv)
	c, got := connect(t, srv, "v")
	for i := 0; i < 10; i++ {
		c.SendString("hello")
	}
	receive(t, got, 10)
	waitFor(t, "the echoes to be counted", func() bool { return srv.Stats().FramesOut["DATA"] == 10 })

	var v monitor.Varz
	getJSON(t, hc, base+"/varz", &v)
	st := srv.Stats()
	if v.ServerID != "mon_test" || v.Addr != srv.Addr().String() || !v.Running || !v.Start.Equal(st.Start) {
		t.Errorf("identity: %+v", v)
	}
	if v.Sessions != 1 || v.Accepted != 1 || v.FramesIn["DATA"] != 10 || v.FramesOut["DATA"] != 10 ||
		v.MsgsIn != st.MsgsIn || v.BytesIn != st.BytesIn || v.MsgsOut != st.MsgsOut {
		t.Errorf("counters: %+v; Stats: %+v", v, st)
	}
	if v.UptimeSeconds <= 0 || v.Now.Before(v.Start) || v.Runtime.Goroutines == 0 || v.Runtime.GoVersion == "" || v.Runtime.MemoryBytes == 0 {
		t.Errorf("runtime: uptime %v, now %v, %+v", v.UptimeSeconds, v.Now, v.Runtime)
	}
	if v.Cluster != nil {
		t.Errorf("cluster without a bus: %+v", v.Cluster)
	}
}

// The latency summary of /varz gives bucket bounds as quantiles.
func TestVarzLatency(t *testing.T) {
	srv := startServer(t)
	srv.OnMessage(func(s *msgnet.Session, msg []byte) {
		time.Sleep(2 * time.Millisecond)
		s.Send(msg)
	})
	base, hc := serveMonitor(t, srv)
	c, got := connect(t, srv, "lat")
	for i := 0; i < 130; i++ {
		c.SendString("m")
	}
	receive(t, got, 130)
	var v monitor.Varz
	getJSON(t, hc, base+"/varz", &v)
	l := v.HandlerLatency
	if l.Count < 2 || l.MeanSeconds < 0.002 {
		t.Fatalf("latency %+v: want >= 2 calls of >= 2ms", l)
	}
	// 2ms lies in the bucket (2^20ns, 2^21ns]; a loaded machine may be slower.
	for _, q := range []float64{l.P50Seconds, l.P90Seconds, l.P99Seconds} {
		if q < 0.002097152 {
			t.Errorf("quantile %v below the 2ms the handler sleeps: %+v", q, l)
		}
	}
	if !(l.P50Seconds <= l.P90Seconds && l.P90Seconds <= l.P99Seconds) {
		t.Errorf("quantiles out of order: %+v", l)
	}
}

// /healthz answers ok while the server serves and 503 once it stopped.
func TestHealthz(t *testing.T) {
	srv := msgnet.NewServer("h")
	base, hc := serveMonitor(t, srv)
	if code, _ := get(t, hc, base+"/healthz"); code != http.StatusServiceUnavailable {
		t.Errorf("before Start: %d, want 503", code)
	}
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, hc, base+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("serving: %d %q", code, body)
	}
	srv.Close()
	if code, _ := get(t, hc, base+"/healthz"); code != http.StatusServiceUnavailable {
		t.Errorf("after Close: %d, want 503", code)
	}
	if m := scrape(t, hc, base); m["msgnet_server_running"] != 0 {
		t.Errorf("msgnet_server_running = %v after Close", m["msgnet_server_running"])
	}
}

// Profiles are served only with WithPprof(true).
func TestPprof(t *testing.T) {
	srv := startServer(t)
	off, hcOff := serveMonitor(t, srv)
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/profile?seconds=0.1"} {
		if code, _ := get(t, hcOff, off+p); code != http.StatusNotFound {
			t.Errorf("without pprof, %s: %d, want 404", p, code)
		}
	}
	if _, body := get(t, hcOff, off+"/"); strings.Contains(body, "pprof") {
		t.Errorf("the index mentions pprof when it is off:\n%s", body)
	}

	on, hc := serveMonitor(t, srv, monitor.WithPprof(true))
	code, body := get(t, hc, on+"/debug/pprof/")
	if code != http.StatusOK || !strings.Contains(body, "goroutine") || !strings.Contains(body, "heap") {
		t.Fatalf("index: %d\n%s", code, body)
	}
	// The binary formats are gzipped protocol buffers.
	for _, p := range []string{"/debug/pprof/heap", "/debug/pprof/goroutine", "/debug/pprof/allocs?gc=1", "/debug/pprof/profile?seconds=0.2"} {
		code, body := get(t, hc, on+p)
		if code != http.StatusOK {
			t.Errorf("%s: %d %s", p, code, body)
			continue
		}
		zr, err := gzip.NewReader(strings.NewReader(body))
		if err != nil {
			t.Errorf("%s: not gzip: %v", p, err)
			continue
		}
		if n, err := io.Copy(io.Discard, zr); err != nil || n == 0 {
			t.Errorf("%s: %d bytes, %v", p, n, err)
		}
	}
	if code, body := get(t, hc, on+"/debug/pprof/goroutine?debug=1"); code != http.StatusOK || !strings.Contains(body, "goroutine profile:") {
		t.Errorf("goroutine?debug=1: %d\n%.200s", code, body)
	}
	if code, body := get(t, hc, on+"/debug/pprof/trace?seconds=0.1"); code != http.StatusOK || !strings.HasPrefix(body, "go 1.") {
		t.Errorf("trace: %d %.20q", code, body)
	}
	if code, body := get(t, hc, on+"/debug/pprof/cmdline"); code != http.StatusOK || body == "" {
		t.Errorf("cmdline: %d %q", code, body)
	}
	for p, want := range map[string]int{
		"/debug/pprof/nosuch":            http.StatusNotFound,
		"/debug/pprof/heap?debug=x":      http.StatusBadRequest,
		"/debug/pprof/heap?seconds=5":    http.StatusBadRequest,
		"/debug/pprof/profile?seconds=0": http.StatusBadRequest,
	} {
		if code, _ := get(t, hc, on+p); code != want {
			t.Errorf("%s: %d, want %d", p, code, want)
		}
	}
}

// WithPage serves a page at "/" in place of the index; the endpoints stay.
func TestWithPage(t *testing.T) {
	srv := startServer(t)
	plain, hc := serveMonitor(t, srv)
	if code, body := get(t, hc, plain+"/"); code != http.StatusOK || !strings.Contains(body, "/connz") {
		t.Errorf("index: %d\n%s", code, body)
	}
	if code, _ := get(t, hc, plain+"/nothing"); code != http.StatusNotFound {
		t.Errorf("/nothing: %d, want 404", code)
	}

	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "live page") })
	live := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "live feed") })
	base, hc2 := serveMonitor(t, srv, monitor.WithPage("/", page), monitor.WithPage("GET /live", live))
	for p, want := range map[string]string{"/": "live page", "/live": "live feed"} {
		if code, body := get(t, hc2, base+p); code != http.StatusOK || body != want {
			t.Errorf("%s: %d %q, want %q", p, code, body, want)
		}
	}
	if code, body := get(t, hc2, base+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz beside a page: %d %q", code, body)
	}
	if m := scrape(t, hc2, base); m["msgnet_server_running"] != 1 {
		t.Errorf("/metrics beside a page: running = %v", m["msgnet_server_running"])
	}
}

// /metrics also carries the Go runtime's and the process's metrics, and
// collectors added with WithCollectors.
func TestMetricsRegistry(t *testing.T) {
	srv := startServer(t)
	extra := prometheus.NewCounter(prometheus.CounterOpts{Name: "msgnet_test_extra_total", Help: "A test counter."})
	base, hc := serveMonitor(t, srv, monitor.WithCollectors(extra))
	m := scrape(t, hc, base)
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total", "msgnet_test_extra_total", "msgnet_sessions_open"} {
		if _, ok := m[name]; !ok {
			t.Errorf("%s missing from /metrics", name)
		}
	}
}
