package msgnet

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msgnet/msgnet/frame"
)

// ClientOption configures a Client.
type ClientOption func(*clientConfig)

type clientConfig struct {
	maxPayload int
	queueBytes int
	drain      time.Duration
	dial       func(ctx context.Context, addr string) (net.Conn, error)
	logger     *slog.Logger
}

// WithClientMessageSizeLimit bounds message payloads in both directions
// (default 1 MiB); the server's own limit, learnt in the welcome, also
// applies to sends.
func WithClientMessageSizeLimit(n int) ClientOption {
	return func(c *clientConfig) { c.maxPayload = min(max(n, 0), frame.MaxPayloadLimit) }
}

// WithClientSendQueueBytes bounds the client's queue of unsent bytes
// (default 4 MiB); a send beyond it fails with ErrQueueFull.
func WithClientSendQueueBytes(n int) ClientOption { return func(c *clientConfig) { c.queueBytes = n } }

// WithDialer replaces how the client opens connections: TLS, WebSocket or
// HTTP/2 transports plug in here. The default dials TCP.
func WithDialer(dial func(ctx context.Context, addr string) (net.Conn, error)) ClientOption {
	return func(c *clientConfig) { c.dial = dial }
}

// WithClientLogger sets where the client logs (default: nowhere).
func WithClientLogger(l *slog.Logger) ClientOption { return func(c *clientConfig) { c.logger = l } }

// Client is a connection to a msgnet server. Create it with NewClient, set
// its handlers, then Connect.
//
//	c := msgnet.NewClient("client_01")
//	c.OnMessage(func(msg []byte) { fmt.Printf("%s\n", msg) })
//	if err := c.Connect(ctx, "127.0.0.1:8080"); err != nil { ... }
//	defer c.Close()
//	c.SendString("hello")
type Client struct {
	id  string
	cfg clientConfig
	log *slog.Logger

	onMessage    atomic.Pointer[func(msg []byte)]
	onConnect    atomic.Pointer[func()]
	onDisconnect atomic.Pointer[func(reason error)]
	onError      atomic.Pointer[func(err *ProtocolError)]

	mu        sync.Mutex
	sess      *Session
	ended     chan struct{} // closed when sess has ended
	sessionID string
	serverID  string
	closed    bool

	pingSeq atomic.Uint64
	pingMu  sync.Mutex
	pings   map[uint64]chan time.Time
}

