package natsbus

import (
	"encoding/binary"
	"errors"
	"sync"
	"time"
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
// A node's inbox gets batches once that node (in its current life) has
// said it reads them: the "batch" field of its heartbeat and directory
// sync. A subject every node subscribes to (broadcasts, groups, unknown
// session ids) gets them once every known node has said so and no node
// that does not has spoken for oldGrace, so a node of an older version
// that stalls past its TTL, still subscribed, does not get one either.

const (
	// maxRunBytes bounds one batch on the wire (under NATS's default 1 MB
	// payload limit, and Embedded's 8 MiB).
	maxRunBytes = 64 << 10
	// maxQueuedBytes bounds what waits for the flusher: beyond it, Publish
	// flushes itself, and so waits for NATS like a plain nats.go Publish.
	maxQueuedBytes = 4 << 20
	// keepBufBytes bounds the run buffers kept for reuse between flushes.
	keepBufBytes = 1 << 20
	// oldGrace is how long a node that does not read batches keeps
	// batches off the shared subjects after it last spoke.
	oldGrace = time.Minute
)

// batchShared reports whether a subject every node subscribes to may get
// batches now.
func (b *Bus) batchShared() bool {
	if !b.batchOK.Load() {
		return false
	}
	// The clock is read only once an older node has been heard.
	old := b.lastOld.Load()
	return old == 0 || time.Now().UnixNano()-old > int64(oldGrace)
}

// errQueueStopped is add's answer once the flusher has ended: the caller
// publishes directly.
var errQueueStopped = errors.New("natsbus: publish queue stopped")

// pubQueue is the bus's ordered publish queue.
//
// Order: runs leave in queue order, and NATS keeps a connection's order
// across subjects. A message joins the last run when that run has its
// subject; a message to one node's inbox (merge) may also join an earlier
// run to that inbox, as long as no message for more than one node (a
// broadcast, a group or unknown-id message) or control message was queued
// after that run: only the one node receives an inbox, so messages to two
// different nodes have no order anyone could see, and each node still gets
// its messages in the order they were published.
type pubQueue struct {
	kick    chan struct{} // cap 1: the queue went from empty to not empty
	flushMu sync.Mutex    // held by the one flush at a time: keeps runs in order

	mu      sync.Mutex // guards the fields below
	runs    []pubRun   // in order; entries past len keep their buffers for reuse
	open    int        // runs[open:] may take merge messages out of order
	size    int        // bytes in runs
	stopped bool       // the flusher ended; add refuses
	spare   []pubRun
	header  []byte // a batch's header: kindBatch from this node, no target
}

// pubRun is one NATS message to be: buf holds the batch header, then n
// records of a 4-byte big-endian length and an encoded message.
type pubRun struct {
	subj  string
	buf   []byte
	n     int
	batch bool // may take more records (a data kind, to nodes that read batches)
}

func newPubQueue(origin string) pubQueue {
	return pubQueue{kick: make(chan struct{}, 1), header: appendMsg(nil, kindBatch, origin, "", nil)}
}

// add queues one message. batch says that it may share a NATS message of at
// most limit bytes with other data messages; merge, that it goes to one
// node's inbox (see pubQueue). It reports whether the queue holds more than
// maxQueuedBytes, when the caller should flush.
func (q *pubQueue) add(subj string, batch, merge bool, limit int, kind byte, origin, target string, body []byte) (full bool, err error) {
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
	return q.addLocked(subj, batch, merge, limit, kind, origin, target, body), nil
}

// addLocked is add without the stop check and the flusher's kick. Lock
// must be held.
func (q *pubQueue) addLocked(subj string, batch, merge bool, limit int, kind byte, origin, target string, body []byte) (full bool) {
	size := 4 + msgLen(origin, target, body) // a record: length, then the message
	r := q.joinable(subj, batch, merge, size, limit)
	if r == nil {
		n := len(q.runs)
		if n < cap(q.runs) {
			q.runs = q.runs[:n+1]
		} else {
			q.runs = append(q.runs, pubRun{})
		}
		r = &q.runs[n]
		*r = pubRun{subj: subj, buf: append(r.buf[:0], q.header...), batch: batch}
		q.size += len(q.header)
		if !merge {
			q.open = n + 1 // nothing queued later may pass this run
		}
	}
	at := len(r.buf)
	r.buf = append(r.buf, 0, 0, 0, 0)
	r.buf = appendMsg(r.buf, kind, origin, target, body)
	binary.BigEndian.PutUint32(r.buf[at:], uint32(len(r.buf)-at-4))
	r.n++
	q.size += len(r.buf) - at
	return q.size > maxQueuedBytes
}

// joinable returns the run a message may join, or nil. Lock must be held.
func (q *pubQueue) joinable(subj string, batch, merge bool, size, limit int) *pubRun {
	if !batch {
		return nil
	}
	first := len(q.runs) - 1
	if merge {
		first = q.open
	}
	for i := len(q.runs) - 1; i >= first && i >= 0; i-- {
		if r := &q.runs[i]; r.subj == subj {
			if r.batch && len(r.buf)+size <= limit {
				return r
			}
			return nil // a later message may not pass the last one to subj
		}
	}
	return nil
}

// takeLocked swaps the queue's runs for the spare ones. Lock must be held.
func (q *pubQueue) takeLocked() []pubRun {
	runs := q.runs
	q.runs, q.spare = q.spare[:0], nil
	q.open, q.size = 0, 0
	return runs
}

// giveBackLocked keeps runs and their buffers, up to keepBufBytes in all,
// for the next take. Lock must be held.
func (q *pubQueue) giveBackLocked(runs []pubRun) {
	kept := 0
	runs = runs[:cap(runs)] // entries past len hold buffers of earlier flushes
	for i := range runs {
		runs[i].subj = ""
		if kept += cap(runs[i].buf); kept > keepBufBytes {
			runs[i].buf = nil
		}
	}
	q.spare = runs[:0]
}

// flush publishes what is queued, in order. A run of one message leaves
// in the plain format; a longer one as one kindBatch message, or message
// by message if NATS's maximum payload shrank below it (a reconnect to
// another server). A failed publish is counted as one error per message
// lost, and logged once.
func (b *Bus) flush() { b.flushQueue(false) }

// flushQueue is flush; with stop, it also makes later sends publish
// directly, in the same hold of flushMu, so that none of them passes what
// was queued before.
func (b *Bus) flushQueue(stop bool) {
	q := &b.queue
	q.flushMu.Lock()
	defer q.flushMu.Unlock()
	q.mu.Lock()
	q.stopped = q.stopped || stop
	runs := q.takeLocked()
	q.mu.Unlock()
	limit := int(b.nc.MaxPayload())
	for _, r := range runs {
		data := r.buf
		if r.n > 1 && len(data) <= limit {
			b.publishRun(r.subj, data, r.n)
			continue
		}
		forEachRecord(data[len(q.header):], func(rec []byte) error {
			b.publishRun(r.subj, rec, 1)
			return nil
		})
	}
	q.mu.Lock()
	q.giveBackLocked(runs)
	q.mu.Unlock()
}

func (b *Bus) publishRun(subj string, data []byte, n int) {
	if err := b.nc.Publish(subj, data); err != nil {
		b.errs.Add(uint64(n))
		b.warnOnce("publish:"+err.Error(), "cluster: messages not published", "err", err, "messages", n)
	}
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
			b.flushQueue(true)
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

// eachBatched calls f with each message of batch m, in order. Only data
// messages from the batch's own origin may be in it: at the first record
// that is not one, or is malformed, it stops and returns errBadMessage.
// The records' ids reuse the batch's origin and the previous record's
// target, so that a batch to one target allocates nothing per record.
func eachBatched(m wireMsg, f func(wireMsg)) error {
	var target string
	return forEachRecord(m.body, func(rec []byte) error {
		kind, origin, t, body, ok := splitMsg(rec)
		if !ok || !isData(kind) || string(origin) != m.origin {
			return errBadMessage
		}
		if string(t) != target {
			target = string(t)
		}
		f(wireMsg{kind: kind, origin: m.origin, target: target, body: body})
		return nil
	})
}

// publishNow is the path around the queue: before Attach starts the
// flusher, after Close stopped it, and while NATS is disconnected. It
// waits for a flush under way, so that it never overtakes what was queued.
func (b *Bus) publishNow(subj string, kind byte, target string, body []byte) error {
	b.queue.flushMu.Lock()
	defer b.queue.flushMu.Unlock()
	bp := bufPool.Get().(*[]byte)
	data := appendMsg((*bp)[:0], kind, b.id, target, body)
	err := b.nc.Publish(subj, data)
	if cap(data) <= 64<<10 {
		*bp = data[:0]
		bufPool.Put(bp)
	}
	return err
}
