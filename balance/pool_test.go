package balance

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// servers starts n echo servers on loopback and returns them with their
// addresses; they stop when the test ends.
func servers(t *testing.T, n int) ([]*msgnet.Server, []string) {
	t.Helper()
	var srvs []*msgnet.Server
	var addrs []string
	for i := range n {
		srv := startServer(t, fmt.Sprintf("s%d", i), "127.0.0.1:0")
		srvs = append(srvs, srv)
		addrs = append(addrs, srv.Addr().String())
	}
	return srvs, addrs
}

func startServer(t *testing.T, id, addr string) *msgnet.Server {
	t.Helper()
	srv := msgnet.NewServer(id, msgnet.WithIdleTimeout(0))
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.Send(msg) })
	srv.OnRequest(func(s *msgnet.Session, req []byte) ([]byte, error) { return []byte(id), nil })
	if err := srv.Start(addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopServer(srv) })
	return srv
}

func stopServer(srv *msgnet.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
}

func newPool(t *testing.T, addrs []string, opts ...Option) *Pool {
	t.Helper()
	p, err := New(addrs, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func eventually(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recv receives from ch within a few seconds, or fails the test naming
// what it waited for: a bare receive would turn a lost message into the
// package's timeout, minutes later and without a clear message.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

func healthy(p *Pool, addr string) bool {
	for _, n := range p.Nodes() {
		if n.Addr == addr {
			return n.Healthy
		}
	}
	return false
}

// serverOf asks the server a client is connected to for its id.
func serverOf(t *testing.T, c *msgnet.Client) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	id, err := c.Request(ctx, []byte("who"))
	if err != nil {
		t.Fatal(err)
	}
	return string(id)
}

func TestNewChecksConfig(t *testing.T) {
	if _, err := New(nil); err == nil {
		t.Fatal("no addresses accepted")
	}
	if _, err := New([]string{"a:1", "a:1"}); err == nil {
		t.Fatal("duplicate address accepted")
	}
	if _, err := New([]string{"a:1"}, WithSize(0)); err == nil {
		t.Fatal("size 0 accepted")
	}
	if _, err := New([]string{"a:1"}, WithStrategy(Strategy(9))); err == nil {
		t.Fatal("unknown strategy accepted")
	}
}

func TestRoundRobin(t *testing.T) {
	_, addrs := servers(t, 3)
	p := newPool(t, addrs)
	counts := map[string]int{}
	for range 30 {
		a, err := p.Pick("")
		if err != nil {
			t.Fatal(err)
		}
		counts[a]++
	}
	for _, a := range addrs {
		if counts[a] != 10 {
			t.Fatalf("round robin: %v", counts)
		}
	}
}

func TestConsistentHashIsStableAndMovesOnlyTheDeadNodesKeys(t *testing.T) {
	srvs, addrs := servers(t, 3)
	p := newPool(t, addrs, WithStrategy(ConsistentHash), WithHealthCheck(50*time.Millisecond, time.Second))
	const keys = 3000
	before := make([]string, keys)
	counts := map[string]int{}
	for i := range keys {
		a, err := p.Pick(fmt.Sprintf("user-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if again, _ := p.Pick(fmt.Sprintf("user-%d", i)); again != a {
			t.Fatalf("key moved between two picks: %s, %s", a, again)
		}
		before[i] = a
		counts[a]++
	}
	for _, a := range addrs {
		if counts[a] < keys/5 || counts[a] > keys/2 {
			t.Fatalf("uneven spread over the ring: %v", counts)
		}
	}
	// The ring's order for a key starts with its node.
	if o := p.Order("user-7"); o[0] != before[7] || len(o) != 3 {
		t.Fatalf("Order(user-7) = %v, Pick = %s", o, before[7])
	}

	stopServer(srvs[1])
	eventually(t, 5*time.Second, func() bool { return !healthy(p, addrs[1]) }, "dead node still healthy")
	moved := 0
	for i := range keys {
		key := fmt.Sprintf("user-%d", i)
		a, err := p.Pick(key)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case before[i] == addrs[1]:
			// It goes to the next node on the ring: the second in its old order.
			if a == addrs[1] {
				t.Fatalf("%s still on the dead node", key)
			}
			moved++
		case a != before[i]:
			t.Fatalf("%s moved from live node %s to %s", key, before[i], a)
		}
	}
	if moved != counts[addrs[1]] {
		t.Fatalf("moved %d keys, the dead node had %d", moved, counts[addrs[1]])
	}
	// The dead node is last in every order.
	if o := p.Order("user-7"); o[2] != addrs[1] {
		t.Fatalf("dead node not last: %v", o)
	}
}

func TestConnectFailsOverAlongTheRing(t *testing.T) {
	srvs, addrs := servers(t, 3)
	p := newPool(t, addrs, WithStrategy(ConsistentHash), WithHealthCheck(50*time.Millisecond, time.Second))
	order := p.Order("alice")
	c := msgnet.NewClient("alice", msgnet.WithReconnect(10*time.Millisecond, 100*time.Millisecond, 0))
	defer c.Close()
	reconnected := make(chan struct{}, 1)
	c.OnReconnect(func() { reconnected <- struct{}{} })
	if err := p.Connect(context.Background(), c, "alice"); err != nil {
		t.Fatal(err)
	}
	first := slices.Index(addrs, order[0])
	if got := serverOf(t, c); got != fmt.Sprintf("s%d", first) {
		t.Fatalf("connected to %s, want s%d", got, first)
	}
	stopServer(srvs[first])
	select {
	case <-reconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("no failover")
	}
	if got, want := serverOf(t, c), fmt.Sprintf("s%d", slices.Index(addrs, order[1])); got != want {
		t.Fatalf("failed over to %s, want the next node on the ring %s", got, want)
	}
	// The pool agrees: alice's key now picks that node.
	eventually(t, 5*time.Second, func() bool { a, _ := p.Pick("alice"); return a == order[1] }, "pool still picks the dead node")
}

// slowDialer delays every write on connections to slow by d.
func slowDialer(slow string, d time.Duration) func(ctx context.Context, addr string) (net.Conn, error) {
	var dialer net.Dialer
	return func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, "tcp", addr)
		if err != nil || addr != slow {
			return c, err
		}
		return slowConn{c, d}, nil
	}
}

