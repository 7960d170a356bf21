package msgnet

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/pipeline"
)

// ClientOption configures a Client.
type ClientOption func(*clientConfig)

type clientConfig struct {
	maxPayload     int
	queueBytes     int
	drain          time.Duration
	dial           func(ctx context.Context, addr string) (net.Conn, error)
	logger         *slog.Logger
	connectTimeout time.Duration

	reconnect   bool
	backoffBase time.Duration
	backoffCap  time.Duration
	maxAttempts int // 0: forever
	bufferBytes int

	hbInterval time.Duration // 0: from the welcome's idle timeout
	hbTimeout  time.Duration
	hbOff      bool

	compression []string // codecs to ask for, in order of preference
	psk         []byte
	suites      []string
	authKey     []byte
	authKeyID   string
	filters     pipeline.Chain
	tls         *tls.Config
}

// WithClientCompression asks the server to compress DATA with the first of
// codecs (names from pipeline.Codecs) that it supports; a server that
// supports none of them is used without compression.
func WithClientCompression(codecs ...string) ClientOption {
	return func(c *clientConfig) { c.compression = codecs }
}

// WithClientEncryption encrypts DATA with a key derived from psk, which
// the server must share (WithEncryption). Suites are offered in order
// (default: ChaCha20-Poly1305, AES-256-GCM). A server that does not agree
// to encrypt is refused: Connect fails rather than fall back to plaintext.
func WithClientEncryption(psk []byte, suites ...string) ClientOption {
	return func(c *clientConfig) {
		c.psk = append([]byte(nil), psk...)
		c.suites = suites
	}
}

// WithClientAuthKey answers a server's authentication challenge with key.
func WithClientAuthKey(key []byte) ClientOption {
	return func(c *clientConfig) { c.authKey = append([]byte(nil), key...) }
}

// WithClientAuthKeyID names which of the server's keys WithClientAuthKey
// holds, for a server with several (msgnet.WithAuth).
func WithClientAuthKeyID(id string) ClientOption { return func(c *clientConfig) { c.authKeyID = id } }

// WithClientFilters adds payload filters matching the server's WithFilters.
func WithClientFilters(filters ...pipeline.Filter) ClientOption {
	return func(c *clientConfig) { c.filters = append(c.filters, filters...) }
}

// WithClientTLS connects over TLS with cfg (RootCAs, and a client
// certificate for mutual TLS; ServerName defaults to the address's host).
// It wraps the dialer.
func WithClientTLS(cfg *tls.Config) ClientOption { return func(c *clientConfig) { c.tls = cfg } }

// WithClientMessageSizeLimit bounds message payloads in both directions
// (default 1 MiB); the server's own limit, learnt in the welcome, also
// applies to sends.
func WithClientMessageSizeLimit(n int) ClientOption {
	return func(c *clientConfig) { c.maxPayload = min(max(n, 0), frame.MaxPayloadLimit) }
}

// WithClientSendQueueBytes bounds the connection's queue of unsent bytes
// (default 4 MiB); a send beyond it fails with ErrQueueFull.
func WithClientSendQueueBytes(n int) ClientOption { return func(c *clientConfig) { c.queueBytes = n } }

// WithDialer replaces how the client opens connections: TLS, WebSocket or
// HTTP/2 transports plug in here. The default dials TCP.
func WithDialer(dial func(ctx context.Context, addr string) (net.Conn, error)) ClientOption {
	return func(c *clientConfig) { c.dial = dial }
}

// WithClientLogger sets where the client logs (default: nowhere).
func WithClientLogger(l *slog.Logger) ClientOption { return func(c *clientConfig) { c.logger = l } }

// WithConnectTimeout bounds each connection attempt made while reconnecting
// (default 5s). Connect's own attempts are bounded by its context.
func WithConnectTimeout(d time.Duration) ClientOption {
	return func(c *clientConfig) { c.connectTimeout = d }
}

