package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msgnet/msgnet/frame"
)

// fanout measures group broadcast. With the msgnet protocol, against a
// managed-mode server: Conns receivers send DATA "JOIN:<group>", then one
// sender sends DATA "GROUP:<group>:<seq>:<unix-nanos>" at Rate per second,
// where unix-nanos is the message's intended send time on the wall clock.
// With the NATS protocol, against a NATS server: the receivers SUB to the
// subject <group> and the sender PUBs the same text to it. Each receiver
// records now minus that time for every delivery, and the sequence numbers
// it got (FanoutStats).
func (r *runner) fanout(ctx context.Context) (*Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cs, msgs, prog, err := r.openConns(ctx)
	if err != nil {
		return nil, err
	}
	defer prog.stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer closeAll(cs)
	defer cancel()
	sender, err := r.dial(ctx, r.cfg.Conns)
	if err != nil {
		return nil, fmt.Errorf("loadgen: sender connection: %w", err)
	}
	defer sender.nc.Close()
	r.fanoutJoin(ctx, cs, sender)

	// Wall-clock nanoseconds and nanotime are tied once, so that a receiver
	// turns the timestamp in a message back into the monotonic clock.
	mono0, wall0 := nanotime(), time.Now().UnixNano()

	hist := newShardedHist(len(cs))
	if !sleepUntil(ctx, nanotime()+int64(r.cfg.JoinWait)) {
		return nil, ctx.Err()
	}
	w := r.planWindow()
	sched := schedule{first: nanotime() + int64(time.Millisecond), every: 1e9 / r.cfg.Rate}
	sink := &fanoutSink{
		w:       w,
		last:    sched.dueBy(w.end - 1), // the sender sends numbers [0, last)
		mono0:   mono0,
		wall0:   wall0,
		seqs:    make([]seqSet, len(cs)),
		workers: make([]*connWorker, len(cs)),
		msgs:    msgs,
		hist:    hist,
	}
	for i, c := range cs {
		sink.workers[i] = newConnWorker(r, ctx, i, c)
	}
	// The receivers: where the platform allows, a few goroutines that each
	// poll many raw sockets (fanout_poll_linux.go); the connections they
	// cannot take (TLS, other platforms) get a goroutine each.
	ownGoroutine := r.fanoutPolled(ctx, &wg, sink)
	for _, i := range ownGoroutine {
		wg.Go(func() { sink.readLoop(i) })
	}
	// The sender's own connection is drained so that the server never
	// blocks writing to it; what comes back is not measured, except that a
	// refusal (msgnet: a text answer starting with "ERROR", how a managed
	// server refuses a command; NATS: -ERR) is reported.
	senderW := newConnWorker(r, ctx, len(cs), sender)
	wg.Go(func() { r.drainSender(senderW) })
	wg.Go(func() { r.groupSender(senderW, sched, w.end, func(mono int64) int64 { return mono - mono0 + wall0 }) })

	// The run-queue waits are sampled at the window's edges too.
	wait0 := make(chan runWaitSample, 1)
	wg.Go(func() {
		if sleepUntil(ctx, w.start) {
			wait0 <- r.sampleRunWait()
		}
	})
	measured, stats := r.measure(ctx, prog, w)
	wait1 := r.sampleRunWait()
	// Wait for the deliveries still on their way, up to Drain.
	prog.setPhase("drain")
	end := w.end
	if measured.end < w.end {
		end = measured.end
	}
	sent := int64(sched.dueBy(end-1) - sched.dueBy(w.start-1))
	drainEnd := nanotime() + int64(r.cfg.Drain)
	for sink.inWindow.Load() < sent*int64(len(cs)) && nanotime() < drainEnd && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	prog.setPhase("stop")
	cancel()
	closeAll(cs)
	sender.nc.Close()
	wg.Wait()

	res := &Result{Rate: r.cfg.Rate, Seconds: measured.seconds(), Server: stats, Histogram: hist.merged()}
	for _, cw := range sink.workers {
		res.Messages += cw.count
	}
	res.Sent = sent
	res.Expected = res.Sent * int64(len(cs))
	res.Lost = res.Expected - res.Messages
	lo := sched.dueBy(w.start - 1)
	res.Fanout = fanoutStats(r.cfg.Proto, sink.seqs, lo, lo+uint64(sent), res.Expected)
	res.Fanout.Polled = len(cs) - len(ownGoroutine)
	select {
	case w0 := <-wait0:
		res.Fanout.CPUWait = cpuWait(w0, wait1)
	default:
	}
	if stats != nil {
		if peak, err := ProcPeakRSS(stats.PID); err == nil {
			stats.RSSPeak = peak
		}
	}
	return res, nil
}

// fanoutSink is where the receivers put what they got: the window and the
// sender's numbering to sort deliveries by, and per receiver its sequence
// set and its count (connWorker.count), written only by the goroutine that
// reads that receiver and read once they have all stopped.
type fanoutSink struct {
	w            window
	last         uint64 // the sender sends numbers [0, last)
	mono0, wall0 int64  // nanotime and Unix nanoseconds at the same instant
	seqs         []seqSet
	workers      []*connWorker
	msgs         *meter
	hist         *shardedHist
	inWindow     atomic.Int64 // deliveries of window messages, for the drain
}

