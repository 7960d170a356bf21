package natsbus

import (
	"bytes"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/balance"
	"github.com/nats-io/nats.go"
)

func TestWireRoundTrip(t *testing.T) {
	for _, c := range []struct {
		kind           byte
		origin, target string
		body           []byte
	}{
		{kindBroadcast, "n", "", []byte("hi")},
		{kindGroup, "node-1", "room with spaces.and.dots", nil},
		{kindDirect, strings.Repeat("x", 255), strings.Repeat("t", 70000)[:65535], bytes.Repeat([]byte{0}, 1000)},
	} {
		b := appendMsg(nil, c.kind, c.origin, c.target, c.body)
		m, err := parseMsg(b)
		if err != nil {
			t.Fatal(err)
		}
		if m.kind != c.kind || m.origin != c.origin || m.target != c.target || !bytes.Equal(m.body, c.body) {
			t.Fatalf("round trip changed the message: %+v", m)
		}
	}
	// The documented example: broadcast "hi" from node "n".
	if got := appendMsg(nil, kindBroadcast, "n", "", []byte("hi")); !bytes.Equal(got, []byte{1, 1, 1, 'n', 0, 0, 'h', 'i'}) {
		t.Fatalf("encoding % x", got)
	}
	for _, bad := range [][]byte{nil, {1}, {2, 1, 1, 'n', 0, 0}, {1, 1, 0, 0, 0}, {1, 1, 1, 'n', 0}, {1, 1, 1, 'n', 0, 5, 'a'}} {
		if _, err := parseMsg(bad); err == nil {
			t.Fatalf("parsed % x", bad)
		}
	}
}

// Whatever arrives on the bus's subjects, parseMsg does not panic, and what
// it accepts encodes back to the same bytes.
func FuzzParseMsg(f *testing.F) {
	f.Add(appendMsg(nil, kindDirect, "node-1", "bob", []byte("hi")))
	f.Add([]byte{1, 1, 1, 'n', 0, 5, 'a'})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMsg(b)
		if err != nil {
			return
		}
		if again := appendMsg(nil, m.kind, m.origin, m.target, m.body); !bytes.Equal(again, b) {
			t.Fatalf("parsed % x as %+v, which encodes as % x", b, m, again)
		}
	})
}

func TestTokens(t *testing.T) {
	for in, want := range map[string]string{
		"lobby":   "lobby",
		"node-1_": "node-1_",
		"":        "~",
		"a.b":     "~YS5i",
		"*":       "~Kg",
		"a b>":    "~YSBiPg",
		"~x":      "~fng",
	} {
		if got := token(in); got != want {
			t.Errorf("token(%q) = %q, want %q", in, got, want)
		}
	}
	for id, want := range map[string]bool{"9f3a01c2-17": true, "9f3a01c2-": false, "9F3A01C2-1": false, "alice": false, "9f3a01c2x17": false} {
		if looksLikeSessionID(id) != want {
			t.Errorf("looksLikeSessionID(%q) != %v", id, want)
		}
	}
}

func TestNewChecksOptions(t *testing.T) {
	for _, opts := range [][]Option{
		nil,
		{WithURL("nats://127.0.0.1:1"), WithEmbedded(Embedded{})},
		{WithEmbedded(Embedded{}), WithPrefix("a..b")},
		{WithEmbedded(Embedded{}), WithPrefix("a.*")},
		{WithEmbedded(Embedded{}), WithHeartbeat(0)},
		{WithEmbedded(Embedded{Routes: []string{"nats-route://127.0.0.1:1"}})}, // routes without a cluster port
	} {
		if b, err := New(opts...); err == nil {
			b.Close()
			t.Fatalf("New accepted %d options", len(opts))
		}
	}
	if _, err := New(WithURL("nats://127.0.0.1:1")); err == nil {
		t.Fatal("New connected to nothing")
	}
}

