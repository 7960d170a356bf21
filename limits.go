package msgnet

import (
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/msgnet/msgnet/frame"
	"golang.org/x/time/rate"
)

// Limits are a server's bounds on what its peers may take
// (docs/PROTOCOL.md, section 6.5, lists each with its answer). Options set
// them when the server is made; SetLimits changes them while it runs.
type Limits struct {
	MaxConnections      int           // sessions open at once (WithMaxConnections); 0: no limit
	MaxConnectionsPerIP int           // sessions open at once from one IP (WithMaxConnectionsPerIP); 0: no limit
	MessageSize         int           // payload bytes, both directions (WithMessageSizeLimit)
	SendQueueBytes      int           // bytes queued for one session (WithSendQueueBytes)
	ServerQueueBytes    int64         // bytes queued on all sessions together (WithServerQueueBytes); 0: no bound
	IdleTimeout         time.Duration // close a session silent this long (WithIdleTimeout); 0: never
	HandshakeTimeout    time.Duration // close a session not established by then (WithHandshakeTimeout); 0: never
	MessageRate         float64       // messages per second per session (WithMessageRate); 0: no limit
	MessageBurst        int
	ControlRate         float64 // frames other than DATA per second per session (WithControlRate); 0: no limit
	ControlBurst        int
	MaxClientIDLength   int // bytes (WithMaxClientIDLength)
	MaxGroupsPerSession int // (WithMaxGroupsPerSession)
	MaxGroupNameLength  int // bytes (WithMaxGroupNameLength)
	MaxStreams          int // streams open on the server (WithMaxStreams); 0: no limit
}

// Defaults of the limits that have one.
const (
	DefaultMaxConnections      = 1000
	DefaultIdleTimeout         = 30 * time.Second
	DefaultHandshakeTimeout    = 10 * time.Second
	DefaultSendQueueBytes      = 4 << 20
	DefaultMaxClientIDLength   = 128       // bytes
	DefaultMaxGroupNameLength  = 128       // bytes
	DefaultMaxGroupsPerSession = 64        // groups one session may be in
	DefaultServerQueueBytes    = 256 << 20 // bytes queued on all sessions together
	DefaultMaxStreams          = 100_000   // streams a server keeps open
)

// DefaultLimits are a server's limits when no option sets them.
func DefaultLimits() Limits {
	return Limits{
		MaxConnections:      DefaultMaxConnections,
		MessageSize:         frame.DefaultMaxPayload,
		SendQueueBytes:      DefaultSendQueueBytes,
		ServerQueueBytes:    DefaultServerQueueBytes,
		IdleTimeout:         DefaultIdleTimeout,
		HandshakeTimeout:    DefaultHandshakeTimeout,
		MaxClientIDLength:   DefaultMaxClientIDLength,
		MaxGroupsPerSession: DefaultMaxGroupsPerSession,
		MaxGroupNameLength:  DefaultMaxGroupNameLength,
		MaxStreams:          DefaultMaxStreams,
	}
}

// normalized is l with its values brought into range.
func (l Limits) normalized() Limits {
	l.MaxConnections = max(l.MaxConnections, 0)
	l.MaxConnectionsPerIP = max(l.MaxConnectionsPerIP, 0)
	l.MessageSize = min(max(l.MessageSize, 0), frame.MaxPayloadLimit)
	l.ServerQueueBytes = max(l.ServerQueueBytes, 0)
	l.MessageBurst = max(l.MessageBurst, 1)
	l.ControlBurst = max(l.ControlBurst, 1)
	l.MaxClientIDLength = max(l.MaxClientIDLength, 1)
	l.MaxGroupsPerSession = max(l.MaxGroupsPerSession, 0)
	l.MaxGroupNameLength = max(l.MaxGroupNameLength, 1)
	l.MaxStreams = max(l.MaxStreams, 0)
	return l
}

// Limits returns the server's limits now.
func (srv *Server) Limits() Limits { return *srv.lim() }

