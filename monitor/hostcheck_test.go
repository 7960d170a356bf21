package monitor_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/msgnet/msgnet/monitor"
)

// request sends method path to base with the given Host and Origin
// headers ("" leaves them as the client sets them) and returns the status
// and body.
func request(t *testing.T, hc *http.Client, method, base, path, host, origin string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, nil)
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
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// A DNS rebinding attack on the monitor: the request reaches the
// monitor's address and port but names evil.example, the attacker's page.
// Every endpoint but /healthz answers 403 with none of its data; the
// same requests naming the monitor by its address (as Prometheus does),
// by localhost or by an allowed name are answered.
func TestHostCheck(t *testing.T) {
	srv := echoServer(t)
	c, got := connect(t, srv, "secret-client")
	c.SendString("x")
	receive(t, got, 1)
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "page of secret-client") })
	base, hc := serveMonitor(t, srv, monitor.WithPprof(true), monitor.WithPage("/", page),
		monitor.WithAllowedHosts("monitor.example.com", "*.svc.example"))
	u, _ := url.Parse(base)
	port := u.Port()

	// What each endpoint shows when answered, and must not show when not.
	secrets := map[string]string{
		"/metrics":             "msgnet_sessions_open",
		"/varz":                `"server_id": "mon_test"`,
		"/connz":               "secret-client",
		"/":                    "page of secret-client",
		"/debug/pprof/":        "goroutine",
		"/debug/pprof/cmdline": "monitor.test",
	}
	for _, host := range []string{"", "127.0.0.1:" + port, "localhost:" + port, "monitor.example.com:" + port, "prom.svc.example", "MONITOR.example.com."} {
		for path, secret := range secrets {
			if code, body := request(t, hc, "GET", base, path, host, ""); code != http.StatusOK || !strings.Contains(body, secret) {
				t.Errorf("Host %q, GET %s: %d, want 200 with %q:\n%.300s", host, path, code, secret, body)
			}
		}
	}
	// The page's own requests carry its origin.
	if code, _ := request(t, hc, "GET", base, "/connz", "localhost:"+port, "http://localhost:"+port); code != http.StatusOK {
		t.Errorf("same-origin request: %d", code)
	}

	refused := []struct{ host, origin string }{
		{"evil.example:" + port, ""},
		{"evil.example:" + port, "http://evil.example:" + port}, // rebinding, as the browser sends it
		{"evil.example", ""},
		{"svc.example:" + port, ""},                  // *.svc.example is the names under it
		{"10.11.12.13:" + port, ""},                  // not the address the request came in on
		{"127.0.0.1:" + port, "http://evil.example"}, // another site's page in the operator's browser
	}
	for _, r := range refused {
		for path, secret := range secrets {
			code, body := request(t, hc, "GET", base, path, r.host, r.origin)
			if code != http.StatusForbidden || strings.Contains(body, secret) || strings.Contains(body, c.SessionID()) {
				t.Errorf("Host %q Origin %q, GET %s: %d, want 403 and no data:\n%.300s", r.host, r.origin, path, code, body)
			}
		}
		// /healthz answers whatever the Host: it says only whether the
		// server serves.
		if code, body := request(t, hc, "GET", base, "/healthz", r.host, r.origin); code != http.StatusOK || body != "ok\n" {
			t.Errorf("Host %q Origin %q, /healthz: %d %q, want 200 ok", r.host, r.origin, code, body)
		}
	}
	// Only GET and HEAD of /healthz are let through unchecked.
	if code, _ := request(t, hc, "POST", base, "/healthz", "evil.example", ""); code != http.StatusForbidden {
		t.Errorf("POST /healthz from evil.example: %d, want 403", code)
	}
	if code, _ := request(t, hc, "HEAD", base, "/healthz", "evil.example", ""); code != http.StatusOK {
		t.Errorf("HEAD /healthz from evil.example: %d, want 200", code)
	}
}

// Without WithAllowedHosts only the server's own names are answered.
func TestHostCheckDefault(t *testing.T) {
	srv := startServer(t)
	base, hc := serveMonitor(t, srv)
	if code, _ := request(t, hc, "GET", base, "/varz", "", ""); code != http.StatusOK {
		t.Errorf("by address: %d", code)
	}
	if code, _ := request(t, hc, "GET", base, "/varz", "monitor.example.com", ""); code != http.StatusForbidden {
		t.Errorf("a name not allowed: %d, want 403", code)
	}
}

// An allowed host that is not a host is a programming error, found at New.
func TestWithAllowedHostsPanics(t *testing.T) {
	srv := startServer(t)
	for _, bad := range []string{"monitor.example.com:8222", "http://monitor.example.com", ""} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("WithAllowedHosts(%q): New did not panic", bad)
				}
			}()
			monitor.New(srv, monitor.WithAllowedHosts(bad))
		}()
	}
}
