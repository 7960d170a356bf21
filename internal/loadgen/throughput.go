package loadgen

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/msgnet/msgnet/frame"
)

// planWindow returns the measured window that starts after the warm-up.
func (r *runner) planWindow() window {
	start := nanotime() + int64(r.cfg.Warmup)
	return window{start: start, end: start + int64(r.cfg.Duration)}
}

// measure sleeps through the warm-up and the window w, sampling the server
// and the load tool's own CPU time around the window. It returns the window
// actually measured, shorter than w when ctx ends first, and the server's
// stats.
func (r *runner) measure(ctx context.Context, prog *progress, w window) (window, *ServerStats) {
	prog.setPhase("warmup")
	if !sleepUntil(ctx, w.start) {
		return window{w.start, w.start}, nil
	}
	probe := r.probeBegin()
	prog.setPhase("measure")
	sleepUntil(ctx, w.end)
	end := min(nanotime(), w.end)
	r.loadCPU = probe.selfCPU()
	return window{w.start, end}, probe.end()
}

// connWorker is the state one connection's goroutines share, and the
// one-time failure path that stops them.
type connWorker struct {
	r     *runner
	ctx   context.Context
	idx   int
	c     *client
	dead  chan struct{} // closed by fail
	once  sync.Once
	count int64 // messages recorded in the window, by the goroutine that records
}

func newConnWorker(r *runner, ctx context.Context, idx int, c *client) *connWorker {
	return &connWorker{r: r, ctx: ctx, idx: idx, c: c, dead: make(chan struct{})}
}

// fail stops the connection: the first failure is counted as an error unless
// the run is stopping, the connection is closed so that its other goroutine
// returns too.
func (w *connWorker) fail(err error) {
	w.once.Do(func() {
		if w.ctx.Err() == nil && !isClosed(err) {
			w.r.errs.add(err)
		}
		w.c.nc.Close()
		close(w.dead)
	})
}

// throughput keeps Inflight DATA frames outstanding on each connection.
func (r *runner) throughput(ctx context.Context) (*Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cs, msgs, prog, err := r.openConns(ctx)
	if err != nil {
		return nil, err
	}
	defer prog.stop()
	hist := newShardedHist(len(cs))
	w := r.planWindow()
	var wg sync.WaitGroup
	pipes := make([]*pipeConn, len(cs))
	for i, c := range cs {
		p := &pipeConn{
			connWorker: newConnWorker(r, ctx, i, c),
			win:        w,
			inflight:   r.cfg.Inflight,
			size:       r.cfg.payloadSize(),
			sendTimes:  make([]atomic.Int64, r.cfg.Inflight),
			wake:       make(chan struct{}, 1),
			msgs:       msgs,
			hist:       hist,
		}
		p.credits.Store(int64(r.cfg.Inflight))
		pipes[i] = p
		wg.Go(p.writeLoop)
		wg.Go(p.readLoop)
	}
	measured, stats := r.measure(ctx, prog, w)
	prog.setPhase("stop")
	cancel()
	closeAll(cs)
	wg.Wait()

	res := &Result{Inflight: r.cfg.Inflight, Seconds: measured.seconds(), Server: stats, Histogram: hist.merged()}
	for _, p := range pipes {
		res.Messages += p.count
	}
	return res, nil
}

// pipeConn is one pipelined throughput connection: a writer that refills the
// pipeline in batches and a reader that matches echoes, in order, to their
// send times.
type pipeConn struct {
	*connWorker
	win       window
	inflight  int
	size      int
	sendTimes []atomic.Int64 // ring indexed by sequence number mod inflight
	credits   atomic.Int64   // frames the writer may send
	wake      chan struct{}
	msgs      *meter
	hist      *shardedHist
}

// writeLoop sends as many frames as there are credits, all in one Write, and
// waits for more credits.
func (p *pipeConn) writeLoop() {
	df := newDataFrames(p.size, p.inflight)
	var sent uint64
	for {
		n := p.credits.Swap(0)
		if n == 0 {
			select {
			case <-p.wake:
				continue
			case <-p.dead:
				return
			case <-p.ctx.Done():
				return
			}
		}
		df.reset()
		t := nanotime()
		for j := range uint64(n) {
			p.sendTimes[(sent+j)%uint64(p.inflight)].Store(t)
			df.add(sent + j)
		}
		if _, err := p.c.nc.Write(df.buf); err != nil {
			p.fail(err)
			return
		}
		sent += uint64(n)
	}
}

// readLoop reads echoes, records their round trip and returns a credit per
// echo; it wakes the writer when half the pipeline is free or when no
// complete frame is buffered (the next read would wait).
func (p *pipeConn) readLoop() {
	var recv uint64
	half := int64(max(p.inflight/2, 1))
	rd := p.c.r
	for {
		f, err := rd.ReadFrame()
		if err != nil {
			p.fail(err)
			return
		}
		t := nanotime()
		if f.Kind != frame.KindData {
			if ignorable(f.Kind) {
				continue
			}
			p.fail(frameError(f))
			return
		}
		if err := checkSeq(f.Payload, p.size, recv); err != nil {
			p.fail(err)
			return
		}
		st := p.sendTimes[recv%uint64(p.inflight)].Load()
		recv++
		p.msgs.add(p.idx, 1)
		if p.win.contains(t) {
			p.hist.record(p.idx, t-st)
			p.count++
		}
		if p.credits.Add(1) >= half || !frameBuffered(rd, p.r.cfg.MaxPayload) {
			select {
			case p.wake <- struct{}{}:
			default:
			}
		}
	}
}

// frameBuffered reports whether rd holds a complete frame, so that the next
// ReadFrame returns without reading the connection.
func frameBuffered(rd *frame.Reader, maxPayload int) bool {
	b := rd.Buffered()
	total, err := frame.Split(b, maxPayload)
	return err != nil || (total > 0 && total <= len(b))
}
