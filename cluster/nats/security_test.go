package natsbus

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgnet/msgnet/tlsconfig"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// logBuffer keeps a node's log, which carries its NATS server's errors.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lines counts the lines that contain every one of subs.
func (l *logBuffer) lines(subs ...string) int {
	n := 0
	for line := range strings.Lines(l.String()) {
		if !slices.ContainsFunc(subs, func(s string) bool { return !strings.Contains(line, s) }) {
			n++
		}
	}
	return n
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// secured is the option for a node whose embedded server, secured as e
// says, listens for routes on loopback and is routed to the given nodes.
func secured(e Embedded, to ...*testNode) Option {
	e.ClusterListen = "127.0.0.1:0"
	for _, n := range to {
		e.Routes = append(e.Routes, "nats-route://"+n.bus.ClusterAddr())
	}
	return WithEmbedded(e)
}

// routePeers lists the servers ns has routes to, by name.
func routePeers(t testing.TB, ns *server.Server) []string {
	t.Helper()
	rz, err := ns.Routez(nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range rz.Routes {
		if !slices.Contains(names, r.RemoteName) {
			names = append(names, r.RemoteName)
		}
	}
	slices.Sort(names)
	return names
}

// startIntruder starts a NATS server that is no node of the cluster and
// tries to route to the given URL.
func startIntruder(t testing.TB, name, route string, tlsCfg *tls.Config) *server.Server {
	t.Helper()
	u, err := url.Parse(route)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: name, Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
		Cluster: server.ClusterOpts{Name: "msgnet", Host: "127.0.0.1", Port: server.RANDOM_PORT, TLSConfig: tlsCfg},
		Routes:  []*url.URL{u},
	})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("intruder's server did not start")
	}
	return ns
}

