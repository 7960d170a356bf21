package conn

import (
	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/internal/gid"
	"github.com/msgnet/msgnet/internal/netpoll"
)

// An event loop's turn with a connection: while the loop runs the
// connection's handlers on a burst of input, the DATA they send on the
// loop's goroutine is staged without the lock, in the loop's stage (one
// loop runs one connection's handlers at a time), and written with one
// write(2) when they return (endTurn).
//
// The order rule: the stage goes in front of out. A staged send either
// happened before a send in out or was concurrent with it; a send from
// another goroutine that happened before a handler's set shared first
// (under the lock), so the handler's send sees it, takes the lock, moves
// the stage to the front of out and goes behind both. A close asked for
// during the turn waits for its end, so every accepted send precedes the
// last word.

// stager is an event loop's stage. Only the loop touches it, and it is
// empty between turns. It is one buffer kept by the loop for good:
// staging a frame is a bounds check and a copy into memory that stays in
// the cache.
type stager struct {
	loop *netpoll.Poller
	buf  []byte // the staged frames; cap stageLimit
	msgs uint64 // messages in buf
	room int    // what buf may hold this turn: min(stageLimit, the queue bound)
}

// stageLimit bounds what a connection's handlers stage in one turn; past
// it (or the queue bound, if lower) their sends take the lock.
const stageLimit = 256 << 10

// ownStage returns the loop's stage if the caller is the connection's
// event loop in the middle of the connection's turn, and nil otherwise.
func (c *Conn) ownStage() *stager {
	if !gid.Supported {
		return nil
	}
	if st := c.stage.Load(); st != nil && st.loop.Owner() == gid.Current() {
		return st
	}
	return nil
}

// turn reports whether the connection's handlers are running on its event
// loop with their sends staged. Under mu, or on the loop's goroutine.
func (c *Conn) turn() bool { return c.stage.Load() != nil }

// stageFrame stages a DATA frame in the loop's stage st, if nobody else
// queued anything this turn and it fits.
func (c *Conn) stageFrame(st *stager, flags frame.Flags, payload []byte) bool {
	if len(payload) > c.cfg.MaxPayload || c.shared.Load() || c.stopRead.Load() {
		return false // Enqueue tells why, or takes the lock
	}
	at := len(st.buf)
	end := at + frame.HeaderLen + len(payload)
	if end > st.room {
		return false
	}
	b := st.buf[at:end]
	frame.PutHeader(b, frame.KindData, flags, len(payload))
	copy(b[frame.HeaderLen:], payload)
	st.buf = st.buf[:end]
	st.msgs++
	return true
}

// beginTurnLocked starts the loop's turn: the handlers are about to run
// on a burst of input. Staging needs a connection that speaks plain frames
// (no pipeline, which the lock orders) with nothing queued and no writer:
// then the stage can simply go first. Lock must be held.
func (c *Conn) beginTurnLocked(st *stager) {
	c.flags |= flushAfter
	if gid.Supported && !c.flags.has(writerActive|held) && c.state == StateOpen &&
		c.mode == frame.ModeBinary && c.pipe == nil && len(c.out.chunks) == 0 {
		st.room = min(stageLimit, c.cfg.QueueLimit)
		if c.shared.Load() {
			c.shared.Store(false)
		}
		c.stage.Store(st)
	}
}

// endStageLocked ends staging for the turn, if it was on: what was staged
// moves to the front of out, ahead of what other goroutines queued during
// the turn, or is dropped if the connection was cut meanwhile (an abort
// drops the queue too). Only the loop calls it. Lock must be held.
func (c *Conn) endStageLocked(st *stager) {
	if !c.turn() {
		return
	}
	c.stage.Store(nil)
	staged, msgs := st.buf, st.msgs
	st.buf, st.msgs = st.buf[:0], 0
	if len(staged) == 0 || c.state >= StateLingering {
		return
	}
	c.queuedMsgs += msgs
	c.requeueLocked([]*chunk{chunkOf(staged)}, len(staged))
}

