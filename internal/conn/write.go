package conn

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/internal/gid"
	"github.com/msgnet/msgnet/pipeline"
)

// The write path. A send appends an encoded frame to the connection's
// bounded queue (out), under mu, and makes sure a writer will write it:
// a writer goroutine, started only while there is something to write,
// takes the whole queue and writes it with one writev. On an event loop a
// handler's own sends are staged instead, without the lock, and the loop
// writes them when its turn ends (stage.go).

// kindRaw marks queued bytes that are already encoded (SendRaw).
const kindRaw frame.Kind = 0

// Send queues msg as one DATA message (one line in text mode). It never
// waits on the network. It fails with ErrMessageTooLarge, ErrQueueFull,
// ErrServerQueueFull, ErrSlowConsumer or ErrSessionClosed, and then nothing
// was queued.
func (c *Conn) Send(msg []byte) error {
	// The stage's fast path (stageFrame), written out: a call less per
	// message on the loop's hottest path.
	if st := c.stage.Load(); st != nil && st.loop.Owner() == gid.Current() &&
		len(msg) <= c.cfg.MaxPayload && !c.shared.Load() && !c.stopRead.Load() {
		at := len(st.buf)
		if end := at + frame.HeaderLen + len(msg); end <= st.room {
			b := st.buf[at:end]
			frame.PutHeader(b, frame.KindData, 0, len(msg))
			copy(b[frame.HeaderLen:], msg)
			st.buf = st.buf[:end]
			st.msgs++
			return nil
		}
	}
	return c.Enqueue(frame.KindData, 0, msg)
}

// SendRaw queues bytes that are already whole frames (or lines, in text
// mode), to be written as they are.
func (c *Conn) SendRaw(data []byte) error { return c.Enqueue(kindRaw, 0, data) }

// Enqueue queues one frame of kind with flags and payload, encoded in the
// connection's mode and, for DATA, through its pipeline; see Send for its
// errors. Frames are written in the order they were queued, whatever
// goroutines queued them.
func (c *Conn) Enqueue(kind frame.Kind, flags frame.Flags, payload []byte) error {
	if kind != kindRaw && len(payload) > c.cfg.MaxPayload {
		return ErrMessageTooLarge
	}
	if st := c.ownStage(); st != nil {
		// A handler's send on its own event loop, during its turn: staged
		// without the lock while nobody else has queued anything this
		// turn. The order holds: a send that happened before this one on
		// another goroutine set shared first (under the lock), so it is
		// seen here and this send takes the lock; a send that happens
		// after this one lands in out, behind the stage, which goes first.
		if kind == frame.KindData && c.stageFrame(st, flags, payload) {
			return nil
		}
		c.mu.Lock()
		c.endStageLocked(st) // the rest of the turn takes the lock
	} else {
		c.mu.Lock()
	}
	if c.stage.Load() != nil && !c.shared.Load() {
		c.shared.Store(true)
	}
	if c.state != StateOpen {
		c.mu.Unlock()
		return ErrSessionClosed
	}
	if kind == frame.KindData && len(payload) > c.sendLimitLocked() {
		c.mu.Unlock()
		return ErrMessageTooLarge
	}
	n := frame.HeaderLen + len(payload)
	// The bound covers everything not yet handed to the socket, the batch
	// being written included, so it bounds the memory a slow peer holds.
	if queued := c.queuedLocked(); queued > 0 && queued+n > c.cfg.QueueLimit {
		return c.refuseLocked()
	}
	if b := c.cfg.Shared.Budget; b != nil && !c.budgetAllowsLocked(b, n) {
		c.mu.Unlock()
		c.noteDrop(DropServerQueueFull)
		return ErrServerQueueFull
	}
	if kind == frame.KindData && !c.flags.has(held) && c.mode == frame.ModeBinary && c.pipe == nil {
		c.out.appendFrame(kind, flags, payload) // the common case, without appendLocked's tests
	} else if err := c.appendLocked(kind, flags, payload); err != nil {
		c.mu.Unlock()
		return err
	}
	c.queuedMsgs++
	c.chargeLocked()
	start := c.wantWriterLocked()
	rc, fd := c.rc, c.fd // Register sets them under the lock
	c.mu.Unlock()
	if kind != frame.KindData && kind != kindRaw {
		c.cfg.Shared.countOut(kind, n)
	}
	if start {
		c.startWriter(rc, fd)
	}
	return nil
}