// natsConn connects a NATS client until the test ends.
func natsConn(t testing.TB, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// forged is a broadcast as a node named "intruder" would publish it.
var forged = appendMsg(nil, kindBroadcast, "intruder", "", []byte("forged broadcast"))

// intrude publishes forged broadcasts through the intruders' servers
// until refused says that n's server (logging to log) turned them away.
// All along n must have routes to exactly the want servers, and the
// session recorded by r no forged broadcast. (An intruder itself may count
// a route for a moment: node n greets a route with its INFO before it reads
// the CONNECT it refuses.) Last, the same bytes published on a member
// node's client port do reach r: through a route the forgery would have
// worked.
func intrude(t *testing.T, n *testNode, log *logBuffer, member *testNode, r *recorder, want []string, intruders []*server.Server, refused func() bool) {
	t.Helper()
	var pubs []*nats.Conn
	for _, ns := range intruders {
		pubs = append(pubs, natsConn(t, ns.ClientURL()))
	}
	checkRoutes := func() {
		t.Helper()
		if got := routePeers(t, n.bus.ns); !slices.Equal(got, want) {
			t.Fatalf("%s has routes to %v, want %v", n.id, got, want)
		}
	}
	eventually(t, 10*time.Second, func() bool {
		checkRoutes()
		for _, nc := range pubs {
			nc.Publish("msgnet.b", forged)
		}
		return refused()
	}, "the node did not refuse the intruders; its log:\n%s", log)
	for _, nc := range pubs {
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	checkRoutes()
	if r.has("forged broadcast") {
		t.Fatal("an intruder's broadcast reached a session")
	}
	nc := natsConn(t, member.bus.ClientURL())
	if err := nc.Publish("msgnet.b", forged); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() bool { return r.has("forged broadcast") },
		"the control broadcast through %s's client port did not arrive", member.id)
	if c := r.count("forged broadcast"); c != 1 {
		t.Fatalf("the session got %d forged broadcasts, want only the control", c)
	}
}

// Nodes with route credentials form a cluster, including the route NATS
// learns by gossip (node-2 to node-3); servers without the credentials,
// or with a wrong password, never become routes and what they publish
// never reaches a session; a raw CONNECT without them is refused.
func TestRouteCredentials(t *testing.T) {
	creds := func(name string) Embedded {
		return Embedded{ServerName: name, RouteUser: "msgnet", RoutePassword: "route secret"}
	}
	var log1 logBuffer
	n1 := startNode(t, "node-1", with(secured(creds("node-1")), WithLogger(log1.logger()))...)
	n2 := startNode(t, "node-2", with(secured(creds("node-2"), n1))...)
	n3 := startNode(t, "node-3", with(secured(creds("node-3"), n1))...)
	waitCluster(t, n1, n2, n3)
	_, r1 := client(t, "alice", n1.addr)
	_, r2 := client(t, "bob", n2.addr)
	c3, _ := client(t, "carol", n3.addr)
	send(t, c3, "B:hello from node-3")
	eventually(t, 10*time.Second, func() bool { return r1.has("hello from node-3") && r2.has("hello from node-3") },
		"the broadcast did not cross the routes")

	route := "nats-route://" + n1.bus.ClusterAddr()
	withoutCreds := startIntruder(t, "intruder-1", route, nil)
	wrongPassword := startIntruder(t, "intruder-2", "nats-route://msgnet:guessed@"+n1.bus.ClusterAddr(), nil)
	intrude(t, n1, &log1, n2, r1, []string{"node-2", "node-3"}, []*server.Server{withoutCreds, wrongPassword}, func() bool {
		// Two refusals each: an intruder dials a pool of route connections.
		wrong := log1.lines("authentication error", `User \"msgnet\"`)
		return log1.lines("authentication error")-wrong >= 2 && wrong >= 2
	})

	for _, connect := range []string{
		`{"verbose":false,"pedantic":false,"tls_required":false,"name":"raw","cluster":"msgnet"}`,
		`{"verbose":false,"pedantic":false,"user":"msgnet","pass":"guessed","tls_required":false,"name":"raw","cluster":"msgnet"}`,
	} {
		conn, err := net.DialTimeout("tcp", n1.bus.ClusterAddr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(conn)
		info, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(info, "INFO ") || !strings.Contains(info, `"auth_required":true`) {
			t.Fatalf("route port greeted with %q, %v", info, err)
		}
		fmt.Fprintf(conn, "CONNECT %s\r\n", connect)
		var got []string
		for {
			line, err := br.ReadString('\n')
			if line != "" {
				got = append(got, strings.TrimSpace(line))
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("after CONNECT %s: %v (got %q): the route port did not close the connection", connect, err, got)
			}
		}
		if !slices.Contains(got, "-ERR 'Authorization Violation'") {
			t.Fatalf("after CONNECT %s the route port sent %q", connect, got)
		}
	}
	if got := routePeers(t, n1.bus.ns); !slices.Equal(got, []string{"node-2", "node-3"}) {
		t.Fatalf("node-1 has routes to %v after the raw connections", got)
	}
}

// Nodes with route TLS certificates of one CA form a cluster; a server
// whose certificate comes from another CA (though it trusts the
// cluster's), and one without TLS, are refused.
func TestRouteTLS(t *testing.T) {
	ca := newTestCA(t, "msgnet route CA")
	other := newTestCA(t, "another CA")
	var log1 logBuffer
	n1 := startNode(t, "node-1", with(secured(Embedded{ServerName: "node-1", RouteTLS: ca.routeTLS(t, "node-1")}),
		WithLogger(log1.logger()))...)
	n2 := startNode(t, "node-2", with(secured(Embedded{ServerName: "node-2", RouteTLS: ca.routeTLS(t, "node-2")}, n1))...)
	waitCluster(t, n1, n2)
	_, r1 := client(t, "alice", n1.addr)
	c2, _ := client(t, "bob", n2.addr)
	send(t, c2, "B:hello over TLS")
	eventually(t, 10*time.Second, func() bool { return r1.has("hello over TLS") }, "the broadcast did not cross the TLS route")

	foreign := other.routeTLS(t, "intruder")
	foreign.RootCAs = x509.NewCertPool()
	foreign.RootCAs.AddCert(ca.cert) // a CA certificate is no secret
	// Go's TLS client withholds a certificate the server's CAs did not
	// sign; an intruder presents it anyway, for node-1 to verify.
	foreign.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &foreign.Certificates[0], nil
	}
	route := "nats-route://" + n1.bus.ClusterAddr()
	intruders := []*server.Server{startIntruder(t, "intruder-1", route, foreign), startIntruder(t, "intruder-2", route, nil)}
	intrude(t, n1, &log1, n2, r1, []string{"node-2"}, intruders, func() bool {
		return log1.lines("TLS route handshake error", "CN=intruder") >= 2 &&
			log1.lines("TLS route handshake error", "does not look like a TLS handshake") >= 2
	})
}

// The client port with credentials or a token refuses NATS clients without
// them and accepts those with them; the bus's own connection (over that
// port) presents them, so the node works.
func TestClientPortAuth(t *testing.T) {
	for _, c := range []struct {
		name      string
		e         Embedded
		good, bad nats.Option
	}{
		{"user", Embedded{ClientUser: "app", ClientPassword: "client secret"}, nats.UserInfo("app", "client secret"), nats.UserInfo("app", "guessed")},
		{"token", Embedded{ClientToken: "client token"}, nats.Token("client token"), nats.Token("guessed")},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.e.ClientListen = "127.0.0.1:0"
			n := startNode(t, "node-1", with(WithEmbedded(c.e))...)
			url := n.bus.ClientURL()
			for _, opts := range [][]nats.Option{nil, {c.bad}} {
				nc, err := nats.Connect(url, opts...)
				if err == nil {
					nc.Close()
					t.Fatalf("connected to the client port with %d options", len(opts))
				}
				if !errors.Is(err, nats.ErrAuthorization) {
					t.Fatalf("connect: %v, want an authorization error", err)
				}
			}
			publishReaches(t, n, natsConn(t, url, c.good))
		})
	}
}

