package conn

import (
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/msgnet/msgnet/internal/netpoll"
)

// The parked reader: the socket waits in a poller's epoll set, one-shot,
// and no goroutine waits on it. A readiness report starts a goroutine that
// reads with non-blocking read(2) calls until EAGAIN, hands the input to
// the Handler, keeps a partial frame, and rearms the socket. An idle
// connection holds no buffer and no goroutine.
//
// A hot connection (bursts less than hotWindow apart, as under
// request/response or streaming traffic) does not go back to the epoll set
// after a burst: its reader switches to a blocking read loop on the
// runtime's poller (readHot), which costs the same system calls per burst
// as a goroutine per connection and saves the wake-up, goroutine start and
// rearm of parking. The server's sweeper demotes it once it has been
// silent for parkAfter (DemoteIfIdle).

const (
	hotWindow = 2 * time.Millisecond // bursts closer than this keep the reader
	parkAfter = time.Second          // a hot reader silent this long is parked
)

// ParkAfter is how long a hot reader may be silent before DemoteIfIdle
// parks it.
const ParkAfter = parkAfter

// parkedTarget is a Conn as its poller sees it: a separate type, so that
// the poller's callback is not part of Conn's API.
type parkedTarget Conn

// Readable starts a reader goroutine unless one is running.
func (t *parkedTarget) Readable(int64, bool, bool) bool {
	c := (*Conn)(t)
	c.mu.Lock()
	ok := c.claimReaderLocked()
	c.mu.Unlock()
	if ok {
		go c.readParked()
	}
	return false
}

// Register hands the connection to poller p to wait for input, under
// generation gen (distinct from every earlier registration's with p): on
// an event loop (loop set: edge-triggered, read and handled on p's
// goroutine; p must have been made ready with PrepareLoop), or parked
// (one-shot, a goroutine per burst). It reports false, changing nothing,
// when the connection cannot be registered (not a plain TCP socket, or p
// refuses it): the caller then Starts it. A connection already closed is
// reported registered: there is nothing to read.
func (c *Conn) Register(p *netpoll.Poller, gen uint32, loop bool) bool {
	if !netpoll.Supported {
		return false
	}
	var rc syscall.RawConn
	switch nc := c.nc.(type) {
	case *net.TCPConn:
		var err error
		if rc, err = nc.SyscallConn(); err != nil {
			return false
		}
	case *Socket:
		rc, _ = nc.SyscallConn()
	default:
		return false
	}
	fd := -1
	rc.Control(func(f uintptr) { fd = int(f) })
	// Under the lock: the connection may be closed meanwhile (a stop, the
	// sweeper), and a report may start a reader before Add returns (it
	// waits for the lock).
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state >= StateLingering {
		return true
	}
	c.rc, c.fd, c.gen, c.poller = rc, int32(fd), gen, p
	c.flags |= parked
	var target netpoll.Readable = (*parkedTarget)(c)
	add := p.Add
	c.kind = parkedReader
	if loop {
		c.kind, target, add = loopReader, (*loopTarget)(c), p.AddEdge
	}
	if err := add(fd, target, gen); err != nil {
		// Not a loop's, then: ownStage must not take it for one.
		c.flags &^= parked
		c.kind, c.poller = goroutineReader, nil
		return false
	}
	return true
}

// readParked reads a parked connection's socket until it would block,
// then parks it again, or keeps reading if it is hot.
func (c *Conn) readParked() {
	r := readerPool.Get().(*reader)
	hot := c.burstParked(r)
	readerPool.Put(r)
	if hot && !c.stopRead.Load() {
		c.readHot()
	}
	c.mu.Lock()
	c.flags &^= readerActive
	// Once reading has stopped the close path owns the socket; rearming
	// would only report the unread input again and again.
	if c.flags.has(parked) && !c.stopRead.Load() {
		if err := c.poller.Rearm(int(c.fd), c.gen); err != nil {
			c.mu.Unlock()
			c.Close(err, Abort, nil)
			return
		}
	}
	end := c.endLocked()
	c.mu.Unlock()
	if end {
		c.finish()
	}
}

