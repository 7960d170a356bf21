package msgnet

import (
	"errors"
	"io"
	"os"
	"sync"
	"time"
	"unsafe"

	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/internal/netpoll"
	"golang.org/x/sys/unix"
)

// readBufSize is the pooled buffer a reader takes while a connection has
// data: large enough that one read syscall carries many small frames.
const readBufSize = 64 << 10

// smallBufSize is where a burst of a session that is not hot starts: most
// such bursts are a hello or a chat line, and a connect storm should not
// hold a 64 KiB buffer per connection being greeted.
const smallBufSize = 4 << 10

var (
	readBufPool  = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}
	smallBufPool = sync.Pool{New: func() any { b := make([]byte, smallBufSize); return &b }}
)

// pollTarget is a Session as the poller sees it: a separate type, so that
// the poller's Readable callback is not part of Session's API.
type pollTarget Session

// Readable is called by the server's poller when a parked session has data
// or was closed by the peer.
func (p *pollTarget) Readable(now int64, hangup, carried bool) bool {
	s := (*Session)(p)
	if carried {
		s.carried = false
	}
	if !s.readable(now, hangup) || s.carried {
		return false // done, or already waiting for its next turn
	}
	s.carried = true
	return true
}

// readable starts a reader unless one is running. On an event loop it
// reads right here, and reports whether it wants another turn.
func (s *Session) readable(now int64, hangup bool) (again bool) {
	s.mu.Lock()
	if s.readerActive || s.socketDone() {
		s.mu.Unlock()
		return false
	}
	s.readerActive = true
	if s.inline {
		// The loop's turn with the session starts here and lasts the
		// whole burst: what the handlers queue is written when it ends
		// (endTurn). Unless a writer is already draining a slow peer's
		// queue, no reply leaves before then (see dispatch's counting).
		s.beginTurnLocked(&scratchOf(s.loop.Load()).st)
		s.countPerBurst = !s.writerActive
		s.mu.Unlock()
		return s.readInline(now, hangup)
	}
	s.mu.Unlock()
	go s.readFn()
	return false
}

// loopScratch is an event loop's scratch space for the session it is
// reading: one loop reads one session at a time, so it needs no pool.
type loopScratch struct {
	r   *reader
	buf *[]byte
	w   *writer
	st  stager
}

func newLoopScratch(p *netpoll.Poller) *loopScratch {
	b := make([]byte, readBufSize)
	return &loopScratch{r: newReader(), buf: &b, w: newWriter(),
		st: stager{loop: p, buf: make([]byte, 0, stageLimit)}}
}

// loopReads bounds the reads of one session in one turn of its event
// loop. A read that fills the buffer already ends the turn (see burst);
// this bounds the short reads made after a hang-up, reading to the end.
const loopReads = 4

// readInline reads a session with non-blocking handlers on its event
// loop's goroutine, dispatching what arrives and writing the replies, until
// a read comes back short. Its registration is edge-triggered, so data that
// arrives later is reported again: unlike readParked, it neither rearms nor
// reads a socket that is known to be empty.
func (s *Session) readInline(now int64, hangup bool) (again bool) {
	if hangup {
		s.peerHup = true
	}
	sc := scratchOf(s.loop.Load())
	_, again = s.burst(sc.r, now, sc.buf)
	end := s.endTurn(sc)
	return again && !end
}

// readParked reads a parked session's socket until it would block,
// dispatching what arrives, then parks it again. It holds a pooled buffer
// only while reading; a partial frame is kept in s.pending.
//
// A hot session (bursts less than hotWindow apart, as under request/response
// or streaming traffic) does not go back to the epoll set after a burst: its
// reader switches to a plain blocking read loop (readHot), which costs the
// same system calls per burst as a goroutine-per-connection server and
// saves the wake-up, goroutine start and rearm of parking. The sweeper
// demotes it to the epoll set once it has been silent for parkAfter.
func (s *Session) readParked() {
	r := readerPool.Get().(*reader)
	hot, _ := s.burst(r, 0, nil)
	readerPool.Put(r)
	if hot && !s.stopRead.Load() {
		s.readHot()
	}
	s.mu.Lock()
	s.readerActive = false
	// Once reading has stopped the close path owns the socket; rearming
	// would only report the unread input again and again.
	if s.parked && !s.stopRead.Load() {
		if err := s.poller.Rearm(int(s.fd), s.gen); err != nil {
			s.mu.Unlock()
			s.abort(err)
			return
		}
	}
	end := s.endLocked()
	s.mu.Unlock()
	if end {
		s.finish()
	}
}

