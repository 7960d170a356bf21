package natsbus

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/goleak"
)

// natsServerEnv makes the test binary run a NATS server instead of the
// tests: the external-server tests start it as a separate process.
const natsServerEnv = "NATSBUS_TEST_NATS_SERVER"

func TestMain(m *testing.M) {
	if os.Getenv(natsServerEnv) != "" {
		os.Exit(runNATSServer())
	}
	goleak.VerifyTestMain(m)
}

// runNATSServer serves NATS on a loopback port chosen by the OS, prints
// its URL, and stops when stdin closes.
func runNATSServer() int {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		fmt.Fprintln(os.Stderr, "nats server not ready")
		return 1
	}
	fmt.Println(ns.ClientURL())
	io.Copy(io.Discard, os.Stdin)
	ns.Shutdown()
	ns.WaitForShutdown()
	return 0
}

// startExternalNATS runs a NATS server in a child process and returns its
// URL; the process stops when the test ends.
func startExternalNATS(t *testing.T) (url string, kill func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), natsServerEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	kill = func() {
		once.Do(func() {
			stdin.Close()
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-done // a killed process ends, and Wait copies no pipe (stdout is ours, stderr a file)
			}
		})
	}
	t.Cleanup(kill)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("external nats-server: %v", err)
	}
	return strings.TrimSpace(line), kill
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, d time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: "+format, append([]any{d}, args...)...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recv receives from ch within d, or fails the test naming what it waited
// for: a bare receive would turn a lost message into the package's
// timeout, minutes later and without a clear message.
func recv[T any](t testing.TB, d time.Duration, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
		var zero T
		return zero
	}
}

// testNode is a msgnet server with a NATS bus, speaking a small command
// language on its sessions:
//
//	B:<text>           broadcast text
//	P:<id>:<text>      text to a session or client id; "ERR:<error>" back on failure
//	J:<group>          join; "joined:<group>" back
//	G:<group>:<text>   text to the group's other members
type testNode struct {
	id    string
	srv   *msgnet.Server
	bus   *Bus
	store *Store // startStoreCluster's
	addr  string
}

func startNode(t testing.TB, id string, opts ...Option) *testNode {
	t.Helper()
	bus, err := New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	srv := msgnet.NewServer(id, msgnet.WithBus(bus), msgnet.WithMaxConnections(0), msgnet.WithIdleTimeout(0))
	commands(srv)
	if err := srv.Start("127.0.0.1:0"); err != nil {
		bus.Close()
		t.Fatal(err)
	}
	n := &testNode{id: id, srv: srv, bus: bus, addr: srv.Addr().String()}
	t.Cleanup(n.stop)
	return n
}

// startPlain is a node without a bus: the single-server path.
func startPlain(t testing.TB, id string) *testNode {
	t.Helper()
	srv := msgnet.NewServer(id, msgnet.WithMaxConnections(0), msgnet.WithIdleTimeout(0))
	commands(srv)
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	n := &testNode{id: id, srv: srv, addr: srv.Addr().String()}
	t.Cleanup(n.stop)
	return n
}

// commands installs the command language described at testNode. It cuts
// msg without copying it (the benchmarks count the handler's cost as
// msgnet's): sends copy what they queue.
func commands(srv *msgnet.Server) {
	srv.OnMessage(func(s *msgnet.Session, msg []byte) {
		cmd, rest, _ := bytes.Cut(msg, []byte(":"))
		if len(cmd) != 1 {
			return
		}
		switch cmd[0] {
		case 'B':
			srv.Broadcast(rest)
		case 'P':
			target, text, _ := bytes.Cut(rest, []byte(":"))
			if err := srv.SendTo(string(target), text); err != nil {
				s.SendString("ERR:" + err.Error())
			}
		case 'J':
			if err := srv.Join(s, string(rest)); err == nil {
				s.SendString("joined:" + string(rest))
			}
		case 'G':
			group, text, _ := bytes.Cut(rest, []byte(":"))
			srv.SendGroup(string(group), text, s)
		}
	})
}

