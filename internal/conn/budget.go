package conn

import "sync/atomic"

// Budget bounds the bytes queued on all the connections that share it (a
// server's). Connections charge it in granules, not per message, so that
// the shared counter is touched once per granule of queue growth rather
// than once per send. They charge it even with no bound (limit 0), so
// that a bound set later sees what is queued.
type Budget struct {
	limit atomic.Int64
	used  atomic.Int64
}

// NewBudget returns a budget of limit bytes; 0: no bound.
func NewBudget(limit int64) *Budget {
	b := new(Budget)
	b.limit.Store(limit)
	return b
}

// SetLimit changes the bound; 0: none.
func (b *Budget) SetLimit(limit int64) { b.limit.Store(limit) }

// Limit is the bound; 0: none.
func (b *Budget) Limit() int64 { return b.limit.Load() }

// Used is what is charged now.
func (b *Budget) Used() int64 { return b.used.Load() }

// Over reports whether the budget is spent: not a granule is left.
func (b *Budget) Over() bool {
	if b == nil {
		return false
	}
	limit := b.limit.Load()
	return limit > 0 && b.used.Load()+budgetGranule > limit
}

// budgetGranule is the unit a connection charges the budget in.
const budgetGranule = 16 << 10

func granules(n int) int64 { return (int64(n) + budgetGranule - 1) / budgetGranule * budgetGranule }

// queuedLocked is what c holds for writing: its queues and the batch
// being written. Lock must be held.
func (c *Conn) queuedLocked() int { return c.out.bytes + c.earlyBytesLocked() + c.writingBytes }

// earlyBytesLocked is what waits in the early queue. Lock must be held.
func (c *Conn) earlyBytesLocked() int {
	if e := c.x.Load(); e != nil {
		return e.early.bytes
	}
	return 0
}

// takeEarlyLocked empties the early queue. Lock must be held.
func (c *Conn) takeEarlyLocked() []*chunk {
	if e := c.x.Load(); e != nil {
		return e.early.take()
	}
	return nil
}

// budgetAllowsLocked reports whether c may queue n more bytes within the
// shared budget. Lock must be held.
func (c *Conn) budgetAllowsLocked(b *Budget, n int) bool {
	delta := granules(c.queuedLocked()+n) - c.charged
	limit := b.limit.Load()
	return delta <= 0 || limit == 0 || b.used.Load()+delta <= limit
}

// chargeLocked brings what c has charged to the shared budget up to date
// with what it holds, in whole granules. Every change to the queue is
// followed by it; one missed would only leave the charge stale until the
// next. Lock must be held.
func (c *Conn) chargeLocked() {
	if b := c.cfg.Shared.Budget; b != nil {
		if want := granules(c.queuedLocked()); want != c.charged {
			b.used.Add(want - c.charged)
			c.charged = want
		}
	}
}