// burstParked reads until the socket would block and reports whether the
// connection is hot enough to keep its reader. It holds a pooled buffer
// only for the burst.
func (c *Conn) burstParked(r *reader) (stayHot bool) {
	now := time.Now().UnixNano()
	stayHot = now-c.lastBurst < int64(hotWindow)
	c.lastBurst = now
	pool := &smallBufPool
	if stayHot || c.need > smallBufSize {
		pool = &readBufPool
	}
	bp := pool.Get().(*[]byte)
	buf, n := c.resume(*bp)
	for !c.stopRead.Load() {
		if n == len(buf) {
			if pool == &smallBufPool && &buf[0] == &(*bp)[0] {
				// More is coming than a small buffer holds: move up.
				big := readBufPool.Get().(*[]byte)
				copy(*big, buf[:n])
				pool.Put(bp)
				pool, bp, buf = &readBufPool, big, *big
			}
			if n == len(buf) {
				buf = c.grow(buf, n)
			}
		}
		r.buf = buf[n:]
		if err := c.rc.Read(r.readFn); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// The sweeper demoted us while we were busy.
				c.nc.SetReadDeadline(time.Time{})
				stayHot = false
				continue
			}
			r.n, r.err = 0, err
		}
		r.buf = nil
		nr, err := r.n, r.err
		if err == errAgain {
			break
		}
		if err == errIntr {
			continue
		}
		if nr <= 0 {
			c.endOfInput(buf[:n], err)
			n, stayHot = 0, false
			break
		}
		c.touch()
		c.bytesIn.Add(uint64(nr))
		n = c.ingest(buf, n+nr)
	}
	c.keepPending(buf[:n], &buf[0] != &(*bp)[0])
	pool.Put(bp) // buf may have outgrown it; the pooled one is unchanged
	return stayHot
}

// readHot reads with blocking reads on the runtime's poller, holding a
// buffer, until the connection is demoted (its read deadline is expired by
// the sweeper), closes, or stops reading.
func (c *Conn) readHot() {
	bp := readBufPool.Get().(*[]byte)
	buf, n := c.resume(*bp)
	c.hotWait.Store(true)
	for !c.stopRead.Load() {
		if n == len(buf) {
			buf = c.grow(buf, n)
		}
		nr, err := c.nc.Read(buf[n:])
		if nr > 0 {
			c.touch()
			c.bytesIn.Add(uint64(nr))
			n = c.ingest(buf, n+nr)
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.nc.SetReadDeadline(time.Time{}) // demoted: park
				break
			}
			c.endOfInput(buf[:n], err)
			n = 0
			break
		}
	}
	c.hotWait.Store(false)
	c.keepPending(buf[:n], &buf[0] != &(*bp)[0])
	readBufPool.Put(bp)
}

// DemoteIfIdle parks a hot connection that has been silent since before
// limit (unix nanoseconds): it wakes its waiting reader with an expired
// deadline. The server's sweeper calls it.
func (c *Conn) DemoteIfIdle(limit int64) {
	if c.hotWait.Load() && c.lastActivity.Load() < limit {
		c.nc.SetReadDeadline(time.Unix(1, 0))
	}
}

// touch records activity for the idle timeout.
func (c *Conn) touch() { c.lastActivity.Store(time.Now().UnixNano()) }

// reader is a parked connection's reader's scratch space: the argument and
// results of the function given to RawConn.Read, built once per pooled
// reader so that a read allocates nothing and an idle connection carries
// none of it.
type reader struct {
	buf    []byte
	n      int
	err    error
	readFn func(fd uintptr) bool
}

var readerPool = sync.Pool{New: func() any {
	r := new(reader)
	r.readFn = func(fd uintptr) bool {
		r.n, r.err = rawRead(int(fd), r.buf)
		return true
	}
	return r
}}
