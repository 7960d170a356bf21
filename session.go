package msgnet

import (
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/internal/gid"
	"github.com/msgnet/msgnet/internal/netpoll"
	"github.com/msgnet/msgnet/pipeline"
	"golang.org/x/time/rate"
)

// peer is the side a Session works for: the Server for accepted
// connections, the Client for its own. The session engine (reading, queueing,
// writing, closing) is the same for both; what a frame means is the peer's.
type peer interface {
	// handleFrame acts on one frame. A non-nil error ends the session
	// with that error as the reason.
	handleFrame(s *Session, f frame.Frame) error
	// handleLine acts on one text-mode line (server side only).
	handleLine(s *Session, line []byte)
	// plainHandler returns what handles a plain DATA frame (no flags) on s
	// right now if that is only a call of the message handler, and nil if
	// such a frame needs more (a handshake, a pipeline, a rate limit): then
	// every frame goes through handleFrame. Called once per burst.
	plainHandler(s *Session) MessageHandler
	// sessionEnded is called exactly once, after the socket is closed and
	// no reader or writer is left.
	sessionEnded(s *Session, reason error)
}

// Session is one connection: on a server, a connected client. It is safe for
// use by many goroutines.
//
// Sends never wait on the network: they append to a bounded queue that one
// writer goroutine, started only while there is something to write, drains
// with a single writev for everything queued. Frames are written in the
// order their sends were called.
type Session struct {
	peer       peer
	id         string
	nc         net.Conn
	connectAt  int64 // unix nanoseconds
	maxPayload int
	queueLimit int
	drain      time.Duration

	lastActivity atomic.Int64 // unix nanoseconds
	clientID     atomic.Pointer[string]
	stopRead     atomic.Bool   // set when closing: dispatch no more input
	hotWait      atomic.Bool   // a hot reader holds the socket in a blocking read loop
	handshaking  atomic.Bool   // not established yet (for the handshake deadline)
	features     atomic.Uint32 // negotiated extensions (feat* bits)

	// Parking (server side, plain TCP on Linux): the socket sits in the
	// server's epoll set while idle; readers are started on readiness.
	rc        syscall.RawConn
	poller    *netpoll.Poller
	fd        int32
	gen       uint32
	inline    bool  // read on the poller's goroutine, handlers included (WithNonBlockingHandlers)
	lastBurst int64 // reader-owned: unix nanoseconds when the last read burst started

	mu     sync.Mutex
	mode   frame.Mode
	out    queue // encoded bytes to write, in order
	early  queue // DATA sent before the session was established, held back
	reason error
	pipe   *sessionPipe // negotiated payload stages; nil when none

	writingBytes int          // the batch the writer is writing, for monitors
	queuedMsgs   uint64       // messages queued since msgsOut was last brought up to date
	budget       *queueBudget // the server's bound on all sessions' queues; nil: none
	charged      int64        // what this session has charged to budget

	// State bits, guarded by mu.
	parked       bool
	writerActive bool
	flushAfter   bool // the reader is running handlers and writes what they queue when they return
	readerActive bool
	closing      bool
	sockClosed   bool // the descriptor is closed
	lingering    bool // write side shut, input being discarded before the close
	lingerOnEnd  bool // close via lingering: a last word was sent while input may still arrive
	ended        bool

	held           bool // not established yet: DATA waits in early
	secure         bool // the server requires a handshake (auth or encryption)
	slowDisconnect bool // a full queue disconnects instead of failing the send
	salvage        bool // client side: keep unsent DATA when the connection dies
	drainArmed     bool // writer-owned: the drain deadline is set
	established    bool // reader-owned: OnConnect has run

	// Reader-owned: touched only by the goroutine that holds readerActive.
	pending       []byte // a partial frame or line kept while parked
	need          int    // total length of the incomplete frame at the head of input
	scanned       int    // text mode: bytes at the head of input known to hold no newline
	peerHup       bool   // the poller reported the peer's hang-up: read to the end
	carried       bool   // event loop only: waiting in the loop's list for another turn
	frames        int    // frames received, for "hello must come first"
	seq           uint64 // messages received
	countPerBurst bool   // on a loop with no writer running: msgsIn is added once per burst

	readFn, writeFn func()
	ctr             *counters // the server's or client's

	// An event loop's turn (WithNonBlockingHandlers): while the loop runs
	// the session's handlers on a burst of input, the DATA they send on the
	// loop's goroutine is staged without the lock (in the loop's stager:
	// one loop runs one session's handlers at a time), and moved to the
	// front of out when they return or when the lock is taken anyway. See
	// enqueue for why that keeps every send's order.
	loop   atomic.Pointer[netpoll.Poller] // the session's event loop, once registered on one
	stage  atomic.Pointer[stager]         // the loop's stage while a turn stages; changed under mu, by the loop
	shared atomic.Bool                    // another goroutine queued into out during the turn

	// During its turn (readerActive on an inline session) the loop reads
	// and writes the descriptor with raw system calls, without the
	// net.Conn's reference counting; closing it meanwhile would free the
	// number for a new connection that the loop's next call would then
	// read or write. So a close waits for the turn's end (closeFdLocked,
	// endFdUseLocked).
	fdClosePending bool // guarded by mu: close the descriptor when the turn ends

	// ext holds what most sessions never use, allocated on first use so an
	// idle session stays small.
	ext atomic.Pointer[sessionExt]

	// Per-session counters, read by monitors without locks.
	msgsIn, msgsOut, bytesIn, bytesOut atomic.Uint64
}