type slowConn struct {
	net.Conn
	d time.Duration
}

func (s slowConn) Write(b []byte) (int, error) {
	time.Sleep(s.d)
	return s.Conn.Write(b)
}

func TestLeastLoadedByRTT(t *testing.T) {
	_, addrs := servers(t, 3)
	p := newPool(t, addrs, WithStrategy(LeastLoaded), WithDialer(slowDialer(addrs[0], 30*time.Millisecond)),
		WithHealthCheck(50*time.Millisecond, time.Second))
	for range 20 {
		a, err := p.Pick("")
		if err != nil {
			t.Fatal(err)
		}
		if a == addrs[0] {
			t.Fatalf("picked the slow node; nodes: %+v", p.Nodes())
		}
	}
	if o := p.Order(""); o[2] != addrs[0] {
		t.Fatalf("slow node not last in %v", o)
	}
}

func TestLeastLoadedByPublishedLoad(t *testing.T) {
	_, addrs := servers(t, 4)
	var mu sync.Mutex
	loads := []msgnet.NodeLoad{
		{Node: "s0", Addr: addrs[0], Sessions: 10},
		{Node: "s1", Addr: addrs[1], Sessions: 0},
		{Node: "s2", Addr: addrs[2], Sessions: 5},
		// s3 publishes nothing: it ranks after the nodes that do.
	}
	src := func() []msgnet.NodeLoad { mu.Lock(); defer mu.Unlock(); return slices.Clone(loads) }
	p := newPool(t, addrs, WithStrategy(LeastLoaded), WithLoadSource(src))
	var picks []string
	for range 15 {
		a, err := p.Pick("")
		if err != nil {
			t.Fatal(err)
		}
		picks = append(picks, a)
	}
	for i, a := range picks {
		switch {
		case i < 5 && a != addrs[1]:
			t.Fatalf("pick %d: %s, want the idlest %s (picks %v)", i, a, addrs[1], picks)
		case i >= 5 && a != addrs[1] && a != addrs[2]:
			t.Fatalf("pick %d: %s, want s1 or s2 (picks %v)", i, a, picks)
		}
	}
	// A new load sample replaces the pool's own count.
	mu.Lock()
	loads[0].Sessions = 0
	loads[1].Sessions = 50
	loads[2].Sessions = 50
	mu.Unlock()
	if a, _ := p.Pick(""); a != addrs[0] {
		t.Fatalf("after new loads picked %s, want %s", a, addrs[0])
	}
}

