package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/internal/testenv"
	"github.com/msgnet/msgnet/tlsconfig"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer = testenv.Buffer

// serveStopTimeout bounds how long a test waits for serve to return once
// its context ends: the default --drain-timeout (5s), a second more for
// the shutdown, and the monitor's, with room for a loaded machine.
const serveStopTimeout = 20 * time.Second

// startServe runs `msgnet serve` in-process on a free port until the test
// ends.
func startServe(t *testing.T, args ...string) string {
	t.Helper()
	// A port the OS gave out and took back can be taken again before the
	// server binds it (an outgoing connection's local port, in a busy
	// CI): then the server is started again on another.
	for attempt := 1; ; attempt++ {
		addr, logs, ok := tryServe(t, args)
		if ok {
			return addr
		}
		if !strings.Contains(logs, "address already in use") || attempt == 5 {
			t.Fatalf("server did not start on %s:\n%s", addr, logs)
		}
		t.Logf("%s was taken before the server bound it; again on another port", addr)
	}
}

// tryServe runs `msgnet serve --addr ADDR args...` on a free port until
// the test ends, and waits until it accepts connections; ok false: it
// exited first, or did not listen within 5 s.
func tryServe(t *testing.T, args []string) (addr, logs string, ok bool) {
	t.Helper()
	addr = freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan int, 1) // room for the result if the cleanup gave up waiting
	go func() { done <- run(ctx, append([]string{"serve", "--addr", addr}, args...), nil, &out, &out) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		select {
		case code := <-done:
			cancel()
			return addr, fmt.Sprintf("serve exited %d; logs:\n%s", code, out.String()), false
		default:
		}
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			return addr, fmt.Sprintf("not listening after 5 s: %v; logs:\n%s", err, out.String()), false
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("serve exited %d; logs:\n%s", code, out.String())
			}
		case <-time.After(serveStopTimeout):
			t.Errorf("serve did not return within %v of its context ending; logs:\n%s", serveStopTimeout, out.String())
		}
	})
	return addr, "", true
}

// The README's promise: nc is a working client of `msgnet serve`.
func TestNetcatGetsEcho(t *testing.T) {
	nc := testenv.Tool(t, "nc")
	addr := startServe(t)
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(nc, "-q1", host, port)
	cmd.Stdin = strings.NewReader("hello\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nc: %v\n%s", err, out)
	}
	if string(out) != "Echo: hello\n" {
		t.Fatalf("nc printed %q, want %q", out, "Echo: hello\n")
	}
}

func TestSendAndManagedMode(t *testing.T) {
	addr := startServe(t)
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"send", "--addr", addr, "--id", "alice", "hi", "BROADCAST"}, nil, &out, &errOut)
	if code != 0 {
		t.Fatalf("send exited %d: %s", code, errOut.String())
	}
	if got := out.String(); got != "Echo: hi\nBroadcast from alice\n" {
		t.Fatalf("send printed %q", got)
	}
	out.Reset()
	code = run(context.Background(), []string{"send", "--addr", addr, "PRIVATE:nobody:x"}, nil, &out, &errOut)
	if code != 0 || out.String() != "ERROR: Session nobody not found\n" {
		t.Fatalf("private to nobody: %d %q", code, out.String())
	}
}

func TestEchoMode(t *testing.T) {
	addr := startServe(t, "--mode", "echo")
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"send", "--addr", addr, "same bytes"}, nil, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if out.String() != "same bytes\n" {
		t.Fatalf("got %q", out.String())
	}
}

func TestChat(t *testing.T) {
	addr := startServe(t)
	var out, errOut syncBuffer
	code := run(context.Background(), []string{"chat", "--addr", addr}, strings.NewReader("one\ntwo\n"), &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if got := out.String(); got != "Echo: one\nEcho: two\n" {
		t.Fatalf("chat printed %q", got)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int{"1MiB": 1 << 20, "64KiB": 64 << 10, "1000": 1000, "2 kb": 2000} {
		if got, err := parseSize(in); got != want || err != nil {
			t.Errorf("parseSize(%q) = %d, %v", in, got, err)
		}
	}
	if _, err := parseSize("lots"); err == nil {
		t.Error("parseSize accepted junk")
	}
}

func TestUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), nil, nil, &out, &errOut); code != 2 {
		t.Fatalf("no args: exit %d", code)
	}
	if code := run(context.Background(), []string{"bogus"}, nil, &out, &errOut); code != 2 {
		t.Fatalf("unknown command: exit %d", code)
	}
}