// SetLimits changes the server's limits while it runs. Each new value
// applies from then on to every check: connections accepted, hellos,
// joins, rates of sessions that open after it, the queue budget. A session
// keeps the message size, send queue bound and rates it opened with.
func (srv *Server) SetLimits(l Limits) {
	l = l.normalized()
	srv.limits.Store(&l)
	srv.ctr.Budget.SetLimit(l.ServerQueueBytes)
	srv.retick()
}

// lim is the server's limits now.
func (srv *Server) lim() *Limits { return srv.limits.Load() }

// WithLimits sets all of a server's limits at once (see DefaultLimits for
// a starting point), message size and send queue bound included. Server
// only; the other options that set a limit change its field.
func WithLimits(l Limits) Option {
	return func(c *config) {
		c.limits = l
		c.maxPayload, c.queueBytes = l.MessageSize, l.SendQueueBytes
	}
}

// WithMaxConnections bounds the sessions open at once (default 1000). A
// connection beyond it is answered ERROR server_full and closed; 0 means no
// limit. Server only.
func WithMaxConnections(n int) Option { return func(c *config) { c.limits.MaxConnections = n } }

// WithIdleTimeout closes a session that has sent nothing for d (default
// 30s); 0 disables it. Server only.
func WithIdleTimeout(d time.Duration) Option { return func(c *config) { c.limits.IdleTimeout = d } }

// WithHandshakeTimeout closes a connection that has not completed its
// handshake, or without one sent its first whole message, within d
// (default 10s): a slowloris connection trickling half a header is cut
// off. 0 disables it. Server only.
func WithHandshakeTimeout(d time.Duration) Option {
	return func(c *config) { c.limits.HandshakeTimeout = d }
}

// WithMaxConnectionsPerIP bounds the sessions open at once from one IP
// address (default 0: no limit); connections beyond it are refused with
// ERROR per_ip_limit. Server only.
func WithMaxConnectionsPerIP(n int) Option {
	return func(c *config) { c.limits.MaxConnectionsPerIP = n }
}

// WithMessageRate limits each session to perSecond messages on average,
// with bursts of burst (default: no limit). It counts everything the peer
// sends on its own account: messages (DATA frames and text lines),
// requests, PING, CONTROL, HEARTBEAT and ERROR frames; not replies to the
// server's own requests, nor DISCONNECT. One over the limit is dropped and
// counted (Stats.Dropped), and the peer is told with ERROR rate_limited, at
// most once per second. Server only.
func WithMessageRate(perSecond float64, burst int) Option {
	return func(c *config) { c.limits.MessageRate, c.limits.MessageBurst = perSecond, burst }
}

// WithControlRate limits each session's frames other than DATA (PING,
// CONTROL, HEARTBEAT, PONG, ERROR) to perSecond on average, with bursts of
// burst (default: no limit), apart from WithMessageRate, which counts them
// too. One over the limit is dropped like a message over WithMessageRate.
// Without a limit, a flood of them is handled like a flood of messages:
// the session gets its fair share of its event loop, and answers it does
// not read are bounded by its queue. Server only.
func WithControlRate(perSecond float64, burst int) Option {
	return func(c *config) { c.limits.ControlRate, c.limits.ControlBurst = perSecond, burst }
}

// WithMaxClientIDLength bounds the client id a hello may claim (default
// 128 bytes). A longer one, or one with control, format or white-space
// characters, is refused with ERROR bad_client_id and the connection is
// closed. Server only.
func WithMaxClientIDLength(n int) Option { return func(c *config) { c.limits.MaxClientIDLength = n } }

// WithMaxGroupsPerSession bounds how many groups one session may be in
// (default 64). Join past it fails with ErrTooManyGroups. Server only.
func WithMaxGroupsPerSession(n int) Option {
	return func(c *config) { c.limits.MaxGroupsPerSession = n }
}

