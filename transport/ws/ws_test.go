package ws_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/transport/transporttest"
	"github.com/msgnet/msgnet/transport/ws"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const timeout = transporttest.Timeout

// serveWS serves srv's WebSocket handler on a loopback HTTP server.
func serveWS(t *testing.T, srv *msgnet.Server, opts ...ws.Option) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/ws", ws.Handler(srv, opts...))
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return hs
}

func wsURL(hs *httptest.Server) string { return "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws" }

// TestBadInput runs the transport table over WebSocket, binary messages.
func TestBadInput(t *testing.T) {
	transporttest.Run(t, func(t *testing.T, srv *msgnet.Server) transporttest.Dial {
		u := wsURL(serveWS(t, srv))
		return func(ctx context.Context) (net.Conn, error) { return ws.Dial(ctx, u) }
	})
}

func newServer(t *testing.T, opts ...msgnet.Option) *msgnet.Server {
	t.Helper()
	srv := msgnet.NewServer("ws_test", append([]msgnet.Option{msgnet.WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
	return srv
}

func shutdown(t *testing.T, srv *msgnet.Server) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
}

// rawDial opens a WebSocket with the library itself, to see messages as
// a browser would.
func rawDial(t *testing.T, u string, h http.Header) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.SetReadLimit(-1)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func readMsg(t *testing.T, c *websocket.Conn) (websocket.MessageType, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return typ, b
}

func writeMsg(t *testing.T, c *websocket.Conn, typ websocket.MessageType, b []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.Write(ctx, typ, b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// splitFrames decodes a binary message that must hold whole frames only.
func splitFrames(t *testing.T, b []byte) []frame.Frame {
	t.Helper()
	var fs []frame.Frame
	for len(b) > 0 {
		n, err := frame.Split(b, 1<<20)
		if err != nil || n == 0 || n > len(b) {
			t.Fatalf("message does not hold whole frames: %q (%d, %v)", b, n, err)
		}
		fs = append(fs, frame.Decode(b[:n]))
		b = b[n:]
	}
	return fs
}

// TestTextMessages: a peer whose first message is text is in text mode,
// gets one text message per line without "\n", and each of its text
// messages is one line whether or not it ends in "\n".
func TestTextMessages(t *testing.T) {
	srv := newServer(t)
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.SendString("Echo: " + string(msg)) })
	hs := serveWS(t, srv)
	shutdown(t, srv)
	c := rawDial(t, wsURL(hs), nil)

	writeMsg(t, c, websocket.MessageText, []byte("hello"))
	writeMsg(t, c, websocket.MessageText, []byte("with newline\n"))
	writeMsg(t, c, websocket.MessageText, []byte("a\nb"))
	writeMsg(t, c, websocket.MessageText, []byte(""))
	for _, want := range []string{"Echo: hello", "Echo: with newline", "Echo: a", "Echo: b", "Echo: "} {
		typ, b := readMsg(t, c)
		if typ != websocket.MessageText || string(b) != want {
			t.Fatalf("got %v %q, want text %q", typ, b, want)
		}
	}
	ss := srv.Sessions()
	if len(ss) != 1 || ss[0].Mode() != frame.ModeText {
		t.Fatalf("sessions %v", ss)
	}
	if st := srv.Stats(); st.Accepted != 1 {
		t.Fatalf("accepted %d", st.Accepted)
	}
}

// TestBinaryMessages: frames in binary messages, several per message or
// split over messages, and replies in binary messages holding whole
// frames.
func TestBinaryMessages(t *testing.T) {
	srv := newServer(t)
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.Send(msg) })
	hs := serveWS(t, srv)
	shutdown(t, srv)
	c := rawDial(t, wsURL(hs), nil)

	var b []byte
	for _, m := range []string{"one", "two", "three"} {
		b = frame.Append(b, frame.KindData, 0, []byte(m))
	}
	writeMsg(t, c, websocket.MessageBinary, b)
	one := frame.Append(nil, frame.KindData, 0, []byte("split"))
	writeMsg(t, c, websocket.MessageBinary, one[:4])
	writeMsg(t, c, websocket.MessageBinary, one[4:])

	var got []string
	for len(got) < 4 {
		typ, m := readMsg(t, c)
		if typ != websocket.MessageBinary {
			t.Fatalf("got a %v message", typ)
		}
		for _, f := range splitFrames(t, m) {
			got = append(got, string(f.Payload))
		}
	}
	if strings.Join(got, ",") != "one,two,three,split" {
		t.Fatalf("got %q", got)
	}
}