// managedClient connects to a managed server and collects what arrives.
func managedClient(t *testing.T, addr, id string) (*msgnet.Client, chan string) {
	t.Helper()
	got := make(chan string, 16)
	c := msgnet.NewClient(id)
	c.OnMessage(func(m []byte) { got <- string(m) })
	if err := c.Connect(context.Background(), addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, got
}

func expectMsg(t *testing.T, got chan string, want string) {
	t.Helper()
	select {
	case m := <-got:
		if m != want {
			t.Fatalf("got %q, want %q", m, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("nothing arrived, want %q", want)
	}
}

// privateCrosses sends PRIVATE:<to>:... from c until it arrives: until the
// server has claimed the target's client id (it queues a client's welcome
// first, handshake_server.go, so Connect can return a moment before), or
// in a cluster until the sender's node has heard of it, the answer is
// that it is not found.
func privateCrosses(t *testing.T, c *msgnet.Client, own chan string, to string, got chan string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for try := 0; time.Now().Before(deadline); try++ {
		text := "hello #" + strconv.Itoa(try)
		if err := c.SendString("PRIVATE:" + to + ":" + text); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if want := "Private from " + c.ID() + ": " + text; m != want {
				t.Fatalf("%s got %q, want %q", to, m, want)
			}
			return
		case m := <-own:
			if m != "ERROR: Session "+to+" not found" {
				t.Fatalf("%s got %q", c.ID(), m)
			}
			time.Sleep(20 * time.Millisecond)
		case <-time.After(5 * time.Second):
			t.Fatal("neither the message nor an error arrived")
		}
	}
	t.Fatalf("the private message from %s never reached %s on the other node", c.ID(), to)
}

func TestManagedGroupsAndPrivate(t *testing.T) {
	addr := startServe(t)
	alice, ag := managedClient(t, addr, "alice")
	bob, bg := managedClient(t, addr, "bob")
	_, cg := managedClient(t, addr, "carol")

	alice.SendString("JOIN:lobby")
	expectMsg(t, ag, "Joined lobby")
	bob.SendString("JOIN:lobby")
	expectMsg(t, bg, "Joined lobby")
	alice.SendString("GROUP:lobby:hi all")
	expectMsg(t, bg, "[lobby] alice: hi all")
	bob.SendString("PRIVATE:carol:psst")
	expectMsg(t, cg, "Private from bob: psst")
	bob.SendString("GROUP:elsewhere:x")
	expectMsg(t, bg, "ERROR: not a member of elsewhere")
	bob.SendString("LEAVE:lobby")
	expectMsg(t, bg, "Left lobby")
	alice.SendString("GROUP:lobby:anyone?")
	alice.SendString("BROADCAST")
	// Bob left the lobby: the next thing he gets is the broadcast.
	expectMsg(t, bg, "Broadcast from alice")
	expectMsg(t, cg, "Broadcast from alice")
	expectMsg(t, ag, "Broadcast from alice")
}

// TLS with mutual authentication and an auth key, end to end through the
// command's flags.
func TestServeTLSAndAuthFlags(t *testing.T) {
	dir := t.TempDir()
	files, err := tlsconfig.WriteTestFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := dir + "/auth.key"
	os.WriteFile(keyFile, []byte("correct horse battery staple\n"), 0o600)
	addr := startServe(t, "--tls-cert", files.ServerCert, "--tls-key", files.ServerKey,
		"--tls-client-ca", files.CA, "--auth-key-file", keyFile)
	var out, errOut bytes.Buffer
	args := []string{"send", "--addr", addr, "--tls-ca", files.CA, "--tls-cert", files.ClientCert,
		"--tls-key", files.ClientKey, "--auth-key-file", keyFile, "secure hello"}
	if code := run(context.Background(), args, nil, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if out.String() != "Echo: secure hello\n" {
		t.Fatalf("got %q", out.String())
	}
	// Without the client certificate the connection is refused.
	errOut.Reset()
	args = []string{"send", "--addr", addr, "--tls-ca", files.CA, "--auth-key-file", keyFile, "--timeout", "2s", "x"}
	if code := run(context.Background(), args, nil, &out, &errOut); code == 0 {
		t.Fatal("a client without a certificate got through mutual TLS")
	}
}

// --engine chooses how sessions wait and where handlers run; every
// built-in mode works on each.
func TestEngineFlag(t *testing.T) {
	for _, c := range []struct{ mode, engine, send, want string }{
		{"echo", "parked", "same bytes", "same bytes\n"},
		{"echo", "goroutine", "one each", "one each\n"},
		{"managed", "loop", "hi", "Echo: hi\n"},
		{"echo", "loop-blocking", "blocking", "blocking\n"},
		{"managed", "auto", "auto", "Echo: auto\n"},
	} {
		addr := startServe(t, "--mode", c.mode, "--engine", c.engine)
		var out, errOut bytes.Buffer
		if code := run(context.Background(), []string{"send", "--addr", addr, c.send}, nil, &out, &errOut); code != 0 {
			t.Fatalf("%s/%s: exit %d: %s", c.mode, c.engine, code, errOut.String())
		}
		if out.String() != c.want {
			t.Fatalf("%s/%s: got %q, want %q", c.mode, c.engine, out.String(), c.want)
		}
	}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"serve", "--engine", "threads"}, nil, &out, &errOut); code != 2 {
		t.Fatalf("--engine threads: exit %d, want 2", code)
	}
	if !strings.Contains(errOut.String(), `unknown --engine "threads"`) {
		t.Fatalf("stderr: %q", errOut.String())
	}
}

// Echo mode runs on the event loops: nc's lines come back, the last one
// too, though it has no newline and arrives with the end of the stream.
func TestNetcatEchoModeLastLine(t *testing.T) {
	nc := testenv.Tool(t, "nc")
	addr := startServe(t, "--mode", "echo")
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(nc, "-q1", host, port)
	cmd.Stdin = strings.NewReader("hello\nworld")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nc: %v\n%s", err, out)
	}
	if string(out) != "hello\nworld\n" {
		t.Fatalf("nc printed %q, want %q", out, "hello\nworld\n")
	}
}
