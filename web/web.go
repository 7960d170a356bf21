// Package web serves a live page of a msgnet server: its open sessions, a
// chart of its message rates, and a chat box that opens a session of its own
// over WebSocket with msgnet.js and talks to the server's other sessions
// (TCP clients, groups) with the commands of managed mode.
//
// Everything is embedded (no build step, nothing from other sites):
//
//	GET /                the page (index.html, app.js, app.css)
//	GET /msgnet.js       the JavaScript client (this directory's msgnet.js)
//	GET /ws              WebSocket sessions on srv (transport/ws)
//	GET /api/sessions    the open sessions, as JSON (SessionsJSON)
//	GET /api/stats       the server's totals, as JSON (StatsJSON)
//
// The page refers to everything with relative URLs, so the handler may be
// mounted under a prefix:
//
//	mux.Handle("/live/", http.StripPrefix("/live", web.Handler(srv)))
//
// The chat sends what the server's message handler understands; with
// `msgnet serve`'s managed mode that is JOIN:<group>, LEAVE:<group>,
// GROUP:<group>:<text>, PRIVATE:<id>:<text>, BROADCAST, and anything else is
// echoed. The page shows every session's address and lets its visitors open
// sessions: serve it where only operators can reach it.
package web

import (
	"cmp"
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"slices"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/transport/ws"
)

//go:embed msgnet.js static
var files embed.FS

type config struct {
	wsOpts []ws.Option
}

// Option configures Handler.
type Option func(*config)

// WithWebSocketOptions passes options to the WebSocket handler at /ws,
// e.g. ws.WithOriginPatterns. By default only pages from the same host
// may open sessions, which is what the page itself needs.
func WithWebSocketOptions(opts ...ws.Option) Option {
	return func(c *config) { c.wsOpts = append(c.wsOpts, opts...) }
}

// contentSecurityPolicy lets the page load only its own files and connect
// only to its own origin (fetch and the WebSocket; 'self' covers ws: and
// wss: on the same host).
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"

// Handler returns the page's handler for srv (see the package
// documentation for what it serves).
func Handler(srv *msgnet.Server, opts ...Option) http.Handler {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	static, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embedded tree always has it
	}
	assets := http.FileServerFS(static)

	mux := http.NewServeMux()
	mux.Handle("GET /ws", ws.Handler(srv, cfg.wsOpts...))
	mux.HandleFunc("GET /api/sessions", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, sessionsJSON(srv))
	})
	mux.HandleFunc("GET /api/stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, statsJSON(srv))
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
	return mux
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

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.Write(append(b, '\n'))
}

// SessionsJSON is what GET /api/sessions returns.
type SessionsJSON struct {
	ServerID string        `json:"server_id"`
	Now      time.Time     `json:"now"` // the server's clock, for "connected since"
	Sessions []SessionJSON `json:"sessions"`
}

// SessionJSON describes one open session.
type SessionJSON struct {
	ID           string    `json:"id"`
	ClientID     string    `json:"client_id"`
	Transport    string    `json:"transport"` // "tcp", "tls", "ws", "h2", "h2c"
	Mode         string    `json:"mode"`      // "binary", "text" or "unknown"
	RemoteAddr   string    `json:"remote_addr"`
	RemotePort   int       `json:"remote_port"`
	ConnectedAt  time.Time `json:"connected_at"`
	LastActivity time.Time `json:"last_activity"`
	MsgsIn       uint64    `json:"msgs_in"`
	MsgsOut      uint64    `json:"msgs_out"`
	BytesIn      uint64    `json:"bytes_in"`
	BytesOut     uint64    `json:"bytes_out"`
	Groups       []string  `json:"groups"` // sorted; [] when none
}

// sessionsJSON lists the open sessions, oldest first.
func sessionsJSON(srv *msgnet.Server) SessionsJSON {
	out := SessionsJSON{ServerID: srv.ID(), Now: time.Now(), Sessions: []SessionJSON{}}
	for _, s := range srv.Sessions() {
		in := s.Info()
		groups := slices.Clone(in.Groups)
		if groups == nil {
			groups = []string{}
		}
		slices.Sort(groups)
		out.Sessions = append(out.Sessions, SessionJSON{
			ID: in.ID, ClientID: in.ClientID, Transport: in.Transport, Mode: in.Mode,
			RemoteAddr: in.RemoteAddr, RemotePort: in.RemotePort,
			ConnectedAt: in.ConnectedAt, LastActivity: in.LastActivity,
			MsgsIn: in.MsgsIn, MsgsOut: in.MsgsOut, BytesIn: in.BytesIn, BytesOut: in.BytesOut,
			Groups: groups,
		})
	}
	slices.SortFunc(out.Sessions, func(a, b SessionJSON) int {
		return cmp.Or(a.ConnectedAt.Compare(b.ConnectedAt), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// StatsJSON is what GET /api/stats returns: totals since the server was
// created (of open and ended sessions). The page polls it and charts the
// differences between polls as rates.
type StatsJSON struct {
	ServerID string    `json:"server_id"`
	Now      time.Time `json:"now"`
	Start    time.Time `json:"start"`
	Running  bool      `json:"running"`
	Sessions int       `json:"sessions"` // open now
	Accepted uint64    `json:"accepted"`
	MsgsIn   uint64    `json:"msgs_in"` // messages (frames or text lines) of every kind
	MsgsOut  uint64    `json:"msgs_out"`
	BytesIn  uint64    `json:"bytes_in"`
	BytesOut uint64    `json:"bytes_out"`
}

func statsJSON(srv *msgnet.Server) StatsJSON {
	st := srv.Stats()
	return StatsJSON{
		ServerID: st.ID, Now: time.Now(), Start: st.Start, Running: st.Running,
		Sessions: st.Sessions, Accepted: st.Accepted,
		MsgsIn: st.MsgsIn, MsgsOut: st.MsgsOut, BytesIn: st.BytesIn, BytesOut: st.BytesOut,
	}
}