// publishReaches publishes a forged broadcast on nc until a session of n
// receives it: the node's subscriptions work.
func publishReaches(t *testing.T, n *testNode, nc *nats.Conn) {
	t.Helper()
	_, r := client(t, "alice", n.addr)
	eventually(t, 5*time.Second, func() bool {
		nc.Publish("msgnet.b", forged)
		nc.Flush()
		return r.has("forged broadcast")
	}, "a broadcast published on the client port did not reach the session")
}

// The client port with TLS and a client CA refuses plain connections and
// TLS ones without a client certificate.
func TestClientPortTLS(t *testing.T) {
	files, err := tlsconfig.WriteTestFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ClientTLSConfig(files.ServerCert, files.ServerKey, files.CA)
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, "node-1", with(WithEmbedded(Embedded{ClientListen: "127.0.0.1:0", ClientTLS: cfg}))...)
	url := n.bus.ClientURL()
	if !strings.HasPrefix(url, "tls://") {
		t.Fatalf("client URL %s", url)
	}
	for _, c := range []struct {
		url  string
		opts []nats.Option
	}{
		{"nats://" + strings.TrimPrefix(url, "tls://"), nil},
		{url, []nats.Option{nats.RootCAs(files.CA)}},
	} {
		nc, err := nats.Connect(c.url, c.opts...)
		if err == nil {
			nc.Close()
			t.Fatalf("connected to %s with %d options", c.url, len(c.opts))
		}
	}
	publishReaches(t, n, natsConn(t, url, nats.RootCAs(files.CA), nats.ClientCert(files.ClientCert, files.ClientKey)))
}

// Embedded's security settings that cannot work are refused.
func TestEmbeddedSecurityErrors(t *testing.T) {
	ca := newTestCA(t, "msgnet route CA")
	good := ca.routeTLS(t, "node-1")
	noVerify := good.Clone()
	noVerify.ClientAuth = tls.NoClientCert
	insecure := good.Clone()
	insecure.InsecureSkipVerify = true
	for _, e := range []Embedded{
		{ClusterListen: "127.0.0.1:0", RouteUser: "msgnet"},
		{ClusterListen: "127.0.0.1:0", RouteUser: "msgnet", RoutePassword: "$2a$11$abcdefghijklmnopqrstuv"},
		{RouteUser: "msgnet", RoutePassword: "x"},
		{ClusterListen: "127.0.0.1:0", RouteTLS: noVerify},
		{ClusterListen: "127.0.0.1:0", RouteTLS: insecure},
		{ClusterListen: "127.0.0.1:0", RouteTLS: &tls.Config{ClientCAs: good.ClientCAs, ClientAuth: tls.RequireAndVerifyClientCert}},
		{ClientListen: "127.0.0.1:0", ClientUser: "app"},
		{ClientListen: "127.0.0.1:0", ClientUser: "app", ClientPassword: "x", ClientToken: "t"},
	} {
		if b, err := New(WithEmbedded(e)); err == nil {
			b.Close()
			t.Errorf("New accepted %+v", e)
		}
	}
	for _, route := range []string{"nats-route://msgnet:secret@", "nats-route://msgnet:secret@bad host:1"} {
		_, err := New(WithEmbedded(Embedded{ClusterListen: "127.0.0.1:0", Routes: []string{route}}))
		if err == nil || strings.Contains(err.Error(), "secret") {
			t.Errorf("route %q: error %v, want one without the password", route, err)
		}
	}
	cert, key := ca.node(t, "node-2")
	for _, files := range [][3]string{{cert, key, ""}, {cert, "", ca.file}, {cert, key, cert + ".missing"}, {key, cert, ca.file}} {
		if _, err := RouteTLSConfig(files[0], files[1], files[2]); err == nil {
			t.Errorf("RouteTLSConfig%q accepted", files)
		}
	}
}
