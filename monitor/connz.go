package monitor

import (
	"cmp"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/msgnet/msgnet"
)

// Connz is the JSON document /connz serves: one page of the open sessions.
type Connz struct {
	ServerID string    `json:"server_id"`
	Now      time.Time `json:"now"`
	Total    int       `json:"total"`  // sessions open when the page was made
	Offset   int       `json:"offset"` // sessions skipped before this page
	Limit    int       `json:"limit"`  // most sessions in a page
	Count    int       `json:"count"`  // sessions in this page
	Sort     string    `json:"sort"`
	Order    string    `json:"order"`
	Sessions []Conn    `json:"sessions"`
}

// Conn describes one session in /connz (see msgnet.SessionInfo).
type Conn struct {
	ID           string    `json:"id"`
	ClientID     string    `json:"client_id"`
	RemoteAddr   string    `json:"remote_addr"`
	RemotePort   int       `json:"remote_port"`
	Transport    string    `json:"transport"`
	Mode         string    `json:"mode"`
	ConnectedAt  time.Time `json:"connected_at"`
	LastActivity time.Time `json:"last_activity"`
	// IdleSeconds is the time since LastActivity, at Connz.Now.
	IdleSeconds float64  `json:"idle_seconds"`
	MsgsIn      uint64   `json:"msgs_in"`
	MsgsOut     uint64   `json:"msgs_out"`
	BytesIn     uint64   `json:"bytes_in"`
	BytesOut    uint64   `json:"bytes_out"`
	QueueBytes  int      `json:"queue_bytes"`
	Groups      []string `json:"groups"`
	Parked      bool     `json:"parked"`
}

// DefaultConnzLimit is the page size of /connz when the query gives none.
const DefaultConnzLimit = 1024

// connzQuery is what /connz was asked for.
type connzQuery struct {
	offset, limit int
	sort          string // one of the keys of connzSorts
	desc          bool
}

// connzSort orders sessions by one key; desc says whether the key is
// listed from the largest down unless the query says otherwise.
type connzSort struct {
	cmp  func(a, b *Conn) int
	desc bool
}

// connzSorts are the sort keys of /connz. Ties are broken by session id,
// so pages of one ordering do not overlap.
var connzSorts = map[string]connzSort{
	"id":    {cmp: func(a, b *Conn) int { return 0 }},
	"msgs":  {cmp: func(a, b *Conn) int { return cmp.Compare(a.MsgsIn+a.MsgsOut, b.MsgsIn+b.MsgsOut) }, desc: true},
	"bytes": {cmp: func(a, b *Conn) int { return cmp.Compare(a.BytesIn+a.BytesOut, b.BytesIn+b.BytesOut) }, desc: true},
	"last":  {cmp: func(a, b *Conn) int { return a.LastActivity.Compare(b.LastActivity) }, desc: true},
	"since": {cmp: func(a, b *Conn) int { return a.ConnectedAt.Compare(b.ConnectedAt) }},
	"queue": {cmp: func(a, b *Conn) int { return cmp.Compare(a.QueueBytes, b.QueueBytes) }, desc: true},
}

// connzAliases are other names accepted for the sort keys.
var connzAliases = map[string]string{
	"last_activity": "last", "connected_at": "since", "connected": "since",
	"queue_bytes": "queue", "session": "id",
}

// parseConnzQuery reads offset, limit, sort and order.
func parseConnzQuery(v url.Values) (connzQuery, error) {
	q := connzQuery{limit: DefaultConnzLimit, sort: "id"}
	var err error
	if s := v.Get("offset"); s != "" {
		if q.offset, err = strconv.Atoi(s); err != nil || q.offset < 0 {
			return q, fmt.Errorf("offset %q: want a whole number >= 0", s)
		}
	}
	if s := v.Get("limit"); s != "" {
		if q.limit, err = strconv.Atoi(s); err != nil || q.limit < 1 {
			return q, fmt.Errorf("limit %q: want a whole number >= 1", s)
		}
	}
	if s := strings.ToLower(v.Get("sort")); s != "" {
		if a, ok := connzAliases[s]; ok {
			s = a
		}
		if _, ok := connzSorts[s]; !ok {
			return q, fmt.Errorf("sort %q: want id, msgs, bytes, last, since or queue", v.Get("sort"))
		}
		q.sort = s
	}
	q.desc = connzSorts[q.sort].desc
	switch s := strings.ToLower(v.Get("order")); s {
	case "":
	case "asc":
		q.desc = false
	case "desc":
		q.desc = true
	default:
		return q, fmt.Errorf("order %q: want asc or desc", v.Get("order"))
	}
	return q, nil
}

// connz builds one page of /connz.
func connz(srv *msgnet.Server, q connzQuery) Connz {
	now := time.Now()
	sessions := srv.Sessions()
	all := make([]Conn, len(sessions))
	for i, s := range sessions {
		all[i] = conn(s.Info(), now)
	}
	by := connzSorts[q.sort].cmp
	slices.SortFunc(all, func(a, b Conn) int {
		c := by(&a, &b)
		if c == 0 {
			c = compareIDs(a.ID, b.ID)
		}
		if q.desc {
			c = -c
		}
		return c
	})
	start := min(q.offset, len(all))
	end := start + min(q.limit, len(all)-start)
	page := all[start:end]
	return Connz{
		ServerID: srv.ID(), Now: now, Total: len(all), Offset: q.offset, Limit: q.limit,
		Count: len(page), Sort: q.sort, Order: map[bool]string{false: "asc", true: "desc"}[q.desc],
		Sessions: page,
	}
}

func conn(in msgnet.SessionInfo, now time.Time) Conn {
	groups := in.Groups
	if groups == nil {
		groups = []string{}
	}
	return Conn{
		ID: in.ID, ClientID: in.ClientID, RemoteAddr: in.RemoteAddr, RemotePort: in.RemotePort,
		Transport: in.Transport, Mode: in.Mode, ConnectedAt: in.ConnectedAt, LastActivity: in.LastActivity,
		IdleSeconds: max(now.Sub(in.LastActivity).Seconds(), 0),
		MsgsIn:      in.MsgsIn, MsgsOut: in.MsgsOut, BytesIn: in.BytesIn, BytesOut: in.BytesOut,
		QueueBytes: in.QueueBytes, Groups: groups, Parked: in.Parked,
	}
}

// compareIDs orders session ids ("<prefix>-<n>") by prefix, then by the
// number that ends them, so that "x-9" comes before "x-10".
func compareIDs(a, b string) int {
	ah, an := splitDigits(a)
	bh, bn := splitDigits(b)
	if c := strings.Compare(ah, bh); c != 0 {
		return c
	}
	an, bn = strings.TrimLeft(an, "0"), strings.TrimLeft(bn, "0")
	if c := cmp.Compare(len(an), len(bn)); c != 0 {
		return c
	}
	if c := strings.Compare(an, bn); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

// splitDigits splits the decimal digits off the end of s.
func splitDigits(s string) (head, digits string) {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	return s[:i], s[i:]
}