// readHot reads with blocking reads on the runtime's poller, holding a
// buffer, until the session is demoted (its read deadline is expired by the
// sweeper), closes, or stops reading.
func (s *Session) readHot() {
	bp := readBufPool.Get().(*[]byte)
	buf, n := s.resume(*bp)
	s.hotWait.Store(true)
	for !s.stopRead.Load() {
		if n == len(buf) {
			buf = s.grow(buf, n)
		}
		nr, err := s.nc.Read(buf[n:])
		if nr > 0 {
			s.lastActivity.Store(time.Now().UnixNano())
			s.bytesIn.Add(uint64(nr))
			n = s.ingest(buf, n+nr)
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				s.nc.SetReadDeadline(time.Time{}) // demoted: park
				break
			}
			s.endOfInput(buf[:n], err)
			n = 0
			break
		}
	}
	s.hotWait.Store(false)
	s.keepPending(buf[:n], &buf[0] != &(*bp)[0])
	readBufPool.Put(bp)
}

const (
	hotWindow = 2 * time.Millisecond // bursts closer than this keep the reader
	parkAfter = time.Second          // a hot reader silent this long is parked
)

// burst reads until the socket would block and reports whether the session
// is hot enough to keep its reader. Given the time of an event loop's
// round (an edge-triggered registration, read on the loop), it takes that
// as the time of every read (a loop's burst is over within microseconds,
// and the clock is only for the idle timeout and the hot-reader window),
// stops after a short read unless the peer has hung up (the FIN may sit
// behind the data just read, and no new report would come for it), and
// stops with more set after a read that filled the buffer, or after
// loopReads reads: the loop gives it another turn.
//
// An event loop passes its own buffer as loopBuf; others take one from a
// pool for the burst.
func (s *Session) burst(r *reader, loopNow int64, loopBuf *[]byte) (stayHot, more bool) {
	edge := loopNow != 0
	now := loopNow
	if !edge {
		now = time.Now().UnixNano()
	}
	stayHot = now-s.lastBurst < int64(hotWindow)
	s.lastBurst = now

	pool := &smallBufPool
	if stayHot || edge || s.need > smallBufSize {
		pool = &readBufPool
	}
	reads := 0
	var bp *[]byte
	if loopBuf != nil {
		pool, bp = nil, loopBuf
	} else {
		bp = pool.Get().(*[]byte)
	}
	buf, n := s.resume(*bp)
	for !s.stopRead.Load() {
		if n == len(buf) {
			if pool == &smallBufPool && &buf[0] == &(*bp)[0] {
				// More is coming than a small buffer holds: move up.
				big := readBufPool.Get().(*[]byte)
				copy(*big, buf[:n])
				pool.Put(bp)
				pool, bp, buf = &readBufPool, big, *big
			}
			if n == len(buf) {
				buf = s.grow(buf, n)
			}
		}
		if edge && reads == loopReads {
			more = true
			break
		}
		reads++
		r.buf = buf[n:]
		asked := len(r.buf)
		if edge {
			// The loop's own descriptor for the turn (see fdClosePending): a raw
			// read, without the net.Conn's locking.
			r.n, r.err = rawRead(int(s.fd), r.buf)
		} else if err := s.rc.Read(r.readFn); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// The sweeper demoted us while we were busy.
				s.nc.SetReadDeadline(time.Time{})
				stayHot = false
				continue
			}
			r.n, r.err = 0, err
		}
		r.buf = nil
		nr, err := r.n, r.err
		if err == unix.EAGAIN {
			break
		}
		if err == unix.EINTR {
			continue
		}
		if nr <= 0 {
			if err == nil {
				err = io.EOF
			}
			s.endOfInput(buf[:n], err)
			n, stayHot = 0, false
			break
		}
		if !edge {
			now = time.Now().UnixNano()
		}
		if edge && s.lastActivity.Load() == now {
			// The loop's clock has not moved since this session's last
			// read: an atomic store costs more than this comparison.
		} else {
			s.lastActivity.Store(now)
		}
		s.bytesIn.Add(uint64(nr))
		short := nr < asked
		n = s.ingest(buf, n+nr)
		if edge && short && !s.peerHup {
			break // drained: the next data brings a new report
		}
		if edge && !short {
			// More may be waiting, but the replies to this read are
			// written first (the turn's end), and the session comes back
			// in the next round: held through several reads, they could
			// fill the send queue of a peer that reads everything.
			more = true
			break
		}
	}
	s.keepPending(buf[:n], &buf[0] != &(*bp)[0])
	if pool != nil {
		pool.Put(bp) // buf may have outgrown it; the pooled one is unchanged
	}
	return stayHot, more
}

