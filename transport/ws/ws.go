// Package ws serves msgnet sessions over WebSocket and dials them.
//
// A WebSocket connection is a stream of messages; msgnet sessions read a
// stream of bytes. The mapping:
//
//   - Incoming binary messages are passed on byte for byte: a message may
//     hold one frame, several, or part of one (frames are reassembled as
//     they would be from TCP).
//   - Incoming text messages are text mode: each is one line; "\n" is
//     appended when the message does not end with one.
//   - Outgoing, each Write the session makes is sent as one binary
//     message (the session writes whole frames, so a message holds one
//     or more whole frames) to a peer whose first message was binary, and
//     as one text message per line, without its "\n", to a peer whose
//     first message was text. Before the peer has sent anything (a server
//     refusing a connection at max connections), messages are binary.
//
// The handler checks the Origin header: by default only pages served from
// the same host may connect (requests without an Origin header, which
// browsers always send, are allowed); WithOriginPatterns admits others.
package ws

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/transport/internal/streamconn"
)

// Subprotocol is the WebSocket subprotocol the handler agrees to when a
// client asks for it. Clients need not ask.
const Subprotocol = "msgnet"

// readChunk is the most the reader takes from a message at a time.
const readChunk = 32 << 10

// closeTimeout bounds the WebSocket close handshake (coder/websocket waits
// at most 5s for each half of it on its own).
const closeTimeout = 5 * time.Second

type config struct {
	origins     []string
	compression websocket.CompressionMode
}

// Option configures Handler.
type Option func(*config)

// WithOriginPatterns lets pages from other origins connect. Each pattern
// is matched against the Origin header's host (or, if it contains "://",
// against scheme://host) with path.Match, case-insensitively, e.g.
// "example.com", "*.example.com", "https://app.example.com". The request's
// own host is always allowed. A pattern of "*" admits every origin, which
// lets any web page act on behalf of its visitors: do not use it for
// sessions that carry authority.
func WithOriginPatterns(patterns ...string) Option {
	return func(c *config) { c.origins = append(c.origins, patterns...) }
}

// WithCompression turns on permessage-deflate with the given mode
// (off by default: msgnet payloads are often compressed already, see the
// pipeline package).
func WithCompression(mode websocket.CompressionMode) Option {
	return func(c *config) { c.compression = mode }
}

// Handler returns an http.Handler that upgrades requests to WebSocket and
// runs a msgnet session on each, on srv, with srv's handlers, limits and
// groups. Mount it where clients will connect, e.g.
//
//	mux.Handle("/ws", ws.Handler(srv))
//
// A request that is not a valid upgrade, or whose Origin is not allowed,
// is answered with an HTTP error and no session.
func Handler(srv *msgnet.Server, opts ...Option) http.Handler {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wc, err := websocket.Accept(w, r, &websocket.AcceptOptions{
			Subprotocols:    []string{Subprotocol},
			OriginPatterns:  cfg.origins,
			CompressionMode: cfg.compression,
		})
		if err != nil {
			return // Accept has answered the request
		}
		local := streamconn.Addr{Net: "ws", Str: r.Host}
		if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			local.Str = a.String()
		}
		srv.ServeConn(newConn(wc, 0, local, streamconn.Addr{Net: "ws", Str: r.RemoteAddr}))
	})
}

// Conn is a WebSocket connection seen as a byte stream (see the package
// documentation for the mapping). It is a net.Conn; its Transport method
// names it "ws" for msgnet's statistics.
type Conn struct {
	ws     *websocket.Conn
	ctx    context.Context // ends the underlying reads, once closed
	cancel context.CancelFunc
	rdl    *streamconn.Deadline
	wdl    *streamconn.Deadline
	r      *streamconn.Reader
	local  net.Addr
	remote net.Addr

	fixed    websocket.MessageType // the type to write; 0: follow the peer
	peerType atomic.Int32          // the type of the peer's first message

	wmu       sync.Mutex
	closed    chan struct{}
	closeOnce sync.Once
	done      chan struct{} // closed when the close handshake is over
}

