package msgnet

import (
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/internal/conn"
	"golang.org/x/time/rate"
)

// Session is one connection: on a server, a connected client; in a
// Client, its current connection. It is safe for use by many goroutines.
//
// Sends never wait on the network: they append to a bounded queue that a
// writer, started only while there is something to write, drains with one
// writev for everything queued. Frames are written in the order their
// sends were called.
type Session struct {
	c    conn.Conn // the engine: reading, queueing, writing, closing
	peer peer      // the side the session works for: *Server or *Client
	ctr  *counters // the peer's

	id          string
	connectAt   int64 // unix nanoseconds
	clientID    atomic.Pointer[string]
	handshaking atomic.Bool   // not established yet (for the handshake deadline)
	features    atomic.Uint32 // negotiated extensions (feat* bits)

	// Reader-owned: touched only by the connection's reader, the
	// goroutine or event loop that runs Ingest. Sized to share one row, so
	// that a Session stays in the 384-byte allocation class.
	established bool   // the connect handler has run
	staged      bool   // publishes wait in sessionExt.staged (streams.go)
	frames      uint8  // frames received, counted up to 2: "hello must come first"
	scanned     int32  // text mode: bytes at the head of input known to hold no newline
	seq         uint64 // messages received

	// ext holds what most sessions never use, allocated on first use so
	// an idle session stays small.
	ext atomic.Pointer[sessionExt]
}

// peer is the side a Session works for: the Server for accepted
// connections, the Client for its own. The engine is the same for both;
// what a frame means is the peer's.
type peer interface {
	// admit decides whether a frame other than a plain message is
	// dispatched: a server completes or skips the handshake here and
	// applies its rate limits.
	admit(s *Session, f frame.Frame) bool
	// handleData acts on a DATA frame (its payload already through the
	// pipeline) and handleControl on a CONTROL frame; dispatch handles the
	// other kinds the same for both sides. A non-nil error ends the
	// session with it as the reason.
	handleData(s *Session, f frame.Frame) error
	handleControl(s *Session, payload []byte)
	// handleError is told of an ERROR frame the peer sent.
	handleError(s *Session, e frame.ErrorBody)
	// handlePong is told of a PONG.
	handlePong(s *Session, payload []byte)
	// handleLine acts on one text-mode line (server side only).
	handleLine(s *Session, line []byte)
	// plainHandler returns what handles a plain DATA frame on s right now
	// if that is only a call of the message handler, and nil if such a
	// frame needs more (a handshake, a pipeline, a rate limit): then every
	// frame goes through handleData. Called once per burst.
	plainHandler(s *Session) MessageHandler
	// sessionEnded is called exactly once, after the socket is closed and
	// no reader or writer is left.
	sessionEnded(s *Session, reason error)
}

// sessionExt is the part of a Session allocated only when used.
type sessionExt struct {
	dataMu sync.Mutex
	data   map[string]string

	groupMu sync.Mutex
	groups  []string
	left    bool // ended: may join no group

	inbuf []byte // the pipeline's output for the frame being dispatched (reader only)

	reqs        requests
	lateReplies atomic.Uint64

	auth      *pendingAuth // server side: a hello waiting for its auth answer (reader-owned)
	authTimer *time.Timer  // the delayed refusal of a failed auth

	// Streams (streams.go): the subscriptions, under subMu; the
	// publisher id the hello gave; the pending run of publish answers
	// (reader-owned).
	subMu             sync.Mutex
	subs              map[string]*subscription
	subsClosed        bool
	pubHalted         bool // a publish failed in the store or the rate: later ones are ignored (reader only)
	publisher         string
	ackFirst, ackLast uint64
	staged            *stagedPubs // publishes of the burst being read, for a BatchLog (reader only)

	limiter    *rate.Limiter // WithMessageRate
	ctlLimiter *rate.Limiter // WithControlRate, made on the first frame it applies to
	// Reader-owned: messages dropped over a rate limit, and when the peer
	// was last told (unix nanoseconds).
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

// newSession makes a session of p on nc; the caller starts its reader
// (conn.Conn's Start or Register). cfg.Shared must be &ctr.Shared.
func newSession(p peer, ctr *counters, id string, nc net.Conn, cfg *conn.Config) *Session {
	s := &Session{peer: p, ctr: ctr, id: id, connectAt: time.Now().UnixNano()}
	s.c.Init((*sessionHandler)(s), nc, cfg)
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
	a := s.c.NetConn().RemoteAddr()
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
func (s *Session) LastActivity() time.Time { return time.Unix(0, s.c.LastActivity()) }

// IsConnected reports whether the session is open: not closing or closed.
func (s *Session) IsConnected() bool { return s.c.Open() }

// Mode tells whether the peer speaks frames or text lines; ModeUnknown until
// it has sent its first bytes.
func (s *Session) Mode() frame.Mode { return s.c.Mode() }

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
// waits on the network. It fails with ErrMessageTooLarge, ErrQueueFull
// (ErrServerQueueFull when the server-wide budget is spent),
// ErrSlowConsumer or ErrSessionClosed, and then nothing was queued. msg may
// be reused as soon as Send returns.
func (s *Session) Send(msg []byte) error { return s.c.Send(msg) }

// SendString is Send for a string.
func (s *Session) SendString(msg string) error { return s.c.Send(unsafeBytes(msg)) }

// SendRaw queues bytes to be written exactly as given, without framing: the
// caller vouches that they are whole frames (or whole lines in text mode).
// It exists for pre-encoded frames, such as one broadcast frame written to
// many sessions.
func (s *Session) SendRaw(data []byte) error { return s.c.SendRaw(data) }

// SendError queues an ERROR frame with code and message (in text mode, the
// line "ERROR <code>"), as msgnet itself answers bad input; the peer goes
// on. Codes are lower_snake_case; msgnet's are the Code* constants. It
// fails like Send.
func (s *Session) SendError(code, message string) error {
	err := s.c.Enqueue(frame.KindError, 0, frame.AppendError(nil, code, message))
	if err == nil {
		s.ctr.ErrorsSent.Add(knownCode(code))
	}
	return err
}

// sendError is SendError for msgnet's own answers.
func (s *Session) sendError(code, message string) { s.SendError(code, message) }

// Disconnect ends the session: what is already queued is written, then a
// DISCONNECT frame with reason, then the connection is closed. The disconnect
// handler receives a *DisconnectError with reason.
func (s *Session) Disconnect(reason string) {
	s.close(&DisconnectError{Reason: reason}, true)
}

// close ends the session for reason through the engine's one close: what
// is queued is written, then, with notify, the peer is told (an ERROR for
// a protocol error of ours, and DISCONNECT with the reason), then the
// connection closes.
func (s *Session) close(reason error, notify bool) {
	if !notify {
		s.c.Close(reason, conn.Drain, nil)
		return
	}
	var last *frame.ErrorBody
	if pe, ok := reason.(*ProtocolError); ok && !pe.Remote {
		last = &frame.ErrorBody{Code: pe.Code, Message: pe.Message}
	}
	s.c.Close(reason, conn.Notify, last)
}

// abort closes the connection at once, dropping what is queued.
func (s *Session) abort(reason error) { s.c.Close(reason, conn.Abort, nil) }

// unsafeBytes views a string's bytes without copying; the bytes are only
// read (they are copied into the send queue).
func unsafeBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }
