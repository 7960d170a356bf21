package h2_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"github.com/msgnet/msgnet/internal/testenv"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/transport/h2"
	"github.com/msgnet/msgnet/transport/transporttest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const timeout = transporttest.Timeout

// testCert is a self-signed ECDSA certificate for 127.0.0.1, made per
// test run; nothing is written to the repository.
type testCert struct {
	tls  tls.Certificate
	pool *x509.CertPool
	pem  []byte
}

func newTestCert(t *testing.T) *testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "msgnet test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return &testCert{
		tls:  tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		pool: pool,
		pem:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
	}
}

// server is an HTTP server with the msgnet handler at /msgnet.
type server struct {
	hs    *httptest.Server
	cert  *testCert // nil for h2c
	conns atomic.Int64
}

func (s *server) url() string { return s.hs.URL + "/msgnet" }
func (s *server) addr() string {
	return strings.TrimPrefix(strings.TrimPrefix(s.hs.URL, "http://"), "https://")
}

// dial opens a stream with the options the server needs.
func (s *server) dial(ctx context.Context, opts ...h2.DialOption) (net.Conn, error) {
	if s.cert != nil {
		opts = append(opts, h2.WithTLSConfig(&tls.Config{RootCAs: s.cert.pool}))
	}
	return h2.Dial(ctx, s.url(), opts...)
}

// serveH2C serves srv over cleartext HTTP/2 (and HTTP/1.1, which the
// handler refuses).
func serveH2C(t *testing.T, srv *msgnet.Server) *server {
	t.Helper()
	s := &server{}
	s.hs = httptest.NewUnstartedServer(mux(srv))
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	s.hs.Config.Protocols = &p
	s.hs.Config.ConnState = s.connState
	s.hs.Start()
	t.Cleanup(s.hs.Close)
	return s
}

// serveTLS serves srv over HTTP/2 with TLS.
func serveTLS(t *testing.T, srv *msgnet.Server) *server {
	t.Helper()
	s := &server{cert: newTestCert(t)}
	s.hs = httptest.NewUnstartedServer(mux(srv))
	s.hs.EnableHTTP2 = true
	s.hs.TLS = &tls.Config{Certificates: []tls.Certificate{s.cert.tls}}
	s.hs.Config.ConnState = s.connState
	s.hs.StartTLS()
	t.Cleanup(s.hs.Close)
	return s
}

func (s *server) connState(_ net.Conn, st http.ConnState) {
	if st == http.StateNew {
		s.conns.Add(1)
	}
}

func mux(srv *msgnet.Server) *http.ServeMux {
	m := http.NewServeMux()
	m.Handle("/msgnet", h2.Handler(srv))
	return m
}

var transports = []struct {
	name  string
	serve func(*testing.T, *msgnet.Server) *server
}{
	{"h2c", serveH2C},
	{"h2", serveTLS},
}

// TestBadInput runs the transport table over h2c and h2.
func TestBadInput(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			transporttest.Run(t, func(t *testing.T, srv *msgnet.Server) transporttest.Dial {
				hs := tr.serve(t, srv)
				return func(ctx context.Context) (net.Conn, error) { return hs.dial(ctx) }
			})
		})
	}
}

