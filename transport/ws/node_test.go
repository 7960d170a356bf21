package ws_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/container"
	"github.com/msgnet/msgnet/internal/testenv"
	"github.com/msgnet/msgnet/transport/transporttest"
)

// webDir is the JavaScript client's package (web/), relative to this one.
var webDir = filepath.Join("..", "..", "web")

// jsPackage returns node and the absolute path of web/, its test
// packages installed (testenv.JSPackage).
func jsPackage(t *testing.T) (node, dir string) { return testenv.JSPackage(t, webDir) }

// TestNodeTests runs web/'s Node tests (npm test: node --test in web/,
// which finds the test files on every Node version): the frame codec, the
// container JSON form, the client's protocol logic, the package and its
// TypeScript declarations.
func TestNodeTests(t *testing.T) {
	node, dir := jsPackage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=tap")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test in %s: %v\n%s", dir, err, out)
	}
	for _, want := range []string{"# fail 0", "# skipped 0"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Fatalf("node --test output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("node --test: %s", lastLines(out, 8))
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}

// globalWebSocket returns the node arguments that give it a global
// WebSocket (Node 22+ has one; Node 20 needs --experimental-websocket),
// and whether there is one (Node 18 has none).
func globalWebSocket(node string) ([]string, bool) {
	for _, args := range [][]string{nil, {"--experimental-websocket"}} {
		out, err := exec.Command(node, append(args, "-e", "process.stdout.write(typeof WebSocket)")...).Output()
		if err == nil && string(out) == "function" {
			return args, true
		}
	}
	return nil, false
}

// TestJSClientEndToEnd runs web/msgnet.js in Node against a real server,
// once with the ws package's WebSocket (what Node 18 and 20 use) and once
// with Node's own when it has one: a JavaScript client on WebSocket and a
// Go client on TCP exchange text and containers through a group; the
// JavaScript client's requests are answered by the server's OnRequest
// (a reply, an error, a late reply), and the server's Session.Request is
// answered by the client's onrequest; the server drops the JavaScript
// client, which reconnects by itself and makes requests again.
func TestJSClientEndToEnd(t *testing.T) {
	node, _ := jsPackage(t)
	t.Run("ws-package", func(t *testing.T) { jsEndToEnd(t, node, nil, "ws") })
	args, ok := globalWebSocket(node)
	if !ok {
		t.Logf("node has no global WebSocket (Node 18, or older than 20.10): the ws package's was used")
		return
	}
	t.Run("global", func(t *testing.T) { jsEndToEnd(t, node, args, "global") })
}

func jsEndToEnd(t *testing.T, node string, nodeArgs []string, webSocket string) {
	srv := newServer(t)
	srv.OnConnect(func(s *msgnet.Session) { srv.Join(s, "room") })
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { srv.SendGroup("room", msg, s) })
	release := make(chan struct{}) // lets the "slow" request be answered
	var releaseOnce sync.Once
	srv.OnRequest(func(s *msgnet.Session, req []byte) ([]byte, error) {
		q := strings.Fields(string(req))
		switch {
		case len(q) == 3 && q[0] == "sum":
			a, err1 := strconv.Atoi(q[1])
			b, err2 := strconv.Atoi(q[2])
			if err := errors.Join(err1, err2); err != nil {
				return nil, err
			}
			return []byte(strconv.Itoa(a + b)), nil
		case len(q) == 1 && q[0] == "slow":
			<-release
			return []byte("late"), nil
		}
		return nil, errors.New("no such question")
	})
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	hs := serveWS(t, srv)
	shutdown(t, srv)
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // before the shutdown

	fromJS := make(chan []byte, 8)
	tcp := msgnet.NewClient("go_tcp")
	tcp.OnMessage(func(msg []byte) { fromJS <- append([]byte(nil), msg...) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := tcp.Connect(ctx, srv.Addr().String()); err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	awaitJoined(t, srv, "go_tcp")

	// node's output is read line by line as it comes (lines), and kept
	// (stdout) for the failure messages.
	var stdout, stderr syncBuffer
	cmd := exec.CommandContext(ctx, node, append(nodeArgs, filepath.Join("testdata", "e2e.mjs"), wsURL(hs))...)
	cmd.Env = append(os.Environ(), "MSGNET_TEST_WEBSOCKET="+webSocket)
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 64)
	exited := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(io.TeeReader(pipe, &stdout))
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s\nnode stdout:\n%s\nnode stderr:\n%s", fmt.Sprintf(format, args...), stdout.String(), stderr.String())
	}
	next := func(what string) []byte {
		t.Helper()
		select {
		case m := <-fromJS:
			return m
		case <-ctx.Done():
			fail("timed out waiting for %s", what)
		}
		return nil
	}
	// step waits for node to print a line starting with prefix, and
	// returns it.
	step := func(prefix string) string {
		t.Helper()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					fail("node ended before printing %q: %v", prefix, <-exited)
				}
				if strings.HasPrefix(l, prefix) {
					return l
				}
			case <-ctx.Done():
				fail("timed out waiting for node to print %q", prefix)
			}
		}
	}

	if l := step("WEBSOCKET "); l != "WEBSOCKET "+webSocket {
		fail("node used %q, want %q", l, webSocket)
	}
	if l := step("WELCOME "); !strings.HasSuffix(l, " features=request") {
		fail("the welcome did not grant request/reply: %q", l)
	}
	if m := next("the JavaScript client's text"); string(m) != "hello from js" {
		fail("got %q", m)
	}
	greet := &container.Container{SourceID: "go_tcp", MessageType: "greeting"}
	greet.Add(container.Uint64("max", math.MaxUint64), container.String("text", "héllo from Go"),
		container.Float32("f32", 1.1), container.Bytes("blob", []byte{0, 255, 7}))
	j, err := greet.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if err := tcp.Send(j); err != nil {
		t.Fatal(err)
	}

	reply, err := container.ParseJSON(next("the JavaScript client's container"))
	if err != nil {
		fail("the container from JavaScript does not parse: %v", err)
	}
	if reply.SourceID != "js_e2e" || reply.TargetID != "go_tcp" || reply.MessageType != "reply" {
		fail("header %+v", reply)
	}
	if v, err := reply.GetInt64("big"); err != nil || v != 9007199254740993 {
		fail("big: %d, %v", v, err)
	}
	if v, err := reply.GetFloat32("f32"); err != nil || v != 0.1 {
		fail("f32: %v, %v", v, err)
	}
	if v, err := reply.GetFloat64("f64"); err != nil || v != 0 || !math.Signbit(v) {
		fail("f64: %v, %v", v, err)
	}
	if v, err := reply.GetString("raw"); err != nil || v != "\xffa" {
		fail("raw: %q, %v", v, err)
	}
	if n := len(reply.Values); n != 6 {
		fail("%d values", n)
	}

	// The JavaScript client's requests: a reply, a handler's error, and
	// one that times out there before the handler here answers.
	step("REQUEST_REPLY")
	step("REQUEST_REMOTE_ERROR")
	step("REQUEST_TIMEOUT")
	releaseOnce.Do(func() { close(release) })
	step("LATE_REPLY_COUNTED")
	step("JS_REQUESTS_DONE")

	// The server's requests, answered by the JavaScript client's onrequest.
	js, ok := srv.SessionByClientID("js_e2e")
	if !ok {
		fail("no session for js_e2e")
	}
	if info := js.Info(); info.Transport != "ws" || info.Mode != "binary" {
		fail("session info %+v", info)
	}
	if got, err := js.Request(ctx, []byte("double 21")); err != nil || string(got) != "42" {
		fail("request double 21: %q, %v", got, err)
	}
	if got, err := js.Request(ctx, []byte("async")); err != nil || !bytes.Equal(got, []byte{1, 2, 3}) {
		fail("request async: %v, %v", got, err)
	}
	var re *msgnet.RemoteError
	if _, err := js.Request(ctx, []byte("what?")); !errors.As(err, &re) || re.Message != `js cannot answer "what?"` {
		fail("request what?: %v, want the JavaScript handler's error", err)
	}
	if n := js.LateReplies(); n != 0 {
		fail("%d late replies from JavaScript", n)
	}

	// Drop the JavaScript client's session; it reconnects by itself.
	js.Disconnect("kick")
	step("CLOSED kick true")
	step("RECONNECTED ")
	step("REQUEST_AFTER_RECONNECT")
	if m := next("the JavaScript client after reconnecting"); string(m) != "back again" {
		fail("got %q", m)
	}
	if err := tcp.SendString("bye js"); err != nil {
		t.Fatal(err)
	}
	step("BYE")
	step("DONE")
	select {
	case err := <-exited:
		if err != nil {
			fail("node: %v", err)
		}
	case <-ctx.Done():
		fail("node did not finish")
	}
	t.Logf("node: %s", strings.ReplaceAll(strings.TrimSpace(stdout.String()), "\n", "; "))
	transporttest.Await(t, "the JavaScript session to end", func() bool { return srv.ConnectionCount() == 1 })
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer = testenv.Buffer