// sessionExt is the part of a Session allocated only when used.
type sessionExt struct {
	dataMu sync.Mutex
	data   map[string]string

	groupMu sync.Mutex
	groups  []string
	left    bool // ended: may join no group

	reqs        requests
	lateReplies atomic.Uint64

	unsent []byte // client side: what was queued but never handed to the socket

	lastDropLog atomic.Int64 // runtime nanotime of the last drop logged (noteDrop)

	auth       *pendingAuth  // server side: a hello waiting for its auth answer (reader-owned)
	authTimer  *time.Timer   // the delayed refusal of a failed auth
	limiter    *rate.Limiter // WithMessageRate
	ctlLimiter *rate.Limiter // WithControlRate, made on the first frame it applies to
	// Reader-owned: messages dropped over the rate limit, and when the
	// peer was last told (runtime nanotime).
	rateDropped uint64
	rateErrAt   int64
}

// x returns the session's extension, allocating it on first use.
func (s *Session) x() *sessionExt {
	if e := s.ext.Load(); e != nil {
		return e
	}
	s.ext.CompareAndSwap(nil, &sessionExt{})
	return s.ext.Load()
}

func newSession(p peer, id string, nc net.Conn, maxPayload, queueLimit int, drain time.Duration) *Session {
	now := time.Now().UnixNano()
	s := &Session{
		peer:       p,
		id:         id,
		nc:         nc,
		connectAt:  now,
		maxPayload: maxPayload,
		queueLimit: queueLimit,
		drain:      drain,
	}
	s.lastActivity.Store(now)
	s.writeFn = s.writeLoop
	return s
}

// ID is the session id, unique within the server (and across a cluster).
func (s *Session) ID() string { return s.id }

// ClientID is the id the client gave in its hello, or the session id if it
// gave none.
func (s *Session) ClientID() string {
	if p := s.clientID.Load(); p != nil {
		return *p
	}
	return s.id
}

// RemoteAddr is the peer's IP address (or the transport's address text).
func (s *Session) RemoteAddr() string {
	host, _ := s.remoteHostPort()
	return host
}

// RemotePort is the peer's port, 0 when the transport has none.
func (s *Session) RemotePort() int {
	_, port := s.remoteHostPort()
	return port
}

// remoteHostPort is computed when asked rather than stored: most sessions
// are never asked, and an idle session should cost as little as possible.
func (s *Session) remoteHostPort() (string, int) {
	a := s.nc.RemoteAddr()
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String(), ta.Port
	}
	if a == nil {
		return "", 0
	}
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String(), 0
	}
	n, _ := strconv.Atoi(port)
	return host, n
}

// ConnectTime is when the connection was accepted.
func (s *Session) ConnectTime() time.Time { return time.Unix(0, s.connectAt) }

// LastActivity is when bytes were last received from the peer.
func (s *Session) LastActivity() time.Time { return time.Unix(0, s.lastActivity.Load()) }

// IsConnected reports whether the session is open: not closing or closed.
func (s *Session) IsConnected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closing
}

// Mode tells whether the peer speaks frames or text lines; ModeUnknown until
// it has sent its first bytes.
func (s *Session) Mode() frame.Mode {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mode
}

// SetData stores a per-session value under key.
func (s *Session) SetData(key, value string) {
	e := s.x()
	e.dataMu.Lock()
	if e.data == nil {
		e.data = make(map[string]string)
	}
	e.data[key] = value
	e.dataMu.Unlock()
}

// Data returns the per-session value stored under key, and whether there
// was one.
func (s *Session) Data(key string) (string, bool) {
	e := s.ext.Load()
	if e == nil {
		return "", false
	}
	e.dataMu.Lock()
	defer e.dataMu.Unlock()
	v, ok := e.data[key]
	return v, ok
}

