package msgnet

import (
	"crypto/tls"
	"errors"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msgnet/msgnet/internal/conn"

	"github.com/msgnet/msgnet/frame"
)

// counters are a server's (or client's) event counts. The per-message path
// touches only per-session atomics (messages and bytes, the engine's); these
// are for rare kinds and events, so sharing them between cores costs
// nothing measurable. Monitors read them through Stats, never under the
// hot path's locks. conn.Shared holds the engine's own: slow consumers,
// drops, ERROR frames sent, frames out by kind, the queue budget.
type counters struct {
	conn.Shared

	accepted atomic.Uint64
	refused  conn.Labels // by ERROR code: server_full, ...

	// Frames and bytes received of the kinds other than DATA. DATA is the
	// remainder of the sessions' totals.
	kindIn, kindBytesIn [256]atomic.Uint64

	// Totals of sessions that have ended; open sessions are summed live.
	// fold makes a session's end (leave the registry, add to these) one
	// step for Stats.
	fold                                                   sync.RWMutex
	endedMsgsIn, endedMsgsOut, endedBytesIn, endedBytesOut atomic.Uint64

	errorsRecv  conn.Labels // ERROR frames received, by code
	disconnects conn.Labels // sessions ended, by reason class

	reqHandled, reqHandlerErr                         atomic.Uint64 // requests answered
	reqSent, reqOK, reqRemoteErr, reqTimeout, reqLost atomic.Uint64 // requests made
	lateReplies                                       atomic.Uint64

	latency histogram // handler latency, sampled
}

// latencySampleMask: one handler call in 64 is timed. Timing every call
// would cost two clock reads per message on a path that takes a few
// hundred nanoseconds.
const latencySampleMask = 63

// histogram has power-of-two buckets from 1µs (bucket 0: < 2^10 ns) to
// about 17s (bucket 24: >= 2^34 ns).
type histogram struct {
	buckets [25]atomic.Uint64
	count   atomic.Uint64
	sumNs   atomic.Uint64
}

func (h *histogram) observe(d time.Duration) {
	ns := uint64(max(d, 0))
	i := max(bits.Len64(ns)-10, 0)
	h.buckets[min(i, len(h.buckets)-1)].Add(1)
	h.count.Add(1)
	h.sumNs.Add(ns)
}

// Histogram is a snapshot of a latency histogram: Counts[i] observations
// were at most Bounds[i] (and above Bounds[i-1]); the last bound is
// infinite.
type Histogram struct {
	Bounds []time.Duration
	Counts []uint64
	Count  uint64
	Sum    time.Duration
}

func (h *histogram) snapshot() Histogram {
	out := Histogram{Count: h.count.Load(), Sum: time.Duration(h.sumNs.Load())}
	for i := range h.buckets {
		b := time.Duration(1) << (i + 10)
		if i == len(h.buckets)-1 {
			b = time.Duration(1<<63 - 1)
		}
		out.Bounds = append(out.Bounds, b)
		out.Counts = append(out.Counts, h.buckets[i].Load())
	}
	return out
}

// Stats is a snapshot of a server's counters. Counts are totals since the
// server was created.
type Stats struct {
	ID       string
	Addr     string
	Start    time.Time
	Running  bool
	Sessions int // open now

	Accepted uint64
	Refused  map[string]uint64 // connections refused, by ERROR code

	// Messages (frames or text lines) and bytes, of open and ended sessions.
	MsgsIn, MsgsOut   uint64
	BytesIn, BytesOut uint64
	// Frames and bytes by kind name ("DATA", "PING", ...).
	FramesIn, FramesOut map[string]uint64
	KindBytesIn         map[string]uint64
	KindBytesOut        map[string]uint64

	QueueBytes    int    // bytes waiting in open sessions' send queues
	SlowConsumers uint64 // sends refused or sessions closed for a full queue
	// QueueBudget is the bound on QueueBytes as charged (in 16 KiB
	// granules), and QueueCharged what is charged now; 0 and 0 without one.
	QueueBudget, QueueCharged int64
	// Dropped counts messages not delivered, by reason (the Drop*
	// constants): sends refused for a full queue, and messages from peers
	// over their rate limit.
	Dropped map[string]uint64

	ErrorsSent     map[string]uint64 // ERROR frames sent, by code
	ErrorsReceived map[string]uint64 // ERROR frames received, by code
	Disconnects    map[string]uint64 // sessions ended, by reason class (see ReasonClass)

	RequestsHandled      uint64 // requests answered by OnRequest
	RequestHandlerErrors uint64 // of which the handler returned an error
	RequestsSent         uint64 // Session.Request calls that were sent
	RequestsOK           uint64
	RequestsRemoteError  uint64
	RequestsTimedOut     uint64 // the context ended first
	RequestsLost         uint64 // the connection ended first
	LateReplies          uint64

	// HandlerLatency is sampled: one message handler call in 64 is timed.
	HandlerLatency Histogram

	Cluster *ClusterStats // nil unless a Bus is configured
}

