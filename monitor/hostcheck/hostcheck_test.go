package hostcheck_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/msgnet/msgnet/monitor/hostcheck"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// do sends a GET to ts with the given Host and Origin ("" for none) and
// returns the status and body.
func do(t *testing.T, ts *httptest.Server, host, origin string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", ts.URL+"/secret", nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := ts.Client().Do(req)
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

// A DNS rebinding attack as the server sees it: the right address and
// port, the attacker's name in Host (and in Origin, since the page is
// evil.example's own). It gets 403 and none of the data; the same request
// naming the server by its address, by localhost or by an allowed name
// gets the data.
func TestRebinding(t *testing.T) {
	c, err := hostcheck.New("monitor.example.com")
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(c.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "the data")
	})))
	defer ts.Close()
	port := ts.Listener.Addr().String()[strings.LastIndexByte(ts.Listener.Addr().String(), ':'):]

	for _, c := range []struct {
		host, origin string
		ok           bool
	}{
		{"", "", true}, // the client's own: 127.0.0.1:port
		{"localhost" + port, "", true},
		{"LOCALHOST" + port, "http://localhost" + port, true}, // the page itself
		{"[::1]" + port, "", true},
		{"monitor.example.com" + port, "https://monitor.example.com", true},
		{"evil.example" + port, "", false},
		{"evil.example" + port, "http://evil.example" + port, false}, // rebinding, from the attacker's page
		{"evil.example", "", false},
		{"127.0.0.1" + port, "http://evil.example", false}, // another site's page, through the visitor's browser
		{"127.0.0.1" + port, "null", false},
		{"127.0.0.1" + port, "http://localhost:3000", true}, // a local page: allowed by Host rules
	} {
		code, body := do(t, ts, c.host, c.origin)
		if c.ok && (code != http.StatusOK || body != "the data") {
			t.Errorf("Host %q Origin %q: %d %q, want 200 and the data", c.host, c.origin, code, body)
		}
		if !c.ok && (code != http.StatusForbidden || strings.Contains(body, "the data")) {
			t.Errorf("Host %q Origin %q: %d %q, want 403 and no data", c.host, c.origin, code, body)
		}
	}
}

// The zero Checker allows the server's own names and nothing else.
func TestZeroChecker(t *testing.T) {
	var c hostcheck.Checker
	ts := httptest.NewServer(c.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "the data")
	})))
	defer ts.Close()
	if code, _ := do(t, ts, "", ""); code != http.StatusOK {
		t.Errorf("own address: %d", code)
	}
	if code, _ := do(t, ts, "monitor.example.com", ""); code != http.StatusForbidden {
		t.Errorf("a name not allowed: %d", code)
	}
}

// An HTTP/1.0 request may leave Host out; with no name to check it is not
// the server's, and is refused.
func TestNoHostHeader(t *testing.T) {
	var c hostcheck.Checker
	ts := httptest.NewServer(c.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "the data")
	})))
	defer ts.Close()
	nc, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(nc, "GET /secret HTTP/1.0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusForbidden || strings.Contains(string(body), "the data") {
		t.Errorf("HTTP/1.0 without Host: %s %q, want 403 and no data", resp.Status, body)
	}
}