// refuseLocked refuses a send that would pass the queue bound, and
// unlocks: the send fails, or under SlowDisconnect the connection is
// closed. Lock must be held.
func (c *Conn) refuseLocked() error {
	c.cfg.Shared.SlowConsumers.Add(1)
	if !c.cfg.SlowDisconnect {
		c.mu.Unlock()
		c.noteDrop(DropQueueFull)
		return ErrQueueFull
	}
	// Refuse further sends now; close on another goroutine, since the
	// caller may be walking a registry or a group (a broadcast) and the
	// end takes those locks.
	c.state, c.reason = StateClosing, ErrSlowConsumer
	c.mu.Unlock()
	c.stopRead.Store(true)
	go c.Close(ErrSlowConsumer, Abort, nil)
	c.noteDrop(DropSlowConsumer)
	return ErrSlowConsumer
}

// EnqueueForce queues a frame past the queue bound: for what a client
// buffered while reconnecting, which was accepted under that buffer's
// bound.
func (c *Conn) EnqueueForce(kind frame.Kind, flags frame.Flags, payload []byte) {
	c.mu.Lock()
	c.appendLocked(kind, flags, payload)
	c.queuedMsgs++
	c.chargeLocked()
	start := c.wantWriterLocked()
	c.mu.Unlock()
	if start {
		go c.writeLoop()
	}
}

// dropLogInterval is how often, at most, drops on one connection are
// logged.
const dropLogInterval = 10 * time.Second

// noteDrop counts a message that was not delivered and, at most once per
// connection per dropLogInterval, logs it at warning level, so that no drop
// is silent even when the sender ignores the error.
func (c *Conn) noteDrop(reason string) {
	sh := c.cfg.Shared
	sh.Dropped.Add(reason)
	if sh.Log == nil {
		return
	}
	e := c.ext()
	now := time.Now().UnixNano()
	last := e.lastDropLog.Load()
	if last != 0 && now-last < int64(dropLogInterval) || !e.lastDropLog.CompareAndSwap(last, now) {
		return
	}
	session, client := c.h.Ident()
	sh.Log.Warn("messages dropped for a session (logged at most once per interval; see the dropped counters)",
		"session", session, "client", client, "reason", reason, "interval", dropLogInterval)
}

// NoteDrop counts a message the Handler dropped (over a rate limit), as
// the engine counts its own.
func (c *Conn) NoteDrop(reason string) { c.noteDrop(reason) }

// wantWriterLocked reports whether the caller must start the writer, and
// marks it started. Nothing is written before the peer's mode is known.
// Lock must be held.
func (c *Conn) wantWriterLocked() bool {
	if c.flags.has(writerActive|flushAfter) || len(c.out.chunks) == 0 || c.mode == frame.ModeUnknown || c.state >= StateLingering {
		return false
	}
	c.flags |= writerActive
	return true
}

// appendLocked queues one frame. While held, DATA goes to the early queue
// as plain frames, to be encoded with whatever the handshake negotiates;
// everything else (the handshake's own frames) goes straight out. Lock
// must be held.
func (c *Conn) appendLocked(kind frame.Kind, flags frame.Flags, payload []byte) error {
	if c.flags.has(held) && (kind == frame.KindData || kind == kindRaw) {
		return c.encodeLocked(&c.ext().early, kind, flags, payload, false)
	}
	return c.encodeLocked(&c.out, kind, flags, payload, true)
}

// encodeLocked encodes a frame into q in the connection's mode: a line in
// text mode, a frame otherwise, with DATA passed through the pipeline
// when withPipe is set. Lock must be held: the pipeline's AEAD counter
// follows queue order.
func (c *Conn) encodeLocked(q *queue, kind frame.Kind, flags frame.Flags, payload []byte, withPipe bool) error {
	if c.mode == frame.ModeText {
		// A message's bytes and "\n": one with a "\n" of its own is
		// several lines (the core protocol's text mode). Relaying one
		// peer's words to others is the application's to escape
		// (frame.AppendEscaped).
		switch kind {
		case frame.KindData, kindRaw:
			b := q.reserve(len(payload) + 1)
			b = append(b, payload...)
			q.commit(append(b, '\n'))
		case frame.KindError:
			code := frame.ParseError(payload).Code
			b := q.reserve(len("ERROR ") + len(code) + 1)
			q.commit(append(append(append(b, "ERROR "...), code...), '\n'))
		}
		// Text mode has no PING, CONTROL or DISCONNECT.
		return nil
	}
	if kind == kindRaw {
		q.commit(append(q.reserve(len(payload)), payload...))
		return nil
	}
	if withPipe && c.pipe != nil && kind == frame.KindData {
		b := q.reserve(frame.HeaderLen + len(payload) + pipeline.Overhead)
		at := len(b)
		out, fl, err := c.pipe.Outbound(b[:at+frame.HeaderLen], kind, flags, payload)
		if err != nil {
			return err
		}
		frame.PutHeader(out[at:], kind, fl, len(out)-at-frame.HeaderLen)
		q.commit(out)
		return nil
	}
	q.appendFrame(kind, flags, payload)
	return nil
}

