package web_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/msgnet/msgnet/internal/testenv"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/msgnet/msgnet/web"
)

// chromiumPath is Debian's chromium package (.ci/run installs it). The
// test never downloads a browser.
const chromiumPath = "/usr/bin/chromium"

// TestBrowserChat drives the page in headless Chromium: the chat joins a
// group over WebSocket, a message typed in the page reaches a Go client on
// TCP, the Go client's answers appear in the page, and the session table
// shows both sessions. A screenshot of the page is kept in artifacts/.
func TestBrowserChat(t *testing.T) {
	needChromium(t)
	srv, hs := startServer(t, web.WithChat())
	goc := dialTCP(t, srv, "gotcp")
	goc.SendString("JOIN:lobby")
	goc.expect(t, "Joined lobby")

	b := newBrowser(t)
	b.do("open the page", chromedp.Navigate(hs.URL), chromedp.WaitVisible(chromedp.ID("connect")))

	// Connect as "browser" and join the lobby, as a user would.
	b.do("connect",
		clear("client-id"),
		chromedp.SendKeys(chromedp.ID("client-id"), "browser"),
		chromedp.Click(chromedp.ID("connect")))
	b.waitFor("the chat is connected", `document.querySelector('#chat-status').dataset.state === 'open'`)
	b.do("join lobby",
		clear("group"),
		chromedp.SendKeys(chromedp.ID("group"), "lobby"),
		chromedp.Click(chromedp.ID("join")))
	b.waitFor("the server's answer to JOIN", transcriptHas("Joined lobby"))

	// A managed-mode command typed in the page reaches the TCP client.
	b.do("send to the group",
		chromedp.SendKeys(chromedp.ID("message"), "GROUP:lobby:hello from the browser"),
		chromedp.Click(chromedp.ID("send")))
	goc.expect(t, "[lobby] browser: hello from the browser")
	if v := b.value("message"); v != "" {
		t.Errorf("the message field keeps %q after sending", v)
	}

	// The page's group mode writes the command itself.
	b.do("send in group mode",
		chromedp.SetValue(chromedp.ID("send-mode"), "group"),
		chromedp.SendKeys(chromedp.ID("message"), "and in group mode"),
		chromedp.Click(chromedp.ID("send")))
	goc.expect(t, "[lobby] browser: and in group mode")

	// The Go client answers into the group, and privately.
	goc.SendString("GROUP:lobby:hello from Go over TCP")
	b.waitFor("the Go client's group message in the transcript", transcriptHas("[lobby] gotcp: hello from Go over TCP"))
	goc.SendString("PRIVATE:browser:just for you")
	b.waitFor("the Go client's private message in the transcript", transcriptHas("Private from gotcp: just for you"))

	// The session table lists both, as the user sees them (cell text),
	// with their transports and the group.
	b.waitFor("both sessions in the table", `(() => {
		const rows = [...document.querySelectorAll('#sessions tbody tr')].map((tr) => [...tr.cells].map((c) => c.textContent).join('|'));
		return rows.some((r) => r.includes('|browser|ws|') && r.endsWith('|lobby'))
			&& rows.some((r) => r.includes('|gotcp|tcp|') && r.endsWith('|lobby'));
	})()`)
	rows := b.tableRows()
	if len(rows) != 2 {
		t.Errorf("session table: %d rows, want 2: %q", len(rows), rows)
	}
	for _, want := range [][]string{
		{goc.SessionID(), "gotcp", "tcp"},
		{"", "browser", "ws"},
	} {
		found := false
		for _, r := range rows {
			if len(r) == 8 && (want[0] == "" || r[0] == want[0]) && r[1] == want[1] && r[2] == want[2] && strings.HasPrefix(r[3], "127.0.0.1:") {
				found = true
			}
		}
		if !found {
			t.Errorf("no row for %v in %q", want, rows)
		}
	}

	// The chart has data (rates from at least three polls).
	b.waitFor("samples in the chart", `Number(document.querySelector('#rate-chart').dataset.samples) >= 3`)
	b.screenshot("browser-chat.png")

	// Disconnecting from the page ends the WebSocket session.
	b.do("disconnect", chromedp.Click(chromedp.ID("connect")))
	eventually(t, "the browser's session ends", func() (bool, string) {
		for _, s := range srv.Sessions() {
			if s.ClientID() == "browser" {
				return false, "still open"
			}
		}
		return true, ""
	})
	b.waitFor("the table without the browser's session", `document.querySelectorAll('#sessions tbody tr').length === 1`)
	b.checkConsole()
}

