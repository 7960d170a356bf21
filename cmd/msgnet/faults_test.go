package main

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/msgnet/msgnet/internal/testenv"
)

// Fault tests run the real binary as separate processes, as an operator
// would, and break what lies between them: the network, the server.

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

// msgnetBinary builds the msgnet command once per test run.
func msgnetBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "msgnet-bin-")
		if binErr != nil {
			return
		}
		binPath = binDir + "/msgnet"
		out, err := exec.Command("go", "build", "-race", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// proc is a msgnet process: its stdout lines arrive on a channel, its
// stderr is kept for the failure message.
type proc struct {
	name   string
	cmd    *exec.Cmd
	lines  chan string
	stderr syncBuffer
	done   chan struct{}
	err    error
}

func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(msgnetBinary(t), args...), lines: make(chan string, 1<<16), done: make(chan struct{})}
	p.cmd.Stderr = &p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		io.Copy(io.Discard, out)
	}()
	go func() {
		<-read
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s stderr:\n%s", p.name, p.stderr.String())
		}
	})
	return p
}

// wait waits for the process to exit and returns its error.
func (p *proc) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		t.Fatalf("%s still running after %v; stderr:\n%s", p.name, d, p.stderr.String())
		return nil
	}
}

// stop interrupts the process and checks it exits 0.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(os.Interrupt)
	if err := p.wait(t, serveStopTimeout); err != nil {
		t.Errorf("%s: %v; stderr:\n%s", p.name, err, p.stderr.String())
	}
}