// TestServerFullBinary: a refused connection gets its ERROR and
// DISCONNECT as binary messages, then a normal close.
func TestServerFullClose(t *testing.T) {
	srv := newServer(t, msgnet.WithMaxConnections(1))
	hs := serveWS(t, srv)
	shutdown(t, srv)
	first := rawDial(t, wsURL(hs), nil)
	writeMsg(t, first, websocket.MessageBinary, frame.Append(nil, frame.KindPing, 0, nil))
	readMsg(t, first)

	c := rawDial(t, wsURL(hs), nil)
	var fs []frame.Frame
	for len(fs) < 2 {
		typ, m := readMsg(t, c)
		if typ != websocket.MessageBinary {
			t.Fatalf("got a %v message", typ)
		}
		fs = append(fs, splitFrames(t, m)...)
	}
	if fs[0].Kind != frame.KindError || frame.ParseError(fs[0].Payload).Code != frame.CodeServerFull || fs[1].Kind != frame.KindDisconnect {
		t.Fatalf("got %v %q, %v %q", fs[0].Kind, fs[0].Payload, fs[1].Kind, fs[1].Payload)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, _, err := c.Read(ctx)
	if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("after refusal: %v, want a normal close", err)
	}
}

// TestOrigin: secure by default (only the page's own host), and listed
// origins when configured.
func TestOrigin(t *testing.T) {
	srv := newServer(t)
	strict := serveWS(t, srv)
	open := serveWS(t, srv, ws.WithOriginPatterns("app.example.com", "https://*.example.org"))
	shutdown(t, srv)

	try := func(hs *httptest.Server, origin string) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		c, err := ws.Dial(ctx, wsURL(hs), ws.WithHeader(h))
		if err == nil {
			c.Close()
			<-c.(*ws.Conn).Done()
		}
		return err
	}
	host := strings.TrimPrefix(strict.URL, "http://")
	for _, tc := range []struct {
		hs     *httptest.Server
		origin string
		ok     bool
	}{
		{strict, "", true},                      // not a browser
		{strict, "http://" + host, true},        // same origin
		{strict, "https://evil.example", false}, // cross origin
		{strict, "http://app.example.com", false},
		{open, "http://app.example.com", true},
		{open, "https://x.example.org", true},
		{open, "http://x.example.org", false}, // scheme is part of that pattern
		{open, "https://evil.example", false},
	} {
		err := try(tc.hs, tc.origin)
		if (err == nil) != tc.ok {
			t.Errorf("origin %q: err %v, want ok=%v", tc.origin, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "403") {
			t.Errorf("origin %q refused with %v, want 403", tc.origin, err)
		}
	}
	// The server counts a session after the upgrade's answer is written:
	// the last one may be counted a moment after its client has closed.
	deadline := time.Now().Add(timeout)
	for srv.Stats().Accepted < 4 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := srv.Stats().Accepted; n != 4 {
		t.Errorf("sessions accepted: %d, want 4 (refused origins make none)", n)
	}
}

// TestGoClient: the Go client over WebSocket, with request/reply and
// ping, and its session named "ws" in the server's view.
func TestGoClient(t *testing.T) {
	srv := newServer(t)
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.SendString("Echo: " + string(msg)) })
	srv.OnRequest(func(s *msgnet.Session, req []byte) ([]byte, error) { return append([]byte("re: "), req...), nil })
	hs := serveWS(t, srv)
	shutdown(t, srv)
	addr := strings.TrimPrefix(hs.URL, "http://")

	got := make(chan string, 1)
	c := msgnet.NewClient("go_ws", msgnet.WithDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		return ws.Dial(ctx, "ws://"+addr+"/ws")
	}))
	c.OnMessage(func(msg []byte) { got <- string(msg) })
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.Connect(ctx, addr); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
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
	rep, err := c.Request(ctx, []byte("q"))
	if err != nil || string(rep) != "re: q" {
		t.Fatalf("request: %q, %v", rep, err)
	}
	if _, err := c.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	ss, ok := srv.SessionByClientID("go_ws")
	if !ok {
		t.Fatal("no session for go_ws")
	}
	if info := ss.Info(); info.Transport != "ws" || info.RemoteAddr != "127.0.0.1" || info.RemotePort == 0 || info.Mode != "binary" {
		t.Fatalf("session info %+v", info)
	}
}

// TestBrowserMeetsTCP: a text WebSocket peer (a browser) and a TCP client
// on the same server reach each other through a group.
func TestBrowserMeetsTCP(t *testing.T) {
	srv := newServer(t)
	srv.OnConnect(func(s *msgnet.Session) { srv.Join(s, "room") })
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { srv.SendGroup("room", msg, s) })
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	hs := serveWS(t, srv)
	shutdown(t, srv)

	tcpGot := make(chan string, 4)
	tc := msgnet.NewClient("tcp_peer")
	tc.OnMessage(func(msg []byte) { tcpGot <- string(msg) })
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := tc.Connect(ctx, srv.Addr().String()); err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	awaitJoined(t, srv, "tcp_peer")

	browser := rawDial(t, wsURL(hs), nil)
	writeMsg(t, browser, websocket.MessageText, []byte("hello from the browser"))
	select {
	case m := <-tcpGot:
		if m != "hello from the browser" {
			t.Fatalf("tcp got %q", m)
		}
	case <-ctx.Done():
		t.Fatal("tcp client got nothing")
	}
	if err := tc.SendString("hello from tcp"); err != nil {
		t.Fatal(err)
	}
	typ, b := readMsg(t, browser)
	if typ != websocket.MessageText || string(b) != "hello from tcp" {
		t.Fatalf("browser got %v %q", typ, b)
	}
}