// SessionInfo describes one session, for monitors.
type SessionInfo struct {
	ID           string
	ClientID     string
	RemoteAddr   string
	RemotePort   int
	Transport    string // "tcp", "tls", or what the transport calls itself
	Mode         string // "binary", "text" or "unknown"
	ConnectedAt  time.Time
	LastActivity time.Time
	MsgsIn       uint64
	MsgsOut      uint64
	BytesIn      uint64
	BytesOut     uint64
	QueueBytes   int // not yet handed to the socket; on an event loop, only a handler sees its own turn's replies
	Groups       []string
	Parked       bool // its socket is in the epoll set, not held by a goroutine
}

// Info returns a snapshot of the session's state and counters.
func (s *Session) Info() SessionInfo {
	host, port := s.remoteHostPort()
	in, out, bin, bout := s.c.Counts()
	return SessionInfo{
		ID: s.id, ClientID: s.ClientID(), RemoteAddr: host, RemotePort: port,
		Transport: transportName(s.c.NetConn()), Mode: s.c.Mode().String(),
		ConnectedAt: s.ConnectTime(), LastActivity: s.LastActivity(),
		MsgsIn: in, MsgsOut: out, BytesIn: bin, BytesOut: bout,
		QueueBytes: s.c.QueuedBytes(), Groups: s.Groups(), Parked: s.c.Parked(),
	}
}

// transportName names a connection's transport. Transports other than TCP
// and TLS name themselves with a Transport method.
func transportName(c any) string {
	switch c := c.(type) {
	case interface{ Transport() string }:
		return c.Transport()
	case *tls.Conn:
		return "tls"
	default:
		return "tcp"
	}
}

// Stats returns a snapshot of the server's counters. It walks the open
// sessions; call it from a monitor, not per message.
func (srv *Server) Stats() Stats {
	c := &srv.ctr
	c.fold.RLock()
	defer c.fold.RUnlock()
	st := Stats{
		ID: srv.id, Start: srv.start, Running: srv.IsRunning(),
		Accepted: c.accepted.Load(), Refused: c.refused.Snapshot(),
		MsgsIn: c.endedMsgsIn.Load(), MsgsOut: c.endedMsgsOut.Load(),
		BytesIn: c.endedBytesIn.Load(), BytesOut: c.endedBytesOut.Load(),
		SlowConsumers:  c.SlowConsumers.Load(),
		Dropped:        c.Dropped.Snapshot(),
		ErrorsSent:     c.ErrorsSent.Snapshot(),
		ErrorsReceived: c.errorsRecv.Snapshot(),
		Disconnects:    c.disconnects.Snapshot(),

		RequestsHandled: c.reqHandled.Load(), RequestHandlerErrors: c.reqHandlerErr.Load(),
		RequestsSent: c.reqSent.Load(), RequestsOK: c.reqOK.Load(), RequestsRemoteError: c.reqRemoteErr.Load(),
		RequestsTimedOut: c.reqTimeout.Load(), RequestsLost: c.reqLost.Load(), LateReplies: c.lateReplies.Load(),
		HandlerLatency: c.latency.snapshot(),
	}
	if b := c.Budget; b != nil && b.Limit() > 0 {
		st.QueueBudget, st.QueueCharged = b.Limit(), b.Used()
	}
	if a := srv.Addr(); a != nil {
		st.Addr = a.String()
	}
	srv.reg.each(func(s *Session) bool {
		in, out, bin, bout := s.c.Counts()
		st.Sessions++
		st.MsgsIn += in
		st.MsgsOut += out
		st.BytesIn += bin
		st.BytesOut += bout
		st.QueueBytes += s.c.QueuedBytes()
		return true
	})
	st.FramesIn, st.KindBytesIn = kindCounts(&c.kindIn, &c.kindBytesIn, st.MsgsIn, st.BytesIn)
	st.FramesOut, st.KindBytesOut = kindCounts(&c.KindOut, &c.KindBytesOut, st.MsgsOut, st.BytesOut)
	if srv.bus != nil {
		cs := srv.bus.Stats()
		st.Cluster = &cs
	}
	return st
}