// reencodeLocked moves the frames of chunks into q, encoded afresh in the
// connection's current mode (and pipeline), and recycles the chunks. Only
// the connection's own frames are ever in a queue, so they always split
// cleanly. Lock must be held.
func (c *Conn) reencodeLocked(q *queue, chunks []*chunk, withPipe bool) {
	for _, ch := range chunks {
		for b := ch.b; len(b) >= frame.HeaderLen; {
			total, err := frame.Split(b, frame.MaxPayloadLimit)
			if err != nil || total == 0 || total > len(b) {
				break
			}
			f := frame.Decode(b[:total])
			c.encodeLocked(q, f.Kind, f.Flags, f.Payload, withPipe)
			b = b[total:]
		}
		putChunk(ch)
	}
}

// SetMode records the peer's mode once sniffed, and lets the writer start
// on what was queued meanwhile (re-encoded as lines for a text peer).
func (c *Conn) SetMode(m frame.Mode) {
	c.mu.Lock()
	c.mode = m
	if m == frame.ModeText {
		c.reencodeLocked(&c.out, c.out.take(), false)
		if e := c.x.Load(); e != nil {
			c.reencodeLocked(&e.early, e.early.take(), false)
		}
	}
	c.chargeLocked()
	start := c.wantWriterLocked()
	c.mu.Unlock()
	if start {
		go c.writeLoop()
	}
}

// Establish ends the hold of a connection made with Config.Held: the
// negotiated pipeline (if any) is installed, the handshake's answer (a
// CONTROL payload, if any) is queued, and then the DATA held back is
// queued after it, through the pipeline. All under one lock, so no send
// can slip in between.
func (c *Conn) Establish(pipe *pipeline.Pipeline, answer []byte) {
	c.mu.Lock()
	if pipe != nil {
		c.pipe = pipe
	}
	if answer != nil {
		c.encodeLocked(&c.out, frame.KindControl, 0, answer, false)
		c.msgsOut.Add(1)
		c.cfg.Shared.countOut(frame.KindControl, frame.HeaderLen+len(answer))
	}
	c.releaseLocked()
	c.chargeLocked()
	start := c.wantWriterLocked()
	c.mu.Unlock()
	if start {
		go c.writeLoop()
	}
}

// releaseLocked ends the hold: the early queue joins out, encoded as it
// should be now. Lock must be held.
func (c *Conn) releaseLocked() {
	if !c.flags.has(held) {
		return
	}
	c.flags &^= held
	if c.mode == frame.ModeText {
		for _, ch := range c.takeEarlyLocked() {
			c.out.commit(append(c.out.reserve(len(ch.b)), ch.b...))
			putChunk(ch)
		}
		return
	}
	c.reencodeLocked(&c.out, c.takeEarlyLocked(), true)
}