// Send queues msg as one DATA message (one line in text mode). It never
// waits on the network. It fails with ErrMessageTooLarge, ErrQueueFull or
// ErrSessionClosed, and then nothing was queued. msg may be reused as soon
// as Send returns.
func (s *Session) Send(msg []byte) error {
	// enqueue's fast path (stageFrame), written out: two calls less per
	// message, measured at 3 to 4 ns of the loop's 50 ns of user time.
	if st := s.stage.Load(); st != nil && st.loop.Owner() == gid.Current() &&
		len(msg) <= s.maxPayload && !s.shared.Load() && !s.stopRead.Load() {
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
	return s.enqueue(frame.KindData, 0, msg)
}

// SendString is Send for a string.
func (s *Session) SendString(msg string) error { return s.Send(unsafeBytes(msg)) }

// SendRaw queues bytes to be written exactly as given, without framing: the
// caller vouches that they are whole frames (or whole lines in text mode).
// It exists for pre-encoded frames, such as one broadcast frame written to
// many sessions.
func (s *Session) SendRaw(data []byte) error { return s.enqueue(kindRaw, 0, data) }

// Disconnect ends the session: what is already queued is written, then a
// DISCONNECT frame with reason, then the connection is closed. The disconnect
// handler receives a *DisconnectError with reason.
func (s *Session) Disconnect(reason string) {
	s.closeWith(&DisconnectError{Reason: reason}, true)
}

// kindRaw marks queued bytes that are already encoded.
const kindRaw frame.Kind = 0

// chunk is a piece of a session's send queue. Pooled chunks have
// chunkSize capacity; a frame larger than that gets a chunk of its own.
type chunk struct{ b []byte }

const chunkSize = 32 << 10

var chunkPool = sync.Pool{New: func() any { return &chunk{b: make([]byte, 0, chunkSize)} }}

func putChunk(c *chunk) {
	if cap(c.b) == chunkSize {
		c.b = c.b[:0]
		chunkPool.Put(c)
	}
}

// enqueue appends one message to the send queue and makes sure a writer
// will write it.
func (s *Session) enqueue(kind frame.Kind, flags frame.Flags, payload []byte) error {
	if kind != kindRaw && len(payload) > s.maxPayload {
		return ErrMessageTooLarge
	}
	if st := s.ownStage(); st != nil {
		// A handler's send on its own event loop, during its turn: staged
		// without the lock while nobody else has queued anything this turn.
		// The order holds: a send that happened before this one on another
		// goroutine set shared first (under the lock), so it is seen here
		// and this send takes the lock; a send that happens after this one
		// lands in out, behind the stage, which goes first.
		if kind == frame.KindData && s.stageFrame(st, flags, payload) {
			return nil
		}
		s.mu.Lock()
		s.endStageLocked(st) // the rest of the turn takes the lock
	} else {
		s.mu.Lock()
	}
	if s.stage.Load() != nil && !s.shared.Load() {
		s.shared.Store(true)
	}
	if s.closing {
		s.mu.Unlock()
		return ErrSessionClosed
	}
	if kind == frame.KindData && len(payload) > s.sendLimitLocked() {
		s.mu.Unlock()
		return ErrMessageTooLarge
	}
	n := frame.HeaderLen + len(payload)
	// The bound covers everything not yet handed to the socket, the batch
	// being written included, so it bounds the memory a slow peer holds.
	if queued := s.out.bytes + s.early.bytes + s.writingBytes; queued > 0 && queued+n > s.queueLimit {
		s.ctr.slowConsumers.Add(1)
		if s.slowDisconnect {
			// Refuse further sends now; close on another goroutine, since
			// the caller may be walking the registry or a group (Broadcast)
			// and the session's end takes those locks.
			s.closing, s.reason = true, ErrSlowConsumer
			s.mu.Unlock()
			s.stopRead.Store(true)
			go s.abort(ErrSlowConsumer)
			s.noteDrop(DropSlowConsumer)
			return ErrSlowConsumer
		}
		s.mu.Unlock()
		s.noteDrop(DropQueueFull)
		return ErrQueueFull
	}
	if s.budget != nil && !s.budgetAllowsLocked(n) {
		s.mu.Unlock()
		s.noteDrop(DropServerQueueFull)
		return ErrServerQueueFull
	}
	if kind == frame.KindData && !s.held && s.mode == frame.ModeBinary && s.pipe == nil {
		s.out.appendFrame(kind, flags, payload) // the common case, without appendLocked's tests
	} else if err := s.appendLocked(kind, flags, payload); err != nil {
		s.mu.Unlock()
		return err
	}
	// Counted under the lock and added to msgsOut once per written batch:
	// one atomic add per message would cost more than queueing it.
	s.queuedMsgs++
	s.chargeLocked()
	start := s.wantWriterLocked()
	s.mu.Unlock()
	if kind != frame.KindData && kind != kindRaw {
		s.ctr.countOut(kind, n)
	}
	if start {
		go s.writeFn()
	}
	return nil
}

// Reasons a message was dropped, as counted in Stats.Dropped.
const (
	DropQueueFull       = "queue_full"        // the session's queue bound (the send failed with ErrQueueFull)
	DropServerQueueFull = "server_queue_full" // the server-wide queue budget (ErrServerQueueFull)
	DropSlowConsumer    = "slow_consumer"     // the queue bound under SlowConsumerDisconnect: the session was closed
	DropRateLimited     = "rate_limited"      // a message from the peer over its rate limit
)

// dropLogInterval is how often, at most, drops on one session are logged.
const dropLogInterval = 10 * time.Second

// noteDrop counts a message that was not delivered and, at most once per
// session per dropLogInterval, logs it at warning level, so that no drop
// is silent even when the sender ignores the error.
func (s *Session) noteDrop(reason string) {
	s.ctr.dropped.add(reason)
	log := s.ctr.log
	if log == nil {
		return
	}
	e := s.x()
	now := nanotime()
	last := e.lastDropLog.Load()
	if last != 0 && now-last < int64(dropLogInterval) || !e.lastDropLog.CompareAndSwap(last, now) {
		return
	}
	log.Warn("messages dropped for a session (logged at most once per interval; see the dropped counters)",
		"session", s.id, "client", s.ClientID(), "reason", reason, "interval", dropLogInterval)
}

// stageFrame stages a DATA frame in the loop's stage st, if nobody else
// queued anything this turn and it fits; see enqueue.
func (s *Session) stageFrame(st *stager, flags frame.Flags, payload []byte) bool {
	if len(payload) > s.maxPayload || s.shared.Load() || s.stopRead.Load() {
		return false // enqueue tells why, or takes the lock
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

// stager is an event loop's stage: what the handlers of the session whose
// turn it is send on the loop's goroutine. Only the loop touches it, and
// it is empty between turns. It is one buffer, kept by the loop for good:
// staging a frame is a bounds check and a copy into memory that stays in
// the cache, and a turn's replies go out with one write.
type stager struct {
	loop *netpoll.Poller
	buf  []byte // the staged frames; cap stageLimit
	msgs uint64 // messages in buf
	room int    // what buf may hold this turn
}

// ownStage returns the loop's stage if the caller is the session's event
// loop in the middle of the session's turn, and nil otherwise.
func (s *Session) ownStage() *stager {
	if !gid.Supported {
		return nil
	}
	// The stage is set only while the loop runs the session's handlers, and
	// only the loop's goroutine may use it then.
	if st := s.stage.Load(); st != nil && st.loop.Owner() == gid.Current() {
		return st
	}
	return nil
}

// turn reports whether the session's handlers are running on its event
// loop with their sends staged. Under mu, or on the loop's goroutine.
func (s *Session) turn() bool { return s.stage.Load() != nil }

// scratchOf is an event loop's scratch space (see loopScratch).
func scratchOf(p *netpoll.Poller) *loopScratch { return p.Local.(*loopScratch) }

// stageLimit bounds what a session's handlers stage in one turn; past it
// (or the queue bound, if lower) their sends take the lock.
const stageLimit = 256 << 10

// beginTurnLocked starts the loop's turn with a session: its handlers are
// about to run on a burst of input. Staging needs a session that speaks
// plain frames (no pipeline stage, which the lock orders) with nothing
// queued and no writer: then the stage can simply go first.
func (s *Session) beginTurnLocked(st *stager) {
	s.flushAfter = true
	if gid.Supported && !s.writerActive && !s.closing && s.mode == frame.ModeBinary &&
		s.pipe == nil && !s.held && len(s.out.chunks) == 0 {
		st.room = min(stageLimit, s.queueLimit)
		if s.shared.Load() {
			s.shared.Store(false)
		}
		s.stage.Store(st)
	}
}

// endStageLocked ends staging for the turn, if it was on: what was staged
// moves to the front of out, ahead of what other goroutines queued during
// the turn, or is dropped if the connection was cut meanwhile (abort drops
// the queue too). Only the loop calls it.
func (s *Session) endStageLocked(st *stager) {
	if !s.turn() {
		return
	}
	s.stage.Store(nil)
	staged, msgs := st.buf, st.msgs
	st.buf, st.msgs = st.buf[:0], 0
	if len(staged) == 0 || s.socketDone() { // aborted: the queue is dropped too
		return
	}
	s.queuedMsgs += msgs
	s.requeueLocked([]*chunk{chunkOf(staged)}, len(staged))
}

// chunkOf copies b, which the caller keeps using, into a chunk of its own.
func chunkOf(b []byte) *chunk {
	var c *chunk
	if len(b) <= chunkSize {
		c = chunkPool.Get().(*chunk)
	} else {
		c = &chunk{b: make([]byte, 0, len(b))}
	}
	c.b = append(c.b, b...)
	return c
}

// sendLimitLocked is the largest DATA payload a send accepts: the message
// size limit, less what encryption adds.
func (s *Session) sendLimitLocked() int {
	if p := s.pipe; p != nil && p.p.Sealer != nil {
		return s.maxPayload - pipeline.Overhead
	}
	return s.maxPayload
}

// SendError queues an ERROR frame with code and message (in text mode, the
// line "ERROR <code>"), as msgnet itself answers bad input; the peer goes
// on. Codes are lower_snake_case; msgnet's are the Code* constants. It
// fails like Send.
func (s *Session) SendError(code, message string) error {
	err := s.enqueue(frame.KindError, 0, frame.AppendError(nil, code, message))
	if err == nil {
		s.ctr.errorsSent.add(knownCode(code))
	}
	return err
}

// sendError queues an ERROR frame (a line in text mode) and counts it.
func (s *Session) sendError(code, message string) {
	if s.enqueue(frame.KindError, 0, frame.AppendError(nil, code, message)) == nil {
		s.ctr.errorsSent.add(code)
	}
}

// enqueueForce queues a message past the queue bound: for what a client
// buffered while reconnecting, which was accepted under the buffer's bound.
func (s *Session) enqueueForce(kind frame.Kind, flags frame.Flags, payload []byte) {
	s.mu.Lock()
	s.appendLocked(kind, flags, payload)
	s.chargeLocked()
	start := s.wantWriterLocked()
	s.mu.Unlock()
	if start {
		go s.writeFn()
	}
}

// wantWriterLocked reports whether the caller must start the writer, and
// marks it started. Nothing is written before the peer's mode is known.
func (s *Session) wantWriterLocked() bool {
	if s.writerActive || s.flushAfter || len(s.out.chunks) == 0 || s.mode == frame.ModeUnknown || s.socketDone() {
		return false
	}
	s.writerActive = true
	return true
}

// appendLocked queues one message. While the session is held (not yet
// established), DATA goes to the early queue as plain frames, to be encoded
// with whatever the handshake negotiates; everything else (the handshake's
// own frames) goes straight out.
func (s *Session) appendLocked(kind frame.Kind, flags frame.Flags, payload []byte) error {
	if s.held && (kind == frame.KindData || kind == kindRaw) {
		return s.encodeLocked(&s.early, kind, flags, payload, false)
	}
	return s.encodeLocked(&s.out, kind, flags, payload, true)
}

// encodeLocked encodes a message into q in the session's mode: a line in
// text mode, a frame otherwise, with DATA passed through the negotiated
// pipeline when withPipe is set.
func (s *Session) encodeLocked(q *queue, kind frame.Kind, flags frame.Flags, payload []byte, withPipe bool) error {
	if s.mode == frame.ModeText {
		// A message's bytes and "\n": one with a "\n" of its own is
		// several lines (the core protocol's text mode). Relaying one
		// peer's words to others is the application's to escape
		// (frame.AppendEscaped; managed mode does).
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
	if withPipe && s.pipe != nil && kind == frame.KindData {
		b := q.reserve(frame.HeaderLen + len(payload) + pipeline.Overhead)
		at := len(b)
		out, fl, err := s.pipe.p.Outbound(b[:at+frame.HeaderLen], kind, flags, payload)
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

// queue is a list of chunks of encoded bytes.
type queue struct {
	chunks []*chunk
	bytes  int
}

// reserve returns the tail of the queue with room for n more bytes;
// commit stores what was appended to it.
func (q *queue) reserve(n int) []byte {
	if k := len(q.chunks); k > 0 {
		c := q.chunks[k-1]
		if cap(c.b)-len(c.b) >= n {
			return c.b
		}
	}
	var c *chunk
	if n <= chunkSize {
		c = chunkPool.Get().(*chunk)
	} else {
		c = &chunk{b: make([]byte, 0, n)}
	}
	q.chunks = append(q.chunks, c)
	return c.b
}

// appendFrame queues one plain frame.
func (q *queue) appendFrame(kind frame.Kind, flags frame.Flags, payload []byte) {
	n := frame.HeaderLen + len(payload)
	if k := len(q.chunks); k > 0 {
		// The common case, a frame that fits the last chunk, written in
		// place: appending the header field by field costs as much as the
		// rest of queueing a small frame.
		c := q.chunks[k-1]
		if at := len(c.b); cap(c.b)-at >= n {
			b := c.b[at : at+n]
			frame.PutHeader(b, kind, flags, len(payload))
			copy(b[frame.HeaderLen:], payload)
			c.b = c.b[:at+n]
			q.bytes += n
			return
		}
	}
	b := q.reserve(n)
	q.commit(append(frame.AppendHeader(b, kind, flags, len(payload)), payload...))
}

func (q *queue) commit(b []byte) {
	c := q.chunks[len(q.chunks)-1]
	q.bytes += len(b) - len(c.b)
	c.b = b
}

// take empties the queue and returns its chunks.
func (q *queue) take() []*chunk {
	c := q.chunks
	q.chunks, q.bytes = nil, 0
	return c
}

// reencodeLocked moves the frames of chunks into q, encoded afresh in the
// session's current mode (and pipeline), and recycles the chunks. Only the
// session's own frames are ever in a queue, so they always split cleanly.
func (s *Session) reencodeLocked(q *queue, chunks []*chunk, withPipe bool) {
	for _, c := range chunks {
		for b := c.b; len(b) >= frame.HeaderLen; {
			total, err := frame.Split(b, frame.MaxPayloadLimit)
			if err != nil || total == 0 || total > len(b) {
				break
			}
			f := frame.Decode(b[:total])
			s.encodeLocked(q, f.Kind, f.Flags, f.Payload, withPipe)
			b = b[total:]
		}
		putChunk(c)
	}
}

// setMode records the peer's mode once sniffed and lets the writer start on
// what was queued meanwhile (re-encoded as lines for a text peer).
func (s *Session) setMode(m frame.Mode) {
	s.mu.Lock()
	s.mode = m
	if m == frame.ModeText {
		s.reencodeLocked(&s.out, s.out.take(), false)
		s.reencodeLocked(&s.early, s.early.take(), false)
	}
	s.chargeLocked()
	start := s.wantWriterLocked()
	s.mu.Unlock()
	if start {
		go s.writeFn()
	}
}

// establishWith ends the hold: the negotiated pipeline is installed, the
// handshake's answer (if any) is queued, and then the DATA held back is
// queued after it, through the pipeline. All of it happens under one lock,
// so no send can slip in between.
func (s *Session) establishWith(pipe *sessionPipe, answer []byte) {
	s.handshaking.Store(false)
	s.mu.Lock()
	if pipe != nil {
		s.pipe = pipe
	}
	if answer != nil {
		s.encodeLocked(&s.out, frame.KindControl, 0, answer, false)
		s.msgsOut.Add(1)
		s.ctr.countOut(frame.KindControl, frame.HeaderLen+len(answer))
	}
	s.releaseLocked()
	s.chargeLocked()
	start := s.wantWriterLocked()
	s.mu.Unlock()
	if start {
		go s.writeFn()
	}
}

func (s *Session) releaseLocked() {
	if !s.held {
		return
	}
	s.held = false
	if s.mode == frame.ModeText {
		for _, c := range s.early.take() {
			s.out.commit(append(s.out.reserve(len(c.b)), c.b...))
			putChunk(c)
		}
		return
	}
	s.reencodeLocked(&s.out, s.early.take(), true)
}

// sessionPipe is a session's negotiated payload stages and the reader's
// buffer for undoing them.
type sessionPipe struct {
	p     pipeline.Pipeline
	inbuf []byte // reader-owned
}

// inbound undoes the negotiated stages on a received DATA frame. The result
// aliases a reader-owned buffer, valid until the next frame.
func (s *Session) inbound(f *frame.Frame) error {
	p := s.pipe
	if p == nil || f.Kind != frame.KindData {
		return nil
	}
	out, err := p.p.Inbound(p.inbuf[:0], f.Kind, f.Flags, f.Payload)
	if err != nil {
		return err
	}
	if cap(out) <= 64<<10 {
		p.inbuf = out[:0]
	} else {
		p.inbuf = nil // one large message must not stay with an idle session
	}
	f.Payload = out
	f.Flags &^= frame.FlagCompressed | frame.FlagEncrypted
	return nil
}

// takeBatchLocked hands everything queued to the writer w.
func (s *Session) takeBatchLocked(w *writer) {
	w.batch, s.out.chunks = s.out.chunks, w.batch[:0]
	s.writingBytes, s.out.bytes = s.out.bytes, 0
	s.foldQueuedLocked()
}

// writerDoneLocked ends the writer's turn with nothing left to write: a
// closing session's socket is closed after its last byte. It reports
// whether the caller must run finish.
func (s *Session) writerDoneLocked() bool {
	s.writerActive = false
	if s.closing && !s.socketDone() {
		s.closeSocketLocked()
	}
	return s.endLocked()
}

// writeLoop drains the queue: everything queued goes out in one writev, then
// it looks again, and exits when the queue is empty. When the session is
// closing, it closes the socket after the last byte (or the drain timeout).
func (s *Session) writeLoop() {
	w := writerPool.Get().(*writer)
	defer writerPool.Put(w)
	for {
		s.mu.Lock()
		s.writingBytes = 0
		s.chargeLocked()
		if len(s.out.chunks) == 0 || s.socketDone() {
			end := s.writerDoneLocked()
			s.mu.Unlock()
			if end {
				s.finish()
			}
			return
		}
		s.takeBatchLocked(w)
		closing := s.closing
		s.mu.Unlock()

		if closing && !s.drainArmed {
			s.drainArmed = true
			s.nc.SetWriteDeadline(time.Now().Add(s.drain))
		}
		n, err := w.write(s.nc)
		s.bytesOut.Add(uint64(n))
		if err != nil {
			s.abort(err)
		}
	}
}

// endTurn ends an event loop's turn with a session, once its handlers have
// run on a burst: it writes what was queued with one non-blocking write
// system call (w is the loop's scratch writer), hands the reader's role
// back, and reports whether the session ended. Whatever that write cannot
// take (the peer is slow), and whatever other goroutines queued meanwhile,
// goes to a writer goroutine as usual, so the loop never waits on a
// socket: two peers that both stop reading while writing to each other
// cannot deadlock.
//
// In the usual case only the handlers sent anything, all of it staged, and
// nobody else queued or closed meanwhile: the stage is written without the
// lock, which is safe because no writer starts while flushAfter is set and
// a close waits for the turn. What another goroutine queues meanwhile goes
// behind it in out, as it would have anyway. Otherwise the stage joins out
// under the lock and the batch is taken from there.
func (s *Session) endTurn(sc *loopScratch) (ended bool) {
	st, w := &sc.st, sc.w
	var (
		n, restBytes int
		rest         []*chunk
		err          error
	)
	// The descriptor is written on the loop, in its turn: see fdClosePending.
	if s.turn() && len(st.buf) > 0 && !s.shared.Load() && !s.stopRead.Load() {
		// The usual case: only the handlers sent, so the stage is all
		// there is, and it is written without the lock.
		s.msgsOut.Add(st.msgs) // counted before the peer can see them
		st.msgs = 0
		n, err = tryWriteResult(rawWrite(int(s.fd), st.buf))
		if n < len(st.buf) && err == nil { // a slow peer: its writer takes the rest
			// A slice of its own: requeueLocked makes it the queue's, and
			// the loop's writer keeps its batch for the next session.
			rest, restBytes = []*chunk{chunkOf(st.buf[n:])}, len(st.buf)-n
		}
		st.buf = st.buf[:0]
	} else {
		s.mu.Lock()
		s.endStageLocked(st)
		s.flushAfter = false
		if !s.wantWriterLocked() { // nothing to write, or a writer is at it
			return s.endTurnLocked()
		}
		s.takeBatchLocked(w)
		s.mu.Unlock()
		n, err = w.tryWriteFd(int(s.fd))
		rest, restBytes = w.unwritten(n)
	}
	s.bytesOut.Add(uint64(n))

	s.mu.Lock()
	s.writingBytes = 0
	s.writerActive = false
	s.chargeLocked()
	if err != nil {
		for _, c := range rest {
			putChunk(c)
		}
		s.stage.Store(nil)
		s.flushAfter = false
		s.endFdUseLocked()
		s.readerActive = false
		s.mu.Unlock()
		s.abort(err) // finishes the session: no reader or writer is left
		return true
	}
	s.requeueLocked(rest, restBytes)
	return s.endTurnLocked()
}

// endTurnLocked is the end of endTurn, called with the lock held and the
// turn's write done; it unlocks. What is still queued (a slow peer's rest,
// or what others queued) goes to a writer goroutine; a close that waited
// for the turn (see closeWith) is carried out, after the last byte.
func (s *Session) endTurnLocked() (ended bool) {
	if s.turn() {
		s.stage.Store(nil)
	}
	s.flushAfter = false
	s.chargeLocked()
	start := false
	if !s.writerActive && !s.socketDone() {
		if len(s.out.chunks) > 0 {
			s.writerActive, start = true, true
		} else if s.closing {
			s.closeSocketLocked()
		}
	}
	s.endFdUseLocked()
	s.readerActive = false
	end := s.endLocked()
	s.mu.Unlock()
	if start {
		go s.writeFn()
	}
	if end {
		s.finish()
	}
	return end
}

// requeueLocked puts what a write could not take back at the head of the
// queue, or drops it if the connection was cut meanwhile.
func (s *Session) requeueLocked(rest []*chunk, restBytes int) {
	if len(rest) == 0 {
		return
	}
	if s.socketDone() {
		for _, c := range rest { // aborted: nothing more goes out
			putChunk(c)
		}
		return
	}
	s.out.chunks = append(rest, s.out.chunks...)
	s.out.bytes += restBytes
}

// writer is a writer's scratch space, pooled so that a session without a
// running writer carries none of it.
type writer struct {
	batch  []*chunk
	iov    net.Buffers
	iovTmp net.Buffers

	// For tryWrite: the system call's arguments and results, and the
	// function given to RawConn.Write, built once per pooled writer.
	iovecs  []syscall.Iovec
	wn      int
	werr    error
	writeFn func(fd uintptr) bool
}

var writerPool = sync.Pool{New: func() any { return newWriter() }}

func newWriter() *writer {
	w := new(writer)
	w.writeFn = func(fd uintptr) bool {
		w.wn, w.werr = w.writeOnce(int(fd))
		return true // one attempt: never wait for the socket
	}
	return w
}

// tryWriteFd is tryWrite for the event loop, on a descriptor it holds
// (see Session.fdClosePending).
func (w *writer) tryWriteFd(fd int) (int, error) {
	return tryWriteResult(w.writeOnce(fd))
}

// tryWriteResult is a non-blocking write's result as tryWrite reports it:
// a full socket buffer is not an error.
func tryWriteResult(n int, err error) (int, error) {
	if err == syscall.EAGAIN || err == syscall.EINTR {
		return 0, nil
	}
	return max(n, 0), err
}

// tryWrite writes as much of the batch as the socket takes at once, with
// one system call, and reports how much went. A full socket buffer is not
// an error. The chunks stay in the batch; see unwritten.
func (w *writer) tryWrite(rc syscall.RawConn) (int, error) {
	if err := rc.Write(w.writeFn); err != nil {
		return 0, err
	}
	n, err := w.wn, w.werr
	w.werr = nil
	return tryWriteResult(n, err)
}

func (w *writer) writeOnce(fd int) (int, error) {
	if len(w.batch) == 1 {
		return rawWrite(fd, w.batch[0].b)
	}
	w.iovecs = w.iovecs[:0]
	for _, c := range w.batch {
		if len(c.b) > 0 {
			v := syscall.Iovec{Base: &c.b[0]}
			v.SetLen(len(c.b))
			w.iovecs = append(w.iovecs, v)
		}
	}
	if len(w.iovecs) == 0 {
		return 0, nil
	}
	if len(w.iovecs) > 1024 { // IOV_MAX; the rest goes on the next write
		w.iovecs = w.iovecs[:1024]
	}
	n, err := rawWritev(fd, w.iovecs)
	for i := range w.iovecs {
		w.iovecs[i].Base = nil
	}
	return n, err
}

// unwritten recycles the chunks of the batch that the first n bytes
// covered, and returns the rest (the first one cut to what is left) with
// its length. The batch is left empty.
func (w *writer) unwritten(n int) (rest []*chunk, restBytes int) {
	for i, c := range w.batch {
		w.batch[i] = nil
		switch {
		case n >= len(c.b):
			n -= len(c.b)
			putChunk(c)
		case n > 0:
			// A partly written chunk cannot go back to the pool: its
			// rest is still to be written from the same memory.
			rest = append(rest, &chunk{b: c.b[n:]})
			restBytes += len(c.b) - n
			n = 0
		default:
			rest = append(rest, c)
			restBytes += len(c.b)
		}
	}
	w.batch = w.batch[:0]
	return rest, restBytes
}

// write sends the batch with one system call and recycles its chunks. A
// single chunk goes out with write(2): writev would make the runtime keep
// an iovec array for the descriptor from then on, for every session that
// was ever sent anything.
func (w *writer) write(nc net.Conn) (int, error) {
	var n int
	var err error
	if len(w.batch) == 1 {
		n = len(w.batch[0].b)
		_, err = nc.Write(w.batch[0].b)
	} else {
		w.iov = w.iov[:0]
		for _, c := range w.batch {
			w.iov = append(w.iov, c.b)
			n += len(c.b)
		}
		w.iovTmp = w.iov // WriteTo consumes its receiver; keep w.iov's backing intact
		_, err = w.iovTmp.WriteTo(nc)
	}
	for i, c := range w.batch {
		putChunk(c)
		w.batch[i] = nil
	}
	for i := range w.iov {
		w.iov[i] = nil
	}
	w.batch = w.batch[:0]
	return n, err
}

// closeWith starts closing the session for reason: no more input is
// dispatched, no more sends are accepted, what is queued is written
// (followed by DISCONNECT when notify is set and the peer speaks frames), and
// then the socket is closed. Only the first call has an effect.
func (s *Session) closeWith(reason error, notify bool) {
	s.stopRead.Store(true)
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.closing = true
	s.reason = reason
	if s.held && s.secure {
		// Never completed a handshake the server requires: what was held
		// for it is not for this peer.
		for _, c := range s.early.take() {
			putChunk(c)
		}
		s.held = false
	}
	s.releaseLocked() // what was held is written before the last word
	if s.writerActive && !s.socketDone() {
		// A writer blocked on a peer that stopped reading must not hold
		// the close forever.
		s.nc.SetWriteDeadline(time.Now().Add(s.drain))
	}
	if notify && s.mode != frame.ModeUnknown {
		s.lingerOnEnd = true
	}
	if notify && s.mode != frame.ModeUnknown && !s.socketDone() {
		if pe, ok := reason.(*ProtocolError); ok && !pe.Remote {
			p := frame.AppendError(nil, pe.Code, pe.Message)
			s.encodeLocked(&s.out, frame.KindError, 0, p, false)
			s.msgsOut.Add(1)
			s.ctr.errorsSent.add(pe.Code)
			s.ctr.countOut(frame.KindError, frame.HeaderLen+len(p))
		}
		if s.mode == frame.ModeBinary {
			s.encodeLocked(&s.out, frame.KindDisconnect, 0, []byte(reason.Error()), false)
			s.msgsOut.Add(1)
			s.ctr.countOut(frame.KindDisconnect, frame.HeaderLen+len(reason.Error()))
		}
	}
	if s.mode == frame.ModeUnknown {
		// Nothing can be written to a peer whose mode is unknown.
		s.dropQueueLocked()
	}
	s.chargeLocked()
	start := false
	// During an event loop's turn with the session, what its handlers
	// staged must go out before the last word: the loop starts the writer,
	// or closes the socket, when they return (endTurn).
	if !s.turn() && !s.writerActive && !s.socketDone() {
		if len(s.out.chunks) > 0 {
			s.writerActive = true
			start = true
		} else {
			s.closeSocketLocked()
		}
	}
	end := s.endLocked()
	s.mu.Unlock()
	if start {
		go s.writeFn()
	}
	if end {
		s.finish()
	}
}

// abort closes the socket at once, dropping what is queued: for write
// errors and hard stops.
func (s *Session) abort(reason error) {
	s.stopRead.Store(true)
	s.mu.Lock()
	if !s.closing {
		s.closing = true
		s.reason = reason
	}
	s.dropQueueLocked()
	if s.lingering {
		// Cut the linger short; lingerThenClose finishes.
		if s.inline {
			s.nc.SetReadDeadline(time.Unix(1, 0)) // the loop may be in a turn: see closeFdLocked
		} else {
			s.nc.Close()
		}
	} else if !s.sockClosed {
		s.lingerOnEnd = false
		s.closeSocketLocked()
	}
	end := s.endLocked()
	s.mu.Unlock()
	if end {
		s.finish()
	}
}

// foldQueuedLocked brings msgsOut up to date with what was queued.
func (s *Session) foldQueuedLocked() {
	if s.queuedMsgs > 0 {
		s.msgsOut.Add(s.queuedMsgs)
		s.queuedMsgs = 0
	}
}

func (s *Session) dropQueueLocked() {
	s.foldQueuedLocked()
	for _, c := range s.out.take() {
		if s.salvage {
			e := s.x()
			e.unsent = append(e.unsent, c.b...)
		}
		putChunk(c)
	}
	for _, c := range s.early.take() {
		putChunk(c)
	}
	s.chargeLocked()
}

// closeSocketLocked closes the connection. A parked socket leaves the epoll
// set first, so its descriptor number cannot be mistaken for a new one's.
//
// After a last word (ERROR, DISCONNECT) it closes by lingering: shut the
// write side, discard input for a moment, then close. Closing a socket with
// unread input makes the kernel send RST, and a peer that receives RST may
// lose the last word before reading it.
func (s *Session) closeSocketLocked() {
	if s.parked {
		s.poller.Forget(int(s.fd))
		s.parked = false
	}
	if s.lingerOnEnd {
		if cw, ok := s.nc.(interface{ CloseWrite() error }); ok {
			s.lingering = true
			cw.CloseWrite()
			if s.inline {
				// Bounded by a deadline, set here under the lock so that
				// abort's cut (an expired deadline) always comes after it.
				s.nc.SetReadDeadline(time.Now().Add(lingerTime))
			}
			go s.lingerThenClose()
			return
		}
	}
	s.sockClosed = true
	s.closeFdLocked()
}

// closeFdLocked closes the connection now, or, while the session's event
// loop uses its descriptor (its turn: see fdClosePending), when the turn
// ends.
func (s *Session) closeFdLocked() {
	if s.inline && s.readerActive {
		s.fdClosePending = true
		return
	}
	s.nc.Close()
}

// endFdUseLocked ends the event loop's use of the descriptor, closing it
// if a close waited for that. The caller then ends the turn (readerActive).
func (s *Session) endFdUseLocked() {
	if s.fdClosePending {
		s.fdClosePending = false
		s.nc.Close()
	}
}

// socketDone reports whether the socket is closed or closing.
func (s *Session) socketDone() bool { return s.sockClosed || s.lingering }

// lingerTime bounds how long a closing connection's input is discarded.
const lingerTime = time.Second

func (s *Session) lingerThenClose() {
	discardInput(s.nc, s.inline)
	s.mu.Lock()
	s.closeFdLocked()
	s.sockClosed = true
	end := s.endLocked()
	s.mu.Unlock()
	if end {
		s.finish()
	}
}

// discardInput reads and drops input until EOF, an error, lingerTime or
// 256 KiB, whichever comes first. The time limit closes the connection
// rather than setting a read deadline, which the hot-reader demotion may
// clear concurrently; the caller closes it anyway. On an event loop
// (loop set) there is no hot reader, and the descriptor must not be closed
// under the loop (see Session.closeFdLocked): there the caller has set a read
// deadline instead.
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

// lingerClose closes a connection that was sent a last word, as
// closeSocketLocked does for sessions.
func lingerClose(nc net.Conn) {
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		discardInput(nc, false)
	}
	nc.Close()
}

// endLocked reports whether the session has fully ended and the caller
// must run finish: closed, with no reader or writer left.
func (s *Session) endLocked() bool {
	if s.ended || !s.sockClosed || s.readerActive || s.writerActive {
		return false
	}
	s.ended = true
	return true
}

func (s *Session) finish() {
	s.pending = nil
	s.mu.Lock()
	s.writingBytes = 0
	s.dropQueueLocked() // whatever was queued and never taken; releases the budget
	s.mu.Unlock()
	if e := s.ext.Load(); e != nil && e.authTimer != nil {
		e.authTimer.Stop()
	}
	s.failRequests()
	s.peer.sessionEnded(s, s.reason)
}

// touch records activity for the idle timeout.
func (s *Session) touch() { s.lastActivity.Store(time.Now().UnixNano()) }
