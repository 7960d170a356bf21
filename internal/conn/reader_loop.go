package conn

import (
	"github.com/msgnet/msgnet/internal/netpoll"
)

// The loop reader: the socket is registered edge-triggered with an event
// loop (a poller whose goroutine runs handlers: the server's handlers have
// promised not to block). A report is the connection's turn: the loop
// reads the socket itself into its own buffer, with raw read(2) calls on
// the descriptor, hands the input to the Handler, whose handlers run right
// there and whose sends are staged, and then writes what they sent with
// one write(2) (stage.go). No goroutine switch, no lock per message.
//
// Since reads are edge-triggered, a read that returns less than it asked
// for means the socket was empty at that instant, and later data brings a
// new report: the loop goes on to the next connection without the read
// that would only find EAGAIN. A read that fills the buffer ends the turn
// too: its replies are written, and the connection is called again in the
// next round, after the new reports, so that a peer that writes without
// pause cannot keep its loop from the others.
//
// During the turn the loop uses the descriptor's number directly, without
// the net.Conn's reference counting, so a close meanwhile waits for the
// turn's end (close.go, closeFdLocked).

// loopReads bounds the reads of one connection in one turn: a read that
// fills the buffer already ends it; this bounds the short reads made after
// a hang-up, reading to the end.
const loopReads = 4

// loopScratch is an event loop's scratch space for the connection whose
// turn it is: one loop reads one connection at a time, so it needs no
// pool.
type loopScratch struct {
	buf *[]byte
	w   *writer
	st  stager
}

// PrepareLoop makes p an event loop: it gives p the scratch space its
// connections' turns use. Call it before p runs and before Register.
func PrepareLoop(p *netpoll.Poller) {
	b := make([]byte, readBufSize)
	p.Local = &loopScratch{buf: &b, w: new(writer), st: stager{loop: p, buf: make([]byte, 0, stageLimit)}}
}

func scratchOf(p *netpoll.Poller) *loopScratch { return p.Local.(*loopScratch) }

// loopTarget is a Conn as its event loop sees it.
type loopTarget Conn

// Readable is the connection's turn on its loop. It reports whether the
// connection wants another turn in the next round (it stopped before its
// socket was drained), at most once until that turn (carried).
func (t *loopTarget) Readable(now int64, hangup, carried bool) bool {
	c := (*Conn)(t)
	if carried {
		c.carried = false
	}
	if !c.readInline(now, hangup) || c.carried {
		return false
	}
	c.carried = true
	return true
}

// readInline is the turn: it claims the reader's role, reads and
// dispatches, and writes what the handlers sent.
func (c *Conn) readInline(now int64, hangup bool) (again bool) {
	sc := scratchOf(c.poller)
	c.mu.Lock()
	if c.loopLinger.Load() {
		c.lingerTurnLocked(sc) // unlocks
		return false
	}
	if !c.claimReaderLocked() {
		c.mu.Unlock()
		return false
	}
	c.beginTurnLocked(&sc.st)
	// Unless a writer is already draining a slow peer's queue, no reply
	// leaves before the turn ends: the Handler may count per burst.
	c.countPerBurst = !c.flags.has(writerActive)
	c.mu.Unlock()
	if hangup {
		c.peerHup = true
	}
	more := c.burstLoop(sc, now)
	end := c.endTurn(sc)
	return more && !end
}

// burstLoop reads and dispatches until a read comes back short (unless
// the peer has hung up: then to the end), fills the buffer, or loopReads
// reads have been made; it reports whether the connection wants another
// turn. now is the loop's clock, taken as the time of every read: a turn
// is over within microseconds, and the clock is only for the idle timeout.
func (c *Conn) burstLoop(sc *loopScratch, now int64) (more bool) {
	buf, n := c.resume(*sc.buf)
	for reads := 0; !c.stopRead.Load(); reads++ {
		if n == len(buf) {
			buf = c.grow(buf, n)
		}
		if reads == loopReads {
			more = true
			break
		}
		asked := len(buf) - n
		nr, err := rawRead(int(c.fd), buf[n:])
		if err == errAgain {
			break
		}
		if err == errIntr {
			continue
		}
		if nr <= 0 {
			c.endOfInput(buf[:n], err)
			n = 0
			break
		}
		if c.lastActivity.Load() != now {
			c.lastActivity.Store(now) // a store costs more than the comparison
		}
		c.bytesIn.Add(uint64(nr))
		n = c.ingest(buf, n+nr)
		if nr < asked {
			if c.peerHup {
				continue // the FIN may sit behind the data: no report would come for it
			}
			break // drained: the next data brings a new report
		}
		more = true // more may be waiting; this read's replies go first
		break
	}
	c.keepPending(buf[:n], &buf[0] != &(*sc.buf)[0])
	return more
}