func TestUnattachedAndClosed(t *testing.T) {
	b, err := New(WithEmbedded(Embedded{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(msgnet.ClusterMessage{Kind: msgnet.ClusterBroadcast}); !errors.Is(err, ErrNotAttached) {
		t.Fatalf("publish before attach: %v", err)
	}
	b.ClientUp("c", "s") // ignored
	b.GroupUp("g")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	srv := msgnet.NewServer("x", msgnet.WithBus(b))
	if err := srv.Start("127.0.0.1:0"); !errors.Is(err, ErrClosed) {
		t.Fatalf("serving with a closed bus: %v", err)
	}
}

func TestPrivateAndBroadcastAcrossTwoNodes(t *testing.T) {
	a := startNode(t, "a", with(embeddedRoutes())...)
	b := startNode(t, "b", with(embeddedRoutes(a))...)
	waitCluster(t, a, b)
	ca, ra := client(t, "alice", a.addr)
	cb, rb := client(t, "bob", b.addr)
	eventually(t, 5*time.Second, func() bool {
		n1, ok1 := a.bus.Lookup("bob")
		n2, ok2 := b.bus.Lookup("alice")
		return ok1 && ok2 && n1 == "b" && n2 == "a"
	}, "directory")
	send(t, ca, "B:hello")
	eventually(t, 5*time.Second, func() bool { return rb.has("hello") && ra.has("hello") }, "broadcast")
	send(t, cb, "P:alice:hi alice")
	send(t, cb, "P:"+ca.SessionID()+":hi session")
	send(t, ca, "P:nobody:x")
	eventually(t, 5*time.Second, func() bool {
		return ra.has("hi alice") && ra.has("hi session") && ra.has("ERR:"+msgnet.ErrNoSession.Error())
	}, "private messages; alice got %q", ra.all())
	if ra.count("hello") != 1 || rb.count("hello") != 1 {
		t.Fatalf("broadcast counts %d, %d", ra.count("hello"), rb.count("hello"))
	}
	// a sees b's published load.
	eventually(t, 5*time.Second, func() bool {
		for _, n := range a.bus.Nodes() {
			if !n.Self && n.Node == "b" && n.Addr == b.addr && n.Sessions == 1 && n.MsgsIn >= 2 {
				return true
			}
		}
		return false
	}, "b's load as seen by a: %+v", a.bus.Nodes())
	sa, sb := a.bus.Stats(), b.bus.Stats()
	if sa.Nodes != 2 || sa.Published["broadcast"] != 1 || sb.Received["broadcast"] != 1 ||
		sb.Published["direct"] != 2 || sa.Received["direct"] != 2 {
		t.Fatalf("stats a %+v, b %+v", sa, sb)
	}
}

// Text-mode sessions send no hello, so the directory does not know them:
// a direct message to such a session id goes to every node, and only the
// holder delivers it.
func TestDirectToSessionWithoutHello(t *testing.T) {
	a := startNode(t, "a", with(embeddedRoutes())...)
	b := startNode(t, "b", with(embeddedRoutes(a))...)
	waitCluster(t, a, b)
	got := make(chan string, 1)
	b.srv.OnConnect(func(s *msgnet.Session) { got <- s.ID() })
	nc := dialText(t, b.addr)
	sid := recv(t, 5*time.Second, got, "the text session's connect handler")
	ca, _ := client(t, "alice", a.addr)
	send(t, ca, "P:"+sid+":to a text session")
	if line := nc.line(t); line != "to a text session" {
		t.Fatalf("text session read %q", line)
	}
}

func TestNewestConnectionWins(t *testing.T) {
	a := startNode(t, "a", with(embeddedRoutes())...)
	b := startNode(t, "b", with(embeddedRoutes(a))...)
	waitCluster(t, a, b)
	old, rOld := client(t, "dup", a.addr)
	eventually(t, 5*time.Second, func() bool { n, ok := b.bus.Lookup("dup"); return ok && n == "a" }, "b learns dup")
	closed := make(chan error, 1)
	old.OnClosed(func(reason error) { closed <- reason })
	_, rNew := client(t, "dup", b.addr)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the older connection of dup was not disconnected")
	}
	if r := rOld.reasonsText(); len(r) != 1 || r[0] != msgnet.ErrKicked.Error() {
		t.Fatalf("older connection ended with %q, want %q", r, msgnet.ErrKicked)
	}
	eventually(t, 5*time.Second, func() bool { n, ok := a.bus.Lookup("dup"); return ok && n == "b" }, "a points dup to b")
	other, _ := client(t, "other", a.addr)
	send(t, other, "P:dup:to the newest")
	eventually(t, 5*time.Second, func() bool { return rNew.has("to the newest") }, "private to the newest")
	if _, ok := a.srv.SessionByClientID("dup"); ok {
		t.Fatal("node a still holds dup")
	}
}

// Two connections of one client id made at once on two nodes: both nodes
// apply the same order, so exactly one survives, and both directories
// name its node.
func TestSimultaneousDuplicatesConverge(t *testing.T) {
	a := startNode(t, "a", with(embeddedRoutes())...)
	b := startNode(t, "b", with(embeddedRoutes(a))...)
	waitCluster(t, a, b)
	for i := range 10 {
		id := "twin-" + strconv.Itoa(i)
		ca, _ := newClient(t, id)
		cb, _ := newClient(t, id)
		errs := make(chan error, 2)
		go func() { errs <- ca.Connect(t.Context(), a.addr) }()
		go func() { errs <- cb.Connect(t.Context(), b.addr) }()
		// One of them may be kicked before its Connect returns. Connect
		// gives up on its own after its connect timeout (5s).
		recv(t, 10*time.Second, errs, "the first Connect of "+id)
		recv(t, 10*time.Second, errs, "the second Connect of "+id)
		eventually(t, 5*time.Second, func() bool {
			_, onA := a.srv.SessionByClientID(id)
			_, onB := b.srv.SessionByClientID(id)
			if onA == onB { // both, or neither yet
				return false
			}
			want := map[bool]string{true: "a", false: "b"}[onA]
			na, okA := a.bus.Lookup(id)
			nb, okB := b.bus.Lookup(id)
			return okA && okB && na == want && nb == want && ca.IsConnected() == onA && cb.IsConnected() == onB
		}, "%s: no single winner", id)
	}
}

// A node that dies without a word is dropped after the TTL, with its
// directory entries.
func TestDeadNodeExpires(t *testing.T) {
	a := startNode(t, "a", embeddedRoutes(), WithHeartbeat(50*time.Millisecond))
	b := startNode(t, "b", embeddedRoutes(a), WithHeartbeat(50*time.Millisecond))
	waitCluster(t, a, b)
	client(t, "eve", b.addr)
	eventually(t, 5*time.Second, func() bool { _, ok := a.bus.Lookup("eve"); return ok }, "a learns eve")
	start := time.Now()
	b.bus.ns.Shutdown() // b's NATS dies: no goodbye, no more heartbeats
	eventually(t, 5*time.Second, func() bool { return a.bus.Stats().Nodes == 1 }, "b not expired")
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("b dropped after %v, before its TTL (150ms) could pass", d)
	}
	if _, ok := a.bus.Lookup("eve"); ok {
		t.Fatal("eve still in a's directory")
	}
	if err := a.srv.SendTo("eve", []byte("x")); !errors.Is(err, msgnet.ErrNoSession) {
		t.Fatalf("SendTo an expired entry: %v", err)
	}
	if len(a.bus.Nodes()) != 1 {
		t.Fatalf("nodes %+v", a.bus.Nodes())
	}
}

// A node that stops says goodbye: the others drop it at once.
func TestGracefulLeave(t *testing.T) {
	a := startNode(t, "a", embeddedRoutes(), WithHeartbeat(100*time.Millisecond), WithTTL(time.Hour))
	b := startNode(t, "b", embeddedRoutes(a), WithHeartbeat(100*time.Millisecond), WithTTL(time.Hour))
	waitCluster(t, a, b)
	client(t, "eve", b.addr)
	eventually(t, 5*time.Second, func() bool { _, ok := a.bus.Lookup("eve"); return ok }, "a learns eve")
	b.stop()
	eventually(t, 5*time.Second, func() bool { _, ok := a.bus.Lookup("eve"); return !ok && a.bus.Stats().Nodes == 1 }, "b not dropped")
}

// A node joining late learns the directory from the others, and a node
// restarted with the same id replaces its previous life's entries.
func TestDirectorySyncOnJoinAndRestart(t *testing.T) {
	a := startNode(t, "a", with(embeddedRoutes(), WithTTL(time.Hour))...) // b2 must be told apart by its instance, not by expiry
	client(t, "early", a.addr)
	b := startNode(t, "b", with(embeddedRoutes(a))...)
	client(t, "bert", b.addr)
	waitCluster(t, a, b)
	eventually(t, 5*time.Second, func() bool {
		n, ok := b.bus.Lookup("early")
		m, ok2 := a.bus.Lookup("bert")
		return ok && n == "a" && ok2 && m == "b"
	}, "late joiner's directory")

	// b restarts: a new bus instance under the same node id, within the TTL.
	b.bus.ns.Shutdown()
	b.srv.Close()
	b2 := startNode(t, "b", with(embeddedRoutes(a))...)
	client(t, "bianca", b2.addr)
	eventually(t, 5*time.Second, func() bool {
		_, bert := a.bus.Lookup("bert")
		n, ok := a.bus.Lookup("bianca")
		m, ok2 := b2.bus.Lookup("early")
		return !bert && ok && n == "b" && ok2 && m == "a"
	}, "restart: a should forget bert and learn bianca, b2 should learn early")
}

func TestGroupSubscriptionFollowsMembership(t *testing.T) {
	a := startNode(t, "a", with(embeddedRoutes())...)
	b := startNode(t, "b", with(embeddedRoutes(a))...)
	waitCluster(t, a, b)
	ca, _ := client(t, "alice", a.addr)
	cb, rb := client(t, "bob", b.addr)
	subj := "msgnet.g.~cm9vbSAx" // "room 1"
	send(t, cb, "J:room 1")
	eventually(t, 5*time.Second, func() bool { return rb.has("joined:room 1") }, "join")
	waitInterest(t, subj, 1, a, b)
	send(t, ca, "J:room 1")
	waitInterest(t, subj, 2, a, b)
	send(t, ca, "G:room 1:hi room")
	eventually(t, 5*time.Second, func() bool { return rb.has("hi room") }, "group message")
	// bob's session ends: b has no member left and unsubscribes.
	cb.Close()
	waitInterest(t, subj, 1, a, b)
	// Ups and downs reported out of order still balance.
	b.bus.GroupDown("x")
	b.bus.GroupUp("x")
	b.bus.mu.Lock()
	n := len(b.bus.groups)
	b.bus.mu.Unlock()
	if n != 0 {
		t.Fatalf("groups left subscribed: %d", n)
	}
}

func TestExternalNATSServer(t *testing.T) {
	url, kill := startExternalNATS(t)
	x1 := startNode(t, "x1", with(WithURL(url), WithPrefix("ext.msgnet"))...)
	x2 := startNode(t, "x2", with(WithURL(url), WithPrefix("ext.msgnet"))...)
	waitCluster(t, x1, x2)
	c1, r1 := client(t, "one", x1.addr)
	c2, r2 := client(t, "two", x2.addr)
	eventually(t, 5*time.Second, func() bool {
		_, ok1 := x1.bus.Lookup("two")
		_, ok2 := x2.bus.Lookup("one")
		return ok1 && ok2
	}, "directory")
	send(t, c1, "B:ext broadcast")
	send(t, c2, "P:one:ext private")
	send(t, c1, "J:g")
	send(t, c2, "J:g")
	eventually(t, 5*time.Second, func() bool { return r1.has("joined:g") && r2.has("joined:g") }, "joins")
	// One NATS server: once it has answered a flush, it has every
	// subscription sent before.
	for _, n := range []*testNode{x1, x2} {
		if err := n.bus.nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	send(t, c1, "G:g:ext group")
	eventually(t, 5*time.Second, func() bool {
		return r2.count("ext broadcast") == 1 && r1.count("ext private") == 1 && r2.count("ext group") == 1
	}, "two got %q, one got %q", r2.all(), r1.all())

	// A balancer outside the cluster follows the published loads and
	// sends new clients to the node with fewer sessions.
	w, err := WatchLoads(with(WithURL(url), WithPrefix("ext.msgnet"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := range 3 {
		client(t, "extra-"+strconv.Itoa(i), x1.addr)
	}
	eventually(t, 5*time.Second, func() bool {
		byAddr := map[string]int{}
		for _, l := range w.Loads() {
			byAddr[l.Addr] = l.Sessions
		}
		return len(byAddr) == 2 && byAddr[x1.addr] == 4 && byAddr[x2.addr] == 1
	}, "watched loads %+v", w.Nodes())
	pool, err := balance.New([]string{x1.addr, x2.addr}, balance.WithStrategy(balance.LeastLoaded), balance.WithLoadSource(w.Loads))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for range 3 { // x2 has 1 session and the pool's probe; x1 has 4 and a probe
		if a, err := pool.Pick(""); err != nil || a != x2.addr {
			t.Fatalf("least loaded picked %s (%v), want %s; loads %+v", a, err, x2.addr, w.Loads())
		}
	}

	// The NATS server dies; the nodes keep serving their own sessions and
	// say so in their stats.
	kill()
	eventually(t, 5*time.Second, func() bool { return x1.bus.nc.IsReconnecting() }, "x1 did not notice")
	send(t, c1, "B:local only")
	eventually(t, 5*time.Second, func() bool { return r1.has("local only") }, "local broadcast without NATS")
}

// What one node publishes (broadcast, group and direct messages mixed)
// reaches a session on another node in the order it was published.
func TestOrderFromOneNodeAcrossKinds(t *testing.T) {
	a := startNode(t, "a", with(embeddedRoutes())...)
	b := startNode(t, "b", with(embeddedRoutes(a))...)
	waitCluster(t, a, b)
	ca, ra := client(t, "alice", a.addr)
	cb, rb := client(t, "bob", b.addr)
	send(t, ca, "J:g")
	send(t, cb, "J:g")
	eventually(t, 5*time.Second, func() bool { return ra.has("joined:g") && rb.has("joined:g") }, "joins")
	waitInterest(t, "msgnet.g.g", 2, a, b)
	eventually(t, 5*time.Second, func() bool { _, ok := a.bus.Lookup("bob"); return ok }, "a learns bob")
	const n = 600
	for i := range n {
		switch i % 3 {
		case 0:
			send(t, ca, "P:bob:"+strconv.Itoa(i))
		case 1:
			send(t, ca, "B:"+strconv.Itoa(i))
		case 2:
			send(t, ca, "G:g:"+strconv.Itoa(i))
		}
	}
	eventually(t, 10*time.Second, func() bool { return rb.has(strconv.Itoa(n - 1)) }, "last message")
	var got []int
	for _, m := range rb.all() {
		if v, err := strconv.Atoi(m); err == nil {
			got = append(got, v)
		}
	}
	if len(got) != n {
		t.Fatalf("bob got %d messages, want %d", len(got), n)
	}
	for i, v := range got {
		if v != i {
			t.Fatalf("message %d is %d: order lost (%v...)", i, v, got[max(0, i-3):min(len(got), i+3)])
		}
	}
}

// The bus dials its embedded server's loopback client port, unless asked
// to stay in-process; either way messages cross. A store's connection is
// in-process.
func TestBusConnectsOverLoopbackUnlessInProcess(t *testing.T) {
	for _, inProcess := range []bool{false, true} {
		t.Run("in-process="+strconv.FormatBool(inProcess), func(t *testing.T) {
			a := startNode(t, "a", WithEmbedded(Embedded{ClusterListen: "127.0.0.1:0", InProcess: inProcess}))
			b := startNode(t, "b", WithEmbedded(Embedded{ClusterListen: "127.0.0.1:0", InProcess: inProcess,
				Routes: []string{"nats-route://" + a.bus.ClusterAddr()}}))
			waitCluster(t, a, b)
			if pipe := a.bus.nc.ConnectedAddr() == "pipe"; pipe != inProcess {
				t.Fatalf("the bus is connected to %q", a.bus.nc.ConnectedAddr())
			}
			// Over whichever connection, a private message crosses.
			ca, _ := client(t, "alice", a.addr)
			_, rb := client(t, "bob", b.addr)
			eventually(t, 5*time.Second, func() bool { _, ok := a.bus.Lookup("bob"); return ok }, "a learns bob")
			send(t, ca, "P:bob:hi")
			eventually(t, 5*time.Second, func() bool { return rb.has("hi") }, "bob gets the message")
			st, err := a.bus.Store(StoreOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if u := st.nc.ConnectedAddr(); u != "pipe" {
				t.Fatalf("the store's connection is on %q, want in-process", u)
			}
		})
	}
}

// A client port on every address is dialled on 127.0.0.1 (::1 may not
// exist); a client port the bus cannot dial leaves it in-process.
func TestBusClientPortWildcardAndFallback(t *testing.T) {
	n := startNode(t, "w", WithEmbedded(Embedded{ClusterListen: "127.0.0.1:0", ClientListen: "0.0.0.0:0"}))
	if got := n.bus.nc.ConnectedAddr(); !strings.HasPrefix(got, "127.0.0.1:") {
		t.Fatalf("with a wildcard client port the bus is connected to %q", got)
	}
	refuse := nats.SetCustomDialer(refusingDialer{})
	f := startNode(t, "f", WithEmbedded(Embedded{ClusterListen: "127.0.0.1:0"}), WithNATSOptions(refuse))
	if got := f.bus.nc.ConnectedAddr(); got != "pipe" {
		t.Fatalf("with its client port unreachable the bus is connected to %q, want in-process", got)
	}
}

type refusingDialer struct{}

func (refusingDialer) Dial(network, address string) (net.Conn, error) {
	return nil, errors.New("refused by the test")
}
