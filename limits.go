package msgnet

import (
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/time/rate"
)

// Limits on what one peer may take of a server. Each has its default here,
// an option below, a `msgnet serve` flag, and an ERROR code; docs/PROTOCOL.md
// section 6.5 lists them all.
const (
	DefaultMaxClientIDLength   = 128       // bytes
	DefaultMaxGroupNameLength  = 128       // bytes
	DefaultMaxGroupsPerSession = 64        // groups one session may be in
	DefaultServerQueueBytes    = 256 << 20 // bytes queued on all sessions together
)

// WithMaxClientIDLength bounds the client id a hello may claim (default
// 128 bytes). A longer one, or one with control, format or white-space
// characters, is refused with ERROR bad_client_id and the connection is
// closed.
func WithMaxClientIDLength(n int) Option { return func(c *config) { c.maxClientIDLen = max(n, 1) } }

// WithMaxGroupsPerSession bounds how many groups one session may be in
// (default 64). Join past it fails with ErrTooManyGroups.
func WithMaxGroupsPerSession(n int) Option { return func(c *config) { c.maxGroups = max(n, 0) } }

// WithMaxGroupNameLength bounds a group's name (default 128 bytes). Join
// with a longer name, an empty one, or one with control, format or
// white-space characters other than the space fails with ErrBadGroup.
func WithMaxGroupNameLength(n int) Option { return func(c *config) { c.maxGroupNameLen = max(n, 1) } }

// WithServerQueueBytes bounds the bytes queued for writing on all of the
// server's sessions together (default 256 MiB; 0: no bound), on top of
// each session's own bound (WithSendQueueBytes). Past it a send fails with
// ErrServerQueueFull, which matches ErrQueueFull, and new connections are
// refused with ERROR server_busy until the queues drain. Without it, the
// defaults would let 1000 sessions hold 4 MiB each.
func WithServerQueueBytes(n int) Option { return func(c *config) { c.queueBudget = int64(max(n, 0)) } }

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
		e.ctlLimiter = rate.NewLimiter(srv.cfg.controlRate, srv.cfg.controlBurst)
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