// WithReconnect makes the client reconnect by itself when a connection is
// lost: after base, then doubling up to max, each wait jittered (half fixed,
// half random), trying the addresses given to Connect in turn, for at most
// attempts rounds (0: forever). The hello carries the same client id.
func WithReconnect(base, max time.Duration, attempts int) ClientOption {
	return func(c *clientConfig) {
		c.reconnect, c.backoffBase, c.backoffCap, c.maxAttempts = true, base, max, attempts
	}
}

// WithReconnectBuffer bounds, in payload bytes, what Send buffers while the
// client is reconnecting (default 1 MiB). Past it Send fails with
// ErrBufferFull.
func WithReconnectBuffer(n int) ClientOption { return func(c *clientConfig) { c.bufferBytes = n } }

// WithHeartbeat sends a PING every interval and declares the connection
// dead (ErrHeartbeatTimeout) when its PONG has not come within timeout.
// By default the interval is a third of the server's idle timeout (at most
// 15s) and the timeout equals the interval; an interval of 0 turns
// heartbeats off.
func WithHeartbeat(interval, timeout time.Duration) ClientOption {
	return func(c *clientConfig) {
		c.hbInterval, c.hbTimeout, c.hbOff = interval, timeout, interval <= 0
	}
}

// Client errors and reasons.
var (
	// ErrHandshake wraps failures of the hello/welcome exchange.
	ErrHandshake = errors.New("msgnet: handshake failed")
	// ErrBufferFull is returned by Send while reconnecting when the
	// reconnect buffer cannot take the message.
	ErrBufferFull = errors.New("msgnet: reconnect buffer full")
	// ErrHeartbeatTimeout ends a connection whose PONG did not come in time.
	ErrHeartbeatTimeout = errors.New("heartbeat timeout")
	// ErrReconnectFailed is the reason a client closes after its reconnect
	// attempts ran out.
	ErrReconnectFailed = errors.New("msgnet: reconnect attempts exhausted")
)

// ClientState is where a client is in its life.
type ClientState int

// Client states.
const (
	StateDisconnected ClientState = iota // not connected, not trying
	StateConnected
	StateReconnecting
	StateClosed
)

func (s ClientState) String() string {
	return [...]string{"disconnected", "connected", "reconnecting", "closed"}[s]
}

// Client is a connection to a msgnet server. Create it with NewClient, set
// its handlers, then Connect.
//
//	c := msgnet.NewClient("client_01", msgnet.WithReconnect(100*time.Millisecond, 5*time.Second, 0))
//	c.OnMessage(func(msg []byte) { fmt.Printf("%s\n", msg) })
//	if err := c.Connect(ctx, "10.0.0.1:8080", "10.0.0.2:8080"); err != nil { ... }
//	defer c.Close()
//	c.SendString("hello")
//	reply, err := c.Request(ctx, []byte("status?"))
//
// What can be lost when a connection breaks: messages the client had
// already handed to the socket (written, but not yet read by the server)
// when the connection died. Messages still in the client's queue, and
// everything sent while reconnecting (within the buffer bound), are sent
// on the next connection, in order, except that on a connection with
// compression, encryption or filters the queued frames were already
// transformed for it and are dropped with it. Requests are never re-sent: a Request
// whose connection died returns ErrConnectionLost (it may or may not have
// been handled), one that was refused before sending returns its error
// (it was not sent), and otherwise it returns the reply; a Request never
// outlives its context.
type Client struct {
	id  string
	cfg clientConfig
	log *slog.Logger

	onMessage    atomic.Pointer[func(msg []byte)]
	onRequest    atomic.Pointer[func(req []byte) ([]byte, error)]
	onConnect    atomic.Pointer[func()]
	onDisconnect atomic.Pointer[func(reason error)]
	onReconnect  atomic.Pointer[func()]
	onClosed     atomic.Pointer[func(reason error)]
	onError      atomic.Pointer[func(err *ProtocolError)]

	mu        sync.Mutex
	state     ClientState
	sess      *Session
	ended     chan struct{} // closed when sess has ended
	addrs     []string
	addrNext  int
	sessionID string
	serverID  string
	buf       [][]byte // sent while reconnecting
	bufBytes  int
	unsent    []byte          // frames salvaged from a dead connection
	life      context.Context // canceled by Close: ends reconnect attempts
	endLife   context.CancelFunc
	wg        sync.WaitGroup

	ctr counters

	pingSeq atomic.Uint64
	pingMu  sync.Mutex
	pings   map[uint64]pingWait
	hbPong  atomic.Uint64
}