func (n *testNode) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n.srv.Shutdown(ctx)
}

// fast is the heartbeat of most tests: 100ms, with a TTL of 1s so that a
// busy test machine does not expire a live node.
var fast = []Option{WithHeartbeat(100 * time.Millisecond), WithTTL(time.Second)}

// with appends options to fast.
func with(opts ...Option) []Option { return append(append([]Option(nil), fast...), opts...) }

// embeddedRoutes is the option for a node with an embedded NATS server on
// loopback, routed to the given nodes.
func embeddedRoutes(to ...*testNode) Option {
	var routes []string
	for _, n := range to {
		routes = append(routes, "nats-route://"+n.bus.ClusterAddr())
	}
	return WithEmbedded(Embedded{ClusterListen: "127.0.0.1:0", Routes: routes})
}

// waitCluster waits until every node hears every other.
func waitCluster(t testing.TB, nodes ...*testNode) {
	t.Helper()
	eventually(t, 20*time.Second, func() bool {
		for _, n := range nodes {
			if n.bus.Stats().Nodes != len(nodes) {
				return false
			}
		}
		return true
	}, "cluster of %d did not form", len(nodes))
}

// waitInterest waits until every node's NATS server routes subject to
// want subscribers (its own and its routes'): a group joined on a node
// gets cluster messages only once its subscription has spread.
func waitInterest(t testing.TB, subject string, want int, nodes ...*testNode) {
	t.Helper()
	eventually(t, 10*time.Second, func() bool {
		for _, n := range nodes {
			if n.bus.ns == nil || n.bus.ns.GlobalAccount().Interest(subject) != want {
				return false
			}
		}
		return true
	}, "interest in %s did not reach %d", subject, want)
}

// recorder keeps what a client received.
type recorder struct {
	mu      sync.Mutex
	msgs    []string
	reasons []error
}

func (r *recorder) add(msg []byte) {
	r.mu.Lock()
	r.msgs = append(r.msgs, string(msg))
	r.mu.Unlock()
}

func (r *recorder) count(msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

func (r *recorder) has(msg string) bool { return r.count(msg) > 0 }

func (r *recorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

func (r *recorder) disconnected(reason error) {
	r.mu.Lock()
	r.reasons = append(r.reasons, reason)
	r.mu.Unlock()
}

func (r *recorder) reasonsText() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.reasons {
		out = append(out, e.Error())
	}
	return out
}

// client connects a recording client to addr.
func client(t testing.TB, id, addr string, opts ...msgnet.Option) (*msgnet.Client, *recorder) {
	t.Helper()
	c, r := newClient(t, id, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Connect(ctx, addr); err != nil {
		t.Fatal(err)
	}
	return c, r
}

func newClient(t testing.TB, id string, opts ...msgnet.Option) (*msgnet.Client, *recorder) {
	r := &recorder{}
	c := msgnet.NewClient(id, opts...)
	c.OnMessage(r.add)
	c.OnDisconnect(r.disconnected)
	t.Cleanup(func() { c.Close() })
	return c, r
}

func send(t testing.TB, c *msgnet.Client, msg string) {
	t.Helper()
	if err := c.SendString(msg); err != nil {
		t.Fatalf("%s: send %q: %v", c.ID(), msg, err)
	}
}

// textConn is a text-mode connection (no hello).
type textConn struct {
	nc net.Conn
	r  *bufio.Reader
}

func dialText(t testing.TB, addr string) *textConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if _, err := nc.Write([]byte("hi\n")); err != nil { // the first line fixes text mode
		t.Fatal(err)
	}
	return &textConn{nc: nc, r: bufio.NewReader(nc)}
}

func (c *textConn) line(t testing.TB) string {
	t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	l, err := c.r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(l, "\n")
}