// NewClient returns a client that introduces itself with clientID.
func NewClient(clientID string, opts ...ClientOption) *Client {
	cfg := clientConfig{
		maxPayload: frame.DefaultMaxPayload,
		queueBytes: 4 << 20,
		drain:      5 * time.Second,
		logger:     slog.New(slog.DiscardHandler),
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.dial == nil {
		var d net.Dialer
		cfg.dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	return &Client{id: clientID, cfg: cfg, log: cfg.logger, pings: make(map[uint64]chan time.Time)}
}

// OnMessage sets the handler for DATA messages from the server. msg is
// valid only until the handler returns. Messages arrive in order, one at a
// time.
func (c *Client) OnMessage(h func(msg []byte)) { c.onMessage.Store(&h) }

// OnConnect sets the handler run after each successful handshake.
func (c *Client) OnConnect(h func()) { c.onConnect.Store(&h) }

// OnDisconnect sets the handler run when a connection ends, with the
// reason (see DisconnectHandler for the kinds of reason).
func (c *Client) OnDisconnect(h func(reason error)) { c.onDisconnect.Store(&h) }

// OnError sets the handler for ERROR frames the server sends while
// connected.
func (c *Client) OnError(h func(err *ProtocolError)) { c.onError.Store(&h) }

// ID is the client id given to NewClient.
func (c *Client) ID() string { return c.id }

// SessionID is the session id the server assigned in its welcome.
func (c *Client) SessionID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sessionID
}

// IsConnected reports whether the client has an open connection.
func (c *Client) IsConnected() bool {
	c.mu.Lock()
	s := c.sess
	c.mu.Unlock()
	return s != nil && s.IsConnected()
}

// ErrHandshake wraps failures of the hello/welcome exchange.
var ErrHandshake = errors.New("msgnet: handshake failed")

// Connect dials addr, sends the hello and waits for the welcome, all within
// ctx. A server that refuses answers with an error that matches its code,
// e.g. errors.Is(err, ErrServerFull).
func (c *Client) Connect(ctx context.Context, addr string) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClientClosed
	}
	if c.sess != nil {
		c.mu.Unlock()
		return errors.New("msgnet: already connected")
	}
	c.mu.Unlock()

	nc, err := c.cfg.dial(ctx, addr)
	if err != nil {
		return err
	}
	w, r, err := c.handshake(ctx, nc)
	if err != nil {
		nc.Close()
		return err
	}
	s := newSession(c, w.SessionID, nc, c.cfg.maxPayload, c.cfg.queueBytes, c.cfg.drain)
	if w.MaxMessageSize > 0 && w.MaxMessageSize < s.maxPayload {
		s.maxPayload = w.MaxMessageSize
	}
	s.mode = frame.ModeBinary
	s.established = true
	s.clientID.Store(&c.id)
	s.pending = append([]byte(nil), r.Buffered()...)
	s.readerActive = true
	s.readFn = s.readBlocking

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		nc.Close()
		return ErrClientClosed
	}
	c.sess = s
	c.ended = make(chan struct{})
	c.sessionID, c.serverID = w.SessionID, w.ServerID
	c.mu.Unlock()

	if h := c.onConnect.Load(); h != nil {
		(*h)()
	}
	go s.readFn()
	return nil
}

// handshake sends the hello and reads frames until the welcome.
func (c *Client) handshake(ctx context.Context, nc net.Conn) (welcome, *frame.Reader, error) {
	var w welcome
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		stop()
		nc.SetDeadline(time.Time{})
	}()

	hb, _ := json.Marshal(hello{Op: "hello", ClientID: c.id})
	if err := frame.WriteFrame(nc, frame.KindControl, 0, hb); err != nil {
		return w, nil, c.ctxErr(ctx, err)
	}
	r := frame.NewReader(nc, c.cfg.maxPayload)
	var refusal *ProtocolError
	for {
		f, err := r.ReadFrame()
		if err != nil {
			if refusal != nil {
				return w, nil, refusal
			}
			return w, nil, fmt.Errorf("%w: %w", ErrHandshake, c.ctxErr(ctx, err))
		}
		switch f.Kind {
		case frame.KindControl:
			if op, _ := frame.ControlOp(f.Payload); op == "welcome" {
				if err := json.Unmarshal(f.Payload, &w); err != nil {
					return w, nil, fmt.Errorf("%w: bad welcome: %v", ErrHandshake, err)
				}
				return w, r, nil
			}
		case frame.KindError:
			e := frame.ParseError(f.Payload)
			refusal = &ProtocolError{Code: e.Code, Message: e.Message, Remote: true}
		case frame.KindDisconnect:
			if refusal != nil {
				return w, nil, refusal
			}
			return w, nil, &DisconnectError{Reason: string(f.Payload), Remote: true}
		}
	}
}

// ctxErr reports a context's end as the context's error: the socket
// deadline set from the context can fire a moment before ctx.Err is set.
func (c *Client) ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ne net.Error
	if dl, ok := ctx.Deadline(); ok && errors.As(err, &ne) && ne.Timeout() && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return err
}

func (c *Client) current() (*Session, error) {
	c.mu.Lock()
	s := c.sess
	c.mu.Unlock()
	if s == nil {
		return nil, ErrNotConnected
	}
	return s, nil
}

// Send queues msg as one DATA message. It never waits on the network; it
// fails with ErrNotConnected, ErrMessageTooLarge, ErrQueueFull or
// ErrSessionClosed, and then nothing was queued.
func (c *Client) Send(msg []byte) error {
	s, err := c.current()
	if err != nil {
		return err
	}
	return s.Send(msg)
}