// NewClient returns a client that introduces itself with clientID.
func NewClient(clientID string, opts ...ClientOption) *Client {
	cfg := clientConfig{
		maxPayload:     frame.DefaultMaxPayload,
		queueBytes:     4 << 20,
		drain:          5 * time.Second,
		logger:         slog.New(slog.DiscardHandler),
		connectTimeout: 5 * time.Second,
		bufferBytes:    1 << 20,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.dial == nil {
		var d net.Dialer
		cfg.dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	if cfg.tls != nil {
		dial, tcfg := cfg.dial, cfg.tls
		cfg.dial = func(ctx context.Context, addr string) (net.Conn, error) {
			nc, err := dial(ctx, addr)
			if err != nil {
				return nil, err
			}
			c := tcfg
			if c.ServerName == "" && !c.InsecureSkipVerify {
				c = c.Clone()
				c.ServerName, _, _ = net.SplitHostPort(addr)
			}
			tc := tls.Client(nc, c)
			if err := tc.HandshakeContext(ctx); err != nil {
				nc.Close()
				return nil, err
			}
			return tc, nil
		}
	}
	if cfg.hbTimeout <= 0 {
		cfg.hbTimeout = cfg.hbInterval
	}
	c := &Client{id: clientID, cfg: cfg, log: cfg.logger, pings: make(map[uint64]pingWait)}
	c.life, c.endLife = context.WithCancel(context.Background())
	return c
}

// OnMessage sets the handler for DATA messages from the server. msg is
// valid only until the handler returns. Messages arrive in order, one at a
// time.
func (c *Client) OnMessage(h func(msg []byte)) { c.onMessage.Store(&h) }

// OnRequest sets the handler for requests the server makes
// (Session.Request); its result is sent back as the reply.
func (c *Client) OnRequest(h func(req []byte) ([]byte, error)) { c.onRequest.Store(&h) }

// OnConnect sets the handler run after each successful handshake,
// reconnections included.
func (c *Client) OnConnect(h func()) { c.onConnect.Store(&h) }

// OnDisconnect sets the handler run each time a connection ends, with the
// reason (see DisconnectHandler for the kinds of reason).
func (c *Client) OnDisconnect(h func(reason error)) { c.onDisconnect.Store(&h) }

// OnReconnect sets the handler run after a lost connection was replaced,
// once what was buffered meanwhile has been queued on the new one.
func (c *Client) OnReconnect(h func()) { c.onReconnect.Store(&h) }

// OnClosed sets the handler run once when the client is finished: closed
// by Close (ErrClientClosed), out of reconnect attempts (ErrReconnectFailed),
// or disconnected without reconnect enabled.
func (c *Client) OnClosed(h func(reason error)) { c.onClosed.Store(&h) }

// OnError sets the handler for ERROR frames the server sends while
// connected.
func (c *Client) OnError(h func(err *ProtocolError)) { c.onError.Store(&h) }

// ID is the client id given to NewClient.
func (c *Client) ID() string { return c.id }

// SessionID is the session id the server assigned in its last welcome.
func (c *Client) SessionID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sessionID
}

// State reports whether the client is connected, reconnecting or closed.
func (c *Client) State() ClientState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// IsConnected reports whether the client has an open connection.
func (c *Client) IsConnected() bool { return c.State() == StateConnected }

// Connect dials the addresses in turn, sends the hello and waits for the
// welcome, all within ctx, and returns the first success or every error. A
// server that refuses answers with an error matching its code, e.g.
// errors.Is(err, ErrServerFull). With WithReconnect, the same addresses are
// used to reconnect.
func (c *Client) Connect(ctx context.Context, addrs ...string) error {
	if len(addrs) == 0 {
		return errors.New("msgnet: Connect needs an address")
	}
	c.mu.Lock()
	switch c.state {
	case StateClosed:
		c.mu.Unlock()
		return ErrClientClosed
	case StateConnected, StateReconnecting:
		c.mu.Unlock()
		return errors.New("msgnet: already connected")
	}
	c.addrs = append([]string(nil), addrs...)
	c.mu.Unlock()

	var errs []error
	for i, addr := range addrs {
		s, err := c.dialOne(ctx, addr)
		if err == nil {
			c.mu.Lock()
			c.addrNext = (i + 1) % len(addrs)
			c.mu.Unlock()
			return c.install(s, false)
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 1 {
		return errors.Unwrap(errs[0]) // keep a lone error as it was
	}
	return errors.Join(errs...)
}

// dialOne opens one connection and completes the handshake on it.
func (c *Client) dialOne(ctx context.Context, addr string) (*clientConn, error) {
	nc, err := c.cfg.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	w, r, pipe, err := c.handshake(ctx, nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	s := newSession(c, w.SessionID, nc, c.cfg.maxPayload, c.cfg.queueBytes, c.cfg.drain)
	s.pipe = pipe
	if w.MaxMessageSize > 0 && w.MaxMessageSize < s.maxPayload {
		s.maxPayload = w.MaxMessageSize
	}
	_, mask := grantFeatures(w.Features)
	s.features.Store(mask)
	s.mode = frame.ModeBinary
	s.established = true
	s.salvage = true
	s.ctr = &c.ctr
	s.clientID.Store(&c.id)
	s.pending = append([]byte(nil), r.Buffered()...)
	s.readerActive = true
	s.readFn = s.readBlocking
	return &clientConn{s: s, serverID: w.ServerID, idleTimeout: time.Duration(w.IdleTimeoutMS) * time.Millisecond}, nil
}

// clientConn is a fresh connection and what its welcome said.
type clientConn struct {
	s           *Session
	serverID    string
	idleTimeout time.Duration
}

// install makes s the client's connection: what was salvaged and buffered
// is queued first, in order, then the reader and heartbeat start.
func (c *Client) install(cc *clientConn, reconnected bool) error {
	s := cc.s
	c.mu.Lock()
	if c.state == StateClosed {
		c.mu.Unlock()
		s.nc.Close()
		return ErrClientClosed
	}
	c.sess, c.state = s, StateConnected
	ended := make(chan struct{})
	c.ended = ended
	c.sessionID, c.serverID = s.id, cc.serverID
	requeueData(s, c.unsent)
	for _, m := range c.buf {
		s.enqueueForce(frame.KindData, 0, m)
	}
	c.unsent, c.buf, c.bufBytes = nil, nil, 0
	c.wg.Add(1) // the reader, until sessionEnded
	c.mu.Unlock()

	if h := c.onConnect.Load(); h != nil {
		(*h)()
	}
	if reconnected {
		if h := c.onReconnect.Load(); h != nil {
			(*h)()
		}
	}
	if interval, timeout := c.heartbeatTiming(cc.idleTimeout); interval > 0 {
		c.wg.Add(1)
		go c.heartbeat(s, ended, interval, timeout)
	}
	go s.readFn()
	return nil
}

// requeueData queues the DATA frames among salvaged bytes. Requests,
// replies and control frames are not re-sent: their callers were already
// told the connection was lost.
func requeueData(s *Session, b []byte) {
	for len(b) >= frame.HeaderLen {
		total, err := frame.Split(b, frame.MaxPayloadLimit)
		if err != nil || total > len(b) || total == 0 {
			return
		}
		if f := frame.Decode(b[:total]); f.Kind == frame.KindData && f.Flags == 0 {
			s.enqueueForce(frame.KindData, 0, f.Payload)
		}
		b = b[total:]
	}
}

func (c *Client) heartbeatTiming(serverIdle time.Duration) (interval, timeout time.Duration) {
	if c.cfg.hbOff {
		return 0, 0
	}
	if c.cfg.hbInterval > 0 {
		return c.cfg.hbInterval, c.cfg.hbTimeout
	}
	interval = 15 * time.Second
	if serverIdle > 0 {
		interval = min(interval, serverIdle/3)
	}
	return interval, interval
}

// heartbeat pings every interval; a PING unanswered for timeout means the
// connection is dead (a frozen peer or a half-open TCP connection), so it is
// closed, which starts a reconnect when enabled.
func (c *Client) heartbeat(s *Session, ended <-chan struct{}, interval, timeout time.Duration) {
	defer c.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	var outstanding uint64
	var sentAt time.Time
	for {
		select {
		case <-ended:
			return
		case now := <-t.C:
			if outstanding != 0 && c.hbPong.Load() != outstanding {
				if now.Sub(sentAt) >= timeout {
					c.log.Warn("heartbeat timeout", "after", now.Sub(sentAt))
					s.abort(ErrHeartbeatTimeout)
					return
				}
				continue
			}
			outstanding = c.pingSeq.Add(1) | hbBit
			sentAt = now
			var p [8]byte
			binary.BigEndian.PutUint64(p[:], outstanding)
			s.enqueue(frame.KindPing, 0, p[:])
		}
	}
}

// pingWait is a Ping waiting for its PONG on one connection.
type pingWait struct {
	s  *Session
	ch chan time.Time
}

// hbBit marks heartbeat PINGs, so their PONGs are not taken for Ping's.
const hbBit = 1 << 63

// handshake sends the hello, meets a challenge if the server sends one,
// and reads frames until the welcome; it returns the negotiated pipeline.
func (c *Client) handshake(ctx context.Context, nc net.Conn) (welcome, *frame.Reader, *sessionPipe, error) {
	var w welcome
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		stop()
		nc.SetDeadline(time.Time{})
	}()

	h := hello{Op: "hello", ClientID: c.id, Features: []string{featureRequest}, Compression: c.cfg.compression}
	var clientNonce []byte
	if c.cfg.psk != nil {
		n, err := pipeline.NewNonce()
		if err != nil {
			return w, nil, nil, err
		}
		clientNonce = n
		suites := c.cfg.suites
		if len(suites) == 0 {
			suites = pipeline.Suites()
		}
		h.Encryption = &helloSeal{Suites: suites, Nonce: n}
	}
	if c.cfg.authKey != nil {
		h.Auth = "hmac-sha256"
		h.KeyID = c.cfg.authKeyID
	}
	hb, _ := json.Marshal(h)
	if err := frame.WriteFrame(nc, frame.KindControl, 0, hb); err != nil {
		return w, nil, nil, c.ctxErr(ctx, err)
	}
	r := frame.NewReader(nc, c.cfg.maxPayload)
	var refusal *ProtocolError
	for {
		f, err := r.ReadFrame()
		if err != nil {
			if refusal != nil {
				return w, nil, nil, refusal
			}
			return w, nil, nil, fmt.Errorf("%w: %w", ErrHandshake, c.ctxErr(ctx, err))
		}
		switch f.Kind {
		case frame.KindControl:
			switch op, _ := frame.ControlOp(f.Payload); op {
			case "challenge":
				var ch challenge
				if json.Unmarshal(f.Payload, &ch) != nil || len(ch.Nonce) == 0 {
					return w, nil, nil, fmt.Errorf("%w: bad challenge", ErrHandshake)
				}
				if c.cfg.authKey == nil {
					return w, nil, nil, fmt.Errorf("%w: the server requires authentication and no key is set (WithClientAuthKey)", ErrHandshake)
				}
				a, _ := json.Marshal(authAnswer{Op: "auth", MAC: pipeline.AuthResponse(c.cfg.authKey, ch.Nonce, c.id)})
				if err := frame.WriteFrame(nc, frame.KindControl, 0, a); err != nil {
					return w, nil, nil, c.ctxErr(ctx, err)
				}
			case "welcome":
				if err := json.Unmarshal(f.Payload, &w); err != nil {
					return w, nil, nil, fmt.Errorf("%w: bad welcome: %v", ErrHandshake, err)
				}
				pipe, err := c.pipelineFor(&w, clientNonce)
				if err != nil {
					return w, nil, nil, err
				}
				return w, r, pipe, nil
			}
		case frame.KindError:
			e := frame.ParseError(f.Payload)
			refusal = &ProtocolError{Code: e.Code, Message: e.Message, Remote: true}
		case frame.KindDisconnect:
			if refusal != nil {
				return w, nil, nil, refusal
			}
			return w, nil, nil, &DisconnectError{Reason: string(f.Payload), Remote: true}
		}
	}
}

// pipelineFor builds the payload stages the welcome granted. It refuses a
// welcome that grants what was not asked for, or drops encryption that was:
// a man in the middle must not be able to downgrade the connection.
func (c *Client) pipelineFor(w *welcome, clientNonce []byte) (*sessionPipe, error) {
	var pipe *sessionPipe
	if len(c.cfg.filters) > 0 {
		pipe = orNewPipe(pipe, c.cfg.maxPayload)
		pipe.p.Filters = c.cfg.filters
	}
	if w.Compression != "" {
		comp, ok := pipeline.CompressorByName(w.Compression)
		if !ok || !slices.Contains(c.cfg.compression, w.Compression) {
			return nil, fmt.Errorf("%w: server chose compression %q, which was not offered", ErrHandshake, w.Compression)
		}
		pipe = orNewPipe(pipe, c.cfg.maxPayload)
		pipe.p.Compressor, pipe.p.Threshold = comp, 512
	}
	switch {
	case c.cfg.psk != nil && w.Encryption == nil:
		return nil, fmt.Errorf("%w: the server did not agree to encryption", ErrHandshake)
	case c.cfg.psk == nil && w.Encryption != nil:
		return nil, fmt.Errorf("%w: the server chose encryption, which was not asked for", ErrHandshake)
	case c.cfg.psk != nil:
		sealer, opener, err := pipeline.NewSessionKeys(c.cfg.psk, clientNonce, w.Encryption.Nonce, w.Encryption.Suite, pipeline.RoleClient)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrHandshake, err)
		}
		pipe = orNewPipe(pipe, c.cfg.maxPayload)
		pipe.p.Sealer, pipe.p.Opener = sealer, opener
	}
	return pipe, nil
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

// Send queues msg as one DATA message. It never waits on the network. While
// reconnecting it buffers msg (a copy) within WithReconnectBuffer's bound.
// It fails with ErrNotConnected, ErrMessageTooLarge, ErrQueueFull,
// ErrBufferFull or ErrClientClosed, and then nothing was queued.
func (c *Client) Send(msg []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != nil {
		err := c.sess.Send(msg)
		if err != ErrSessionClosed || !c.cfg.reconnect {
			return err
		}
		// The connection is ending and a reconnect will follow: buffer.
	}
	switch {
	case c.state == StateClosed:
		return ErrClientClosed
	case !c.cfg.reconnect || c.state == StateDisconnected && c.sess == nil:
		return ErrNotConnected
	case len(msg) > c.cfg.maxPayload:
		return ErrMessageTooLarge
	case c.bufBytes+len(msg) > c.cfg.bufferBytes:
		return ErrBufferFull
	}
	c.buf = append(c.buf, append([]byte(nil), msg...))
	c.bufBytes += len(msg)
	return nil
}

// SendString is Send for a string.
func (c *Client) SendString(msg string) error { return c.Send(unsafeBytes(msg)) }

// SendRaw queues bytes to be written as they are: they must be whole
// frames. It is not buffered while reconnecting.
func (c *Client) SendRaw(data []byte) error {
	s, err := c.current()
	if err != nil {
		return err
	}
	return s.SendRaw(data)
}

func (c *Client) current() (*Session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == nil {
		if c.state == StateClosed {
			return nil, ErrClientClosed
		}
		return nil, ErrNotConnected
	}
	return c.sess, nil
}

// Request sends msg as a request and waits for the server's reply (from
// its OnRequest handler) or for ctx to end. It is not buffered while
// reconnecting (ErrNotConnected). Do not call it from the client's own
// message handler: the reply is read by the goroutine that handler blocks.
func (c *Client) Request(ctx context.Context, msg []byte) ([]byte, error) {
	s, err := c.current()
	if err != nil {
		return nil, err
	}
	return s.Request(ctx, msg)
}

// LateReplies counts replies on the current connection that arrived after
// their request had given up.
func (c *Client) LateReplies() uint64 {
	s, err := c.current()
	if err != nil {
		return 0
	}
	return s.LateReplies()
}

// Ping sends a PING and returns the round-trip time once the PONG arrives.
func (c *Client) Ping(ctx context.Context) (time.Duration, error) {
	s, err := c.current()
	if err != nil {
		return 0, err
	}
	seq := c.pingSeq.Add(1) &^ hbBit
	ch := make(chan time.Time, 1)
	c.pingMu.Lock()
	c.pings[seq] = pingWait{s: s, ch: ch}
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
			return 0, ErrConnectionLost
		}
		return at.Sub(start), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Close ends the client: what is queued is written, then DISCONNECT
// "client closed"; a reconnect in progress stops and its buffer is dropped.
// It waits until the connection has ended, so it must not be called from
// the client's own handlers (OnMessage, OnConnect, ...), which run on the
// goroutine it waits for: call `go c.Close()` there. The client cannot be
// used afterwards.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.state == StateClosed {
		c.mu.Unlock()
		c.wg.Wait()
		return nil
	}
	prev := c.state
	c.state = StateClosed
	c.endLife()
	s, ended := c.sess, c.ended
	c.buf, c.bufBytes, c.unsent = nil, 0, nil
	c.mu.Unlock()
	if s != nil {
		s.closeWith(ErrClientClosed, true)
		<-ended
	}
	c.wg.Wait()
	if prev != StateDisconnected || s != nil {
		c.closed(ErrClientClosed)
	}
	return nil
}