// reader is a parked session's read goroutine's scratch space: the
// argument and results of the function given to RawConn.Read, built once
// per pooled reader so that a read allocates nothing and an idle session
// carries none of it.
type reader struct {
	buf    []byte
	n      int
	err    error
	readFn func(fd uintptr) bool
}

var readerPool = sync.Pool{New: func() any { return newReader() }}

func newReader() *reader {
	r := new(reader)
	r.readFn = func(fd uintptr) bool {
		r.n, r.err = rawRead(int(fd), r.buf)
		return true
	}
	return r
}

// demoteIfIdle parks a hot session that has been silent since before
// limit: it wakes its waiting reader with an expired deadline.
func (s *Session) demoteIfIdle(limit int64) {
	if s.hotWait.Load() && s.lastActivity.Load() < limit {
		s.nc.SetReadDeadline(time.Unix(1, 0))
	}
}

// readBlocking is the reader for connections that cannot be parked (TLS,
// WebSocket and other streams, and the client side): one goroutine for the
// connection's life, with its own buffer.
func (s *Session) readBlocking() {
	buf, n := s.resume(make([]byte, 16<<10))
	s.pending = nil
	if n > 0 {
		n = s.ingest(buf, n)
	}
	for !s.stopRead.Load() {
		if n == len(buf) {
			buf = s.grow(buf, n)
		}
		nr, err := s.nc.Read(buf[n:])
		if nr > 0 {
			s.touch()
			s.bytesIn.Add(uint64(nr))
			n = s.ingest(buf, n+nr)
		}
		if err != nil {
			s.endOfInput(buf[:n], err)
			break
		}
	}
	s.mu.Lock()
	s.readerActive = false
	end := s.endLocked()
	s.mu.Unlock()
	if end {
		s.finish()
	}
}

// resume puts what the last burst kept (a partial frame or line) at the
// head of buf, the burst's buffer, and returns the buffer to read into and
// how much it holds. A kept part larger than buf is read on in its own
// buffer, kept between bursts (see keepPending), so that a large message
// trickled in small pieces is not copied and allocated again per piece.
func (s *Session) resume(buf []byte) ([]byte, int) {
	p := s.pending
	if len(p) == 0 {
		return buf, 0
	}
	if len(p) < len(buf) {
		return buf, copy(buf, p)
	}
	s.pending = nil // the burst's now
	return p[:cap(p)], len(p)
}

// grow returns a buffer holding buf[:n], which is full, with room for
// more: twice the size, never more than the incomplete frame needs (when
// its header has told) or than the size limit allows. Growing
// geometrically keeps what a message trickled in small pieces costs in
// allocations proportional to its size, and what the server holds
// proportional to what it received: a header alone does not reserve the
// whole frame.
func (s *Session) grow(buf []byte, n int) []byte {
	size := min(2*len(buf), s.maxPayload+frame.HeaderLen)
	if s.need > n {
		size = min(size, s.need)
	}
	size = max(size, n+1)
	nb := make([]byte, size)
	copy(nb, buf[:n])
	return nb
}

// ingest dispatches the complete frames or lines in buf[:n], moves what is
// left to the front of buf and returns its length. On a protocol error it
// closes the session and returns 0.
func (s *Session) ingest(buf []byte, n int) int {
	used, err := s.dispatch(buf[:n])
	if err != nil {
		s.fail(err)
		return 0
	}
	return copy(buf, buf[used:n])
}

