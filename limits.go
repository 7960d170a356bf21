package msgnet

import (
	"sync/atomic"
	"unicode"
	"unicode/utf8"
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

// queueBudget is a server's bound on the bytes queued on all its sessions
// together. Sessions charge it in granules, not per message, so that the
// shared counter is touched once per granule of queue growth rather than
// once per send.
type queueBudget struct {
	limit int64 // 0: no bound
	used  atomic.Int64
}

// budgetGranule is the unit a session charges the budget in.
const budgetGranule = 16 << 10

// over reports whether the budget is spent: not a granule is left.
func (b *queueBudget) over() bool { return b != nil && b.used.Load()+budgetGranule > b.limit }

func granules(n int) int64 { return (int64(n) + budgetGranule - 1) / budgetGranule * budgetGranule }

// queuedLocked is what s holds for writing: its queues and the batch being
// written. Lock must be held.
func (s *Session) queuedLocked() int { return s.out.bytes + s.early.bytes + s.writingBytes }

// budgetAllowsLocked reports whether s may queue n more bytes within its
// server's budget. Lock must be held.
func (s *Session) budgetAllowsLocked(n int) bool {
	b := s.budget
	if b == nil {
		return true
	}
	delta := granules(s.queuedLocked()+n) - s.charged
	return delta <= 0 || b.used.Load()+delta <= b.limit
}

// chargeLocked brings what s has charged to its server's budget up to date
// with what it holds, in whole granules. Every change to the queue is
// followed by it; one missed would only leave the charge stale until the
// next. Lock must be held.
func (s *Session) chargeLocked() {
	if b := s.budget; b != nil {
		if want := granules(s.queuedLocked()); want != s.charged {
			b.used.Add(want - s.charged)
			s.charged = want
		}
	}
}
