package msgnet

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/internal/conn"
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
	cfg config
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

	ctr     counters
	streams *clientStreams

	pingSeq atomic.Uint64
	pingMu  sync.Mutex
	pings   map[uint64]pingWait
	hbPong  atomic.Uint64
}

// NewClient returns a client that introduces itself with clientID. Options
// that only a server uses are ignored.
func NewClient(clientID string, opts ...Option) *Client {
	cfg := newConfig(opts)
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
	c := &Client{id: clientID, cfg: cfg, log: cfg.logger, pings: make(map[uint64]pingWait), streams: newClientStreams()}
	c.ctr.Log = cfg.logger
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
// connected, and for the refusal of a stream subscription the client
// renewed on a new connection (no Subscribe call waits for that answer;
// the stream delivers nothing until a later connection renews it).
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
// errors.Is(err, ErrServerFull).
//
// With WithReconnect the first connection is retried like a lost one: when
// every address fails, Connect waits (the same backoff) and tries them
// again, for the same number of rounds, until one takes or ctx ends; each
// attempt is bounded by WithConnectTimeout. Refusals that retrying cannot
// mend (authentication, encryption, a bad client id, a handshake the
// client rejects) end it at once. The same addresses are used to
// reconnect.
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
	for attempt := 0; ; attempt++ {
		errs = errs[:0]
		for i, addr := range addrs {
			actx, cancel := ctx, context.CancelFunc(func() {})
			if c.cfg.reconnect {
				actx, cancel = context.WithTimeout(ctx, c.cfg.connectTimeout)
			}
			s, err := c.dialOne(actx, addr)
			cancel()
			if err == nil {
				c.mu.Lock()
				c.addrNext = (i + 1) % len(addrs)
				c.mu.Unlock()
				return c.install(s, false)
			}
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			if ctx.Err() != nil || permanent(err) {
				return connectError(errs)
			}
		}
		if !c.cfg.reconnect || c.cfg.maxAttempts > 0 && attempt+1 >= c.cfg.maxAttempts {
			return connectError(errs)
		}
		c.log.Info("connect failed; retrying", "attempt", attempt+1, "err", connectError(errs))
		select {
		case <-time.After(c.backoff(attempt)):
		case <-ctx.Done():
			return connectError(append(errs, ctx.Err()))
		case <-c.life.Done():
			return ErrClientClosed
		}
	}
}

// connectError is what Connect returns for its failed attempts: a lone
// error as it was, several joined.
func connectError(errs []error) error {
	if len(errs) == 1 {
		return errors.Unwrap(errs[0])
	}
	return errors.Join(errs...)
}

// permanent reports whether a connection attempt failed in a way that
// trying again cannot mend: the server refused the client's credentials or
// id, or the client refused what the server offered.
func permanent(err error) bool {
	var pe *ProtocolError
	if errors.As(err, &pe) {
		switch pe.Code {
		case CodeAuthFailed, CodeAuthRequired, CodeEncryptionRequired, CodeBadClientID:
			return true
		}
	}
	var ne net.Error
	var errno syscall.Errno
	return errors.Is(err, ErrHandshake) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) &&
		!errors.Is(err, context.DeadlineExceeded) && !errors.As(err, &ne) && !errors.As(err, &errno)
}

// dialOne opens one connection and completes the handshake on it.
func (c *Client) dialOne(ctx context.Context, addr string) (*clientConn, error) {
	nc, err := c.cfg.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	c.cfg.applySocketBuffers(nc)
	w, r, pipe, err := c.handshake(ctx, nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	maxPayload := c.cfg.maxPayload
	if w.MaxMessageSize > 0 && w.MaxMessageSize < maxPayload {
		maxPayload = w.MaxMessageSize
	}
	s := newSession(c, &c.ctr, w.SessionID, nc, &conn.Config{
		Shared:     &c.ctr.Shared,
		MaxPayload: maxPayload,
		QueueLimit: c.cfg.queueBytes,
		Drain:      c.cfg.drainTimeout,
		Salvage:    true,
		Mode:       frame.ModeBinary,
		Pipe:       pipe,
		Pending:    r.Buffered(),
	})
	_, mask := grantFeatures(w.Features, featRequest|featReliable)
	s.features.Store(mask)
	s.established = true
	s.clientID.Store(&c.id)
	s.c.ReserveReader() // it must not end before install starts it
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
		s.c.NetConn().Close() // never started: it ends with nothing to tell
		return ErrClientClosed
	}
	c.sess, c.state = s, StateConnected
	ended := make(chan struct{})
	c.ended = ended
	c.sessionID, c.serverID = s.id, cc.serverID
	c.resumeStreams(s) // subscriptions and unacknowledged publishes first
	requeueData(s, c.unsent)
	for _, m := range c.buf {
		s.c.EnqueueForce(frame.KindData, 0, m)
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
	if s.features.Load()&featReliable != 0 {
		c.wg.Add(1)
		go c.streamTicker(s, ended)
	}
	if interval, timeout := c.heartbeatTiming(cc.idleTimeout); interval > 0 {
		c.wg.Add(1)
		go c.heartbeat(s, ended, interval, timeout)
	}
	s.c.Start()
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
			s.c.EnqueueForce(frame.KindData, 0, f.Payload)
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
			s.c.Enqueue(frame.KindPing, 0, p[:])
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
	if err := s.c.Enqueue(frame.KindPing, 0, p[:]); err != nil {
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
		s.close(ErrClientClosed, true)
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

// admit implements peer: a client dispatches every frame.
func (c *Client) admit(*Session, frame.Frame) bool { return true }

// handleData implements peer: a message, a request from the server, or a
// reply.
func (c *Client) handleData(s *Session, f frame.Frame) error {
	switch f.Flags {
	case frame.FlagStream:
		return c.handleStreamMessage(s, f.Payload)
	case frame.FlagAck:
		return c.handlePubAck(f.Payload)
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
	return nil
}

// handleControl implements peer: a server sends a client no CONTROL after
// the welcome.
func (c *Client) handleControl(s *Session, p []byte) {
	op, err := frame.ControlOp(p)
	if err != nil {
		s.sendError(CodeBadControl, err.Error())
		return
	}
	if s.features.Load()&featReliable != 0 && c.handleStreamControl(op, p) {
		return
	}
	s.sendError(CodeBadControl, "unknown op "+op)
}

// handleError implements peer.
func (c *Client) handleError(s *Session, e frame.ErrorBody) {
	c.log.Info("server reported an error", "code", e.Code, "message", e.Message)
	if h := c.onError.Load(); h != nil {
		(*h)(&ProtocolError{Code: e.Code, Message: e.Message, Remote: true})
	}
}

// handlePong implements peer: a heartbeat's PONG, or one that Ping waits
// for on this connection.
func (c *Client) handlePong(s *Session, p []byte) {
	if len(p) != 8 {
		return
	}
	seq := binary.BigEndian.Uint64(p)
	if seq&hbBit != 0 {
		c.hbPong.Store(seq)
		return
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
			if unsent := s.c.TakeUnsent(); s.c.Pipe() == nil {
				c.unsent = append(unsent, c.unsent...)
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
		// Publishes age while the client is away too (the connection's
		// ticker gives them up only while it lives).
		c.expirePublishes(time.Now())
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