// dispatch hands complete frames (or lines) at the start of b to the peer,
// in order, and returns the bytes used. A panic in a handler is caught here
// and ends only this session.
func (s *Session) dispatch(b []byte) (used int, err error) {
	// A message is counted before its handler runs, so that whoever sees
	// a reply also sees its request counted. On an event loop the replies
	// go out only after dispatch returns (when no writer is draining), so
	// there the count is added once per burst: an atomic add per message
	// costs more than the rest of dispatching it. Elsewhere a writer
	// goroutine may send a reply at once.
	start := s.seq
	perBurst := s.inline && s.countPerBurst
	defer func() {
		if perBurst {
			s.msgsIn.Add(s.seq - start)
		}
		if r := recover(); r != nil {
			err = &HandlerPanicError{Value: r}
		}
	}()
	s.need = 0
	mode := s.readerMode()
	if mode == frame.ModeUnknown {
		if mode = frame.Sniff(b); mode == frame.ModeUnknown {
			return 0, nil
		}
		s.setMode(mode)
	}
	var plain MessageHandler
	if mode == frame.ModeBinary {
		plain = s.peer.plainHandler(s)
	}
	for used < len(b) && !s.stopRead.Load() {
		rest := b[used:]
		if mode == frame.ModeText {
			line, k, err := frame.SplitLineFrom(rest, s.scanned, s.maxPayload)
			if err != nil {
				return used, err
			}
			if k == 0 {
				s.scanned = len(rest)
				return used, nil
			}
			s.scanned = 0
			used += k
			s.seq++
			if !perBurst {
				s.msgsIn.Add(1)
			}
			s.peer.handleLine(s, line)
			continue
		}
		// The common case first: a plain message that is only its
		// handler's call, with no call through the peer.
		total := 0
		if plain != nil {
			total = frame.SplitPlain(rest, s.maxPayload)
		}
		isPlain := total > 0
		if !isPlain {
			var err error
			if total, err = frame.Split(rest, s.maxPayload); err != nil {
				return used, err
			}
			if total == 0 || total > len(rest) {
				s.need = total
				return used, nil
			}
		}
		used += total
		s.frames++
		s.seq++
		if !perBurst {
			s.msgsIn.Add(1)
		}
		switch msg := rest[frame.HeaderLen:total]; {
		case !isPlain:
			if err := s.peer.handleFrame(s, frame.Decode(rest[:total])); err != nil {
				return used, err
			}
		case s.seq&latencySampleMask != 0:
			plain(s, msg)
		default:
			s.callMessage(plain, msg) // timed
		}
	}
	return used, nil
}

// readerMode is the mode as the reader sees it; only the reader changes it
// from unknown, so an unlocked read by the reader itself is safe.
func (s *Session) readerMode() frame.Mode { return s.mode }

// fail ends the session after a protocol error or handler panic.
func (s *Session) fail(err error) {
	switch {
	case errors.Is(err, frame.ErrBadMagic), errors.Is(err, frame.ErrShortLength):
		s.closeWith(&ProtocolError{Code: frame.CodeBadFrame, Message: err.Error()}, true)
	case errors.Is(err, frame.ErrTooLarge):
		s.closeWith(&ProtocolError{Code: frame.CodeMessageTooLarge,
			Message: "message exceeds the size limit of " + itoa(s.maxPayload) + " bytes"}, true)
	default:
		var hp *HandlerPanicError
		notify := errors.As(err, &hp)
		var de *DisconnectError
		if errors.As(err, &de) && !de.Remote {
			notify = true
		}
		var pe *ProtocolError
		if errors.As(err, &pe) && !pe.Remote {
			notify = true
		}
		if s.salvage && errors.As(err, &de) && de.Remote {
			s.abort(err) // the server said goodbye: keep what is queued
			return
		}
		s.closeWith(err, notify)
	}
}

// endOfInput handles the end of the stream or a read error. An unterminated
// last line in text mode is still one message.
func (s *Session) endOfInput(rest []byte, err error) {
	if len(rest) > 0 && !s.stopRead.Load() && s.readerMode() == frame.ModeText {
		line := frame.TrimLine(rest)
		if len(line) <= s.maxPayload {
			func() {
				defer func() {
					if r := recover(); r != nil {
						err = &HandlerPanicError{Value: r}
					}
				}()
				s.msgsIn.Add(1)
				s.peer.handleLine(s, line)
			}()
		}
	}
	if err == io.EOF {
		err = ErrPeerClosed
	}
	if errors.Is(err, unix.ECONNRESET) {
		err = ErrPeerClosed
	}
	if s.salvage {
		// The peer is gone or going: keep what is still queued for the
		// next connection rather than write it into this one.
		s.abort(err)
		return
	}
	s.closeWith(err, false)
}

// keepPending saves a partial frame or line across parking; an idle
// session with nothing partial holds no buffer. b is at the head of the
// burst's buffer; own says that buffer is the burst's own (grown for a
// large message), not pooled: then it is kept as it is, capacity
// included, and the next burst reads on into it.
func (s *Session) keepPending(b []byte, own bool) {
	if own && len(b) > 0 {
		s.pending = b
		return
	}
	if len(b) == 0 {
		if cap(s.pending) > 4<<10 {
			s.pending = nil
		} else {
			s.pending = s.pending[:0]
		}
		return
	}
	s.pending = append(s.pending[:0], b...)
}

// unsafeBytes views a string's bytes without copying; the bytes are only
// read (they are copied into the send queue).
func unsafeBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	if n == 0 {
		return "0"
	}
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
