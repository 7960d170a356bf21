package web_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/msgnet/msgnet/transport/ws"
	"github.com/msgnet/msgnet/web"
)

func wsURL(hs *httptest.Server) string { return "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws" }

// Without WithChat there is no way in: /ws is 404 even to a real
// WebSocket handshake, the page says so in api/features and keeps its
// chat panel hidden, and no session is opened.
func TestChatOff(t *testing.T) {
	srv, hs := startServer(t)
	if f := getJSON[web.FeaturesJSON](t, hs.URL+"/api/features"); f.Chat {
		t.Errorf("api/features without WithChat: %+v", f)
	}
	if code := handshake(t, wsURL(hs), "", ""); code != http.StatusNotFound {
		t.Errorf("WebSocket handshake on /ws without WithChat: %d, want 404", code)
	}
	if n := srv.ConnectionCount(); n != 0 {
		t.Errorf("%d sessions opened through a chat that is off", n)
	}
	_, page := get(t, hs.URL+"/")
	if !strings.Contains(string(page), `<section id="chat-panel" class="panel" hidden>`) {
		t.Errorf("the chat panel is not hidden until app.js shows it")
	}
	// The rest of the page is served as before.
	for _, p := range []string{"/", "/app.js", "/app.css", "/msgnet.js", "/api/sessions", "/api/stats"} {
		if resp, _ := get(t, hs.URL+p); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s without the chat: %s", p, resp.Status)
		}
	}
}

// With WithChat, /ws opens sessions on the server: a Go client over
// WebSocket and one over TCP reach each other.
func TestChatOn(t *testing.T) {
	srv, hs := startServer(t, web.WithChat())
	if f := getJSON[web.FeaturesJSON](t, hs.URL+"/api/features"); !f.Chat {
		t.Errorf("api/features with WithChat: %+v", f)
	}
	if resp, _ := get(t, hs.URL+"/ws"); resp.StatusCode != http.StatusUpgradeRequired {
		t.Errorf("plain GET /ws, not an upgrade: %s, want 426", resp.Status)
	}
	tcp := dialTCP(t, srv, "tcp-side")
	chat := dialWS(t, hs, "ws-side")
	chat.SendString("PRIVATE:tcp-side:over the chat")
	tcp.expect(t, "Private from ws-side: over the chat")
	tcp.SendString("PRIVATE:ws-side:and back")
	chat.expect(t, "Private from tcp-side: and back")
}

// A DNS rebinding attack on the page: evil.example now resolves to the
// server, so the attacker's page reaches the handler with Host (and
// Origin) evil.example and the right port. Every path answers 403 with
// none of its data, and no WebSocket session opens; naming the server by
// its address, by localhost or by an allowed host works.
func TestRebinding(t *testing.T) {
	srv, hs := startServer(t, web.WithChat(), web.WithAllowedHosts("live.example"))
	tcp := dialTCP(t, srv, "secret-client")
	port := ":" + mustPort(t, hs.URL)

	paths := map[string]string{ // what each path shows when answered
		"/":              `id="sessions"`,
		"/app.js":        "refreshSessions",
		"/msgnet.js":     "export class Client",
		"/api/sessions":  tcp.SessionID(),
		"/api/stats":     `"server_id":"web_test"`,
		"/api/features":  `"chat":true`,
		"/nothing-there": "", // 404 when answered, 403 when not
	}
	for _, host := range []string{"", "localhost" + port, "127.0.0.1" + port, "[::1]" + port, "live.example" + port, "LIVE.example."} {
		for p, data := range paths {
			code, body := fetch(t, hs.URL+p, host, "")
			if data == "" && code != http.StatusNotFound || data != "" && (code != http.StatusOK || !strings.Contains(body, data)) {
				t.Errorf("Host %q, GET %s: %d %.200q, want it answered", host, p, code, body)
			}
		}
	}
	for _, h := range []struct{ host, origin string }{
		{"evil.example" + port, ""},
		{"evil.example" + port, "http://evil.example" + port}, // the attacker's page, after rebinding
		{"evil.example", ""},
		{"sub.live.example" + port, ""},             // live.example is not *.live.example
		{"127.0.0.1" + port, "http://evil.example"}, // another site's page in the operator's browser
	} {
		for p := range paths {
			code, body := fetch(t, hs.URL+p, h.host, h.origin)
			if code != http.StatusForbidden || strings.Contains(body, tcp.SessionID()) || strings.Contains(body, "web_test") {
				t.Errorf("Host %q Origin %q, GET %s: %d %.200q, want 403 and no data", h.host, h.origin, p, code, body)
			}
		}
		if code := handshake(t, wsURL(hs), h.host, h.origin); code != http.StatusForbidden {
			t.Errorf("Host %q Origin %q: WebSocket handshake %d, want 403", h.host, h.origin, code)
		}
	}
	if n := srv.ConnectionCount(); n != 1 {
		t.Fatalf("%d sessions open, want only the TCP client's", n)
	}

	// Pages on the server's own origins open sessions. An Origin naming an
	// allowed host on another port is a different site, which /ws refuses
	// (transport/ws admits the page's own origin only).
	for _, c := range []struct {
		host, origin string
		want         int
	}{
		{"", "", http.StatusSwitchingProtocols}, // a program: no Origin
		{"127.0.0.1" + port, "http://127.0.0.1" + port, http.StatusSwitchingProtocols},
		{"localhost" + port, "http://localhost" + port, http.StatusSwitchingProtocols},
		{"live.example" + port, "https://live.example" + port, http.StatusSwitchingProtocols},
		{"127.0.0.1" + port, "http://localhost:3000", http.StatusForbidden},
	} {
		if code := handshake(t, wsURL(hs), c.host, c.origin); code != c.want {
			t.Errorf("Host %q Origin %q: WebSocket handshake %d, want %d", c.host, c.origin, code, c.want)
		}
	}
	// A session with the page's own Origin works end to end.
	chat := dialWS(t, hs, "by-name", ws.WithHeader(http.Header{"Origin": {"http://127.0.0.1" + port}}))
	chat.SendString("hi")
	chat.expect(t, "Echo: hi")
}

// An allowed host that is not a host is a programming error, found at
// Handler.
func TestWithAllowedHostsPanics(t *testing.T) {
	srv, _ := startServer(t)
	defer func() {
		if recover() == nil {
			t.Error("WithAllowedHosts(\"live.example:8080\"): Handler did not panic")
		}
	}()
	web.Handler(srv, web.WithAllowedHosts("live.example:8080"))
}

// fetch GETs url with the given Host and Origin ("" for the client's
// default and none).
func fetch(t *testing.T, u, host, origin string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func mustPort(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil || u.Port() == "" {
		t.Fatalf("no port in %q: %v", raw, err)
	}
	return u.Port()
}
