package web_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/msgnet/msgnet/web"
)

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func getJSON[T any](t *testing.T, url string) T {
	t.Helper()
	resp, b := get(t, url)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("GET %s: Content-Type %q", url, ct)
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("GET %s: %v in %s", url, err, b)
	}
	return v
}

// row is what the test compares of a session: all but the counters and
// times.
type row struct {
	ID, ClientID, Transport, Mode, Addr string
	Groups                              string
}

func rows(list web.SessionsJSON) []row {
	var out []row
	for _, s := range list.Sessions {
		out = append(out, row{s.ID, s.ClientID, s.Transport, s.Mode, s.RemoteAddr, strings.Join(s.Groups, ",")})
	}
	return out
}

func sessionByID(list web.SessionsJSON, id string) (web.SessionJSON, bool) {
	i := slices.IndexFunc(list.Sessions, func(s web.SessionJSON) bool { return s.ID == id })
	if i < 0 {
		return web.SessionJSON{}, false
	}
	return list.Sessions[i], true
}

// TestSessionsAPI checks the exact session list as clients on TCP and on
// WebSocket connect, join groups and leave.
func TestSessionsAPI(t *testing.T) {
	srv, hs := startServer(t, web.WithChat())
	url := hs.URL + "/api/sessions"

	if got := getJSON[web.SessionsJSON](t, url); got.ServerID != "web_test" || got.Sessions == nil || len(got.Sessions) != 0 {
		t.Fatalf("before any client: %+v", got)
	}
	if _, b := get(t, url); !strings.Contains(string(b), `"sessions":[]`) {
		t.Fatalf("no sessions must be [], not null: %s", b)
	}

	alpha := dialTCP(t, srv, "alpha")
	alpha.SendString("JOIN:lobby")
	alpha.expect(t, "Joined lobby")

	beta := dialTCP(t, srv, "beta")
	for _, g := range []string{"zeta", "lobby"} {
		beta.SendString("JOIN:" + g)
		beta.expect(t, "Joined "+g)
	}

	gamma := dialWS(t, hs, "gamma")

	want := []row{
		{alpha.SessionID(), "alpha", "tcp", "binary", "127.0.0.1", "lobby"},
		{beta.SessionID(), "beta", "tcp", "binary", "127.0.0.1", "lobby,zeta"}, // sorted
		{gamma.SessionID(), "gamma", "ws", "binary", "127.0.0.1", ""},
	}
	got := getJSON[web.SessionsJSON](t, url)
	if !slices.Equal(rows(got), want) {
		t.Fatalf("sessions:\n got %+v\nwant %+v", rows(got), want)
	}
	for i, s := range got.Sessions {
		if s.RemotePort == 0 || s.ConnectedAt.IsZero() || s.ConnectedAt.After(got.Now) || s.Groups == nil {
			t.Errorf("session %d: %+v (now %v)", i, s, got.Now)
		}
		if i > 0 && s.ConnectedAt.Before(got.Sessions[i-1].ConnectedAt) {
			t.Errorf("not oldest first: %v before %v", s.ConnectedAt, got.Sessions[i-1].ConnectedAt)
		}
	}

	// One message each way is one in and one out on the session's counters.
	before, _ := sessionByID(got, gamma.SessionID())
	gamma.SendString("hi")
	gamma.expect(t, "Echo: hi")
	after, _ := sessionByID(getJSON[web.SessionsJSON](t, url), gamma.SessionID())
	if after.MsgsIn-before.MsgsIn != 1 || after.MsgsOut-before.MsgsOut != 1 {
		t.Errorf("after one echo: in %d→%d, out %d→%d", before.MsgsIn, after.MsgsIn, before.MsgsOut, after.MsgsOut)
	}

	// Leaving a group and disconnecting show at once (disconnects: as
	// soon as the server has finished the session).
	beta.SendString("LEAVE:zeta")
	beta.expect(t, "Left zeta")
	want[1].Groups = "lobby"
	if got := rows(getJSON[web.SessionsJSON](t, url)); !slices.Equal(got, want) {
		t.Fatalf("after LEAVE:\n got %+v\nwant %+v", got, want)
	}
	for _, c := range []*tcpClient{beta, gamma, alpha} {
		c.Close()
		want = slices.DeleteFunc(want, func(r row) bool { return r.ClientID == c.ID() })
		eventually(t, c.ID()+" gone", func() (bool, string) {
			got := rows(getJSON[web.SessionsJSON](t, url))
			return slices.Equal(got, want), fmt.Sprintf("%+v, want %+v", got, want)
		})
	}
	if got := getJSON[web.SessionsJSON](t, url); len(got.Sessions) != 0 {
		t.Fatalf("all closed: %+v", got.Sessions)
	}
}

