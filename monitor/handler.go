package monitor

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/monitor/hostcheck"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// config holds what the options set.
type config struct {
	pprof      bool
	pages      []page
	collectors []prometheus.Collector
	hosts      []string
}

type page struct {
	pattern string
	h       http.Handler
}

// Option configures the handler New returns.
type Option func(*config)

// WithPprof serves the runtime profiles under /debug/pprof/ when on is
// true (default false). Profiles show the program's internals and a CPU
// profile or trace costs CPU while it runs: serve them only on an address
// that only operators can reach.
func WithPprof(on bool) Option { return func(c *config) { c.pprof = on } }

// WithPage serves h at pattern, an http.ServeMux pattern such as "/" or
// "GET /live". It is the place for a web page of the server's state: a page
// at "/" replaces the plain-text index of the endpoints that New serves
// there otherwise. The pattern must not collide with the built-in
// endpoints; a collision panics in New, as it does in ServeMux.Handle.
func WithPage(pattern string, h http.Handler) Option {
	return func(c *config) { c.pages = append(c.pages, page{pattern, h}) }
}

// WithCollectors adds collectors to the registry that /metrics serves, for
// example a cluster bus's own metrics. Registering a collector whose
// metrics clash with the ones already there panics in New.
func WithCollectors(cs ...prometheus.Collector) Option {
	return func(c *config) { c.collectors = append(c.collectors, cs...) }
}

// WithAllowedHosts adds hosts the handler answers to (see package
// hostcheck for the forms): a name clients use for the monitor's address,
// such as a DNS name Prometheus scrapes or a reverse proxy's. Without it
// only localhost, loopback addresses and the IP address a request came in
// on are answered; a request naming another host in its Host or Origin
// header gets 403 and no data, which is what stops DNS rebinding. An entry
// hostcheck.New refuses (one with a port, a URL) makes New panic.
func WithAllowedHosts(hosts ...string) Option {
	return func(c *config) { c.hosts = append(c.hosts, hosts...) }
}

// New returns an http.Handler serving the monitoring endpoints of srv:
//
//	/metrics        Prometheus metrics: NewCollector(srv), the Go runtime's and the process's
//	/varz           the server's state and counters, as JSON (Varz)
//	/connz          the open sessions, as JSON (Connz), with paging and sorting
//	/healthz        200 "ok" while the server is serving, 503 otherwise
//	/debug/pprof/   runtime profiles, only with WithPprof(true)
//	/               a plain-text index of the above, unless WithPage puts a page there
//
// Every request but GET /healthz must name an allowed host (see
// WithAllowedHosts), pages included: /varz, /connz and the profiles show
// sessions' addresses and the program's internals, and /metrics the
// server's traffic. /healthz tells no more than whether the server serves,
// which anyone who can connect learns anyway, and the load balancers and
// orchestrators that ask often send a Host of their own.
//
// Each call makes a registry of its own, so several handlers (for several
// servers) do not clash.
func New(srv *msgnet.Server, opts ...Option) http.Handler {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	check, err := hostcheck.New(cfg.hosts...)
	if err != nil {
		panic("monitor: " + err.Error())
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		NewCollector(srv),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	reg.MustRegister(cfg.collectors...)

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /varz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, varz(srv))
	})
	mux.HandleFunc("GET /connz", func(w http.ResponseWriter, r *http.Request) {
		q, err := parseConnzQuery(r.URL.Query())
		if err != nil {
			writeJSON(w, http.StatusBadRequest, struct {
				Error string `json:"error"`
			}{err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, connz(srv, q))
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if !srv.IsRunning() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not serving")
			return
		}
		fmt.Fprintln(w, "ok")
	})
	if cfg.pprof {
		registerPprof(mux)
	}
	rootTaken := false
	for _, p := range cfg.pages {
		mux.Handle(p.pattern, p.h)
		if path := patternPath(p.pattern); path == "/" || path == "/{$}" {
			rootTaken = true
		}
	}
	if !rootTaken {
		index := indexText(cfg.pprof)
		mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprint(w, index)
		})
	}
	guarded := check.Handler(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			mux.ServeHTTP(w, r)
			return
		}
		guarded.ServeHTTP(w, r)
	})
}

// patternPath is the path of a ServeMux pattern "[METHOD ][HOST]/PATH".
func patternPath(pattern string) string {
	if i := strings.IndexAny(pattern, " \t"); i >= 0 {
		pattern = strings.TrimLeft(pattern[i:], " \t")
	}
	if i := strings.IndexByte(pattern, '/'); i > 0 {
		pattern = pattern[i:]
	}
	return pattern
}

func indexText(pprof bool) string {
	s := "msgnet monitor\n\n" +
		"/metrics   Prometheus metrics\n" +
		"/varz      server state and counters (JSON)\n" +
		"/connz     open sessions (JSON): ?offset=0&limit=1024&sort=id|msgs|bytes|last|since|queue&order=asc|desc\n" +
		"/healthz   ok while serving\n"
	if pprof {
		s += "/debug/pprof/   runtime profiles\n"
	}
	return s
}

// writeJSON writes v indented, for people as much as for programs.
func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