// QueuedBytes is what the connection has yet to hand to the socket: its
// queues and the batch its writer is writing. What a connection's
// handlers send during its event loop's turn is staged by the loop and
// written when they return; only the loop itself can see it, so only a
// caller on the loop (a handler) has it counted.
func (c *Conn) QueuedBytes() int {
	staged := 0
	if st := c.ownStage(); st != nil {
		staged = len(st.buf)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queuedLocked() + staged
}

// takeBatchLocked hands everything queued to the writer w. Lock must be
// held.
func (c *Conn) takeBatchLocked(w *writer) {
	w.batch, c.out.chunks = c.out.chunks, w.batch[:0]
	c.writingBytes, c.out.bytes = c.out.bytes, 0
	c.foldQueuedLocked()
}

// foldQueuedLocked brings msgsOut up to date with what was queued. Lock
// must be held.
func (c *Conn) foldQueuedLocked() {
	if c.queuedMsgs > 0 {
		c.msgsOut.Add(c.queuedMsgs)
		c.queuedMsgs = 0
	}
}

// writeLoop is a connection's writer goroutine: everything queued goes out
// in one writev, then it looks again, and exits when the queue is empty.
// When the connection is closing, it closes the socket after the last
// byte (or the drain timeout).
func (c *Conn) writeLoop() {
	w := writerPool.Get().(*writer)
	defer writerPool.Put(w)
	for {
		c.mu.Lock()
		c.writingBytes = 0
		c.chargeLocked()
		if len(c.out.chunks) == 0 || c.state >= StateLingering {
			end := c.writerDoneLocked()
			c.mu.Unlock()
			if end {
				c.finish()
			}
			return
		}
		c.takeBatchLocked(w)
		closing := c.state == StateClosing
		c.mu.Unlock()

		if closing && !c.drainArmed {
			c.drainArmed = true
			c.nc.SetWriteDeadline(time.Now().Add(c.cfg.Drain))
		}
		n, err := w.write(c.nc)
		c.bytesOut.Add(uint64(n))
		if err != nil {
			c.Close(writeError(err), Abort, nil)
		}
	}
}

// writeError is the reason a failed write gives the close. A connection
// found closed (net.ErrClosed) was closed by its transport on the peer's
// word (a WebSocket close frame; the reader's end of input racing the
// writer), or by our own Close, whose reason then stands anyway.
func writeError(err error) error {
	if errors.Is(err, errConnReset) || errors.Is(err, errPipe) || errors.Is(err, net.ErrClosed) {
		return ErrPeerClosed // the peer went away while we wrote
	}
	return err
}

// writerDoneLocked ends the writer's turn with nothing left to write: a
// closing connection's socket is closed after its last byte. It reports
// whether the caller must run finish. Lock must be held.
func (c *Conn) writerDoneLocked() bool {
	c.flags &^= writerActive
	if c.state == StateClosing {
		c.closeSocketLocked()
	}
	return c.endLocked()
}

// writer is a writer's scratch space, pooled so that a connection without
// a running writer carries none of it.
type writer struct {
	batch  []*chunk
	iov    net.Buffers
	iovTmp net.Buffers
	iovecs []iovec // the event loop's writev arguments (writeOnce)
}

var writerPool = sync.Pool{New: func() any { return new(writer) }}

// write sends the batch and recycles its chunks. A single chunk goes out
// with write(2): writev would make the runtime keep an iovec array for the
// descriptor from then on, for every connection that was ever sent
// anything.
func (w *writer) write(nc net.Conn) (int, error) {
	var n int
	var err error
	if s, ok := nc.(*Socket); ok {
		n, err = s.writeBatch(w)
	} else if len(w.batch) == 1 {
		n = len(w.batch[0].b)
		_, err = nc.Write(w.batch[0].b)
	} else {
		w.iov = w.iov[:0]
		for _, ch := range w.batch {
			w.iov = append(w.iov, ch.b)
			n += len(ch.b)
		}
		w.iovTmp = w.iov // WriteTo consumes its receiver; keep w.iov's backing intact
		_, err = w.iovTmp.WriteTo(nc)
	}
	for i, ch := range w.batch {
		putChunk(ch)
		w.batch[i] = nil
	}
	for i := range w.iov {
		w.iov[i] = nil
	}
	w.batch = w.batch[:0]
	return n, err
}

// tryWriteResult is a non-blocking write's result: a full socket buffer
// is not an error, only nothing written.
func tryWriteResult(n int, err error) (int, error) {
	if err == errAgain || err == errIntr {
		return 0, nil
	}
	return max(n, 0), err
}

// unwritten recycles the chunks of the batch that the first n bytes
// covered, and returns the rest (the first one cut to what is left) with
// its length. The batch is left empty.
func (w *writer) unwritten(n int) (rest []*chunk, restBytes int) {
	for i, ch := range w.batch {
		w.batch[i] = nil
		switch {
		case n >= len(ch.b):
			n -= len(ch.b)
			putChunk(ch)
		case n > 0:
			// A partly written chunk cannot go back to the pool: its
			// rest is still to be written from the same memory.
			rest = append(rest, &chunk{b: ch.b[n:]})
			restBytes += len(ch.b) - n
			n = 0
		default:
			rest = append(rest, ch)
			restBytes += len(ch.b)
		}
	}
	w.batch = w.batch[:0]
	return rest, restBytes
}

// TakeUnsent returns what a connection made with Config.Salvage had queued
// and never handed to the socket when it died, and forgets it.
func (c *Conn) TakeUnsent() []byte {
	e := c.x.Load()
	if e == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b := e.unsent
	e.unsent = nil
	return b
}
