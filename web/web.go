// Package web serves a live page of a msgnet server: its open sessions, a
// chart of its message rates and, when asked for with WithChat, a chat box
// that opens a session of its own over WebSocket with msgnet.js and talks
// to the server's other sessions (TCP clients, groups) with the commands
// of managed mode.
//
// Everything is embedded (no build step, nothing from other sites):
//
//	GET /                the page (index.html, app.js, app.css)
//	GET /msgnet.js       the JavaScript client (this directory's msgnet.js)
//	GET /ws              WebSocket sessions on srv (transport/ws); WithChat only, 404 otherwise
//	GET /api/sessions    the open sessions, as JSON (SessionsJSON)
//	GET /api/stats       the server's totals, as JSON (StatsJSON)
//	GET /api/features    what the page may offer, as JSON (FeaturesJSON)
//
// The page refers to everything with relative URLs, so the handler may be
// mounted under a prefix:
//
//	mux.Handle("/live/", http.StripPrefix("/live", web.Handler(srv)))
//
// The chat can also subscribe to a group's stream with acknowledged
// delivery (docs/PROTOCOL.md 6.7) and publish to it: after a reconnect
// it shows what it recovered of what the group got meanwhile, and says
// what was lost to the stream's retention.
//
// The chat sends what the server's message handler understands; with
// `msgnet serve`'s managed mode that is JOIN:<group>, LEAVE:<group>,
// GROUP:<group>:<text>, PRIVATE:<id>:<text>, BROADCAST, and anything else is
// echoed. Its sessions are sessions of srv like any other: srv's
// authentication and encryption (the hello and its challenge) apply to
// them, but a TLS listener's demand for client certificates does not,
// since they arrive on the page's HTTP server. Turn the chat on only where
// that server is as well protected as srv's own listener.
//
// The page shows every session's address: serve it where only operators
// can reach it. The handler answers only requests that name the server as
// their host (localhost, a loopback address, the IP address the request
// came in on, or a name given with WithAllowedHosts); any other Host, or
// an Origin header naming another host, gets 403 and no data (package
// monitor/hostcheck). That keeps web pages elsewhere from reading the
// sessions or opening chat sessions through an operator's browser by DNS
// rebinding.
package web

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/monitor/hostcheck"
	"github.com/msgnet/msgnet/transport/ws"
)

//go:embed msgnet.js static
var files embed.FS

// contentSecurityPolicy lets the page load only its own files and connect
// only to its own origin (fetch and the WebSocket; 'self' covers ws: and
// wss: on the same host).
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"

// Handler returns the page's handler for srv (see the package
// documentation for what it serves). It panics on an allowed host that
// hostcheck.New refuses.
func Handler(srv *msgnet.Server, opts ...Option) http.Handler {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	check, err := hostcheck.New(cfg.hosts...)
	if err != nil {
		panic("web: " + err.Error())
	}
	static, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embedded tree always has it
	}
	assets := http.FileServerFS(static)

	mux := http.NewServeMux()
	if cfg.chat {
		mux.Handle("GET /ws", ws.Handler(srv, cfg.wsOpts...))
	}
	mux.HandleFunc("GET /api/sessions", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, sessionsJSON(srv))
	})
	mux.HandleFunc("GET /api/stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, statsJSON(srv))
	})
	features := FeaturesJSON{Chat: cfg.chat}
	mux.HandleFunc("GET /api/features", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, features)
	})
	mux.HandleFunc("GET /msgnet.js", func(w http.ResponseWriter, r *http.Request) {
		pageHeaders(w)
		http.ServeFileFS(w, r, files, "msgnet.js")
	})
	for _, name := range []string{"/{$}", "/app.js", "/app.css"} {
		mux.HandleFunc("GET "+name, func(w http.ResponseWriter, r *http.Request) {
			pageHeaders(w)
			assets.ServeHTTP(w, r)
		})
	}
	return check.Handler(mux)
}

// pageHeaders: no caching (the files are embedded, without modification
// times, and change with the binary), the content security policy, and no
// content sniffing.
func pageHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}
