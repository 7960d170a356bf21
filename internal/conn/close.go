package conn

import (
	"net"
	"time"

	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/internal/gid"
)

// The close path. Every cause of an end (the peer's EOF or DISCONNECT, a
// protocol error, a timeout, a stop, a write error, a handler's panic)
// calls Close; only the first call's reason counts, though an abort still
// cuts a graceful close under way. The connection ends (Handler.Ended)
// once its descriptor is closed and no reader or writer is left.

// Ending is how Close ends a connection.
type Ending uint8

const (
	// Drain writes what is queued, then closes: by lingering unless the
	// reason is ErrPeerClosed (the peer's end of input: nothing more comes).
	Drain Ending = iota
	// Notify writes what is queued, then the last word: the ERROR given to
	// Close, if any, and in binary mode DISCONNECT with the reason's text;
	// then it closes by lingering (docs/PROTOCOL.md, section 2).
	Notify
	// Abort drops what is queued and closes at once.
	Abort
)

// lingerTime bounds how long a closing connection's input is discarded.
const lingerTime = time.Second

// Close ends the connection for reason, as how says; last, with Notify, is
// an ERROR frame's content to write before the DISCONNECT. It stops the
// dispatch of input at once and refuses sends from then on. It never
// waits: the writer, the reader or the loop finishes the work.
func (c *Conn) Close(reason error, how Ending, last *frame.ErrorBody) {
	c.stopRead.Store(true)
	c.mu.Lock()
	if c.state == StateOpen {
		c.state, c.reason = StateClosing, reason
	} else if how != Abort {
		c.mu.Unlock()
		return
	}
	start := false
	if how == Abort {
		c.abortLocked()
	} else {
		start = c.drainLocked(reason, how == Notify, last)
	}
	end := c.endLocked()
	c.mu.Unlock()
	if start {
		go c.writeLoop()
	}
	if end {
		c.finish()
	}
}

// drainLocked lets what is queued, and the last word, be written before the
// socket is closed; it reports whether the caller must start the writer.
// Lock must be held.
func (c *Conn) drainLocked(reason error, notify bool, last *frame.ErrorBody) (startWriter bool) {
	if c.flags.has(held) && c.cfg.Secure {
		// Never completed a handshake the server requires: what was held
		// for it is not for this peer.
		for _, ch := range c.takeEarlyLocked() {
			putChunk(ch)
		}
		c.flags &^= held
	}
	c.releaseLocked() // what was held is written before the last word
	if c.flags.has(writerActive) {
		// A writer blocked on a peer that stopped reading must not hold
		// the close forever.
		c.nc.SetWriteDeadline(time.Now().Add(c.cfg.Drain))
	}
	if c.mode != frame.ModeUnknown && (notify || reason != ErrPeerClosed) {
		// Input may still arrive (the peer has not closed its side): close
		// by lingering, or the kernel answers it with RST, which can
		// destroy what was just written.
		c.flags |= lingerOnEnd
	}
	if notify && c.mode != frame.ModeUnknown {
		if last != nil {
			p := frame.AppendError(nil, last.Code, last.Message)
			c.encodeLocked(&c.out, frame.KindError, 0, p, false)
			c.msgsOut.Add(1)
			c.cfg.Shared.ErrorsSent.Add(last.Code)
			c.cfg.Shared.countOut(frame.KindError, frame.HeaderLen+len(p))
		}
		if c.mode == frame.ModeBinary {
			c.encodeLocked(&c.out, frame.KindDisconnect, 0, []byte(reason.Error()), false)
			c.msgsOut.Add(1)
			c.cfg.Shared.countOut(frame.KindDisconnect, frame.HeaderLen+len(reason.Error()))
		}
	}
	if c.mode == frame.ModeUnknown {
		c.dropQueueLocked() // nothing can be written to a peer whose mode is unknown
	}
	c.chargeLocked()
	// During the event loop's turn, what the handlers staged goes out
	// before the last word: the loop starts the writer, or closes the
	// socket, when they return (endTurn).
	if c.turn() || c.flags.has(writerActive) {
		return false
	}
	if len(c.out.chunks) > 0 {
		c.flags |= writerActive
		return true
	}
	c.closeSocketLocked()
	return false
}

