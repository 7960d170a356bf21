package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/msgnet/msgnet/frame"
)

// connRate runs Conns workers that each connect, say hello, make one DATA
// round trip and close, over and over. A connection counts, with its whole
// time as one latency sample, when it started inside the window.
func (r *runner) connRate(ctx context.Context) (*Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conns := newMeter(r.cfg.Conns)
	prog := r.startProgress(nil, conns)
	defer prog.stop()

	// Fail fast when the server cannot be reached at all.
	probeConn, err := r.dial(ctx, 0)
	if err != nil {
		return nil, fmt.Errorf("loadgen: first connection to %s: %w", r.cfg.Addr, err)
	}
	probeConn.nc.Close()

	hist := newShardedHist(r.cfg.Conns)
	w := r.planWindow()
	counts := make([]int64, r.cfg.Conns)
	var wg sync.WaitGroup
	for k := range r.cfg.Conns {
		wg.Go(func() {
			size := r.cfg.payloadSize()
			df := newDataFrames(size, 1)
			for n := 0; ; n++ {
				t0 := nanotime()
				if t0 >= w.end || ctx.Err() != nil {
					return
				}
				if err := r.oneConnection(ctx, k*1_000_000+n, df); err != nil {
					if ctx.Err() == nil {
						r.errs.add(err)
						// Do not spin on a server that refuses.
						sleepUntil(ctx, nanotime()+int64(10*time.Millisecond))
					}
					continue
				}
				t1 := nanotime()
				conns.add(k, 1)
				if w.contains(t0) {
					hist.record(k, t1-t0)
					counts[k]++
				}
			}
		})
	}
	measured, stats := r.measure(ctx, prog, w)
	prog.setPhase("stop")
	wg.Wait() // workers stop by themselves once the window has ended
	cancel()

	res := &Result{Seconds: measured.seconds(), Server: stats, Histogram: hist.merged()}
	for _, c := range counts {
		res.Connections += c
	}
	res.Messages = res.Connections // one round trip per connection
	if res.Seconds > 0 {
		res.ConnsPerSec = float64(res.Connections) / res.Seconds
	}
	return res, nil
}

// oneConnection connects (with the handshake), makes one DATA round trip
// and closes, within DialTimeout for the round trip.
func (r *runner) oneConnection(ctx context.Context, id int, df *dataFrames) error {
	c, err := r.dial(ctx, id)
	if err != nil {
		return err
	}
	defer c.nc.Close()
	c.nc.SetDeadline(time.Now().Add(r.cfg.DialTimeout))
	df.reset()
	df.add(uint64(id))
	if _, err := c.nc.Write(df.buf); err != nil {
		return err
	}
	f, err := readData(c.r)
	if err != nil {
		return err
	}
	if err := checkSeq(f.Payload, df.size, uint64(id)); err != nil || !r.cfg.ServerCloses {
		return err
	}
	// The other close order: DISCONNECT, then the server closes first.
	if _, err := c.nc.Write(frame.Append(nil, frame.KindDisconnect, 0, []byte("bye"))); err != nil {
		return err
	}
	for {
		if _, err := c.r.ReadFrame(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("waiting for the server to close: %w", err)
		}
	}
}
