package web

import (
	"cmp"
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/msgnet/msgnet"
)

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

// FeaturesJSON is what GET /api/features returns: what the page may
// offer, so that it shows only what the handler serves.
type FeaturesJSON struct {
	Chat bool `json:"chat"` // WithChat: /ws is served
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