// TestStatsAPI checks the totals the chart is drawn from.
func TestStatsAPI(t *testing.T) {
	srv, hs := startServer(t)
	url := hs.URL + "/api/stats"

	st := getJSON[web.StatsJSON](t, url)
	if st.ServerID != "web_test" || !st.Running || st.Sessions != 0 || st.Start.IsZero() || st.Now.Before(st.Start) {
		t.Fatalf("fresh server: %+v", st)
	}
	a := dialTCP(t, srv, "a")
	dialTCP(t, srv, "b")
	st0 := getJSON[web.StatsJSON](t, url)
	if st0.Sessions != 2 || st0.Accepted != 2 {
		t.Fatalf("two clients: %+v", st0)
	}
	const n = 5
	for i := range n {
		a.SendString(fmt.Sprint("m", i))
		a.expect(t, fmt.Sprint("Echo: m", i))
	}
	st1 := getJSON[web.StatsJSON](t, url)
	if st1.MsgsIn-st0.MsgsIn != n || st1.MsgsOut-st0.MsgsOut != n || st1.BytesIn <= st0.BytesIn || st1.BytesOut <= st0.BytesOut {
		t.Fatalf("after %d echoes: %+v, before %+v", n, st1, st0)
	}
	// Totals include ended sessions: the chart never sees them drop.
	a.Close()
	eventually(t, "a gone", func() (bool, string) {
		st := getJSON[web.StatsJSON](t, url)
		return st.Sessions == 1, fmt.Sprintf("%+v", st)
	})
	if st2 := getJSON[web.StatsJSON](t, url); st2.MsgsIn < st1.MsgsIn || st2.MsgsOut < st1.MsgsOut {
		t.Fatalf("totals went down after a disconnect: %+v, before %+v", st2, st1)
	}
}

// TestFiles checks what the page is made of: embedded, local, with its
// headers, and nothing else served.
func TestFiles(t *testing.T) {
	_, hs := startServer(t)
	for _, c := range []struct {
		path, ctype, contains string
	}{
		{"/", "text/html; charset=utf-8", `id="transcript"`},
		{"/app.js", "text/javascript; charset=utf-8", "from './msgnet.js'"},
		{"/app.css", "text/css; charset=utf-8", "#transcript"},
		{"/msgnet.js", "text/javascript; charset=utf-8", "export class Client"},
	} {
		resp, b := get(t, hs.URL+c.path)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != c.ctype || !strings.Contains(string(b), c.contains) {
			t.Errorf("GET %s: %s, %q, %d bytes", c.path, resp.Status, resp.Header.Get("Content-Type"), len(b))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", c.path, csp)
		}
		// Nothing from other sites: no absolute URLs in src, href or imports.
		if m := regexp.MustCompile(`(?:src|href)=["']?(?:https?:)?//|from\s+['"](?:https?:)?//|url\((?:https?:)?//`).Find(b); m != nil {
			t.Errorf("GET %s refers to another site: %s", c.path, m)
		}
	}
	_, js := get(t, hs.URL+"/msgnet.js")
	if disk, err := os.ReadFile("msgnet.js"); err != nil || string(disk) != string(js) {
		t.Errorf("/msgnet.js is not web/msgnet.js (%v)", err)
	}

	for _, c := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/nope", http.StatusNotFound},
		{"GET", "/index.html", http.StatusNotFound},
		{"GET", "/static/app.js", http.StatusNotFound},
		{"POST", "/api/stats", http.StatusMethodNotAllowed},
		{"GET", "/ws", http.StatusNotFound}, // no chat without WithChat
	} {
		req, _ := http.NewRequest(c.method, hs.URL+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("%s %s: %s, want %d", c.method, c.path, resp.Status, c.status)
		}
	}
}

// TestUnderPrefix mounts the handler under a path, as the package
// documentation shows: the page's relative URLs must still work.
func TestUnderPrefix(t *testing.T) {
	srv, _ := startServer(t)
	mux := http.NewServeMux()
	mux.Handle("/live/", http.StripPrefix("/live", web.Handler(srv)))
	hs := httptest.NewServer(mux)
	defer hs.Close()
	for _, p := range []string{"/live/", "/live/app.js", "/live/msgnet.js", "/live/api/stats", "/live/api/sessions"} {
		if resp, _ := get(t, hs.URL+p); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s", p, resp.Status)
		}
	}
	_, page := get(t, hs.URL+"/live/")
	if strings.Contains(string(page), `="/`) {
		t.Errorf("the page has an absolute path, which breaks under a prefix")
	}
}