// WithMaxStreams bounds the streams a server keeps open (default 100,000;
// 0: no limit): a subscription or publish that would open one more is
// refused with bad_stream. With the retention limits and the memory
// store's size, it bounds what streams cost. Server only.
func WithMaxStreams(n int) Option { return func(c *config) { c.limits.MaxStreams = n } }

// WithMaxGroupNameLength bounds a group's name (default 128 bytes). Join
// with a longer name, an empty one, or one with control, format or
// white-space characters other than the space fails with ErrBadGroup.
// Server only.
func WithMaxGroupNameLength(n int) Option { return func(c *config) { c.limits.MaxGroupNameLength = n } }

// WithServerQueueBytes bounds the bytes queued for writing on all of the
// server's sessions together (default 256 MiB; 0: no bound), on top of
// each session's own bound (WithSendQueueBytes). Past it a send fails with
// ErrServerQueueFull, which matches ErrQueueFull, and new connections are
// refused with ERROR server_busy until the queues drain. Without it, the
// defaults would let 1000 sessions hold 4 MiB each. Server only.
func WithServerQueueBytes(n int) Option {
	return func(c *config) { c.limits.ServerQueueBytes = int64(max(n, 0)) }
}

// validClientID reports whether id may be a client id: 1 to maxLen bytes
// of UTF-8 without control, format (such as bidirectional overrides) or
// white-space characters. Such an id cannot end a text-mode line, or make
// one read as if another peer had written it ("Private from <id>: ...").
func validClientID(id string, maxLen int) bool { return validName(id, maxLen, false) }

// validGroup reports whether name may be a group's name: as a client id,
// except that it may hold spaces ("room 1").
func validGroup(name string, maxLen int) bool { return validName(name, maxLen, true) }

func validName(name string, maxLen int, spaces bool) bool {
	if name == "" || len(name) > maxLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c == ' ' && spaces {
			continue
		} else if c <= ' ' || c == 0x7f {
			return false
		} else if c >= utf8.RuneSelf {
			return validRunes(name[i:], spaces)
		}
	}
	return true
}

func validRunes(s string, spaces bool) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r == ' ' && spaces {
			continue
		}
		if unicode.IsControl(r) || unicode.IsSpace(r) || unicode.Is(unicode.Cf, r) {
			return false
		}
	}
	return true
}

// limited reports whether the session has a message rate limit: the
// server had one when the session was established.
func (s *Session) limited() bool {
	e := s.ext.Load()
	return e != nil && e.limiter != nil
}

// allowMessage applies the per-session message rate limit (WithMessageRate)
// to one message or frame from the peer; see rateDrop for one over it.
func (srv *Server) allowMessage(s *Session) bool {
	e := s.ext.Load()
	if e == nil || e.limiter == nil || e.limiter.Allow() {
		return true
	}
	s.rateDrop(e)
	return false
}

// allowControl applies the per-session limit on frames other than DATA
// (WithControlRate) to one of them; see rateDrop for one over it.
func (srv *Server) allowControl(s *Session) bool {
	e := s.x()
	if e.ctlLimiter == nil {
		l := srv.lim()
		e.ctlLimiter = rate.NewLimiter(rate.Limit(l.ControlRate), l.ControlBurst)
	}
	if e.ctlLimiter.Allow() {
		return true
	}
	s.rateDrop(e)
	return false
}

// rateDrop drops a message or frame over a rate limit: it is counted
// (Stats.Dropped "rate_limited"), and the peer is told with ERROR
// rate_limited, at most once per second, so that a flood does not turn
// into a flood of answers. Reader only.
func (s *Session) rateDrop(e *sessionExt) {
	e.rateDropped++
	s.c.NoteDrop(DropRateLimited)
	if now := nanotime(); e.rateErrAt == 0 || now-e.rateErrAt >= int64(time.Second) {
		e.rateErrAt = now
		s.sendError(CodeRateLimited, "rate limit exceeded: "+
			strconv.FormatUint(e.rateDropped, 10)+" messages dropped on this session so far")
	}
}
