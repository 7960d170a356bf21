package loadgen

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// progress prints a status line every ProgressInterval until stopped: on a
// terminal one line rewritten in place, otherwise one line per update.
type progress struct {
	r       *runner
	msgs    *meter // may be nil
	conns   *meter // may be nil
	phase   atomic.Pointer[string]
	start   time.Time
	quit    chan struct{}
	wg      sync.WaitGroup
	printed bool
}

// startProgress starts the progress line for counters msgs (messages) and
// conns (connections), either of which may be nil. With no Progress writer
// it returns a progress that prints nothing.
func (r *runner) startProgress(msgs, conns *meter) *progress {
	p := &progress{r: r, msgs: msgs, conns: conns, start: time.Now(), quit: make(chan struct{})}
	p.setPhase("connect")
	if r.cfg.Progress == nil {
		return p
	}
	p.wg.Go(p.loop)
	return p
}

// setPhase names what the run is doing: connect, warmup, measure, drain, hold.
func (p *progress) setPhase(s string) { p.phase.Store(&s) }

// stop ends the progress line and waits for its goroutine.
func (p *progress) stop() {
	close(p.quit)
	p.wg.Wait()
	if p.printed && p.r.cfg.ProgressTTY {
		fmt.Fprintln(p.r.cfg.Progress)
	}
}

func (p *progress) loop() {
	t := time.NewTicker(p.r.cfg.ProgressInterval)
	defer t.Stop()
	var lastMsgs, lastConns int64
	last := time.Now()
	for {
		select {
		case <-p.quit:
			return
		case now := <-t.C:
			dt := now.Sub(last).Seconds()
			last = now
			var b strings.Builder
			fmt.Fprintf(&b, "%s %-7s %5.0fs", p.r.cfg.Mode, *p.phase.Load(), now.Sub(p.start).Seconds())
			if p.msgs != nil {
				m := p.msgs.total()
				fmt.Fprintf(&b, "  msgs %d (%.0f/s)", m, float64(m-lastMsgs)/dt)
				lastMsgs = m
			}
			if p.conns != nil {
				c := p.conns.total()
				fmt.Fprintf(&b, "  conns %d (%.0f/s)", c, float64(c-lastConns)/dt)
				lastConns = c
			}
			fmt.Fprintf(&b, "  errors %d", p.r.errs.n.Load())
			if p.r.cfg.ProgressTTY {
				fmt.Fprintf(p.r.cfg.Progress, "\r%s\x1b[K", b.String())
			} else {
				fmt.Fprintln(p.r.cfg.Progress, b.String())
			}
			p.printed = true
		}
	}
}
