package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/monitor"
	"github.com/msgnet/msgnet/tlsconfig"
	"github.com/msgnet/msgnet/transport/ws"
	"github.com/msgnet/msgnet/web"
)

// httpGet fetches url with hc and returns the status and body.
func httpGet(t *testing.T, hc *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// startMonitored runs `msgnet serve --monitor ADDR extra...` and waits
// until the monitor answers. It returns the server's and the monitor's
// addresses and an HTTP client.
func startMonitored(t *testing.T, extra ...string) (addr, mon string, hc *http.Client) {
	t.Helper()
	mon = freeAddr(t)
	addr = startServe(t, append([]string{"--monitor", mon}, extra...)...)
	hc = &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := hc.Get("http://" + mon + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr, mon, hc
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("monitor on %s did not answer: %v", mon, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// metricValue finds a sample line "series value" in a text exposition.
func metricValue(t *testing.T, body, series string) string {
	t.Helper()
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	t.Fatalf("%s not in /metrics:\n%s", series, body)
	return ""
}

func TestServeMonitor(t *testing.T) {
	addr, mon, hc := startMonitored(t)

	c := msgnet.NewClient("watcher")
	got := make(chan string, 10)
	c.OnMessage(func(m []byte) { got <- string(m) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Connect(ctx, addr); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, m := range []string{"one", "two", "three"} {
		c.SendString(m)
		expectMsg(t, got, "Echo: "+m)
	}
	// The echo can arrive a moment before the server counts it as sent,
	// and the connection startServe made to see the server up ends on its
	// own time.
	var body string
	deadline := time.Now().Add(5 * time.Second)
	for {
		var code int
		code, body = httpGet(t, hc, "http://"+mon+"/metrics")
		if code != http.StatusOK {
			t.Fatalf("/metrics: %d\n%s", code, body)
		}
		if metricValue(t, body, `msgnet_frames_sent_total{kind="DATA"}`) == "3" && metricValue(t, body, "msgnet_sessions_open") == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("3 DATA frames never counted as sent:\n%s", body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for series, want := range map[string]string{
		`msgnet_frames_received_total{kind="DATA"}`: "3",
		`msgnet_connections_accepted_total`:         "2", // startServe's probe, then the client
		`msgnet_server_running`:                     "1",
	} {
		if v := metricValue(t, body, series); v != want {
			t.Errorf("%s = %s, want %s", series, v, want)
		}
	}

	code, vbody := httpGet(t, hc, "http://"+mon+"/varz")
	var v monitor.Varz
	if err := json.Unmarshal([]byte(vbody), &v); code != http.StatusOK || err != nil {
		t.Fatalf("/varz: %d %v\n%s", code, err, vbody)
	}
	if v.ServerID != "main_server" || v.Addr != addr || v.Sessions != 1 || v.FramesIn["DATA"] != 3 {
		t.Errorf("/varz: %+v", v)
	}

	code, cbody := httpGet(t, hc, "http://"+mon+"/connz")
	var cz monitor.Connz
	if err := json.Unmarshal([]byte(cbody), &cz); code != http.StatusOK || err != nil {
		t.Fatalf("/connz: %d %v\n%s", code, err, cbody)
	}
	if cz.Total != 1 || cz.Sessions[0].ClientID != "watcher" || cz.Sessions[0].ID != c.SessionID() {
		t.Errorf("/connz: %+v", cz)
	}

	// Profiles are off unless --pprof is given.
	if code, _ := httpGet(t, hc, "http://"+mon+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without --pprof: %d, want 404", code)
	}
}

func TestServeMonitorPprof(t *testing.T) {
	_, mon, hc := startMonitored(t, "--pprof")
	if code, body := httpGet(t, hc, "http://"+mon+"/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/: %d\n%s", code, body)
	}
}

func TestServeMonitorFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--pprof"}, "--pprof needs --monitor"},
		{[]string{"--monitor-chat"}, "--monitor-chat needs --monitor"},
		{[]string{"--monitor-allowed-hosts", "mon.example"}, "--monitor-allowed-hosts needs --monitor"},
		{[]string{"--monitor", "127.0.0.1:0", "--monitor-allowed-hosts", "mon.example:8222"}, "--monitor-allowed-hosts: allowed host \"mon.example:8222\": want a host without a port"},
		{[]string{"--monitor", "127.0.0.1:0", "--monitor-allowed-hosts", "http://mon.example"}, "--monitor-allowed-hosts: allowed host \"http://mon.example\": want a host, not a URL"},
		{[]string{"--monitor", "127.0.0.1:0", "--monitor-allowed-hosts", "a.example,"}, "--monitor-allowed-hosts: allowed host: empty"},
	} {
		errOut.Reset()
		code := run(context.Background(), append([]string{"serve", "--addr", freeAddr(t)}, c.args...), nil, &out, &errOut)
		if code != 2 || !strings.Contains(errOut.String(), c.want) {
			t.Errorf("serve %q: exit %d, %q; want 2 and %q", c.args, code, errOut.String(), c.want)
		}
	}

	// A monitor address that is taken stops serve with an error.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	errOut.Reset()
	code := run(context.Background(), []string{"serve", "--addr", freeAddr(t), "--monitor", l.Addr().String()}, nil, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "address already in use") {
		t.Errorf("taken --monitor address: exit %d, %q", code, errOut.String())
	}
}

// Without --monitor-chat the monitor serves the live page but no chat:
// /ws is 404 to a real WebSocket handshake, the page is told there is no
// chat, and no session is opened.
func TestServeMonitorLivePage(t *testing.T) {
	_, mon, hc := startMonitored(t)
	code, body := httpGet(t, hc, "http://"+mon+"/")
	if code != http.StatusOK || !strings.Contains(body, `id="sessions"`) || !strings.Contains(body, `id="chat-panel" class="panel" hidden`) {
		t.Fatalf("/: %d\n%s", code, body)
	}
	if code, _ := httpGet(t, hc, "http://"+mon+"/msgnet.js"); code != http.StatusOK {
		t.Fatalf("/msgnet.js: %d", code)
	}
	var sessions web.SessionsJSON
	code, body = httpGet(t, hc, "http://"+mon+"/api/sessions")
	if err := json.Unmarshal([]byte(body), &sessions); code != http.StatusOK || err != nil || sessions.ServerID != "main_server" {
		t.Fatalf("/api/sessions: %d %v %s", code, err, body)
	}
	code, body = httpGet(t, hc, "http://"+mon+"/api/features")
	if code != http.StatusOK || strings.TrimSpace(body) != `{"chat":false}` {
		t.Fatalf("/api/features without --monitor-chat: %d %s", code, body)
	}
	if code := wsHandshake(t, mon, "", ""); code != http.StatusNotFound {
		t.Errorf("WebSocket handshake on /ws without --monitor-chat: %d, want 404", code)
	}
	if _, _, err := wsClient(t, mon, "nobody"); err == nil {
		t.Error("a msgnet session opened on /ws without --monitor-chat")
	}
	var v monitor.Varz
	code, body = httpGet(t, hc, "http://"+mon+"/varz")
	// startServe's probe may count as accepted; nothing else may.
	if err := json.Unmarshal([]byte(body), &v); code != http.StatusOK || err != nil || v.Sessions != 0 || v.Accepted > 1 {
		t.Errorf("/varz after the refused handshakes: %d %v, %d sessions, %d accepted, want 0 and at most 1", code, err, v.Sessions, v.Accepted)
	}
	// /metrics is still the monitor's.
	if code, body := httpGet(t, hc, "http://"+mon+"/metrics"); code != http.StatusOK || !strings.Contains(body, "msgnet_") {
		t.Fatalf("/metrics under the page: %d", code)
	}
}

// With --monitor-chat, /ws runs client sessions on the same server: a
// session over WebSocket on the monitor and one over TCP on the client
// port exchange messages, and the monitor lists both.
func TestServeMonitorChat(t *testing.T) {
	addr, mon, hc := startMonitored(t, "--monitor-chat")
	if code, body := httpGet(t, hc, "http://"+mon+"/api/features"); code != http.StatusOK || strings.TrimSpace(body) != `{"chat":true}` {
		t.Fatalf("/api/features with --monitor-chat: %d %s", code, body)
	}
	tcp, tcpGot := managedClient(t, addr, "tcp-side")
	chat, chatGot, err := wsClient(t, mon, "ws-side")
	if err != nil {
		t.Fatalf("connecting over /ws: %v", err)
	}
	chat.SendString("hello")
	expectMsg(t, chatGot, "Echo: hello")
	privateCrosses(t, chat, chatGot, "tcp-side", tcpGot)
	privateCrosses(t, tcp, tcpGot, "ws-side", chatGot)

	var cz monitor.Connz
	code, body := httpGet(t, hc, "http://"+mon+"/connz")
	if err := json.Unmarshal([]byte(body), &cz); code != http.StatusOK || err != nil {
		t.Fatalf("/connz: %d %v\n%s", code, err, body)
	}
	transports := map[string]string{}
	for _, s := range cz.Sessions {
		transports[s.ClientID] = s.Transport
	}
	if len(transports) != 2 || transports["tcp-side"] != "tcp" || transports["ws-side"] != "ws" {
		t.Errorf("/connz: sessions %v, want tcp-side on tcp and ws-side on ws", transports)
	}
}

// The chat's sessions go through the server's authentication: with
// --auth-key-file a WebSocket client without the key is refused, one with
// it is served.
func TestServeMonitorChatAuth(t *testing.T) {
	keyFile := t.TempDir() + "/auth.key"
	if err := os.WriteFile(keyFile, []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, mon, _ := startMonitored(t, "--monitor-chat", "--auth-key-file", keyFile)
	if c, _, err := wsClient(t, mon, "no-key"); err == nil {
		t.Errorf("a WebSocket client without the key got a session (%s)", c.SessionID())
	} else if !errors.Is(err, msgnet.ErrHandshake) || !strings.Contains(err.Error(), "requires authentication") {
		// The client gives up itself when the server's welcome asks for
		// a key it does not have.
		t.Errorf("a WebSocket client without the key: %v, want the server to require authentication", err)
	}
	// A client with a key goes through the challenge, which the server
	// checks.
	if _, _, err := wsClient(t, mon, "wrong-key", msgnet.WithAuthKey([]byte("wrong"))); !errors.Is(err, &msgnet.ProtocolError{Code: msgnet.CodeAuthFailed}) {
		t.Errorf("a WebSocket client with a wrong key: %v, want %s", err, msgnet.CodeAuthFailed)
	}
	c, got, err := wsClient(t, mon, "with-key", msgnet.WithAuthKey([]byte("correct horse battery staple")))
	if err != nil {
		t.Fatalf("a WebSocket client with the key: %v", err)
	}
	c.SendString("authenticated")
	expectMsg(t, got, "Echo: authenticated")
}

// The chat is refused where the client port demands client certificates:
// the monitor is plain HTTP and would let clients in without one.
func TestServeMonitorChatRefusedWithClientCA(t *testing.T) {
	files, err := tlsconfig.WriteTestFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	args := []string{"serve", "--addr", freeAddr(t), "--tls-cert", files.ServerCert, "--tls-key", files.ServerKey,
		"--tls-client-ca", files.CA, "--monitor", freeAddr(t), "--monitor-chat"}
	code := run(context.Background(), args, nil, &out, &errOut)
	if code != 2 || !strings.Contains(errOut.String(), "--monitor-chat cannot be used with --tls-client-ca") {
		t.Errorf("--monitor-chat with --tls-client-ca: exit %d, %q", code, errOut.String())
	}
	// TLS without client certificates leaves the chat possible; the
	// monitor without the chat stays possible with them.
	startMonitored(t, "--tls-cert", files.ServerCert, "--tls-key", files.ServerKey, "--monitor-chat")
	startMonitored(t, "--tls-cert", files.ServerCert, "--tls-key", files.ServerKey, "--tls-client-ca", files.CA)
}

// A DNS rebinding attack on `msgnet serve --monitor`: evil.example now
// resolves to the monitor's address, so the attacker's page sends Host
// (and Origin) evil.example with the right port. Every endpoint but
// /healthz answers 403 without data, and /ws opens no session; the same
// requests by address, by localhost or by an allowed name are answered.
func TestServeMonitorRebinding(t *testing.T) {
	addr, mon, hc := startMonitored(t, "--monitor-chat", "--monitor-allowed-hosts", "mon.example, *.ops.example")
	tcp, _ := managedClient(t, addr, "secret-client")
	_, port, _ := net.SplitHostPort(mon)

	paths := map[string]string{ // what each endpoint shows when answered
		"/":             `id="sessions"`,
		"/api/sessions": tcp.SessionID(),
		"/api/stats":    `"server_id":"main_server"`,
		"/api/features": `"chat":true`,
		"/varz":         `"server_id": "main_server"`,
		"/connz":        tcp.SessionID(),
		"/metrics":      "msgnet_sessions_open 1",
	}
	for _, host := range []string{"", "localhost:" + port, "mon.example:" + port, "grafana.ops.example"} {
		for p, data := range paths {
			if code, body := hostGet(t, hc, mon, p, host, ""); code != http.StatusOK || !strings.Contains(body, data) {
				t.Errorf("Host %q, GET %s: %d %.200q, want 200 with %q", host, p, code, body, data)
			}
		}
	}
	for _, h := range []struct{ host, origin string }{
		{"evil.example:" + port, "http://evil.example:" + port}, // the rebinding attack
		{"evil.example:" + port, ""},
		{"ops.example:" + port, ""},                  // *.ops.example is the names under it
		{"127.0.0.1:" + port, "http://evil.example"}, // another site's page in an operator's browser
	} {
		for p := range paths {
			code, body := hostGet(t, hc, mon, p, h.host, h.origin)
			if code != http.StatusForbidden || strings.Contains(body, tcp.SessionID()) || strings.Contains(body, "main_server") {
				t.Errorf("Host %q Origin %q, GET %s: %d %.200q, want 403 and no data", h.host, h.origin, p, code, body)
			}
		}
		if code := wsHandshake(t, mon, h.host, h.origin); code != http.StatusForbidden {
			t.Errorf("Host %q Origin %q: WebSocket handshake %d, want 403", h.host, h.origin, code)
		}
		if code, body := hostGet(t, hc, mon, "/healthz", h.host, h.origin); code != http.StatusOK || body != "ok\n" {
			t.Errorf("Host %q Origin %q, /healthz: %d %q, want 200 ok", h.host, h.origin, code, body)
		}
	}
	var v monitor.Varz
	if code, body := hostGet(t, hc, mon, "/varz", "", ""); json.Unmarshal([]byte(body), &v) != nil || code != http.StatusOK || v.Sessions != 1 {
		t.Errorf("/varz after the refused handshakes: %d, %d sessions, want only secret-client's", code, v.Sessions)
	}
	// The page's own origin opens sessions.
	if code := wsHandshake(t, mon, "mon.example:"+port, "http://mon.example:"+port); code != http.StatusSwitchingProtocols {
		t.Errorf("WebSocket handshake from the page on mon.example: %d, want 101", code)
	}
}

// hostGet GETs path on mon with the given Host and Origin ("" for the
// client's default and none).
func hostGet(t *testing.T, hc *http.Client, mon, path, host, origin string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+mon+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// wsHandshake attempts a WebSocket handshake on mon's /ws with the given
// Host and Origin ("" for the dialer's default and none) and returns the
// HTTP status; a session it opened is closed again.
func wsHandshake(t *testing.T, mon, host, origin string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	opts := &websocket.DialOptions{Host: host, HTTPHeader: http.Header{}}
	if origin != "" {
		opts.HTTPHeader.Set("Origin", origin)
	}
	c, resp, err := websocket.Dial(ctx, "ws://"+mon+"/ws", opts)
	if err == nil {
		c.Close(websocket.StatusNormalClosure, "")
		return resp.StatusCode
	}
	if resp == nil {
		t.Fatalf("handshake on %s/ws: %v", mon, err)
	}
	return resp.StatusCode
}

// wsClient connects a Go client to mon's /ws through transport/ws's
// dialer; what arrives comes on the channel. A client that connected is
// closed when the test ends.
func wsClient(t *testing.T, mon, id string, opts ...msgnet.Option) (*msgnet.Client, chan string, error) {
	t.Helper()
	got := make(chan string, 16)
	opts = append(opts, msgnet.WithDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return ws.Dial(ctx, "ws://"+mon+"/ws")
	}))
	c := msgnet.NewClient(id, opts...)
	c.OnMessage(func(m []byte) {
		select {
		case got <- string(m):
		default:
			t.Errorf("%s: message dropped, channel full: %q", id, m)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Connect(ctx, mon); err != nil {
		c.Close()
		return nil, nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c, got, nil
}