// abortLocked drops what is queued and closes the socket at once, or cuts
// a linger short (lingerThenClose then finishes). Lock must be held.
func (c *Conn) abortLocked() {
	c.dropQueueLocked()
	switch {
	case c.state == StateLingering:
		if c.loopLinger.Load() {
			c.endLingerLocked()
		} else if c.kind == loopReader {
			c.nc.SetReadDeadline(time.Unix(1, 0)) // the loop may be in a turn: see closeFdLocked
		} else {
			c.nc.Close()
		}
	case c.state < StateLingering:
		c.flags &^= lingerOnEnd
		c.closeSocketLocked()
	}
}

// dropQueueLocked drops what is queued, keeping it for TakeUnsent under
// Config.Salvage. Lock must be held.
func (c *Conn) dropQueueLocked() {
	c.foldQueuedLocked()
	for _, ch := range c.out.take() {
		if c.cfg.Salvage {
			e := c.ext()
			e.unsent = append(e.unsent, ch.b...)
		}
		putChunk(ch)
	}
	for _, ch := range c.takeEarlyLocked() {
		putChunk(ch)
	}
	c.chargeLocked()
}

// closeSocketLocked closes the connection. A parked socket leaves its
// poller first, so its descriptor number cannot be mistaken for a new
// one's. After a last word it closes by lingering: it shuts the write
// side, discards input for a moment, then closes, since closing a socket
// with unread input makes the kernel send RST, and a peer that receives
// RST may lose the last word before reading it. Lock must be held.
func (c *Conn) closeSocketLocked() {
	if c.flags.has(lingerOnEnd) && c.kind == loopReader && c.flags.has(parked) {
		if s, ok := c.nc.(*Socket); ok {
			// A socket of the loop's own lingers on the loop: it stays in
			// the epoll set, and the peer's FIN (or more input) is the
			// loop's report (lingerTurn). The sweeper cuts it after
			// lingerTime (CutLinger).
			c.state = StateLingering
			c.lastActivity.Store(time.Now().UnixNano())
			c.loopLinger.Store(true)
			s.CloseWrite()
			// The peer's FIN may have been reported already, to a turn
			// that no longer read (this one, or one while a writer
			// drained the queue): then no report will come for it.
			ownTurn := c.flags.has(readerActive) && gid.Supported && c.poller.Owner() == gid.Current()
			if (ownTurn && c.peerHup || !c.flags.has(readerActive)) && c.lingerDrainLocked() {
				c.endLingerLocked()
			}
			return
		}
	}
	if c.flags.has(parked) {
		c.poller.Forget(int(c.fd))
		c.flags &^= parked
	}
	if c.flags.has(lingerOnEnd) {
		if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
			c.state = StateLingering
			cw.CloseWrite()
			if c.kind == loopReader {
				// Bounded by a deadline, set here under the lock so that
				// an abort's cut (an expired deadline) always comes after.
				c.nc.SetReadDeadline(time.Now().Add(lingerTime))
			}
			go c.lingerThenClose()
			return
		}
	}
	c.state = StateClosed
	c.closeFdLocked()
}

// closeFdLocked closes the descriptor now or, while the event loop uses
// its number (its turn, with raw system calls), when the turn ends:
// closing it under the loop would free the number for a new connection
// that the loop's next call would then read or write. Lock must be held.
func (c *Conn) closeFdLocked() {
	if c.kind == loopReader && c.flags.has(readerActive) {
		c.flags |= fdClosePending
		return
	}
	c.nc.Close()
}

// endFdUseLocked ends the event loop's use of the descriptor, closing it
// if a close waited for that. Lock must be held.
func (c *Conn) endFdUseLocked() {
	if c.flags.has(fdClosePending) {
		c.flags &^= fdClosePending
		c.nc.Close()
	}
}

// lingerTurn is a lingering socket's turn on its loop: it reads and drops
// what has come, and at the peer's end of input, or after lingerBytes in
// one turn, closes. Lock must be held; it unlocks.
func (c *Conn) lingerTurnLocked(sc *loopScratch) {
	if c.flags.has(readerActive) {
		c.mu.Unlock()
		return
	}
	c.flags |= readerActive // the loop uses the descriptor's number: a close waits
	c.mu.Unlock()
	done := c.lingerDrain(*sc.buf)
	c.mu.Lock()
	c.flags &^= readerActive
	if done && c.state == StateLingering {
		c.endLingerLocked()
	}
	c.endFdUseLocked()
	end := c.endLocked()
	c.mu.Unlock()
	if end {
		c.finish()
	}
}

