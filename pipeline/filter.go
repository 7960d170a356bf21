package pipeline

import (
	"context"
	"log/slog"
	"sync"
)

// A Filter is a user-defined payload transform. Outbound transforms a
// payload being sent; Inbound undoes it on receipt, so that
// Inbound(Outbound(p)) == p.
//
// Both methods follow the append convention: they append their output to
// dst and return the extended slice. An implementation must not return
// payload itself (copy it: append(dst, payload...)), must not modify
// payload, and must not keep dst or payload after returning, because
// Chain reuses its buffers. dst and payload never overlap.
//
// A Filter used by a connection is called from the goroutine that writes
// frames (Outbound) and the one that reads them (Inbound), possibly at the
// same time; a stateful Filter must synchronise itself.
type Filter interface {
	Outbound(dst, payload []byte) ([]byte, error)
	Inbound(dst, payload []byte) ([]byte, error)
}

// FilterFunc is one direction of a Filter as a function, for Funcs.
type FilterFunc func(dst, payload []byte) ([]byte, error)

// Funcs returns a Filter whose Outbound calls outbound and whose Inbound
// calls inbound. A nil function passes payloads through unchanged, so a
// one-way observer (a counter, a validator) needs only one function.
func Funcs(outbound, inbound FilterFunc) Filter {
	return funcFilter{out: outbound, in: inbound}
}

type funcFilter struct{ out, in FilterFunc }

func (f funcFilter) Outbound(dst, payload []byte) ([]byte, error) {
	if f.out == nil {
		return append(dst, payload...), nil
	}
	return f.out(dst, payload)
}

func (f funcFilter) Inbound(dst, payload []byte) ([]byte, error) {
	if f.in == nil {
		return append(dst, payload...), nil
	}
	return f.in(dst, payload)
}

// A Chain is a sequence of user filters applied to DATA payloads.
// Outbound runs the filters in order, first to last; Inbound runs them in
// reverse, last to first, so that each filter's Inbound sees exactly what
// its own Outbound produced on the other side.
//
// # Where the chain sits
//
// On the way out a payload passes through the user chain first, then
// compression, then encryption; on the way in the order is reversed:
// decryption, decompression, then the chain's Inbound. Compression and
// encryption are not Filters: they depend on per-frame state a Filter does
// not see (the frame type authenticated by the AEAD, frame.FlagCompressed
// set only when compression shrank the payload), so the connection applies
// them itself, or through Pipeline, which implements exactly this order.
//
// An empty (or nil) Chain copies the payload; connection code can test
// len(chain) == 0 and skip it. A Chain with one filter adds only a method
// call; longer chains pass intermediate results through pooled buffers, so
// they allocate nothing in the steady state beyond what the filters do.
//
// A Chain is safe for concurrent use if its filters are.
type Chain []Filter

// Outbound runs payload through every filter's Outbound, in order, and
// appends the result to dst. The first error stops the chain.
func (c Chain) Outbound(dst, payload []byte) ([]byte, error) {
	switch len(c) {
	case 0:
		return append(dst, payload...), nil
	case 1:
		return c[0].Outbound(dst, payload)
	}
	return c.run(dst, payload, false)
}

// Inbound runs payload through every filter's Inbound, in reverse order,
// and appends the result to dst. The first error stops the chain.
func (c Chain) Inbound(dst, payload []byte) ([]byte, error) {
	switch len(c) {
	case 0:
		return append(dst, payload...), nil
	case 1:
		return c[0].Inbound(dst, payload)
	}
	return c.run(dst, payload, true)
}

// maxPooledScratch is the largest intermediate buffer kept for reuse.
const maxPooledScratch = 4 << 20

// scratchPool holds pairs of buffers that a chain alternates between.
var scratchPool = sync.Pool{New: func() any { return new([2][]byte) }}

func (c Chain) run(dst, payload []byte, inbound bool) ([]byte, error) {
	bufs := scratchPool.Get().(*[2][]byte)
	defer putScratch(bufs)
	cur := payload
	last := len(c) - 1
	for i := range c {
		f := c[i]
		if inbound {
			f = c[last-i]
		}
		into := dst
		if i < last {
			into = bufs[i%2][:0]
		}
		var out []byte
		var err error
		if inbound {
			out, err = f.Inbound(into, cur)
		} else {
			out, err = f.Outbound(into, cur)
		}
		if err != nil {
			return dst, err
		}
		if i == last {
			return out, nil
		}
		bufs[i%2] = out
		cur = out
	}
	panic("unreachable")
}

// LogFilter returns a Filter that passes payloads through unchanged and
// logs the size of each, at debug level, to logger (slog.Default() if nil):
// the message "pipeline payload" with attributes "direction" ("outbound" or
// "inbound") and "bytes". When debug logging is disabled it only copies.
func LogFilter(logger *slog.Logger) Filter {
	if logger == nil {
		logger = slog.Default()
	}
	return logFilter{logger}
}

type logFilter struct{ l *slog.Logger }

func (f logFilter) Outbound(dst, payload []byte) ([]byte, error) {
	f.log("outbound", len(payload))
	return append(dst, payload...), nil
}

func (f logFilter) Inbound(dst, payload []byte) ([]byte, error) {
	f.log("inbound", len(payload))
	return append(dst, payload...), nil
}

func (f logFilter) log(direction string, n int) {
	ctx := context.Background()
	if !f.l.Enabled(ctx, slog.LevelDebug) {
		return
	}
	f.l.LogAttrs(ctx, slog.LevelDebug, "pipeline payload",
		slog.String("direction", direction), slog.Int("bytes", n))
}