// TestDialTextMessages: ws.Dial can speak text messages too.
func TestDialTextMessages(t *testing.T) {
	srv := newServer(t)
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.SendString(strings.ToUpper(string(msg))) })
	hs := serveWS(t, srv)
	shutdown(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	nc, err := ws.Dial(ctx, wsURL(hs), ws.WithTextMessages())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(timeout))
	if _, err := nc.Write([]byte("one\ntwo\n")); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 64)
	for !bytes.Equal(got, []byte("ONE\nTWO\n")) {
		n, err := nc.Read(buf)
		if err != nil {
			t.Fatalf("read: %q, %v", got, err)
		}
		got = append(got, buf[:n]...)
		if len(got) > 8 {
			t.Fatalf("got %q", got)
		}
	}
}

// TestDeadlines: an expired read deadline leaves the connection usable,
// a deadline moved into the past wakes a waiting Read, and Close wakes
// it with net.ErrClosed.
func TestDeadlines(t *testing.T) {
	srv := newServer(t)
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.Send(msg) })
	hs := serveWS(t, srv)
	shutdown(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	nc, err := ws.Dial(ctx, wsURL(hs))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	nc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err = nc.Read(buf)
	if !errors.Is(err, errDeadline) {
		t.Fatalf("read past deadline: %v", err)
	}
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("not a timeout net.Error: %v", err)
	}

	nc.SetReadDeadline(time.Time{})
	woke := make(chan error, 1)
	go func() {
		_, err := nc.Read(buf)
		woke <- err
	}()
	nc.SetReadDeadline(time.Unix(1, 0))
	if err := <-woke; !errors.Is(err, errDeadline) {
		t.Fatalf("read woken by a past deadline: %v", err)
	}

	nc.SetDeadline(time.Now().Add(timeout))
	msg := frame.Append(nil, frame.KindPing, 0, []byte("p"))
	if _, err := nc.Write(msg); err != nil {
		t.Fatal(err)
	}
	f, err := frame.NewReader(nc, 1024).ReadFrame()
	if err != nil || f.Kind != frame.KindPong {
		t.Fatalf("after timeouts: %v %v", f.Kind, err)
	}

	go func() {
		_, err := nc.Read(buf)
		woke <- err
	}()
	nc.Close()
	if err := <-woke; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read woken by Close: %v", err)
	}
	if _, err := nc.Write(msg); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
	<-nc.(*ws.Conn).Done()
}

var errDeadline = os.ErrDeadlineExceeded

// TestPeerVanishes: a WebSocket whose TCP connection just drops ends its
// session as closed by the peer.
func TestPeerVanishes(t *testing.T) {
	srv := newServer(t)
	ended := make(chan error, 1)
	srv.OnConnect(func(*msgnet.Session) {})
	srv.OnDisconnect(func(s *msgnet.Session, reason error) { ended <- reason })
	hs := serveWS(t, srv)
	shutdown(t, srv)
	c := rawDial(t, wsURL(hs), nil)
	writeMsg(t, c, websocket.MessageBinary, frame.Append(nil, frame.KindPing, 0, nil))
	readMsg(t, c)
	c.CloseNow()
	select {
	case err := <-ended:
		if !errors.Is(err, msgnet.ErrPeerClosed) {
			t.Fatalf("reason %v", err)
		}
	case <-time.After(timeout):
		t.Fatal("session did not end")
	}
}

var _ io.Reader = (*ws.Conn)(nil)

// TestDialContextEndsOpeningOnly: cancelling the dial context after Dial
// returned does not end the connection.
func TestDialContextEndsOpeningOnly(t *testing.T) {
	srv := newServer(t)
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.Send(msg) })
	hs := serveWS(t, srv)
	shutdown(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	nc, err := ws.Dial(ctx, wsURL(hs))
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
}

// awaitJoined waits until the client's session has joined its group: the
// connect handler runs after the welcome, so after Connect returns.
func awaitJoined(t *testing.T, srv *msgnet.Server, clientID string) {
	t.Helper()
	transporttest.Await(t, clientID+" in its group", func() bool {
		ss, ok := srv.SessionByClientID(clientID)
		return ok && len(ss.Groups()) == 1
	})
}

// TestCompression: with WithCompression, permessage-deflate is negotiated
// with a client that offers it, and frames pass unchanged.
func TestCompression(t *testing.T) {
	srv := newServer(t)
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.Send(msg) })
	hs := serveWS(t, srv, ws.WithCompression(websocket.CompressionNoContextTakeover))
	shutdown(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, wsURL(hs), &websocket.DialOptions{CompressionMode: websocket.CompressionNoContextTakeover})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); !strings.Contains(ext, "permessage-deflate") {
		t.Fatalf("extensions %q", ext)
	}
	payload := bytes.Repeat([]byte("compressible "), 400)
	writeMsg(t, c, websocket.MessageBinary, frame.Append(nil, frame.KindData, 0, payload))
	_, m := readMsg(t, c)
	if fs := splitFrames(t, m); len(fs) != 1 || !bytes.Equal(fs[0].Payload, payload) {
		t.Fatalf("echo differs")
	}
}