func newServer(t *testing.T, opts ...msgnet.Option) *msgnet.Server {
	t.Helper()
	return msgnet.NewServer("h2_test", append([]msgnet.Option{msgnet.WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
}

// shutdown stops srv when the test ends, before the HTTP server's own
// cleanup (registered earlier) runs: the HTTP server waits for its streams.
func shutdown(t *testing.T, srv *msgnet.Server) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
}

// TestGoClient: the Go client round-trips over h2c and h2, with
// request/reply and ping, and the server names the transport.
func TestGoClient(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			srv := newServer(t)
			srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.SendString("Echo: " + string(msg)) })
			srv.OnRequest(func(s *msgnet.Session, req []byte) ([]byte, error) { return append([]byte("re: "), req...), nil })
			hs := tr.serve(t, srv)
			shutdown(t, srv)

			got := make(chan string, 1)
			c := msgnet.NewClient("go_"+tr.name, msgnet.WithDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				return hs.dial(ctx)
			}))
			c.OnMessage(func(msg []byte) { got <- string(msg) })
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			if err := c.Connect(ctx, hs.addr()); err != nil {
				t.Fatal(err)
			}
			if err := c.SendString("hi"); err != nil {
				t.Fatal(err)
			}
			select {
			case m := <-got:
				if m != "Echo: hi" {
					t.Fatalf("got %q", m)
				}
			case <-ctx.Done():
				t.Fatal("no echo")
			}
			big := bytes.Repeat([]byte("z"), 200<<10) // larger than a flow-control window
			rep, err := c.Request(ctx, big)
			if err != nil || !bytes.Equal(rep, append([]byte("re: "), big...)) {
				t.Fatalf("request: %d bytes, %v", len(rep), err)
			}
			if _, err := c.Ping(ctx); err != nil {
				t.Fatalf("ping: %v", err)
			}
			ss, ok := srv.SessionByClientID("go_" + tr.name)
			if !ok {
				t.Fatal("no session")
			}
			if info := ss.Info(); info.Transport != tr.name || info.RemoteAddr != "127.0.0.1" || info.RemotePort == 0 {
				t.Fatalf("session info %+v", info)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			transporttest.Await(t, "the session to end", func() bool { return srv.ConnectionCount() == 0 })
		})
	}
}

// TestSharedClient: sessions dialled with one http.Client whose
// transport is one http.ClientConn share its HTTP/2 connection, each on
// its own stream.
func TestSharedClient(t *testing.T) {
	srv := newServer(t)
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.Send(msg) })
	hs := serveH2C(t, srv)
	shutdown(t, srv)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cc, err := tr.NewClientConn(ctx, "http", hs.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := &http.Client{Transport: cc}

	var conns []net.Conn
	for i := range 3 {
		nc, err := hs.dial(ctx, h2.WithClient(client))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(timeout))
		msg := frame.Append(nil, frame.KindData, 0, []byte{byte('a' + i)})
		if _, err := nc.Write(msg); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, nc)
	}
	for i, nc := range conns {
		f, err := frame.NewReader(nc, 1024).ReadFrame()
		if err != nil || string(f.Payload) != string(rune('a'+i)) {
			t.Fatalf("stream %d: %q, %v", i, f.Payload, err)
		}
	}
	if n := hs.conns.Load(); n != 1 {
		t.Fatalf("%d TCP connections, want 1", n)
	}
	if n := srv.ConnectionCount(); n != 3 {
		t.Fatalf("%d sessions, want 3", n)
	}
}

// TestCurl: curl, speaking h2c with prior knowledge, posts a hello and a
// DATA frame and reads the framed reply; and the same over TLS.
func TestCurl(t *testing.T) {
	curl := testenv.Tool(t, "curl")
	srv := newServer(t)
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.Send(msg) })
	plain := serveH2C(t, srv)
	secure := serveTLS(t, srv)
	shutdown(t, srv)

	dir := t.TempDir()
	in := filepath.Join(dir, "request.bin")
	var req []byte
	req = frame.Append(req, frame.KindControl, 0, []byte(`{"op":"hello","client_id":"curl"}`))
	req = frame.Append(req, frame.KindData, 0, []byte("hello over curl"))
	if err := os.WriteFile(in, req, 0o600); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, secure.cert.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"h2c", []string{"--http2-prior-knowledge", plain.url()}},
		{"h2", []string{"--http2", "--cacert", ca, secure.url()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			args := append([]string{"-sS", "--fail", "--max-time", "10",
				"-H", "Content-Type: " + h2.ContentType, "--data-binary", "@" + in}, tc.args...)
			var stderr bytes.Buffer
			cmd := exec.CommandContext(ctx, curl, args...)
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("curl: %v: %s", err, stderr.Bytes())
			}
			want := frame.Append(nil, frame.KindData, 0, []byte("hello over curl"))
			if !bytes.Contains(out, want) {
				t.Fatalf("reply %q does not contain the echoed frame %q", out, want)
			}
			// The whole reply: the welcome, then the echo, nothing else.
			r := frame.NewReader(bytes.NewReader(out), 1<<20)
			f, err := r.ReadFrame()
			if op, _ := frame.ControlOp(f.Payload); err != nil || f.Kind != frame.KindControl || op != "welcome" {
				t.Fatalf("first frame %v %q, %v", f.Kind, f.Payload, err)
			}
			if f, err = r.ReadFrame(); err != nil || f.Kind != frame.KindData {
				t.Fatalf("second frame %v %q, %v", f.Kind, f.Payload, err)
			}
			if _, err = r.ReadFrame(); err != io.EOF {
				t.Fatalf("after the echo: %v", err)
			}
		})
	}
}

