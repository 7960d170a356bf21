package loadgen

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msgnet/msgnet/frame"
)

// idle opens Conns connections, at most DialConcurrency at once (and
// DialRate per second) so that the server's accept backlog is never flooded,
// within Duration; then holds them for Hold and measures the server's RSS
// growth. Each held connection has a goroutine blocked reading it, to notice
// the server closing it.
func (r *runner) idle(ctx context.Context) (*Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conns := newMeter(1)
	prog := r.startProgress(nil, conns)
	defer prog.stop()

	hist := newShardedHist(r.cfg.DialConcurrency)
	probe := r.probeBegin()
	var dropped atomic.Int64
	var idleTimeout atomic.Int64
	var wg sync.WaitGroup
	start := nanotime()
	cs := r.dialAll(ctx, r.cfg.Conns, start+int64(r.cfg.Duration), func(i int, c *client, took time.Duration) {
		hist.record(i, int64(took))
		conns.add(0, 1)
		if c.idleTimeout > 0 {
			idleTimeout.CompareAndSwap(0, int64(c.idleTimeout))
		}
		// The frame reader's buffer is not needed any more: free it.
		c.r = nil
		wg.Go(func() {
			var buf [512]byte
			for {
				if _, err := c.nc.Read(buf[:]); err != nil {
					if ctx.Err() == nil {
						dropped.Add(1)
					}
					return
				}
			}
		})
	})
	cs = opened(cs)
	if len(cs) == 0 {
		wg.Wait()
		return nil, r.errNoConns()
	}

	prog.setPhase("hold")
	holdStart := nanotime()
	every := r.cfg.Heartbeat
	if every == 0 {
		every = time.Duration(idleTimeout.Load()) / 3
	}
	if every > 0 {
		wg.Go(func() { r.heartbeats(ctx, cs, every) })
	}
	sleepUntil(ctx, holdStart+int64(r.cfg.Hold))
	r.loadCPU = probe.selfCPU()
	stats := probe.end()
	heldFor := nanotime() - holdStart
	prog.setPhase("stop")
	cancel()
	closeAll(cs)
	wg.Wait()

	res := &Result{
		Seconds:     float64(heldFor) / 1e9,
		Connections: int64(len(cs)),
		Dropped:     dropped.Load(),
		Server:      stats,
		Histogram:   hist.merged(),
	}
	if res.Dropped > 0 {
		r.errs.add(fmt.Errorf("the server closed %d held connections", res.Dropped))
	}
	return res, nil
}

// heartbeats sends a HEARTBEAT frame on every connection every interval
// until ctx ends.
func (r *runner) heartbeats(ctx context.Context, cs []*client, every time.Duration) {
	hb := frame.Append(nil, frame.KindHeartbeat, 0, nil)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, c := range cs {
			if ctx.Err() != nil {
				return
			}
			c.nc.SetWriteDeadline(time.Now().Add(time.Second))
			c.nc.Write(hb) // a broken connection is noticed by its reader
		}
	}
}