// requeueLocked puts what a write could not take back at the head of the
// queue, or drops it if the connection was cut meanwhile. Lock must be
// held.
func (c *Conn) requeueLocked(rest []*chunk, restBytes int) {
	if len(rest) == 0 {
		return
	}
	if c.state >= StateLingering {
		for _, ch := range rest { // aborted: nothing more goes out
			putChunk(ch)
		}
		return
	}
	c.out.pushFront(rest, restBytes)
}

// endTurn ends the loop's turn, once the handlers have run on a burst: it
// writes what they queued with one non-blocking write, hands the reader's
// role back, and reports whether the connection ended. What the write
// cannot take (a slow peer), and what other goroutines queued meanwhile,
// goes to a writer goroutine, so the loop never waits on a socket.
func (c *Conn) endTurn(sc *loopScratch) (ended bool) {
	st, w := &sc.st, sc.w
	var (
		n, restBytes int
		rest         []*chunk
		err          error
	)
	if c.turn() && len(st.buf) > 0 && !c.shared.Load() && !c.stopRead.Load() {
		// The usual case: only the handlers sent, so the stage is all
		// there is, and it is written without the lock (no writer starts
		// while flushAfter is set, and a close waits for the turn).
		c.msgsOut.Add(st.msgs) // counted before the peer can see them
		st.msgs = 0
		n, err = tryWriteResult(rawWrite(int(c.fd), st.buf))
		if n < len(st.buf) && err == nil {
			// A slow peer: its writer takes the rest, from a chunk of its
			// own, since the loop keeps its stage for the next connection.
			rest, restBytes = []*chunk{chunkOf(st.buf[n:])}, len(st.buf)-n
		}
		st.buf = st.buf[:0]
	} else {
		c.mu.Lock()
		c.endStageLocked(st)
		c.flags &^= flushAfter
		if !c.wantWriterLocked() { // nothing to write, or a writer is at it
			return c.endTurnLocked()
		}
		c.takeBatchLocked(w)
		c.mu.Unlock()
		n, err = tryWriteResult(w.writeOnce(int(c.fd)))
		rest, restBytes = w.unwritten(n)
	}
	c.bytesOut.Add(uint64(n))

	c.mu.Lock()
	c.writingBytes = 0
	c.flags &^= writerActive
	c.chargeLocked()
	if err != nil {
		for _, ch := range rest {
			putChunk(ch)
		}
		c.stage.Store(nil)
		c.flags &^= flushAfter | readerActive
		c.endFdUseLocked()
		c.mu.Unlock()
		c.Close(err, Abort, nil) // finishes: no reader or writer is left
		return true
	}
	c.requeueLocked(rest, restBytes)
	return c.endTurnLocked()
}

// endTurnLocked is the end of endTurn, with the turn's write done, and
// unlocks. What is still queued goes to a writer goroutine; a close that
// waited for the turn is carried out, after the last byte. Lock must be
// held.
func (c *Conn) endTurnLocked() (ended bool) {
	if c.loopLinger.Load() && c.lingerDrainLocked() {
		// A writer goroutine began the linger during this turn, which may
		// have taken the peer's FIN report without reading: no other
		// report will come.
		c.endLingerLocked()
	}
	if c.turn() {
		c.stage.Store(nil)
	}
	c.flags &^= flushAfter
	c.chargeLocked()
	start := false
	if !c.flags.has(writerActive) && c.state < StateLingering {
		if len(c.out.chunks) > 0 {
			c.flags |= writerActive
			start = true
		} else if c.state == StateClosing {
			c.closeSocketLocked()
		}
	}
	c.endFdUseLocked()
	c.flags &^= readerActive
	end := c.endLocked()
	c.mu.Unlock()
	if start {
		go c.writeLoop()
	}
	if end {
		c.finish()
	}
	return end
}