func TestAcquireRelease(t *testing.T) {
	srvs, addrs := servers(t, 1)
	p := newPool(t, addrs, WithSize(2))
	ctx := context.Background()
	c1, rel1, err := p.Acquire(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	c2, rel2, err := p.Acquire(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if c1 == c2 {
		t.Fatal("one client acquired twice")
	}
	if srvs[0].ConnectionCount() != 3 { // two acquired and the probe
		t.Fatalf("server has %d sessions, want 3", srvs[0].ConnectionCount())
	}
	// The pool is full: a third waits, here until its context ends.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, _, err = p.Acquire(short, "")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third acquire: %v, want deadline exceeded", err)
	}
	// A waiting Acquire gets the client released.
	got := make(chan *msgnet.Client, 1)
	go func() {
		c, rel, err := p.Acquire(ctx, "")
		if err != nil {
			t.Error(err)
			close(got)
			return
		}
		got <- c
		rel()
		close(got)
	}()
	msgs := make(chan string, 1)
	c1.OnMessage(func(m []byte) { msgs <- string(m) })
	if err := c1.SendString("ping"); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, msgs, "the echo of ping"); m != "ping" {
		t.Fatalf("echo %q", m)
	}
	rel1()
	rel1() // twice is harmless
	if c := recv(t, got, "the waiting Acquire's client"); c != c1 {
		t.Fatal("the waiting Acquire did not get the released client")
	}
	recv(t, got, "the waiting Acquire to give its client back")
	rel2()
	// Released clients lost the borrower's handlers.
	c, rel, err := p.Acquire(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer rel()
	if c != c1 {
		t.Fatal("the first idle client was not reused")
	}
	if err := c.SendString("late"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Ping(ctx); err != nil { // the echo arrived before the pong
		t.Fatal(err)
	}
	select {
	case m := <-msgs:
		t.Fatalf("a released client's old handler got %q", m)
	default:
	}
	if n := p.Nodes()[0]; n.Clients != 2 || n.InUse != 1 {
		t.Fatalf("status %+v", n)
	}
}

func TestAcquireSpreadsAndFailsOver(t *testing.T) {
	srvs, addrs := servers(t, 3)
	p := newPool(t, addrs, WithSize(2), WithHealthCheck(50*time.Millisecond, time.Second),
		WithClientOptions(msgnet.WithReconnect(10*time.Millisecond, 50*time.Millisecond, 0)))
	ctx := context.Background()
	var rels []func()
	for range 6 {
		_, rel, err := p.Acquire(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		rels = append(rels, rel)
	}
	for i, srv := range srvs {
		if n := srv.ConnectionCount(); n != 3 { // two acquired and the probe
			t.Fatalf("server %d has %d sessions, want 3", i, n)
		}
	}
	for _, rel := range rels {
		rel()
	}
	stopServer(srvs[2])
	eventually(t, 5*time.Second, func() bool { return !healthy(p, addrs[2]) }, "dead node still healthy")
	// The dead node's clients reconnect to the others by themselves, and
	// new acquires go to live nodes only.
	eventually(t, 5*time.Second, func() bool {
		st := p.Nodes()
		return st[0].Clients+st[1].Clients == 6 && st[2].Clients == 0
	}, "clients did not fail over")
	for range 4 {
		c, rel, err := p.Acquire(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		defer rel()
	}
}

func TestGetAndNoNode(t *testing.T) {
	srvs, addrs := servers(t, 2)
	p := newPool(t, addrs, WithStrategy(ConsistentHash), WithHealthCheck(20*time.Millisecond, time.Second))
	c, err := p.Get("k")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := p.Pick("k")
	if got := serverOf(t, c); fmt.Sprintf("s%d", slices.Index(addrs, want)) != got {
		t.Fatalf("Get gave a client of %s, want %s", got, want)
	}
	stopServer(srvs[0])
	stopServer(srvs[1])
	eventually(t, 5*time.Second, func() bool { _, err := p.Get("k"); return errors.Is(err, ErrNoNode) }, "Get with every node down")
	if _, _, err := p.Acquire(context.Background(), "k"); !errors.Is(err, ErrNoNode) {
		t.Fatalf("Acquire with every node down: %v", err)
	}
	// A node that comes back is found by the health check.
	startServer(t, "s0", addrs[0])
	eventually(t, 5*time.Second, func() bool { return healthy(p, addrs[0]) }, "restarted node not healthy")
	if a, err := p.Pick("k"); err != nil || a != addrs[0] {
		t.Fatalf("Pick after restart: %s, %v", a, err)
	}
}

func TestCloseEndsEverything(t *testing.T) {
	srvs, addrs := servers(t, 2)
	p := newPool(t, addrs)
	c, _, err := p.Acquire(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if c.State() != msgnet.StateClosed {
		t.Fatal("acquired client still open after Close")
	}
	if _, _, err := p.Acquire(context.Background(), ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("Acquire after Close: %v", err)
	}
	if _, err := p.Get(""); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
	eventually(t, 5*time.Second, func() bool { return srvs[0].ConnectionCount()+srvs[1].ConnectionCount() == 0 }, "sessions left after Close")
}