// TestBrowserNoChat opens the page of a handler without WithChat: the
// session table and the chart work, the chat panel stays hidden and the
// page tries no WebSocket (a refused one would show in the console).
func TestBrowserNoChat(t *testing.T) {
	needChromium(t)
	srv, hs := startServer(t)
	goc := dialTCP(t, srv, "gotcp")
	goc.SendString("JOIN:lobby")
	goc.expect(t, "Joined lobby")

	b := newBrowser(t)
	b.do("open the page", chromedp.Navigate(hs.URL), chromedp.WaitVisible(chromedp.ID("sessions")))
	b.waitFor("the page is live", `document.querySelector('#poll-status').dataset.state === 'open'`)
	b.waitFor("the TCP client in the table", `[...document.querySelectorAll('#sessions tbody tr')]
		.some((tr) => tr.cells[1].textContent === 'gotcp' && tr.cells[7].textContent === 'lobby')`)
	b.waitFor("samples in the chart", `Number(document.querySelector('#rate-chart').dataset.samples) >= 2`)
	b.waitFor("the chart across the whole row", `(() => {
		const chart = document.querySelector('#chart-panel').getBoundingClientRect();
		const table = document.querySelector('#sessions-panel').getBoundingClientRect();
		return Math.abs(chart.width - table.width) < 1;
	})()`)
	for what, expr := range map[string]string{
		"the chat panel is hidden":     `document.querySelector('#chat-panel').hidden && document.querySelector('#chat-panel').offsetParent === null`,
		"the body is not marked chat":  `document.body.dataset.chat === undefined`,
		"no Connect button to be seen": `document.querySelector('#connect').getClientRects().length === 0`,
	} {
		ctx, cancel := context.WithTimeout(b.ctx, timeout)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		cancel()
		if err != nil {
			b.fail(what, err)
		}
		if !ok {
			t.Errorf("%s: false", what)
		}
	}
	b.screenshot("browser-no-chat.png")
	b.checkConsole()
}

func needChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		testenv.Missing(t, "Chromium not found (%v): install it with apt-get install -y chromium", err)
	}
}

