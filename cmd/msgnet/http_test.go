package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/internal/testenv"
)

// waitListening waits until addr accepts connections.
func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never listened: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// curl, speaking h2c with prior knowledge, posts frames to --http's
// /msgnet and gets the welcome and the echo of its DATA.
func TestHTTPCurlH2C(t *testing.T) {
	curl := testenv.Tool(t, "curl")
	httpAddr := freeAddr(t)
	startServe(t, "--mode", "echo", "--http", httpAddr)
	waitListening(t, httpAddr)
	var body []byte
	body = frame.Append(body, frame.KindControl, 0, []byte(`{"op":"hello","client_id":"curl"}`))
	body = frame.Append(body, frame.KindData, 0, []byte("over h2c"))
	body = frame.Append(body, frame.KindDisconnect, 0, []byte("done"))
	frames := filepath.Join(t.TempDir(), "frames")
	os.WriteFile(frames, body, 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, curl, "-sS", "--http2-prior-knowledge", "-H", "Content-Type: application/x-msgnet",
		"--data-binary", "@"+frames, "http://"+httpAddr+"/msgnet").Output()
	if err != nil {
		t.Fatalf("curl: %v", err)
	}
	r := frame.NewReader(bytes.NewReader(out), 1<<20)
	f, err := r.ReadFrame()
	if err != nil || f.Kind != frame.KindControl || !bytes.Contains(f.Payload, []byte(`"op":"welcome"`)) {
		t.Fatalf("first frame %v %q (%v), want the welcome", f.Kind, f.Payload, err)
	}
	f, err = r.ReadFrame()
	if err != nil || f.Kind != frame.KindData || string(f.Payload) != "over h2c" {
		t.Fatalf("second frame %v %q (%v), want the echo", f.Kind, f.Payload, err)
	}
}

// Node's own WebSocket client (global in Node 22, behind
// --experimental-websocket in Node 20 and 21; on an older Node, the ws
// package's, as web/testdata/websocket.js picks), on --http's /ws, and a
// Go client on the TCP port exchange group messages both ways through
// managed mode: one server, one session table.
func TestHTTPNodeWebSocketGroups(t *testing.T) {
	node, web := testenv.JSPackage(t, filepath.Join("..", "..", "web"))
	var flags []string
	builtin := false
	for _, try := range [][]string{nil, {"--experimental-websocket"}} {
		out, err := exec.Command(node, append(try, "-e", "process.stdout.write(typeof WebSocket)")...).Output()
		if err == nil && string(out) == "function" {
			flags, builtin = try, true
			break
		}
	}
	if !builtin {
		out, _ := exec.Command(node, "--version").Output()
		t.Logf("node %s has no WebSocket of its own: the ws package's is used", strings.TrimSpace(string(out)))
	}
	httpAddr := freeAddr(t)
	addr := startServe(t, "--http", httpAddr)
	waitListening(t, httpAddr)

	tcp, got := managedClient(t, addr, "tcp-peer")
	tcp.SendString("JOIN:lobby")
	expectMsg(t, got, "Joined lobby")

	script := filepath.Join(t.TempDir(), "peer.mjs")
	os.WriteFile(script, []byte(`
const { WebSocket, source } = await import(process.argv[3]);
console.log("websocket:", source);
const ws = new WebSocket(process.argv[2]);
const lines = [];
ws.onmessage = (e) => {
  e = { data: String(e.data) };
  lines.push(e.data);
  console.log(e.data);
  if (e.data === "Joined lobby") ws.send("GROUP:lobby:from node");
  if (e.data.startsWith("[lobby] tcp-peer: ")) { ws.close(); }
};
ws.onopen = () => ws.send("JOIN:lobby");
ws.onerror = (e) => { console.error("error", e.message); process.exit(1); };
ws.onclose = () => process.exit(lines.some((l) => l === "[lobby] tcp-peer: from tcp") ? 0 : 2);
`), 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	wsModule := (&url.URL{Scheme: "file", Path: filepath.Join(web, "testdata", "websocket.js")}).String()
	cmd := exec.CommandContext(ctx, node, append(flags, script, "ws://"+httpAddr+"/ws", wsModule)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The node peer's group message reaches the TCP client; the TCP
	// client's then reaches node, which exits 0 only if it got it.
	deadline := time.After(15 * time.Second)
	for {
		select {
		case m := <-got:
			if strings.HasSuffix(m, ": from node") && strings.HasPrefix(m, "[lobby] ") {
				tcp.SendString("GROUP:lobby:from tcp")
				if err := cmd.Wait(); err != nil {
					t.Fatalf("node: %v\n%s", err, out.String())
				}
				if builtin && !strings.Contains(out.String(), "websocket: global") {
					t.Fatalf("node has a WebSocket of its own, and the test did not use it:\n%s", out.String())
				}
				return
			}
		case <-deadline:
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("the node peer's group message never reached the TCP client; node said:\n%s", out.String())
		}
	}
}

// With --tls-cert, a browser opens a wss:// session on --http: headless
// Chromium trusts the test's CA (by its key, as Chromium's test flag
// allows), a page from another origin listed in --http-origins connects,
// and managed mode answers it. The session shows its transport in the
// server's session list.
func TestHTTPBrowserWSS(t *testing.T) {
	const chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		testenv.Missing(t, "Chromium not found (%v): install it with apt-get install -y chromium", err)
	}
	dir := t.TempDir()
	files := tlsTestFiles(t, dir)
	// The server sends its certificate with the CA's, so that the browser
	// sees the CA it is told to trust.
	leaf, _ := os.ReadFile(files.ServerCert)
	caPEM, err := os.ReadFile(files.CA)
	if err != nil {
		t.Fatal(err)
	}
	chain := filepath.Join(dir, "chain.pem")
	os.WriteFile(chain, append(leaf, caPEM...), 0o600)
	httpAddr := freeAddr(t)
	monitorAddr := freeAddr(t)
	startServe(t, "--http", httpAddr, "--tls-cert", chain, "--tls-key", files.ServerKey,
		"--http-origins", "127.0.0.1:*", "--monitor", monitorAddr)
	waitListening(t, httpAddr)

	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<!doctype html><title>waiting</title><script>
const ws = new WebSocket("wss://%s/ws");
ws.onopen = () => ws.send("hello from chromium");
ws.onmessage = (e) => { document.title = e.data; };
ws.onerror = () => { document.title = "error"; };
</script>`, httpAddr)
	}))
	defer page.Close()

	block, _ := pem.Decode(caPEM)
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	spki := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	actx, acancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])),
		chromedp.UserDataDir(filepath.Join(dir, "profile")),
	)
	defer acancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, tcancel := context.WithTimeout(ctx, 60*time.Second)
	defer tcancel()
	if _, err := chromedp.Run(ctx, chromedp.Navigate(page.URL)); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](`document.title !== "waiting"`,
		chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("the page never heard from the server: %v", err)
	}
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	if title != "Echo: hello from chromium" {
		t.Fatalf("the page's title is %q, want the server's answer", title)
	}
	// The session's transport is in /connz while the page is open.
	resp, err := http.Get("http://" + monitorAddr + "/connz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var connz struct {
		Sessions []struct {
			Transport string `json:"transport"`
		} `json:"sessions"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&connz); err != nil {
		t.Fatal(err)
	}
	if len(connz.Sessions) != 1 || connz.Sessions[0].Transport != "ws" {
		t.Fatalf("/connz sessions %+v, want the browser's, on ws", connz.Sessions)
	}
}