func newConn(wc *websocket.Conn, fixed websocket.MessageType, local, remote net.Addr) *Conn {
	// Frame and line sizes are the session's to enforce (it rejects an
	// oversized frame from its header, with the protocol's error); the
	// reader streams messages in bounded chunks, so no message limit is
	// needed here.
	wc.SetReadLimit(-1)
	ctx, cancel := context.WithCancel(context.Background())
	c := &Conn{
		ws: wc, ctx: ctx, cancel: cancel,
		rdl:   streamconn.NewDeadline(context.Background()),
		wdl:   streamconn.NewDeadline(context.Background()),
		local: local, remote: remote,
		fixed:  fixed,
		closed: make(chan struct{}),
		done:   make(chan struct{}),
	}
	c.r = streamconn.NewReader(&messages{c: c}, readChunk, c.rdl)
	return c
}

// messages is the byte stream of the incoming messages; only the reader's
// pump goroutine reads it.
type messages struct {
	c       *Conn
	cur     io.Reader
	text    bool
	last    byte
	newline bool // owe a "\n" after a text message
}

func (m *messages) Read(p []byte) (int, error) {
	for {
		if m.newline {
			m.newline = false
			p[0] = '\n'
			return 1, nil
		}
		if m.cur == nil {
			typ, r, err := m.c.ws.Reader(m.c.ctx)
			if err != nil {
				return 0, m.c.readErr(err)
			}
			m.c.peerType.CompareAndSwap(0, int32(typ))
			m.cur, m.text, m.last = r, typ == websocket.MessageText, 0
		}
		n, err := m.cur.Read(p)
		if n > 0 {
			m.last = p[n-1]
		}
		if err == io.EOF {
			m.cur = nil
			m.newline = m.text && m.last != '\n'
			err = nil
		}
		if err != nil {
			return n, m.c.readErr(err)
		}
		if n > 0 {
			return n, nil
		}
	}
}

// readErr maps the end of the WebSocket to the end of a stream: a close
// by the peer (or its vanishing) is io.EOF, as for TCP.
func (c *Conn) readErr(err error) error {
	select {
	case <-c.closed:
		return net.ErrClosed
	default:
	}
	switch websocket.CloseStatus(err) {
	case websocket.StatusNormalClosure, websocket.StatusGoingAway, websocket.StatusNoStatusRcvd:
		return io.EOF
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return io.EOF
	}
	return err
}

// Read returns the bytes of incoming messages in order.
func (c *Conn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Write sends p as one binary message, or, to a text peer, each line of p
// (split on "\n", which is not sent) as one text message.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	ctx := c.wdl.Context()
	if err := c.writeCheck(ctx); err != nil {
		return 0, err
	}
	if c.writeType() == websocket.MessageBinary {
		if err := c.ws.Write(ctx, websocket.MessageBinary, p); err != nil {
			return 0, c.writeErr(ctx, err)
		}
		return len(p), nil
	}
	n := 0
	for n < len(p) {
		line := p[n:]
		adv := len(line)
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			line, adv = line[:i], i+1
		}
		if err := c.ws.Write(ctx, websocket.MessageText, line); err != nil {
			return n, c.writeErr(ctx, err)
		}
		n += adv
	}
	return n, nil
}

func (c *Conn) writeCheck(ctx context.Context) error {
	select {
	case <-c.closed:
		return net.ErrClosed
	default:
	}
	if ctx.Err() != nil {
		return os.ErrDeadlineExceeded
	}
	return nil
}

func (c *Conn) writeErr(ctx context.Context, err error) error {
	if e := c.writeCheck(ctx); e != nil {
		return e
	}
	return err
}

func (c *Conn) writeType() websocket.MessageType {
	if c.fixed != 0 {
		return c.fixed
	}
	if t := websocket.MessageType(c.peerType.Load()); t == websocket.MessageText {
		return t
	}
	return websocket.MessageBinary
}

