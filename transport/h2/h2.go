// Package h2 serves msgnet sessions over HTTP/2 streams and dials them, so
// that msgnet passes through HTTP proxies and load balancers.
//
// A session is one POST request with Content-Type application/x-msgnet:
// the request body is the client-to-server byte stream and the response
// body the server-to-client one, both open for the session's life (full
// duplex). The bytes are exactly those of a TCP connection: frames, or
// text mode lines. Every Write is flushed at once.
//
// Both h2 (HTTP/2 over TLS, negotiated with ALPN) and h2c (cleartext
// HTTP/2 with prior knowledge) work; serve them with the standard
// library's http.Server (see Handler). HTTP/1.x requests are refused with
// 505: HTTP/1.1 intermediaries commonly buffer request bodies, which would
// stall a session.
package h2

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/transport/internal/streamconn"
)

// ContentType is the media type of msgnet streams, on the request and the
// response.
const ContentType = "application/x-msgnet"

const readChunk = 32 << 10

// Handler returns an http.Handler that runs a msgnet session on srv for
// each POST request of type application/x-msgnet made over HTTP/2. The
// response headers are sent at once (status 200), so the client knows the
// stream is open before it has sent anything.
//
// Serve it with HTTP/2 enabled: TLS (h2 is on by default for
// ListenAndServeTLS / ServeTLS) and, for cleartext h2c,
//
//	var p http.Protocols
//	p.SetHTTP1(true)
//	p.SetUnencryptedHTTP2(true)
//	hs := &http.Server{Handler: mux, Protocols: &p}
//
// The handler clears the server's ReadTimeout and WriteTimeout for its
// stream (a session is long-lived; msgnet's idle timeout applies instead).
func Handler(srv *msgnet.Server) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "msgnet streams are POST requests", http.StatusMethodNotAllowed)
			return
		}
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != ContentType {
			http.Error(w, "msgnet streams have Content-Type "+ContentType, http.StatusUnsupportedMediaType)
			return
		}
		if r.ProtoMajor != 2 {
			http.Error(w, "msgnet streams need HTTP/2 (h2 or h2c)", http.StatusHTTPVersionNotSupported)
			return
		}
		rc := http.NewResponseController(w)
		rc.SetReadDeadline(time.Time{})
		rc.SetWriteDeadline(time.Time{})
		w.Header().Set("Content-Type", ContentType)
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Accel-Buffering", "no") // ask proxies that buffer not to
		w.WriteHeader(http.StatusOK)
		if err := rc.Flush(); err != nil {
			return
		}
		c := newServerConn(w, r, rc)
		srv.ServeConn(c)
		select {
		case <-c.closed:
		case <-r.Context().Done():
			// The client went away or the HTTP server is closing: the
			// session sees the end of its input.
			c.closeWith(io.EOF)
		}
		c.finish()
	})
}

// serverConn is the server's side of a stream.
type serverConn struct {
	w      http.ResponseWriter
	rc     *http.ResponseController
	body   io.ReadCloser
	r      *streamconn.Reader
	rdl    *streamconn.Deadline
	local  net.Addr
	remote net.Addr
	name   string

	wmu sync.Mutex // one Write at a time

	mu       sync.Mutex
	cond     sync.Cond
	writers  int  // Writes in progress
	finished bool // the handler is returning: w is no longer ours

	closed    chan struct{}
	closeOnce sync.Once
}

func newServerConn(w http.ResponseWriter, r *http.Request, rc *http.ResponseController) *serverConn {
	name := "h2c"
	if r.TLS != nil {
		name = "h2"
	}
	local := streamconn.Addr{Net: name, Str: r.Host}
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		local.Str = a.String()
	}
	c := &serverConn{
		w: w, rc: rc, body: r.Body,
		rdl:    streamconn.NewDeadline(context.Background()),
		local:  local,
		remote: streamconn.Addr{Net: name, Str: r.RemoteAddr},
		name:   name,
		closed: make(chan struct{}),
	}
	c.cond.L = &c.mu
	c.r = streamconn.NewReader(requestBody{r.Body, r.Context()}, readChunk, c.rdl)
	return c
}

// requestBody reports a stream the client reset or abandoned as the end
// of input, as TCP reports a closed connection.
type requestBody struct {
	body io.Reader
	ctx  context.Context
}

func (b requestBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if err != nil && err != io.EOF && b.ctx.Err() != nil {
		err = io.EOF
	}
	return n, err
}