// lingerDrainLocked is lingerDrain when the caller holds the lock and no
// reader is active but the caller, with a small buffer of its own.
func (c *Conn) lingerDrainLocked() (done bool) {
	var b [4096]byte
	return c.lingerDrain(b[:])
}

// lingerDrain reads into buf and drops what a lingering socket has now,
// and reports whether its peer has closed (or sent lingerBytes). The
// caller is the socket's only reader.
func (c *Conn) lingerDrain(buf []byte) (done bool) {
	for total := 0; total < lingerBytes; {
		n, err := rawRead(int(c.fd), buf)
		switch {
		case err == errIntr:
			continue
		case err == errAgain:
			return false
		case n <= 0:
			return true
		}
		total += n
	}
	return true
}

// lingerBytes bounds the input a lingering connection drops before it
// closes anyway (per turn, on a loop; lingerTime bounds the turns).
const lingerBytes = 256 << 10

// endLingerLocked ends a linger on the loop: the socket leaves the epoll
// set and closes (once the loop's turn, if one is on, ends). Lock must be
// held.
func (c *Conn) endLingerLocked() {
	c.loopLinger.Store(false)
	c.poller.Forget(int(c.fd))
	c.flags &^= parked
	c.state = StateClosed
	c.closeFdLocked()
}

// LingeredSince reports whether the connection has lingered on its event
// loop since before limit (Unix nanoseconds): its peer has not closed its
// side in time. It costs an atomic load for a connection that does not
// linger, so that a sweeper can ask every connection.
func (c *Conn) LingeredSince(limit int64) bool {
	return c.loopLinger.Load() && c.lastActivity.Load() < limit
}

// CutLinger closes a connection lingering on its event loop (see
// LingeredSince): the server's sweeper calls it. The end runs on a
// goroutine of its own: Handler.Ended may block, the sweeper must not.
func (c *Conn) CutLinger() {
	c.mu.Lock()
	if c.state == StateLingering && c.loopLinger.Load() {
		c.endLingerLocked()
	}
	end := c.endLocked()
	c.mu.Unlock()
	if end {
		go c.finish()
	}
}

// LingerTime is how long a closing connection waits for its peer's FIN.
const LingerTime = lingerTime

func (c *Conn) lingerThenClose() {
	discardInput(c.nc, c.kind == loopReader)
	c.mu.Lock()
	c.closeFdLocked()
	c.state = StateClosed
	end := c.endLocked()
	c.mu.Unlock()
	if end {
		c.finish()
	}
}

// discardInput reads and drops input until EOF, an error, lingerTime or
// 256 KiB, whichever comes first. The time limit closes the connection
// rather than setting a read deadline, which a hot reader's demotion may
// clear concurrently; the caller closes it anyway. On an event loop (loop
// set) there is no hot reader, and the descriptor must not be closed under
// the loop: there the caller has set a read deadline instead.
func discardInput(nc net.Conn, loop bool) {
	if !loop {
		t := time.AfterFunc(lingerTime, func() { nc.Close() })
		defer t.Stop()
	}
	var b [2048]byte
	for n := 0; n < 256<<10; {
		k, err := nc.Read(b[:])
		n += k
		if err != nil {
			return
		}
	}
}

// LingerClose closes a connection that was sent a last word outside any
// Conn (a refusal at accept), lingering as Close does.
func LingerClose(nc net.Conn) {
	if s, ok := nc.(*Socket); ok {
		// Waiting for the peer takes the runtime's poller: hand the
		// socket to a duplicate that waits there, and close this
		// descriptor, so that a refused connection holds one, not two.
		if d, err := s.detach(); err == nil {
			nc = d
		}
	}
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		discardInput(nc, false)
	}
	nc.Close()
}

// endLocked reports whether the connection has ended and the caller must
// run finish: closed, with no reader or writer left. Lock must be held.
func (c *Conn) endLocked() bool {
	if c.state != StateClosed || c.flags.has(readerActive|writerActive) {
		return false
	}
	c.state = StateEnded
	return true
}

// finish is the connection's last step, run once.
func (c *Conn) finish() {
	c.pending = nil
	c.mu.Lock()
	c.writingBytes = 0
	c.dropQueueLocked() // whatever was queued and never taken; releases the budget
	reason := c.reason
	c.mu.Unlock()
	c.h.Ended(reason)
}
