package ws_test

import (
	"bytes"
	"context"
	"github.com/msgnet/msgnet/internal/testenv"
	"math"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/container"
	"github.com/msgnet/msgnet/transport/transporttest"
)

// webDir is the JavaScript client's directory, relative to this package.
var webDir = filepath.Join("..", "..", "web")

// nodeOrSkip finds node (see testenv for what a missing one means).
func nodeOrSkip(t *testing.T) string {
	t.Helper()
	return testenv.Tool(t, "node")
}

// TestNodeTests runs web/'s Node tests (node --test web/): the frame codec,
// the container JSON form and the client's protocol logic.
func TestNodeTests(t *testing.T) {
	node := nodeOrSkip(t)
	dir, err := filepath.Abs(webDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", dir)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test %s: %v\n%s", dir, err, out)
	}
	if !bytes.Contains(out, []byte("# fail 0")) {
		t.Fatalf("unexpected node --test output:\n%s", out)
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

// nodeWithWebSocket returns the node arguments that give it a global
// WebSocket (Node 22+ has one; Node 20 needs --experimental-websocket),
// or skips.
func nodeWithWebSocket(t *testing.T, node string) []string {
	t.Helper()
	for _, args := range [][]string{nil, {"--experimental-websocket"}} {
		out, err := exec.Command(node, append(args, "-e", "process.stdout.write(typeof WebSocket)")...).Output()
		if err == nil && string(out) == "function" {
			return args
		}
	}
	testenv.Missing(t, "this node has no WebSocket, not even with --experimental-websocket: the end-to-end JavaScript test cannot run; install Node 20.10 or newer")
	return nil
}

// TestJSClientEndToEnd runs web/msgnet.js in Node against a real server:
// a JavaScript client on WebSocket and a Go client on TCP exchange text and
// containers through a group; the server drops the JavaScript client,
// which reconnects by itself.
func TestJSClientEndToEnd(t *testing.T) {
	node := nodeOrSkip(t)
	nodeArgs := nodeWithWebSocket(t, node)

	srv := newServer(t)
	srv.OnConnect(func(s *msgnet.Session) { srv.Join(s, "room") })
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { srv.SendGroup("room", msg, s) })
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	hs := serveWS(t, srv)
	shutdown(t, srv)

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

	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, node, append(nodeArgs, filepath.Join("testdata", "e2e.mjs"), wsURL(hs))...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	next := func(what string) []byte {
		t.Helper()
		select {
		case m := <-fromJS:
			return m
		case err := <-exited:
			t.Fatalf("node exited (%v) while the Go client waited for %s\nstdout:\n%s\nstderr:\n%s", err, what, &stdout, &stderr)
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s\nstdout:\n%s\nstderr:\n%s", what, &stdout, &stderr)
		}
		return nil
	}

	if m := next("the JavaScript client's text"); string(m) != "hello from js" {
		t.Fatalf("got %q", m)
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
		t.Fatalf("the container from JavaScript does not parse: %v", err)
	}
	if reply.SourceID != "js_e2e" || reply.TargetID != "go_tcp" || reply.MessageType != "reply" {
		t.Fatalf("header %+v", reply)
	}
	if v, err := reply.GetInt64("big"); err != nil || v != 9007199254740993 {
		t.Fatalf("big: %d, %v", v, err)
	}
	if v, err := reply.GetFloat32("f32"); err != nil || v != 0.1 {
		t.Fatalf("f32: %v, %v", v, err)
	}
	if v, err := reply.GetFloat64("f64"); err != nil || v != 0 || !math.Signbit(v) {
		t.Fatalf("f64: %v, %v", v, err)
	}
	if v, err := reply.GetString("raw"); err != nil || v != "\xffa" {
		t.Fatalf("raw: %q, %v", v, err)
	}
	if n := len(reply.Values); n != 6 {
		t.Fatalf("%d values", n)
	}

	// Drop the JavaScript client's session; it reconnects by itself.
	js, ok := srv.SessionByClientID("js_e2e")
	if !ok {
		t.Fatal("no session for js_e2e")
	}
	if info := js.Info(); info.Transport != "ws" || info.Mode != "binary" {
		t.Fatalf("session info %+v", info)
	}
	js.Disconnect("kick")
	if m := next("the JavaScript client after reconnecting"); string(m) != "back again" {
		t.Fatalf("got %q", m)
	}
	if err := tcp.SendString("bye js"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("node: %v\nstdout:\n%s\nstderr:\n%s", err, &stdout, &stderr)
		}
	case <-ctx.Done():
		t.Fatalf("node did not finish\nstdout:\n%s\nstderr:\n%s", &stdout, &stderr)
	}
	out := stdout.String()
	for _, want := range []string{"WELCOME ", "PING", "CONTAINER_FROM_GO", "CLOSED kick true", "RECONNECTED ", "BYE", "DONE"} {
		if !strings.Contains(out, want) {
			t.Errorf("node output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("node: %s", strings.ReplaceAll(strings.TrimSpace(out), "\n", "; "))
	transporttest.Await(t, "the JavaScript session to end", func() bool { return srv.ConnectionCount() == 1 })
}