func (c *Client) closed(reason error) {
	if h := c.onClosed.Load(); h != nil {
		(*h)(reason)
	}
}

// handleFrame implements the client side of the protocol.
func (c *Client) handleFrame(s *Session, f frame.Frame) error {
	if f.Kind == frame.KindData && s.pipe != nil {
		if err := s.inbound(&f); err != nil {
			return s.pipelineError(err)
		}
	}
	if f.Flags != 0 && (f.Kind != frame.KindData || !s.dataFlagsOK(f.Flags)) {
		s.sendError(frame.CodeUnknownType, "flags were not negotiated")
		return nil
	}
	switch f.Kind {
	case frame.KindData:
		switch f.Flags {
		case frame.FlagRequest:
			var h func([]byte) ([]byte, error)
			if p := c.onRequest.Load(); p != nil {
				h = *p
			}
			s.handleRequest(f.Payload, h)
		case frame.FlagReply:
			s.handleReply(f.Payload)
		default:
			if h := c.onMessage.Load(); h != nil {
				(*h)(f.Payload)
			}
		}
	case frame.KindPing:
		s.enqueue(frame.KindPong, 0, f.Payload)
	case frame.KindPong:
		if len(f.Payload) == 8 {
			seq := binary.BigEndian.Uint64(f.Payload)
			if seq&hbBit != 0 {
				c.hbPong.Store(seq)
				return nil
			}
			c.pingMu.Lock()
			w := c.pings[seq]
			c.pingMu.Unlock()
			if w.s == s {
				select {
				case w.ch <- time.Now():
				default:
				}
			}
		}
	case frame.KindHeartbeat:
	case frame.KindControl:
		op, err := frame.ControlOp(f.Payload)
		if err != nil {
			s.sendError(frame.CodeBadControl, err.Error())
		} else {
			s.sendError(frame.CodeBadControl, "unknown op "+op)
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
		s.sendError(frame.CodeUnknownType, "unknown message kind "+f.Kind.String())
	}
	return nil
}

func (c *Client) handleLine(*Session, []byte) {} // clients always speak frames

// sessionEnded runs when a connection has ended: it salvages what was never
// written and, unless the client was closed, reconnects or reports the end.
func (c *Client) sessionEnded(s *Session, reason error) {
	c.mu.Lock()
	ended := c.ended
	reconnect := false
	if c.sess == s {
		c.sess = nil
		switch {
		case c.state == StateClosed:
		case c.cfg.reconnect:
			c.state = StateReconnecting
			// Frames that went through compression, encryption or user
			// filters cannot be re-sent on a new connection (its keys and
			// counters differ): only plain DATA is salvaged.
			if e := s.ext.Load(); e != nil && s.pipe == nil {
				c.unsent = append(e.unsent, c.unsent...)
			}
			reconnect = true
			c.wg.Add(1)
		default:
			c.state = StateDisconnected
		}
	}
	state := c.state
	c.mu.Unlock()

	c.pingMu.Lock()
	for seq, w := range c.pings {
		if w.s == s { // only this connection's: a new one may have its own
			close(w.ch)
			delete(c.pings, seq)
		}
	}
	c.pingMu.Unlock()
	if h := c.onDisconnect.Load(); h != nil {
		(*h)(reason)
	}
	if state == StateDisconnected {
		c.closed(reason)
	}
	close(ended)
	if reconnect {
		go c.reconnectLoop()
	}
	c.wg.Done() // the reader's
}

// reconnectLoop tries the addresses with backoff until one takes, the
// attempts run out, or the client is closed.
func (c *Client) reconnectLoop() {
	defer c.wg.Done()
	for attempt := 0; c.cfg.maxAttempts == 0 || attempt < c.cfg.maxAttempts; attempt++ {
		select {
		case <-time.After(c.backoff(attempt)):
		case <-c.life.Done():
			return
		}
		c.mu.Lock()
		addrs, next := c.addrs, c.addrNext
		c.mu.Unlock()
		for i := range addrs {
			idx := (next + i) % len(addrs)
			ctx, cancel := context.WithTimeout(c.life, c.cfg.connectTimeout)
			s, err := c.dialOne(ctx, addrs[idx])
			cancel()
			if err != nil {
				c.log.Info("reconnect attempt failed", "addr", addrs[idx], "attempt", attempt+1, "err", err)
				continue
			}
			c.mu.Lock()
			c.addrNext = (idx + 1) % len(addrs)
			c.mu.Unlock()
			if err := c.install(s, true); err == nil {
				c.log.Info("reconnected", "addr", addrs[idx], "attempt", attempt+1)
			}
			return
		}
	}
	c.mu.Lock()
	giveUp := c.state == StateReconnecting
	if giveUp {
		c.state = StateClosed
		c.endLife()
		c.buf, c.bufBytes, c.unsent = nil, 0, nil
	}
	c.mu.Unlock()
	if giveUp {
		c.closed(ErrReconnectFailed)
	}
}

// backoff is the wait before a reconnect attempt: base doubling up to the
// cap, half of it fixed and half random, so that clients cut off together
// do not all return together.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.cfg.backoffBase
	for i := 0; i < attempt && d < c.cfg.backoffCap; i++ {
		d *= 2
	}
	d = min(d, c.cfg.backoffCap)
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// plainHandler implements peer: a client's messages always go through
// handleFrame.
func (c *Client) plainHandler(*Session) MessageHandler { return nil }