// TestRefusals: what is not a msgnet stream gets an HTTP error and no
// session.
func TestRefusals(t *testing.T) {
	srv := newServer(t)
	hs := serveH2C(t, srv)
	shutdown(t, srv)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2c := &http.Transport{Protocols: &p}
	h1 := &http.Transport{}
	defer h2c.CloseIdleConnections()
	defer h1.CloseIdleConnections()
	for _, tc := range []struct {
		name   string
		rt     http.RoundTripper
		method string
		ctype  string
		status int
	}{
		{"get", h2c, http.MethodGet, h2.ContentType, http.StatusMethodNotAllowed},
		{"wrong type", h2c, http.MethodPost, "text/plain", http.StatusUnsupportedMediaType},
		{"no type", h2c, http.MethodPost, "", http.StatusUnsupportedMediaType},
		{"http1", h1, http.MethodPost, h2.ContentType, http.StatusHTTPVersionNotSupported},
	} {
		req, _ := http.NewRequest(tc.method, hs.url(), strings.NewReader("x"))
		if tc.ctype != "" {
			req.Header.Set("Content-Type", tc.ctype)
		}
		resp, err := tc.rt.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: status %d, want %d", tc.name, resp.StatusCode, tc.status)
		}
	}
	if n := srv.Stats().Accepted; n != 0 {
		t.Errorf("%d sessions accepted", n)
	}

	// Dial reports the refusal with the server's status line.
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if _, err := h2.Dial(ctx, hs.hs.URL+"/elsewhere"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("dial to a wrong path: %v", err)
	}
	if _, err := h2.Dial(ctx, "ftp://"+hs.addr()); err == nil {
		t.Fatal("dial with an ftp URL succeeded")
	}
}

// TestDialContext: a dial whose context ends before the server answers
// fails with the context's error and leaves nothing behind.
func TestDialContext(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c // never answered
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = h2.Dial(ctx, "http://"+l.Addr().String()+"/msgnet")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial: %v", err)
	}
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(timeout):
		t.Fatal("no connection was made")
	}
}

// TestDeadlines: read deadlines can expire and be extended, write
// deadlines bound a write the server does not take, Close wakes a Read.
func TestDeadlines(t *testing.T) {
	srv := newServer(t)
	block := make(chan struct{})
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { <-block })
	hs := serveH2C(t, srv)
	shutdown(t, srv)
	defer close(block)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	nc, err := hs.dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	buf := make([]byte, 16)
	nc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err = nc.Read(buf)
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past deadline: %v", err)
	}
	nc.SetReadDeadline(time.Time{})

	// The handler blocks on the first message, so the session stops
	// reading; the flow-control windows fill and a write must time out.
	nc.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
	chunk := frame.Append(nil, frame.KindData, 0, make([]byte, 60000))
	for i := 0; ; i++ {
		if _, err = nc.Write(chunk); err != nil {
			break
		}
		if i > 1000 {
			t.Fatal("60 MB written to a server that does not read")
		}
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write: %v", err)
	}

	woke := make(chan error, 1)
	go func() {
		_, err := nc.Read(buf)
		woke <- err
	}()
	nc.Close()
	if err := <-woke; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read woken by Close: %v", err)
	}
}

// TestDialContextEndsOpeningOnly: cancelling the dial context after Dial
// returned does not end the stream.
func TestDialContextEndsOpeningOnly(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			srv := newServer(t)
			srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.Send(msg) })
			hs := tr.serve(t, srv)
			shutdown(t, srv)
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			nc, err := hs.dial(ctx)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(timeout))
			if _, err := nc.Write(frame.Append(nil, frame.KindData, 0, []byte("still here"))); err != nil {
				t.Fatal(err)
			}
			f, err := frame.NewReader(nc, 1024).ReadFrame()
			if err != nil || string(f.Payload) != "still here" {
				t.Fatalf("after the dial context ended: %q, %v", f.Payload, err)
			}
		})
	}
}