// Close starts the WebSocket close handshake (status 1000) and returns
// without waiting for it: reads and writes fail with net.ErrClosed at
// once, and the handshake finishes in the background, within a few
// seconds even if the peer does not answer.
func (c *Conn) Close() error {
	first := false
	c.closeOnce.Do(func() {
		first = true
		close(c.closed)
		c.r.Close(net.ErrClosed)
		c.rdl.Stop()
		c.wdl.Stop()
		go func() {
			defer close(c.done)
			// The reader keeps reading while the handshake runs, so the
			// peer's close frame is seen; then the connection is closed.
			t := time.AfterFunc(2*closeTimeout, c.cancel)
			c.ws.Close(websocket.StatusNormalClosure, "")
			t.Stop()
			c.cancel()
			<-c.r.Ended()
		}()
	})
	if !first {
		return net.ErrClosed
	}
	return nil
}

// Done is closed when a closed connection has finished its close
// handshake and released everything.
func (c *Conn) Done() <-chan struct{} { return c.done }

// LocalAddr is the server's address (server side) or the URL's host
// (client side).
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr is the peer's address as HTTP saw it (server side) or the
// URL's host (client side).
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.rdl.Set(t)
	c.wdl.Set(t)
	return nil
}

// SetReadDeadline bounds Read; it may be moved at any time, also while a
// Read waits. An expired read deadline leaves the connection usable.
func (c *Conn) SetReadDeadline(t time.Time) error { c.rdl.Set(t); return nil }

// SetWriteDeadline bounds Write. A write that times out breaks the
// connection (a message may have been partly sent).
func (c *Conn) SetWriteDeadline(t time.Time) error { c.wdl.Set(t); return nil }

// Transport names the transport for msgnet's statistics: "ws".
func (c *Conn) Transport() string { return "ws" }

// Subprotocol is the negotiated WebSocket subprotocol ("" or Subprotocol).
func (c *Conn) Subprotocol() string { return c.ws.Subprotocol() }

type dialConfig struct {
	client *http.Client
	header http.Header
	text   bool
}

// DialOption configures Dial.
type DialOption func(*dialConfig)

// WithHTTPClient dials with c (its Transport, TLS configuration and
// timeouts) instead of http.DefaultClient.
func WithHTTPClient(c *http.Client) DialOption { return func(d *dialConfig) { d.client = c } }

// WithHeader adds header fields to the upgrade request (e.g. Origin,
// Authorization).
func WithHeader(h http.Header) DialOption { return func(d *dialConfig) { d.header = h } }

// WithTextMessages makes the connection send text messages, one per line,
// as a browser speaking msgnet's text mode would; by default it sends
// binary messages. Reads are the same either way.
func WithTextMessages() DialOption { return func(d *dialConfig) { d.text = true } }

// Dial opens a WebSocket connection to url ("ws://host:port/path" or
// "wss://...") and returns it as a net.Conn, for msgnet.WithDialer:
//
//	c := msgnet.NewClient("c1", msgnet.WithDialer(func(ctx context.Context, addr string) (net.Conn, error) {
//		return ws.Dial(ctx, "ws://"+addr+"/ws")
//	}))
//
// ctx bounds the opening handshake only.
func Dial(ctx context.Context, url string, opts ...DialOption) (net.Conn, error) {
	var cfg dialConfig
	for _, o := range opts {
		o(&cfg)
	}
	wc, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		HTTPClient:   cfg.client,
		HTTPHeader:   cfg.header,
		Subprotocols: []string{Subprotocol},
	})
	if err != nil {
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		return nil, err
	}
	host := resp.Request.URL.Host
	typ := websocket.MessageBinary
	if cfg.text {
		typ = websocket.MessageText
	}
	return newConn(wc, typ, streamconn.Addr{Net: "ws", Str: ""}, streamconn.Addr{Net: "ws", Str: host}), nil
}
