package loadgen

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msgnet/msgnet/frame"
)

// closedLoop keeps one frame in flight per connection: send, wait for the
// echo, record, repeat.
func (r *runner) closedLoop(ctx context.Context) (*Result, error) {
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
	workers := make([]*connWorker, len(cs))
	for i, c := range cs {
		cw := newConnWorker(r, ctx, i, c)
		workers[i] = cw
		wg.Go(func() { r.pingPong(cw, w, msgs, hist) })
	}
	measured, stats := r.measure(ctx, prog, w)
	prog.setPhase("stop")
	cancel()
	closeAll(cs)
	wg.Wait()

	res := &Result{Inflight: 1, Seconds: measured.seconds(), Server: stats, Histogram: hist.merged()}
	for _, cw := range workers {
		res.Messages += cw.count
	}
	return res, nil
}

// pingPong is one closed-loop connection.
func (r *runner) pingPong(cw *connWorker, w window, msgs *meter, hist *shardedHist) {
	size := r.cfg.payloadSize()
	df := newDataFrames(size, 1)
	for seq := uint64(0); ; seq++ {
		df.reset()
		df.add(seq)
		t0 := nanotime()
		if _, err := cw.c.nc.Write(df.buf); err != nil {
			cw.fail(err)
			return
		}
		f, err := readData(cw.c.r)
		if err != nil {
			cw.fail(err)
			return
		}
		t1 := nanotime()
		if err := checkSeq(f.Payload, size, seq); err != nil {
			cw.fail(err)
			return
		}
		msgs.add(cw.idx, 1)
		if w.contains(t1) {
			hist.record(cw.idx, t1-t0)
			cw.count++
		}
	}
}

// readData returns the next DATA frame, skipping frames that may come
// between (heartbeats, CONTROL) and failing on ERROR or DISCONNECT.
func readData(rd *frame.Reader) (frame.Frame, error) {
	for {
		f, err := rd.ReadFrame()
		if err != nil {
			return f, err
		}
		if f.Kind == frame.KindData {
			return f, nil
		}
		if !ignorable(f.Kind) {
			return f, frameError(f)
		}
	}
}

// maxBatch bounds the frames one Write of the open loop carries when it has
// fallen behind its schedule.
const maxBatch = 1024

// schedule is a fixed-rate send schedule: frame i is due at first + i*every.
type schedule struct {
	first int64
	every float64 // nanoseconds between frames
}

// at is the intended send time of frame i.
func (s schedule) at(i uint64) int64 { return s.first + int64(float64(i)*s.every) }

// dueBy is the number of frames due at or before t.
func (s schedule) dueBy(t int64) uint64 {
	if t < s.first {
		return 0
	}
	n := uint64(float64(t-s.first)/s.every) + 1
	// Guard against float rounding at the boundaries.
	for n > 0 && s.at(n-1) > t {
		n--
	}
	for s.at(n) <= t {
		n++
	}
	return n
}

// openLoop sends at a fixed total rate, spread evenly over the connections,
// whatever the server's answers do, and measures each round trip from the
// frame's intended send time. A server that stalls therefore shows its
// stall in the latency of every frame that should have been sent meanwhile,
// instead of in one sample (no coordinated omission).
func (r *runner) openLoop(ctx context.Context) (*Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cs, msgs, prog, err := r.openConns(ctx)
	if err != nil {
		return nil, err
	}
	defer prog.stop()
	hist := newShardedHist(len(cs))
	w := r.planWindow()
	every := float64(len(cs)) * 1e9 / r.cfg.Rate
	base := nanotime() + int64(time.Millisecond)
	loops := make([]*openConn, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		o := &openConn{
			connWorker: newConnWorker(r, ctx, i, c),
			win:        w,
			sched:      schedule{first: base + int64(float64(i)*every/float64(len(cs))), every: every},
			msgs:       msgs,
			hist:       hist,
		}
		loops[i] = o
		wg.Go(o.writeLoop)
		wg.Go(o.readLoop)
	}
	measured, stats := r.measure(ctx, prog, w)

	// Give the echoes of the last frames up to Drain to arrive.
	prog.setPhase("drain")
	drainEnd := nanotime() + int64(r.cfg.Drain)
	for nanotime() < drainEnd && ctx.Err() == nil {
		done := true
		for _, o := range loops {
			if o.recv.Load() < o.sched.dueBy(w.end-1) && !o.isDead() {
				done = false
				break
			}
		}
		if done {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	prog.setPhase("stop")
	cancel()
	closeAll(cs)
	wg.Wait()
	stop := nanotime()

	res := &Result{Inflight: 0, OpenLoop: true, Rate: r.cfg.Rate, Seconds: measured.seconds(), Server: stats}
	// Frames scheduled in the window but not answered are recorded with the
	// time they had waited when the run stopped: a lower bound of their
	// latency, but not an omission.
	for i, o := range loops {
		res.Messages += o.count
		first := o.sched.dueBy(w.start - 1)
		last := o.sched.dueBy(w.end - 1)
		if measured.end < w.end {
			last = o.sched.dueBy(measured.end - 1)
		}
		if last > first {
			res.Sent += int64(last - first)
		}
		for seq := max(o.recv.Load(), first); seq < last; seq++ {
			hist.record(i, stop-o.sched.at(seq))
			res.Unanswered++
		}
	}
	res.Histogram = hist.merged()
	return res, nil
}

// openConn is one open-loop connection.
type openConn struct {
	*connWorker
	win   window
	sched schedule
	recv  atomic.Uint64 // echoes received, in order
	msgs  *meter
	hist  *shardedHist
}

// isDead reports whether the connection has failed.
func (o *openConn) isDead() bool {
	select {
	case <-o.dead:
		return true
	default:
		return false
	}
}

// writeLoop sends every frame when it is due, all overdue frames in one
// Write, until the window ends.
func (o *openConn) writeLoop() {
	size := o.r.cfg.payloadSize()
	df := newDataFrames(size, 16)
	last := o.sched.dueBy(o.win.end - 1) // frames due before the window ends
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var sent uint64
	for sent < last {
		due := min(o.sched.dueBy(nanotime()), last, sent+maxBatch)
		if due > sent {
			df.reset()
			for seq := sent; seq < due; seq++ {
				df.add(seq)
			}
			if _, err := o.c.nc.Write(df.buf); err != nil {
				o.fail(err)
				return
			}
			sent = due
			continue
		}
		timer.Reset(time.Duration(o.sched.at(sent) - nanotime()))
		select {
		case <-timer.C:
		case <-o.dead:
			return
		case <-o.ctx.Done():
			return
		}
	}
}

// readLoop records each echo against its intended send time.
func (o *openConn) readLoop() {
	size := o.r.cfg.payloadSize()
	for seq := uint64(0); ; seq++ {
		f, err := readData(o.c.r)
		if err != nil {
			o.fail(err)
			return
		}
		t := nanotime()
		if err := checkSeq(f.Payload, size, seq); err != nil {
			o.fail(err)
			return
		}
		o.msgs.add(o.idx, 1)
		if at := o.sched.at(seq); o.win.contains(at) {
			o.hist.record(o.idx, t-at)
			o.count++
		}
		o.recv.Store(seq + 1)
	}
}