// kindCounts names the per-kind counters; DATA (and text lines) is what the
// totals leave over.
func kindCounts(frames, bytes *[256]atomic.Uint64, totalFrames, totalBytes uint64) (map[string]uint64, map[string]uint64) {
	fm, bm := map[string]uint64{}, map[string]uint64{}
	var otherF, otherB uint64
	for k := range frames {
		if f := frames[k].Load(); f > 0 {
			name := frame.Kind(k).String()
			fm[name] = f
			bm[name] = bytes[k].Load()
			otherF += f
			otherB += bm[name]
		}
	}
	fm["DATA"] = totalFrames - min(otherF, totalFrames)
	bm["DATA"] = totalBytes - min(otherB, totalBytes)
	return fm, bm
}

// countIn records a received frame of a kind other than DATA.
func (c *counters) countIn(k frame.Kind, n int) {
	c.kindIn[k].Add(1)
	c.kindBytesIn[k].Add(uint64(n))
}

// ReasonClass names the kind of a session's end reason, as counted in
// Stats.Disconnects: "peer_closed", "peer_disconnect", "disconnect",
// "idle_timeout", "handshake_timeout", "shutdown", "closed",
// "slow_consumer", "heartbeat_timeout", "handler_panic",
// "protocol:<code>", "client_closed", "replaced" or "error".
func ReasonClass(reason error) string {
	// The reasons that are not wrapped, first, without the reflection of
	// errors.As: every session's end is classed, and a peer's DISCONNECT
	// went through nine errors.Is and three errors.As (2 µs of server CPU
	// per connection). None of these types unwraps to a sentinel below.
	switch r := reason.(type) {
	case *DisconnectError:
		if r.Remote {
			return "peer_disconnect"
		}
		return "disconnect"
	case *ProtocolError:
		return "protocol:" + r.Code
	case *HandlerPanicError:
		return "handler_panic"
	}
	var pe *ProtocolError
	var de *DisconnectError
	var hp *HandlerPanicError
	switch {
	case errors.Is(reason, ErrPeerClosed):
		return "peer_closed"
	case errors.Is(reason, ErrIdleTimeout):
		return "idle_timeout"
	case errors.Is(reason, ErrServerShutdown):
		return "shutdown"
	case errors.Is(reason, ErrServerClosed):
		return "closed"
	case errors.Is(reason, ErrSlowConsumer):
		return "slow_consumer"
	case errors.Is(reason, ErrHeartbeatTimeout):
		return "heartbeat_timeout"
	case errors.Is(reason, ErrHandshakeTimeout):
		return "handshake_timeout"
	case errors.Is(reason, ErrClientClosed):
		return "client_closed"
	case errors.Is(reason, ErrReplaced):
		return "replaced"
	case errors.As(reason, &hp):
		return "handler_panic"
	case errors.As(reason, &pe):
		return "protocol:" + pe.Code
	case errors.As(reason, &de):
		if de.Remote {
			return "peer_disconnect"
		}
		return "disconnect"
	}
	return "error"
}