// waitStderr waits for the process to write want on stderr.
func (p *proc) waitStderr(t *testing.T, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(p.stderr.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not say %q within %v; stderr:\n%s", p.name, want, d, p.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// serveProc starts `msgnet serve` as a process on addr, and waits until it
// says it serves there: something else on the port (a port freeAddr gave
// out and another process took, such as an embedded NATS server's client
// port) is not mistaken for it.
func serveProc(t *testing.T, addr string, args ...string) *proc {
	t.Helper()
	p := startProc(t, "serve "+addr, append([]string{"serve", "--addr", addr}, args...)...)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if out := p.stderr.String(); strings.Contains(out, `msg="server started"`) && strings.Contains(out, "addr="+addr+" ") {
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("serve exited: %v\n%s", p.err, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not say it serves on %s\n%s", addr, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// expectSequence reads want numbered lines, prefix-1 ... prefix-n, from
// p, each exactly once and in order.
func expectSequence(t *testing.T, p *proc, prefix string, n int, d time.Duration) {
	t.Helper()
	timeout := time.After(d)
	for i := 1; i <= n; i++ {
		select {
		case line := <-p.lines:
			if want := fmt.Sprint(prefix, i); line != want {
				t.Fatalf("%s: line %d is %q, want %q", p.name, i, line, want)
			}
		case <-timeout:
			t.Fatalf("%s: %d of %d lines within %v", p.name, i-1, n, d)
		}
	}
}

// cutEvery cuts the proxy's connections at random intervals until stop
// is closed.
func cutEvery(p *testenv.CutProxy, min, max time.Duration, stop chan struct{}) chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		rng := rand.New(rand.NewPCG(7, 11))
		for {
			select {
			case <-stop:
				return
			case <-time.After(min + time.Duration(rng.Int64N(int64(max-min)))):
				p.Cut()
			}
		}
	}()
	return done
}

// `msgnet pub --reliable` and `msgnet sub --reliable`, separate processes,
// through a network that fails every few tens of milliseconds: the
// subscriber prints each of the 5,000 messages once, in order.
func TestPubSubProcessesAcrossCuts(t *testing.T) {
	addr := freeAddr(t)
	serve := serveProc(t, addr)
	proxy := testenv.NewCutProxy(t, addr)
	sub := startProc(t, "sub", "sub", "--addr", proxy.Addr(), "--group", "room", "--reliable", "--id", "sub-1")
	sub.waitStderr(t, `listening on group "room"`, 20*time.Second)

	stop := make(chan struct{})
	cutter := cutEvery(proxy, 10*time.Millisecond, 60*time.Millisecond, stop)
	const n = 5000
	pub := startProc(t, "pub", "pub", "--addr", proxy.Addr(), "--group", "room", "--reliable", "--id", "pub-1",
		"--count", fmt.Sprint(n), "--rate", "2000", "m-{n}")
	err := pub.wait(t, 90*time.Second)
	close(stop)
	<-cutter
	if err != nil {
		t.Fatalf("pub: %v\n%s", err, pub.stderr.String())
	}
	t.Logf("%d cuts while pub ran", proxy.Cuts())
	if proxy.Cuts() < 10 {
		t.Fatalf("only %d cuts: reconnection was not tested", proxy.Cuts())
	}
	expectSequence(t, sub, "m-", n, 60*time.Second)
	select {
	case extra := <-sub.lines:
		t.Fatalf("sub printed %q after the %d messages", extra, n)
	case <-time.After(200 * time.Millisecond):
	}
	if strings.Contains(sub.stderr.String(), "continuity lost") {
		t.Fatalf("sub lost continuity:\n%s", sub.stderr.String())
	}
	sub.stop(t)
	serve.stop(t)
}

// kill9 kills the process with SIGKILL: no shutdown, no flush, no goodbye.
func (p *proc) kill9(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not die of SIGKILL", p.name)
	}
}

// `msgnet serve --store DIR` is killed with SIGKILL twice while `msgnet
// pub --reliable` and `msgnet sub --reliable` run through a proxy that
// also cuts their connections, and is started again on the same port and
// directory each time: the subscriber prints each of the 5,000 messages
// once, in order. What the server acknowledged was on disk; what it had
// not, the publisher sent again, and JetStream recognised what it had
// stored but not yet acknowledged.
func TestPubSubAcrossServerKill9(t *testing.T) {
	addr := freeAddr(t)
	dir := t.TempDir()
	serve := serveProc(t, addr, "--store", dir)
	proxy := testenv.NewCutProxy(t, addr)
	sub := startProc(t, "sub", "sub", "--addr", proxy.Addr(), "--group", "room", "--reliable", "--id", "sub-1")
	sub.waitStderr(t, `listening on group "room"`, 20*time.Second)

	const n = 5000
	pub := startProc(t, "pub", "pub", "--addr", proxy.Addr(), "--group", "room", "--reliable", "--id", "pub-1",
		"--count", fmt.Sprint(n), "--rate", "1000", "m-{n}")
	stop := make(chan struct{})
	cutter := cutEvery(proxy, 50*time.Millisecond, 300*time.Millisecond, stop)
	read := 0 // lines read and checked
	for kill := range 2 {
		// Kill once messages flow: the subscriber has printed some.
		want := (kill + 1) * n / 4
		deadline := time.After(60 * time.Second)
		for ; read < want; read++ {
			select {
			case line := <-sub.lines:
				if exp := fmt.Sprint("m-", read+1); line != exp {
					t.Fatalf("line %d is %q, want %q", read+1, line, exp)
				}
			case <-deadline:
				t.Fatalf("the subscriber printed %d of %d lines before kill %d", read, want, kill+1)
			}
		}
		serve.kill9(t)
		t.Logf("serve killed with SIGKILL after %d messages reached the subscriber", want)
		serve = serveProc(t, addr, "--store", dir)
	}
	err := pub.wait(t, 120*time.Second)
	close(stop)
	<-cutter
	if err != nil {
		t.Fatalf("pub: %v\n%s", err, pub.stderr.String())
	}
	// The first half was checked while waiting for the kills.
	deadline := time.After(60 * time.Second)
	for i := read + 1; i <= n; i++ {
		select {
		case line := <-sub.lines:
			if want := fmt.Sprint("m-", i); line != want {
				t.Fatalf("line %d is %q, want %q", i, line, want)
			}
		case <-deadline:
			t.Fatalf("the subscriber printed %d of %d lines", i-1, n)
		}
	}
	select {
	case extra := <-sub.lines:
		t.Fatalf("sub printed %q after the %d messages", extra, n)
	case <-time.After(200 * time.Millisecond):
	}
	if strings.Contains(sub.stderr.String(), "continuity lost") {
		t.Fatalf("sub lost continuity:\n%s", sub.stderr.String())
	}
	sub.stop(t)
	serve.stop(t)
}

// A cluster of three `msgnet serve` processes, their streams replicated
// in JetStream (--store): the subscriber's node is killed with SIGKILL
// while 3,000 messages flow, and the subscriber, given the addresses of
// two nodes, resumes on the other: each message once, in order.
func TestPubSubClusterNodeKill9(t *testing.T) {
	// Every port chosen before any node starts, the NATS client ports too:
	// one the OS chose for a node's NATS could be another node's address.
	ports := freePorts(t, 9)
	addrs, listen, clients := ports[0:3], ports[3:6], ports[6:9]
	var routes []string
	for _, l := range listen {
		routes = append(routes, "nats-route://"+l)
	}
	var nodes []*proc
	for i := range 3 {
		nodes = append(nodes, serveProc(t, addrs[i], "--id", fmt.Sprint("n", i+1), "--cluster-client-listen", clients[i],
			"--cluster-listen", listen[i], "--cluster-routes", strings.Join(routes, ","),
			"--store", t.TempDir(), "--cluster-heartbeat", "200ms"))
	}
	sub := startProc(t, "sub", "sub", "--addr", addrs[1]+","+addrs[2], "--group", "room", "--reliable", "--id", "sub-1")
	sub.waitStderr(t, `listening on group "room"`, 60*time.Second)
	const n = 3000
	pub := startProc(t, "pub", "pub", "--addr", addrs[0]+","+addrs[2], "--group", "room", "--reliable", "--id", "pub-1",
		"--count", fmt.Sprint(n), "--rate", "1000", "m-{n}")
	expectSequence(t, sub, "m-", n/3, 60*time.Second)
	nodes[1].kill9(t)
	t.Logf("node n2, the subscriber's, killed with SIGKILL after %d messages", n/3)
	if err := pub.wait(t, 120*time.Second); err != nil {
		t.Fatalf("pub: %v\n%s", err, pub.stderr.String())
	}
	for i := n/3 + 1; i <= n; i++ {
		select {
		case line := <-sub.lines:
			if want := fmt.Sprint("m-", i); line != want {
				t.Fatalf("line %d is %q, want %q", i, line, want)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("the subscriber printed %d of %d lines", i-1, n)
		}
	}
	if strings.Contains(sub.stderr.String(), "continuity lost") {
		t.Fatalf("sub lost continuity:\n%s", sub.stderr.String())
	}
	sub.stop(t)
	nodes[0].stop(t)
	nodes[2].stop(t)
}