func (c *serverConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Write writes p to the response body and flushes it.
func (c *serverConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.finished {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	c.writers++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.writers--; c.writers == 0 {
			c.cond.Broadcast()
		}
		c.mu.Unlock()
	}()

	c.wmu.Lock()
	defer c.wmu.Unlock()
	n, err := c.w.Write(p)
	if err == nil {
		err = c.rc.Flush()
	}
	if err != nil {
		select {
		case <-c.closed:
			err = net.ErrClosed
		default:
		}
	}
	return n, err
}

// Close ends the session's stream: the handler returns, which ends the
// response (what was written has been flushed). It does not wait.
func (c *serverConn) Close() error { return c.closeWith(net.ErrClosed) }

func (c *serverConn) closeWith(readErr error) error {
	first := false
	c.closeOnce.Do(func() {
		first = true
		c.r.Close(readErr)
		c.rdl.Stop()
		close(c.closed)
	})
	if !first {
		return net.ErrClosed
	}
	return nil
}

// finish runs on the handler goroutine before it returns: no Write may use
// the ResponseWriter after that, and the body reader must be done.
func (c *serverConn) finish() {
	c.mu.Lock()
	c.finished = true
	if c.writers > 0 {
		// A Write is stuck (the client stopped reading): reset the stream
		// rather than wait for a window that may never open.
		c.rc.SetWriteDeadline(time.Now())
		for c.writers > 0 {
			c.cond.Wait()
		}
	} else {
		c.rc.SetWriteDeadline(time.Time{}) // no timer outlives the stream
	}
	c.mu.Unlock()
	c.body.Close()
	<-c.r.Ended()
}

func (c *serverConn) LocalAddr() net.Addr  { return c.local }
func (c *serverConn) RemoteAddr() net.Addr { return c.remote }

func (c *serverConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *serverConn) SetReadDeadline(t time.Time) error { c.rdl.Set(t); return nil }

// SetWriteDeadline bounds writes; when it passes during a write, the
// stream is reset.
func (c *serverConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.finished {
		return net.ErrClosed
	}
	return c.rc.SetWriteDeadline(t)
}

// Transport is "h2" over TLS and "h2c" in cleartext.
func (c *serverConn) Transport() string { return c.name }

type dialConfig struct {
	client *http.Client
	header http.Header
	tls    *tls.Config
}

// DialOption configures Dial.
type DialOption func(*dialConfig)

// WithClient dials with c. Its Transport must speak HTTP/2 to the server
// (for http:// URLs that means h2c with prior knowledge, e.g. an
// http.Transport whose Protocols have only UnencryptedHTTP2 set). Sessions
// dialled with one client share its connections: many sessions, one TCP
// connection (an *http.ClientConn as the client's Transport keeps them
// on exactly one). Without it, each Dial makes its own connection, closed
// when the session ends.
func WithClient(c *http.Client) DialOption { return func(d *dialConfig) { d.client = c } }

// WithHeader adds header fields to the request (e.g. Authorization).
func WithHeader(h http.Header) DialOption { return func(d *dialConfig) { d.header = h } }

// WithTLSConfig sets the TLS configuration for https:// URLs when Dial
// makes its own connection (ignored with WithClient).
func WithTLSConfig(cfg *tls.Config) DialOption { return func(d *dialConfig) { d.tls = cfg } }

// Dial opens a msgnet stream: a POST to rawURL ("https://host:port/path"
// for h2, "http://host:port/path" for h2c), and returns it as a net.Conn
// once the server has answered with its headers. For msgnet.WithDialer:
//
//	c := msgnet.NewClient("c1", msgnet.WithDialer(func(ctx context.Context, addr string) (net.Conn, error) {
//		return h2.Dial(ctx, "http://"+addr+"/msgnet")
//	}))
//
// ctx bounds the opening only; the stream lives until the conn is closed.
func Dial(ctx context.Context, rawURL string, opts ...DialOption) (net.Conn, error) {
	var cfg dialConfig
	for _, o := range opts {
		o(&cfg)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	name := "h2"
	switch u.Scheme {
	case "https":
	case "http":
		name = "h2c"
	default:
		return nil, fmt.Errorf("h2: URL scheme %q is not http or https", u.Scheme)
	}
	client := cfg.client
	var own *http.ClientConn
	if client == nil {
		// A connection of our own, for this stream only: closed with it.
		var p http.Protocols
		tr := &http.Transport{TLSClientConfig: cfg.tls, Protocols: &p}
		if name == "h2" {
			p.SetHTTP2(true)
			// Through a CONNECT tunnel; a cleartext proxy would speak
			// HTTP/1.1 to us, which cannot carry a stream.
			tr.Proxy = http.ProxyFromEnvironment
		} else {
			p.SetUnencryptedHTTP2(true)
		}
		addr := u.Host
		if u.Port() == "" {
			addr = net.JoinHostPort(u.Hostname(), map[string]string{"h2": "443", "h2c": "80"}[name])
		}
		if own, err = tr.NewClientConn(ctx, u.Scheme, addr); err != nil {
			return nil, err
		}
		client = &http.Client{Transport: own}
	}

	// The body: Write on the conn hands bytes to the HTTP transport, which
	// sends them as DATA frames; closing our end ends the request body.
	bodyW, bodyR := net.Pipe()
	reqCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, rawURL, bodyR)
	if err != nil {
		stop()
		cancel()
		if own != nil {
			own.Close()
		}
		return nil, err
	}
	for k, v := range cfg.header {
		req.Header[k] = append([]string(nil), v...)
	}
	req.Header.Set("Content-Type", ContentType)
	req.ContentLength = -1

	fail := func(err error) (net.Conn, error) {
		cancel()
		bodyW.Close()
		bodyR.Close()
		if own != nil {
			own.Close()
		}
		return nil, err
	}
	resp, err := client.Do(req)
	if !stop() {
		if err == nil {
			resp.Body.Close()
		}
		return fail(ctx.Err())
	}
	if err != nil {
		return fail(err)
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return fail(fmt.Errorf("h2: %s: %s", resp.Status, strings.TrimSpace(string(msg))))
	}
	if resp.ProtoMajor != 2 {
		resp.Body.Close()
		return fail(fmt.Errorf("h2: server answered over %s; msgnet streams need HTTP/2", resp.Proto))
	}
	c := &clientConn{
		resp: resp, bodyW: bodyW, cancel: cancel, own: own,
		rdl:    streamconn.NewDeadline(context.Background()),
		local:  streamconn.Addr{Net: name},
		remote: streamconn.Addr{Net: name, Str: u.Host},
		name:   name,
	}
	c.r = streamconn.NewReader(resp.Body, readChunk, c.rdl)
	return c, nil
}

// clientConn is the client's side of a stream.
type clientConn struct {
	resp   *http.Response
	bodyW  net.Conn // our end of the request body pipe
	cancel context.CancelFunc
	own    *http.ClientConn // the connection, when it is the stream's own
	r      *streamconn.Reader
	rdl    *streamconn.Deadline
	local  net.Addr
	remote net.Addr
	name   string

	closeOnce sync.Once
}

func (c *clientConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Write hands p to the HTTP transport; it returns once the transport has
// taken all of it.
func (c *clientConn) Write(p []byte) (int, error) {
	n, err := c.bodyW.Write(p)
	if errors.Is(err, io.ErrClosedPipe) {
		err = net.ErrClosed
	}
	return n, err
}

// CloseWrite ends the request body; the server sees the end of its input
// and the response can still be read.
func (c *clientConn) CloseWrite() error { return c.bodyW.Close() }

// Close ends the request body and abandons the response. It does not wait.
func (c *clientConn) Close() error {
	first := false
	c.closeOnce.Do(func() {
		first = true
		c.r.Close(net.ErrClosed)
		c.rdl.Stop()
		c.bodyW.Close()
		c.resp.Body.Close()
		c.cancel()
		if c.own != nil {
			c.own.Close()
		}
	})
	if !first {
		return net.ErrClosed
	}
	return nil
}

func (c *clientConn) LocalAddr() net.Addr  { return c.local }
func (c *clientConn) RemoteAddr() net.Addr { return c.remote }

func (c *clientConn) SetDeadline(t time.Time) error {
	c.rdl.Set(t)
	return c.bodyW.SetWriteDeadline(t)
}
func (c *clientConn) SetReadDeadline(t time.Time) error  { c.rdl.Set(t); return nil }
func (c *clientConn) SetWriteDeadline(t time.Time) error { return c.bodyW.SetWriteDeadline(t) }

// Transport is "h2" for https:// URLs and "h2c" for http:// ones.
func (c *clientConn) Transport() string { return c.name }
