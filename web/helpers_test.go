package web_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/managed"
	"github.com/msgnet/msgnet/transport/ws"
	"github.com/msgnet/msgnet/web"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// timeout bounds each wait in these tests; generous for a loaded machine.
const timeout = 20 * time.Second

// startServer starts a managed-mode server on a loopback TCP port and the
// page's handler, with opts, on a loopback HTTP server; both stop when the
// test ends (msgnet first, which closes the WebSocket sessions, then HTTP).
func startServer(t *testing.T, opts ...web.Option) (*msgnet.Server, *httptest.Server) {
	t.Helper()
	srv := msgnet.NewServer("web_test", msgnet.WithLogger(slog.New(slog.DiscardHandler)))
	managed.Install(srv) // the handler msgnet serve runs
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(web.Handler(srv, opts...))
	t.Cleanup(hs.Close)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return srv, hs
}

// tcpClient is a Go client on TCP whose messages arrive on a channel.
type tcpClient struct {
	*msgnet.Client
	msgs chan string
}

func dialTCP(t *testing.T, srv *msgnet.Server, id string) *tcpClient {
	t.Helper()
	c := &tcpClient{Client: msgnet.NewClient(id), msgs: make(chan string, 64)}
	c.OnMessage(func(msg []byte) {
		select {
		case c.msgs <- string(msg):
		default:
			t.Errorf("%s: message dropped, channel full: %q", id, msg)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.Connect(ctx, srv.Addr().String()); err != nil {
		t.Fatalf("%s: connect: %v", id, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialWS connects a Go client to the handler's /ws (WithChat) through
// transport/ws's dialer, with the given dial options.
func dialWS(t *testing.T, hs *httptest.Server, id string, opts ...ws.DialOption) *tcpClient {
	t.Helper()
	url := "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"
	c := &tcpClient{Client: msgnet.NewClient(id, msgnet.WithDialer(
		func(ctx context.Context, _ string) (net.Conn, error) { return ws.Dial(ctx, url, opts...) })), msgs: make(chan string, 64)}
	c.OnMessage(func(msg []byte) {
		select {
		case c.msgs <- string(msg):
		default:
			t.Errorf("%s: message dropped, channel full: %q", id, msg)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.Connect(ctx, hs.Listener.Addr().String()); err != nil {
		t.Fatalf("%s: connect over WebSocket: %v", id, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// handshake attempts a WebSocket handshake on url with the given Host
// and Origin headers ("" leaves them as the dialer sets them) and returns
// the HTTP status: 101 when a session was opened (it is closed again).
func handshake(t *testing.T, url, host, origin string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	opts := &websocket.DialOptions{Host: host, HTTPHeader: http.Header{}}
	if origin != "" {
		opts.HTTPHeader.Set("Origin", origin)
	}
	c, resp, err := websocket.Dial(ctx, url, opts)
	if err == nil {
		c.Close(websocket.StatusNormalClosure, "")
		return resp.StatusCode
	}
	if resp == nil {
		t.Fatalf("handshake on %s: %v", url, err)
	}
	return resp.StatusCode
}

// expect waits for the message want, failing on another one or on time out.
func (c *tcpClient) expect(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-c.msgs:
		if got != want {
			t.Fatalf("%s got %q, want %q", c.ID(), got, want)
		}
	case <-time.After(timeout):
		t.Fatalf("%s: no %q within %v", c.ID(), want, timeout)
	}
}

// eventually polls cond until it holds, or fails with what the last try
// reported.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last: %s", what, timeout, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