// toMono turns a wall-clock timestamp from a message into nanotime.
func (s *fanoutSink) toMono(wall int64) int64 { return wall - s.wall0 + s.mono0 }

// take files payload p delivered to receiver i: its number in the
// receiver's sequence set, and its count if it belongs to the window. It
// reports whether p was one of the sender's messages, and if so its
// intended send time on the monotonic clock and whether it is in the
// window, for the caller's histogram and shared counters.
func (s *fanoutSink) take(i int, p []byte) (at int64, ours, inW bool) {
	seq, ts, ok := parseDeliveryFast(p)
	if !ok || seq >= s.last {
		return 0, false, false // not one of ours: a join notice, say
	}
	at = s.toMono(ts)
	inW = s.w.contains(at)
	s.seqs[i].add(seq, inW)
	if inW {
		s.workers[i].count++
	}
	return at, true, inW
}

// readLoop is receiver i's goroutine where there is no polled reader:
// blocking reads through its net.Conn until it fails or is closed.
func (s *fanoutSink) readLoop(i int) {
	cw := s.workers[i]
	for {
		p, err := cw.c.nextDelivery()
		if err != nil {
			cw.fail(err)
			return
		}
		t := nanotime()
		at, ours, inW := s.take(i, p)
		if !ours {
			continue
		}
		s.msgs.add(i, 1)
		if inW {
			s.hist.record(i, t-at)
			s.inWindow.Add(1)
		}
	}
}

// groupSender sends the GROUP messages on schedule until end, all overdue
// ones in one Write. toWall converts an intended send time to Unix
// nanoseconds.
func (r *runner) groupSender(cw *connWorker, sched schedule, end int64, toWall func(int64) int64) {
	last := sched.dueBy(end - 1)
	prefix := "GROUP:" + r.cfg.Group + ":"
	nats := cw.c.nats != nil
	var buf, payload []byte
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var sent uint64
	for sent < last {
		due := min(sched.dueBy(nanotime()), last, sent+maxBatch)
		if due > sent {
			buf = buf[:0]
			for seq := sent; seq < due; seq++ {
				payload = append(payload[:0], prefix...)
				payload = strconv.AppendUint(payload, seq, 10)
				payload = append(payload, ':')
				payload = strconv.AppendInt(payload, toWall(sched.at(seq)), 10)
				if nats {
					buf = appendNATSPub(buf, r.cfg.Group, payload)
				} else {
					buf = frame.Append(buf, frame.KindData, 0, payload)
				}
			}
			var err error
			if nats {
				err = cw.c.natsWrite(buf)
			} else {
				_, err = cw.c.nc.Write(buf)
			}
			if err != nil {
				cw.fail(err)
				return
			}
			sent = due
			continue
		}
		timer.Reset(time.Duration(sched.at(sent) - nanotime()))
		select {
		case <-timer.C:
		case <-cw.dead:
			return
		case <-cw.ctx.Done():
			return
		}
	}
}

// parseDelivery finds "<seq>:<unix-nanos>" at the end of a delivered
// message, whatever the server put before it (the sender's GROUP:<group>:
// prefix, or a decoration such as "[bench] c1: "): the last two
// colon-separated fields, each trimmed of spaces.
func parseDelivery(p []byte) (seq uint64, unixNanos int64, ok bool) {
	p = bytes.TrimSpace(p)
	i := bytes.LastIndexByte(p, ':')
	if i < 0 {
		return 0, 0, false
	}
	ts, err := strconv.ParseInt(string(bytes.TrimSpace(p[i+1:])), 10, 64)
	if err != nil || ts <= 0 {
		return 0, 0, false
	}
	head := p[:i]
	j := bytes.LastIndexByte(head, ':')
	s, err := strconv.ParseUint(string(bytes.TrimSpace(head[j+1:])), 10, 64)
	if err != nil {
		return 0, 0, false
	}
	return s, ts, true
}

// parseDeliveryFast is parseDelivery for the common case, a message that
// ends in "<digits>:<digits>" with nothing after, the first number after a
// colon and spaces, or at the start: it parses the digits by
// hand, and hands anything else (spaces, signs, numbers too long for the
// quick path) to parseDelivery, so that both give the same answers.
func parseDeliveryFast(p []byte) (seq uint64, unixNanos int64, ok bool) {
	// 19 digits fit an int64 when the first is below 9 (Unix nanoseconds
	// have 19 digits until 2286), and always a uint64.
	const maxDigits = 19
	n := len(p)
	i := n
	var ts int64
	for i > 0 && p[i-1]-'0' <= 9 {
		i--
	}
	if i == n || n-i > maxDigits || (n-i == maxDigits && p[i] == '9') || i == 0 || p[i-1] != ':' {
		return parseDelivery(p)
	}
	for _, c := range p[i:] {
		ts = ts*10 + int64(c-'0')
	}
	j := i - 1 // the colon
	k := j
	for k > 0 && p[k-1]-'0' <= 9 {
		k--
	}
	h := k // spaces before the digits are trimmed, as a server's "c1: " leaves
	for h > 0 && p[h-1] == ' ' {
		h--
	}
	if k == j || j-k > maxDigits || (h > 0 && p[h-1] != ':') {
		return parseDelivery(p)
	}
	for _, c := range p[k:j] {
		seq = seq*10 + uint64(c-'0')
	}
	if ts <= 0 {
		return 0, 0, false
	}
	return seq, ts, true
}
