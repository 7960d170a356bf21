package conn

import (
	"errors"
	"io"
	"sync"

	"github.com/msgnet/msgnet/frame"
)

// The read path. A reader reads what the socket has, hands it to the
// Handler (Ingest) and keeps a partial frame or line for next time
// (pending). How it waits for input is the reader's kind, a file each:
//
//   - reader_goroutine.go: a goroutine for the connection's life, blocking
//     reads (TLS and other streams, a client, servers that do not park);
//   - reader_parked.go: the socket waits in a poller's epoll set, one-shot,
//     and a goroutine reads each burst (idle connections cost no goroutine
//     and no buffer); a connection whose bursts come close together keeps
//     its goroutine in a blocking read loop until it goes quiet;
//   - reader_loop.go: the socket is registered edge-triggered with an
//     event loop, which reads it and runs the handlers itself, then writes
//     what they sent (stage.go).

// readerKind is how a connection waits for input.
type readerKind uint8

const (
	goroutineReader readerKind = iota // a goroutine per connection (Start)
	parkedReader                      // a poller, one-shot, a goroutine per burst (Register)
	loopReader                        // an event loop, edge-triggered, read on the loop (Register)
)

// readBufSize is the buffer a reader holds while a connection has data:
// large enough that one read system call carries many small frames.
const readBufSize = 64 << 10

// smallBufSize is where a burst of a connection that is not hot starts:
// most such bursts are a hello or a chat line, and a connect storm should
// not hold a 64 KiB buffer per connection being greeted.
const smallBufSize = 4 << 10

var (
	readBufPool  = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}
	smallBufPool = sync.Pool{New: func() any { b := make([]byte, smallBufSize); return &b }}
)

// claimReaderLocked makes the caller the connection's reader, unless a
// reader is running or the socket is done. Lock must be held.
func (c *Conn) claimReaderLocked() bool {
	if c.flags.has(readerActive) || c.state >= StateLingering {
		return false
	}
	c.flags |= readerActive
	return true
}

// releaseReader ends the reader's role; the connection may end with it.
func (c *Conn) releaseReader() {
	c.mu.Lock()
	c.flags &^= readerActive
	end := c.endLocked()
	c.mu.Unlock()
	if end {
		c.finish()
	}
}

// resume puts what the last burst kept (a partial frame or line) at the
// head of buf, the burst's buffer, and returns the buffer to read into and
// how much it holds. A kept part larger than buf is read on in its own
// buffer, kept between bursts (see keepPending), so that a large message
// trickled in small pieces is not copied and allocated again per piece.
func (c *Conn) resume(buf []byte) ([]byte, int) {
	p := c.pending
	if len(p) == 0 {
		return buf, 0
	}
	if len(p) < len(buf) {
		return buf, copy(buf, p)
	}
	c.pending = nil // the burst's now
	return p[:cap(p)], len(p)
}

// grow returns a buffer holding buf[:n], which is full, with room for
// more: twice the size, never more than the incomplete frame needs (when
// its header has told) or than the size limit allows. Growing
// geometrically keeps what a message trickled in small pieces costs in
// allocations proportional to its size, and what the server holds
// proportional to what it received: a header alone does not reserve the
// whole frame.
func (c *Conn) grow(buf []byte, n int) []byte {
	size := min(2*len(buf), c.cfg.MaxPayload+frame.HeaderLen)
	if c.need > n {
		size = min(size, c.need)
	}
	size = max(size, n+1)
	nb := make([]byte, size)
	copy(nb, buf[:n])
	return nb
}

// keepPending saves a partial frame or line between bursts; a connection
// with nothing partial holds no buffer. b is at the head of the burst's
// buffer; own says that buffer is the burst's own (grown for a large
// message), not pooled: then it is kept as it is, capacity included, and
// the next burst reads on into it.
func (c *Conn) keepPending(b []byte, own bool) {
	if own && len(b) > 0 {
		c.pending = b
		return
	}
	if len(b) == 0 {
		if cap(c.pending) > smallBufSize {
			c.pending = nil
		} else {
			c.pending = c.pending[:0]
		}
		return
	}
	c.pending = append(c.pending[:0], b...)
}

// ingest hands buf[:n] to the Handler, moves what is left to the front of
// buf and returns its length. Once the connection stops dispatching (bad
// input closed it), nothing is kept.
func (c *Conn) ingest(buf []byte, n int) int {
	used, need := c.h.Ingest(buf[:n])
	if c.stopRead.Load() {
		return 0
	}
	c.need = need
	return copy(buf, buf[used:n])
}

// endOfInput handles the end of the stream or a read error: what is left
// goes to the Handler (an unterminated last line is a message), and the
// connection closes. A connection that keeps what it never sent (a
// client's) aborts: the peer is gone, and the rest is for the next
// connection.
func (c *Conn) endOfInput(rest []byte, err error) {
	if len(rest) > 0 && !c.stopRead.Load() {
		c.h.Flush(rest)
	}
	if err == nil || err == io.EOF || errors.Is(err, errConnReset) {
		err = ErrPeerClosed
	}
	if c.cfg.Salvage {
		c.Close(err, Abort, nil)
		return
	}
	c.Close(err, Drain, nil)
}