// SendString is Send for a string.
func (c *Client) SendString(msg string) error { return c.Send(unsafeBytes(msg)) }

// SendRaw queues bytes to be written as they are: they must be whole frames.
func (c *Client) SendRaw(data []byte) error {
	s, err := c.current()
	if err != nil {
		return err
	}
	return s.SendRaw(data)
}

// Ping sends a PING and returns the round-trip time once the PONG arrives.
func (c *Client) Ping(ctx context.Context) (time.Duration, error) {
	s, err := c.current()
	if err != nil {
		return 0, err
	}
	seq := c.pingSeq.Add(1)
	ch := make(chan time.Time, 1)
	c.pingMu.Lock()
	c.pings[seq] = ch
	c.pingMu.Unlock()
	defer func() {
		c.pingMu.Lock()
		delete(c.pings, seq)
		c.pingMu.Unlock()
	}()
	var p [8]byte
	binary.BigEndian.PutUint64(p[:], seq)
	start := time.Now()
	if err := s.enqueue(frame.KindPing, 0, p[:]); err != nil {
		return 0, err
	}
	select {
	case at, ok := <-ch:
		if !ok {
			return 0, ErrSessionClosed
		}
		return at.Sub(start), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Close ends the connection gracefully: what is queued is written, then
// DISCONNECT "client closed". It waits for the connection to end. The client
// cannot be used afterwards.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	s, ended := c.sess, c.ended
	c.mu.Unlock()
	if s == nil {
		return nil
	}
	s.closeWith(ErrClientClosed, true)
	<-ended
	return nil
}

// handleFrame implements the client side of the protocol.
func (c *Client) handleFrame(s *Session, f frame.Frame) error {
	if f.Flags != 0 {
		s.enqueue(frame.KindError, 0, frame.AppendError(nil, frame.CodeUnknownType, "flags were not negotiated"))
		return nil
	}
	switch f.Kind {
	case frame.KindData:
		if h := c.onMessage.Load(); h != nil {
			(*h)(f.Payload)
		}
	case frame.KindPing:
		s.enqueue(frame.KindPong, 0, f.Payload)
	case frame.KindPong:
		if len(f.Payload) == 8 {
			seq := binary.BigEndian.Uint64(f.Payload)
			c.pingMu.Lock()
			ch := c.pings[seq]
			c.pingMu.Unlock()
			if ch != nil {
				select {
				case ch <- time.Now():
				default:
				}
			}
		}
	case frame.KindHeartbeat:
	case frame.KindControl:
		op, err := frame.ControlOp(f.Payload)
		if err != nil {
			s.enqueue(frame.KindError, 0, frame.AppendError(nil, frame.CodeBadControl, err.Error()))
		} else {
			s.enqueue(frame.KindError, 0, frame.AppendError(nil, frame.CodeBadControl, "unknown op "+op))
		}
	case frame.KindError:
		e := frame.ParseError(f.Payload)
		c.log.Info("server reported an error", "code", e.Code, "message", e.Message)
		if h := c.onError.Load(); h != nil {
			(*h)(&ProtocolError{Code: e.Code, Message: e.Message, Remote: true})
		}
	case frame.KindDisconnect:
		return &DisconnectError{Reason: string(f.Payload), Remote: true}
	default:
		s.enqueue(frame.KindError, 0, frame.AppendError(nil, frame.CodeUnknownType, "unknown message kind "+f.Kind.String()))
	}
	return nil
}

func (c *Client) handleLine(*Session, []byte) {} // clients always speak frames

func (c *Client) sessionEnded(s *Session, reason error) {
	c.mu.Lock()
	ended := c.ended
	if c.sess == s {
		c.sess = nil
	}
	c.mu.Unlock()
	c.pingMu.Lock()
	for seq, ch := range c.pings {
		close(ch)
		delete(c.pings, seq)
	}
	c.pingMu.Unlock()
	if h := c.onDisconnect.Load(); h != nil {
		(*h)(reason)
	}
	close(ended)
}
