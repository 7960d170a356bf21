package natsbus

import (
	"encoding/binary"
	"errors"
	"sync"
)

// Batching. Everything the bus publishes goes through one ordered queue,
// which the flusher goroutine hands to NATS. Consecutive data messages to
// the same subject leave as one NATS message of kind kindBatch, so that
// under load both NATS servers on the way, and the receiving node's NATS
// client, parse, route and allocate once per batch instead of once per
// msgnet message: that is most of what a message costs across nodes
// (docs/BENCHMARKS.md). A message published alone leaves alone, in the
// plain format, as soon as the flusher runs; control messages always do.
//
// A batch is only sent once every known node has said it reads them (the
// "batch" field of its heartbeat and directory sync), so a node of an
// older version in the cluster never receives one.

const (
	// maxRunBytes bounds one batch on the wire (under NATS's default 1 MB
	// payload limit, and Embedded's 8 MiB).
	maxRunBytes = 64 << 10
	// maxQueuedBytes bounds what waits for the flusher: beyond it, Publish
	// flushes itself, and so waits for NATS like a plain nats.go Publish.
	maxQueuedBytes = 4 << 20
	// keepBufBytes: a queue buffer grown past this is not kept for reuse.
	keepBufBytes = 1 << 20
)

// errQueueStopped is add's answer once the flusher has ended: the caller
// publishes directly.
var errQueueStopped = errors.New("natsbus: publish queue stopped")

// pubQueue is the bus's ordered publish queue.
type pubQueue struct {
	kick    chan struct{} // cap 1: the queue went from empty to not empty
	flushMu sync.Mutex    // held by the one flush at a time: keeps runs in order

	mu      sync.Mutex // guards the fields below
	buf     []byte     // every run's bytes, in order
	runs    []pubRun
	stopped bool // the flusher ended; add refuses
	spare   []byte
	spareR  []pubRun
	header  []byte // a batch's header: kindBatch from this node, no target
}

// pubRun is one NATS message to be: buf[off:end] holds header, then n
// records of a 4-byte big-endian length and an encoded message.
type pubRun struct {
	subj     string
	off, end int
	n        int
	batch    bool // may take more records (a data kind, to a batching cluster)
}

func newPubQueue(origin string) pubQueue {
	return pubQueue{kick: make(chan struct{}, 1), header: appendMsg(nil, kindBatch, origin, "", nil)}
}

// add queues one message. batch says that it may share a NATS message with
// the data messages around it. It reports whether the queue holds more than
// maxQueuedBytes, when the caller should flush.
func (q *pubQueue) add(subj string, batch bool, kind byte, origin, target string, body []byte) (full bool, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopped {
		return false, errQueueStopped
	}
	if len(q.runs) == 0 {
		select {
		case q.kick <- struct{}{}:
		default:
		}
	}
	size := 4 + 5 + len(origin) + len(target) + len(body)
	var r *pubRun
	if n := len(q.runs); n > 0 && batch {
		last := &q.runs[n-1]
		if last.batch && last.subj == subj && last.end-last.off+size <= maxRunBytes {
			r = last
		}
	}
	if r == nil {
		q.runs = append(q.runs, pubRun{subj: subj, off: len(q.buf), batch: batch})
		r = &q.runs[len(q.runs)-1]
		q.buf = append(q.buf, q.header...)
	}
	at := len(q.buf)
	q.buf = append(q.buf, 0, 0, 0, 0)
	q.buf = appendMsg(q.buf, kind, origin, target, body)
	binary.BigEndian.PutUint32(q.buf[at:], uint32(len(q.buf)-at-4))
	r.end = len(q.buf)
	r.n++
	return len(q.buf) > maxQueuedBytes, nil
}

// take swaps the queue's content for the spare buffers. Lock must be held.
func (q *pubQueue) takeLocked() ([]byte, []pubRun) {
	buf, runs := q.buf, q.runs
	q.buf, q.runs = q.spare[:0], q.spareR[:0]
	q.spare, q.spareR = nil, nil
	return buf, runs
}

// giveBack keeps buffers for the next take. Lock must be held.
func (q *pubQueue) giveBackLocked(buf []byte, runs []pubRun) {
	clear(runs) // drop the subjects
	if cap(buf) <= keepBufBytes {
		q.spare, q.spareR = buf[:0], runs[:0]
	}
}

// flush publishes what is queued, in order. A run of one message leaves
// in the plain format; a longer one as one kindBatch message. A failed
// publish is counted as one error per message lost, and logged once.
func (b *Bus) flush() {
	q := &b.queue
	q.flushMu.Lock()
	defer q.flushMu.Unlock()
	q.mu.Lock()
	buf, runs := q.takeLocked()
	q.mu.Unlock()
	for _, r := range runs {
		data := buf[r.off:r.end]
		if r.n == 1 {
			data = data[len(q.header)+4:]
		}
		if err := b.nc.Publish(r.subj, data); err != nil {
			b.errs.Add(uint64(r.n))
			b.warnOnce("publish:"+err.Error(), "cluster: messages not published", "err", err, "messages", r.n)
		}
	}
	q.mu.Lock()
	q.giveBackLocked(buf, runs)
	q.mu.Unlock()
}

// flusher publishes the queue whenever it fills; at stop it publishes
// what is left and makes later sends publish directly.
func (b *Bus) flusher() {
	defer b.wg.Done()
	for {
		select {
		case <-b.queue.kick:
			b.flush()
		case <-b.stop:
			b.queue.mu.Lock()
			b.queue.stopped = true
			b.queue.mu.Unlock()
			b.flush()
			return
		}
	}
}

// forEachRecord calls f with each message of a batch's body, in order. It
// stops at the first malformed record and returns errBadMessage.
func forEachRecord(body []byte, f func(rec []byte) error) error {
	for len(body) > 0 {
		if len(body) < 4 {
			return errBadMessage
		}
		n := binary.BigEndian.Uint32(body)
		if uint64(n) > uint64(len(body)-4) {
			return errBadMessage
		}
		if err := f(body[4 : 4+n]); err != nil {
			return err
		}
		body = body[4+n:]
	}
	return nil
}

// publishNow is the path around the queue: before Attach starts the
// flusher and after Close stopped it.
func (b *Bus) publishNow(subj string, kind byte, target string, body []byte) error {
	bp := bufPool.Get().(*[]byte)
	data := appendMsg((*bp)[:0], kind, b.id, target, body)
	err := b.nc.Publish(subj, data)
	if cap(data) <= 64<<10 {
		*bp = data[:0]
		bufPool.Put(bp)
	}
	return err
}