// clear empties an input field. (chromedp.Clear sets the value attribute,
// which does not change a field the page has already filled in, and
// SetValue cannot set "": chromedp leaves an empty argument out.)
func clear(id string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.getElementById(%s).value = ''`, strconv.Quote(id)))
}

func transcriptHas(text string) string {
	return fmt.Sprintf(`[...document.querySelectorAll('#transcript li.in .text')].some((e) => e.textContent === %s)`, strconv.Quote(text))
}

// browser is a tab of a headless Chromium of the test's own.
type browser struct {
	t   *testing.T
	ctx context.Context

	mu      sync.Mutex
	console []chromedp.ConsoleMessage
}

// newBrowser starts Chromium with a fresh profile; it is stopped, and its
// processes are gone, when the test ends.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	dir := t.TempDir()
	out := &lockedBuffer{}
	actx, acancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,  // the tests run as root, in a container
		chromedp.DisableGPU, // no GPU; software rendering
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true), // /dev/shm is small in containers
		chromedp.Flag("no-proxy-server", true),       // loopback only, whatever the environment says
		chromedp.UserDataDir(dir),
		chromedp.WindowSize(1280, 900),
		chromedp.CombinedOutput(out),
	)
	ctx, cancel := chromedp.NewContext(actx)
	b := &browser{t: t, ctx: ctx}

	// Runs after the test, before t.TempDir removes the profile.
	consoleDone := make(chan struct{})
	t.Cleanup(func() {
		// Close the browser gracefully, within a bound; then everything
		// of the allocator (chromedp waits for the process).
		cctx, ccancel := context.WithTimeout(ctx, timeout)
		if err := chromedp.Cancel(cctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Logf("closing Chromium: %v", err)
		}
		ccancel()
		cancel()
		acancel()
		select {
		case <-consoleDone:
		case <-time.After(timeout):
			t.Errorf("the console listener did not end within %v of closing Chromium", timeout)
		}
		waitProcessesGone(t, "--user-data-dir="+dir)
		if t.Failed() {
			t.Logf("Chromium's output:\n%s", out.String())
		}
	})

	// Start the browser with no deadline (a deadline on the first run
	// would bound the browser's life), then listen to the page's console.
	if err := chromedp.Do(ctx); err != nil {
		close(consoleDone)
		t.Fatalf("starting Chromium: %v", err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		defer close(consoleDone)
		for m, err := range messages {
			if err != nil {
				return // the context ended
			}
			b.mu.Lock()
			b.console = append(b.console, m)
			b.mu.Unlock()
		}
	}()
	return b
}

// do runs the actions within the test's timeout; on failure it reports
// the page's state and fails the test.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fail(what, err)
	}
}

// waitFor waits until the JavaScript expression is true in the page.
func (b *browser) waitFor(what, expr string) {
	b.t.Helper()
	b.do(what, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
}

func (b *browser) value(id string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID(id)))
	if err != nil {
		b.fail("value of #"+id, err)
	}
	return v
}

// tableRows is the session table's cells, as text.
func (b *browser) tableRows() [][]string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[[][]string](
		`[...document.querySelectorAll('#sessions tbody tr')].map((tr) => [...tr.cells].map((c) => c.textContent))`))
	if err != nil {
		b.fail("reading the session table", err)
	}
	return rows
}

// screenshot saves a PNG of the whole page in artifacts/ at the module's
// root and returns its path.
func (b *browser) screenshot(name string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		b.t.Fatalf("screenshot: %v", err)
	}
	dir := filepath.Join(moduleRoot(b.t), "artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", path)
	return path
}

// fail reports what the page showed, keeps a screenshot, and fails.
func (b *browser) fail(what string, err error) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	if text, e := chromedp.Run(ctx, chromedp.Evaluate[string](
		`'chat: ' + document.querySelector('#chat-status').textContent +
		 '\ntranscript:\n' + [...document.querySelectorAll('#transcript li')].map((li) => li.textContent).join('\n') +
		 '\nsessions:\n' + [...document.querySelectorAll('#sessions tbody tr')].map((tr) => [...tr.cells].map((c) => c.textContent).join(' | ')).join('\n')`)); e == nil {
		b.t.Logf("the page:\n%s", text)
	}
	if png, e := chromedp.Run(ctx, chromedp.FullScreenshot(100)); e == nil {
		dir := filepath.Join(moduleRoot(b.t), "artifacts")
		if os.MkdirAll(dir, 0o755) == nil && os.WriteFile(filepath.Join(dir, "browser-failure.png"), png, 0o644) == nil {
			b.t.Logf("screenshot: %s", filepath.Join(dir, "browser-failure.png"))
		}
	}
	b.logConsole()
	b.t.Fatalf("%s: %v", what, err)
}

// checkConsole fails the test on uncaught exceptions and errors in the
// page's console (a script error, a refused request, a CSP violation).
func (b *browser) checkConsole() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.console {
		if m.IsException() || m.Type == chromedp.ConsoleError {
			b.t.Errorf("console: %s (%s:%d)", m, m.URL, m.Line+1)
		}
	}
}

func (b *browser) logConsole() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.console {
		b.t.Logf("console: %s (%s:%d)", m, m.URL, m.Line+1)
	}
}

// moduleRoot is the directory of go.mod above the test's directory.
func moduleRoot(t *testing.T) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %s", dir)
		}
	}
}

// waitProcessesGone waits until no process has arg on its command line:
// Chromium's helper processes (zygote, renderer, network service) may
// outlive the main process for a moment. Those left after a few seconds
// are killed, by pid: they are this test's Chromium (arg names the test's
// own profile directory).
func waitProcessesGone(t *testing.T, arg string) {
	wait := func() bool {
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if len(processesWith(arg)) == 0 {
				return true
			}
		}
		return false
	}
	if wait() {
		return
	}
	pids := processesWith(arg)
	t.Logf("killing %d Chromium processes left after it stopped: %v", len(pids), pids)
	for _, pid := range pids {
		if p, err := os.FindProcess(pid); err == nil {
			p.Kill()
		}
	}
	if !wait() {
		t.Logf("Chromium processes still there: %v", processesWith(arg))
	}
}

func processesWith(arg string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		for a := range bytes.SplitSeq(cmdline, []byte{0}) {
			if string(a) == arg {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// lockedBuffer collects Chromium's output, written from chromedp's
// goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
