// Package natsbus joins msgnet servers into a cluster over NATS: it
// implements msgnet.Bus. Broadcasts, group messages and direct messages
// published by one node reach the sessions of the others; a directory,
// kept by announcements and healed by heartbeats, says which node holds
// which client id; each node publishes its load for balancers.
//
//	bus, err := natsbus.New(natsbus.WithURL("nats://10.0.0.5:4222"))
//	// or, with no NATS to run: an embedded server routed to the others
//	bus, err := natsbus.New(natsbus.WithEmbedded(natsbus.Embedded{
//		ClusterListen: "10.0.0.1:6222",
//		Routes:        []string{"nats-route://10.0.0.2:6222"},
//		RouteUser:     "msgnet", RoutePassword: secret, // and RouteTLS (docs/CLUSTER.md, "Security")
//	}))
//	srv := msgnet.NewServer("node-1", msgnet.WithBus(bus)) // ids differ per node
//
// The server attaches the bus when it starts serving and closes it when it
// stops. What the cluster guarantees, and the wire format, are in
// docs/CLUSTER.md.
package natsbus

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Errors.
var (
	// ErrNotAttached is returned by Publish before a server attached the bus.
	ErrNotAttached = errors.New("natsbus: not attached to a server")
	// ErrClosed is returned by Publish and Attach after Close.
	ErrClosed = errors.New("natsbus: closed")
)

// Bus is a msgnet.Bus on NATS. Create it with New and give it to one
// server with msgnet.WithBus.
type Bus struct {
	cfg      config
	log      *slog.Logger
	ns       *server.Server // embedded server, or nil
	url      string         // external NATS URLs, the embedded server's loopback URL, or "" (in-process)
	nc       *nats.Conn
	in       chan *nats.Msg // every subscription delivers here, in arrival order
	instance string         // random per Bus: tells a restarted node from its previous life

	// Set by Attach, then read-only; attached is set last.
	attachMu sync.Mutex
	node     msgnet.ClusterNode
	id       string
	subjB    string // broadcast
	subjA    string // direct to a session id not in the directory: every node
	subjD    string // directory announcements
	subjL    string // load heartbeats
	subjSelf string // this node's inbox
	attached atomic.Bool
	closed   atomic.Bool

	mu       sync.RWMutex
	groups   map[string]*groupSub
	local    map[string]entry // client id -> this node's session
	remote   map[string]entry // client id -> newest known session on another node
	sessions map[string]string
	peers    map[string]*peer
	self     peer
	warned   map[string]bool

	clock atomic.Uint64 // hybrid logical clock for directory stamps

	queue   pubQueue     // what send publishes, in order (batch.go); set by Attach
	batchOK atomic.Bool  // every known node reads batches (batch.go)
	lastOld atomic.Int64 // Unix ns: when a node that does not read batches last spoke

	pub, recv [4]atomic.Uint64 // by msgnet.ClusterMessageKind
	errs      atomic.Uint64

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

type groupSub struct {
	n   int // GroupUp minus GroupDown: subscribed while positive
	sub *nats.Subscription
}

// entry is where a client id is connected.
type entry struct {
	node    string
	session string
	stamp   uint64
}

// newer is the cluster's order on connections of one client id: the
// larger stamp wins, then the larger node id.
func (e entry) newer(o entry) bool {
	if e.stamp != o.stamp {
		return e.stamp > o.stamp
	}
	return e.node > o.node
}

// peer is another node as heard through its heartbeats.
type peer struct {
	instance string
	inbox    string
	seen     time.Time // local clock
	load     msgnet.NodeLoad
	at       int64 // the load's timestamp, sender's clock
	hasLoad  bool
	inRate   float64
	outRate  float64
	batch    bool // said it reads kindBatch
	toldOld  bool // the log said it does not, in this life
}

// NodeInfo is a node's last published load, with the message rates
// derived from its last two heartbeats.
type NodeInfo struct {
	msgnet.NodeLoad
	InRate  float64       // messages received per second
	OutRate float64       // messages sent per second
	Self    bool          // this bus's own node
	Age     time.Duration // since its last heartbeat arrived
}

// New connects to NATS (WithURL) or starts an embedded server
// (WithEmbedded) and returns a bus to give to msgnet.WithBus. It fails if
// NATS cannot be reached.
func New(opts ...Option) (*Bus, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	switch {
	case cfg.embedded != nil && len(cfg.urls) > 0:
		return nil, errors.New("natsbus: WithURL and WithEmbedded exclude each other")
	case cfg.embedded == nil && len(cfg.urls) == 0:
		return nil, errors.New("natsbus: need WithURL or WithEmbedded")
	case cfg.heartbeat <= 0:
		return nil, errors.New("natsbus: heartbeat interval must be positive")
	case cfg.pending <= 0:
		return nil, errors.New("natsbus: pending limit must be positive")
	case cfg.prefix == "" || strings.ContainsAny(cfg.prefix, " \t\r\n*>") ||
		strings.HasPrefix(cfg.prefix, ".") || strings.HasSuffix(cfg.prefix, ".") || strings.Contains(cfg.prefix, ".."):
		return nil, fmt.Errorf("natsbus: prefix %q is not a subject", cfg.prefix)
	}
	if cfg.ttl <= 0 {
		cfg.ttl = 3 * cfg.heartbeat
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	b := &Bus{
		cfg:      cfg,
		log:      cfg.log,
		in:       make(chan *nats.Msg, cfg.pending),
		instance: hex.EncodeToString(rnd[:]),
		groups:   make(map[string]*groupSub),
		local:    make(map[string]entry),
		remote:   make(map[string]entry),
		sessions: make(map[string]string),
		peers:    make(map[string]*peer),
		warned:   make(map[string]bool),
		stop:     make(chan struct{}),
	}
	nopts := []nats.Option{
		nats.Name("msgnet"),
		nats.NoEcho(), // a node never receives what it published itself
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			b.errs.Add(1)
			b.warnOnce("nats:"+err.Error(), "cluster: NATS error", "err", err)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil && !b.closed.Load() {
				b.log.Warn("cluster: NATS connection lost", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.log.Info("cluster: NATS reconnected", "url", nc.ConnectedUrlRedacted())
		}),
	}
	b.url = strings.Join(cfg.urls, ",")
	if cfg.embedded != nil {
		ns, err := startEmbedded(*cfg.embedded, cfg.log)
		if err != nil {
			return nil, err
		}
		b.ns = ns
		b.url = loopbackURL(ns, cfg.embedded)
	}
	nc, err := nats.Connect(b.url, append(append(nopts, b.serverOptions()...), cfg.natsOpts...)...)
	if err != nil && b.ns != nil && b.url != "" {
		// The client port cannot be dialled from here (a host without ::1,
		// a firewall on the listen address): in-process always works.
		b.log.Warn("cluster: cannot dial the embedded NATS server's client port; connecting in-process", "url", b.url, "err", err)
		b.url = ""
		nc, err = nats.Connect(b.url, append(append(nopts, b.serverOptions()...), cfg.natsOpts...)...)
	}
	if err != nil {
		if b.ns != nil {
			b.ns.Shutdown()
			b.ns.WaitForShutdown()
		}
		return nil, fmt.Errorf("natsbus: connect: %w", err)
	}
	b.nc = nc
	return b, nil
}

// serverOptions are the options that reach the bus's NATS: for an
// embedded server, in-process unless the bus dials its client port
// (loopbackURL), with the client port's credentials; nothing beyond the
// URL and WithNATSOptions otherwise.
func (b *Bus) serverOptions() []nats.Option {
	if b.ns == nil {
		return nil
	}
	// Only ever this node's server: not another node's client port learnt
	// from its INFO, which would keep the node in the cluster after its
	// own NATS died.
	opts := []nats.Option{nats.IgnoreDiscoveredServers()}
	if b.url == "" {
		opts = append(opts, nats.InProcessServer(b.ns))
	}
	return append(opts, b.credentials()...)
}

// credentials are the embedded server's client credentials, if any.
func (b *Bus) credentials() []nats.Option {
	switch e := b.cfg.embedded; {
	case e.ClientUser != "":
		return []nats.Option{nats.UserInfo(e.ClientUser, e.ClientPassword)}
	case e.ClientToken != "":
		return []nats.Option{nats.Token(e.ClientToken)}
	}
	return nil
}

// loopbackURL is where the bus dials its embedded server: the server's
// client port, when it has one without TLS and InProcess is not asked
// for, else "" (in-process). nats.go's
// in-process connection is a net.Pipe, which hands each write to the
// server's reader synchronously, a goroutine switch each way per write; a
// socket buffers both ways, and costs a node far less per message it sends
// or receives across the cluster (docs/BENCHMARKS.md). A server with
// ClusterListen always has a client port (see Embedded.ClientListen).
func loopbackURL(ns *server.Server, e *Embedded) string {
	a, ok := ns.Addr().(*net.TCPAddr)
	if !ok || e.ClientTLS != nil || e.InProcess {
		return ""
	}
	host := a.IP.String()
	switch {
	case a.IP.IsUnspecified():
		// A wildcard listener takes IPv4 too, and ::1 may not exist.
		host = "127.0.0.1"
	case a.Zone != "":
		host += "%25" + a.Zone // a link-local address keeps its interface
	}
	return "nats://" + net.JoinHostPort(host, strconv.Itoa(a.Port))
}

// connect opens another connection to the bus's NATS, for a Store: echo
// on, reconnecting forever. To an embedded server it is in-process: a
// store's JetStream requests mostly wait for their answers one at a time,
// which the pipe hands over sooner than a socket (measured on one node's
// --store, docs/BENCHMARKS.md).
func (b *Bus) connect(name string) (*nats.Conn, error) {
	opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond)}
	url := b.url
	if b.ns != nil {
		url = ""
		opts = append(append(opts, nats.InProcessServer(b.ns)), b.credentials()...)
	}
	return nats.Connect(url, append(opts, b.cfg.natsOpts...)...)
}

// Attach implements msgnet.Bus: it subscribes to the cluster's subjects
// and starts the heartbeat and the delivery goroutine.
func (b *Bus) Attach(node msgnet.ClusterNode) error {
	b.attachMu.Lock()
	defer b.attachMu.Unlock()
	if b.closed.Load() {
		return ErrClosed
	}
	if b.node != nil {
		return errors.New("natsbus: already attached")
	}
	id := node.NodeID()
	if id == "" || len(id) > 255 {
		return errors.New("natsbus: a node id must be 1 to 255 bytes")
	}
	b.node, b.id = node, id
	p := b.cfg.prefix
	b.subjB, b.subjA, b.subjD, b.subjL = p+".b", p+".a", p+".d", p+".l"
	b.subjSelf = b.inbox(id)
	for _, subj := range []string{b.subjSelf, b.subjD, b.subjL, b.subjB, b.subjA} {
		if _, err := b.nc.ChanSubscribe(subj, b.in); err != nil {
			return fmt.Errorf("natsbus: subscribe %s: %w", subj, err)
		}
	}
	b.mu.Lock()
	b.self = peer{instance: b.instance, inbox: b.subjSelf}
	b.mu.Unlock()
	b.queue = newPubQueue(id)
	b.wg.Add(3)
	go b.dispatch()
	go b.heartbeat()
	go b.flusher()
	b.attached.Store(true) // after the fields above: readers check it first
	return nil
}

func (b *Bus) inbox(node string) string { return b.cfg.prefix + ".n." + token(node) }

func (b *Bus) groupSubject(group string) string { return b.cfg.prefix + ".g." + token(group) }

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// send queues one message for the flusher (batch.go); batch says that it
// may share a NATS message with others, merge that it goes to one node's
// inbox (pubQueue). While NATS is not
// connected it flushes the queue and publishes the message itself, so
// that the caller gets nats.go's answer (past the reconnect buffer, an
// error); before Attach and after Close it publishes directly.
func (b *Bus) send(subj string, kind byte, target string, body []byte, batch, merge bool) error {
	limit := int(b.nc.MaxPayload())
	size := msgLen(b.id, target, body)
	err := errQueueStopped
	switch {
	case size > limit:
		err = nats.ErrMaxPayload
	case b.queue.kick == nil:
	case !b.nc.IsConnected():
		b.flush()
	default:
		var full bool
		full, err = b.queue.add(subj, batch, merge, min(maxRunBytes, limit), kind, b.id, target, body)
		if full {
			b.flush()
		}
	}
	if err == errQueueStopped {
		err = b.publishNow(subj, kind, target, body)
	}
	if err != nil {
		b.errs.Add(1)
	}
	return err
}

func (b *Bus) sendJSON(subj string, kind byte, target string, v any) {
	body, err := json.Marshal(v)
	if err == nil {
		err = b.send(subj, kind, target, body, false, false)
	}
	if err != nil && !b.closed.Load() {
		b.log.Warn("cluster: control message not sent", "subject", subj, "err", err)
	}
}

// Publish implements msgnet.Bus. It never waits for other nodes: the
// message joins the bus's publish queue, whose flusher hands it to NATS,
// alone or in a batch with the messages queued after it for the same
// subject (docs/CLUSTER.md, "Batches"). It waits only when 4 MiB are
// queued already (NATS is not taking them), and while NATS is
// disconnected, when it goes through nats.go's reconnect buffer and fails
// once that is full. A message larger than NATS's maximum payload fails at
// once with nats.ErrMaxPayload. A direct message goes to the node the
// directory names; a target that is not in the directory but has the form
// of a session id goes to every node (only its holder delivers it), and
// anything else fails with msgnet.ErrNoSession.
func (b *Bus) Publish(m msgnet.ClusterMessage) error {
	if !b.attached.Load() {
		return ErrNotAttached
	}
	if b.closed.Load() {
		return ErrClosed
	}
	var subj string
	var batch bool
	switch m.Kind {
	case msgnet.ClusterBroadcast:
		subj, batch = b.subjB, b.batchShared()
	case msgnet.ClusterGroup:
		subj, batch = b.groupSubject(m.Target), b.batchShared()
	case msgnet.ClusterDirect:
		var ok bool
		if subj, batch, ok = b.route(m.Target); !ok {
			return msgnet.ErrNoSession
		}
	default:
		return fmt.Errorf("natsbus: unknown message kind %d", m.Kind)
	}
	if len(m.Target) > 0xffff {
		return errors.New("natsbus: target longer than 65535 bytes")
	}
	kind := byte(m.Kind)
	if m.Stored && m.Kind != msgnet.ClusterBroadcast {
		kind |= flagStored
	}
	// A direct message to a node's inbox may pass messages to other
	// nodes' inboxes in the queue (pubQueue).
	merge := m.Kind == msgnet.ClusterDirect && subj != b.subjA
	if err := b.send(subj, kind, m.Target, m.Payload, batch, merge); err != nil {
		return fmt.Errorf("natsbus: publish: %w", err)
	}
	b.pub[m.Kind].Add(1)
	return nil
}

// route finds the subject for a direct message to a client or session id,
// and whether it may travel in a batch: to a node's inbox when that node
// said it reads batches, to every node as a broadcast would.
func (b *Bus) route(target string) (subj string, batch, ok bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	e, ok := b.remote[target]
	if !ok {
		if cid, found := b.sessions[target]; found {
			e, ok = b.remote[cid]
		}
	}
	if ok {
		if p := b.peers[e.node]; p != nil {
			return p.inbox, p.batch, true
		}
		return b.inbox(e.node), false, true
	}
	if looksLikeSessionID(target) && len(b.peers) > 0 {
		return b.subjA, b.batchShared(), true
	}
	return "", false, false
}

// ClientUp implements msgnet.Bus: the session is recorded and announced;
// the nodes holding an older session of the client id kick it.
func (b *Bus) ClientUp(clientID, sessionID string) {
	if !b.attached.Load() || b.closed.Load() {
		return
	}
	stamp := b.tick()
	b.mu.Lock()
	b.local[clientID] = entry{node: b.id, session: sessionID, stamp: stamp}
	if r, ok := b.remote[clientID]; ok {
		// Older than stamp (the clock has seen it): its node kicks it
		// when our announcement arrives.
		delete(b.remote, clientID)
		delete(b.sessions, r.session)
	}
	b.mu.Unlock()
	b.sendJSON(b.subjD, kindUp, clientID, dirEvent{Instance: b.instance, Session: sessionID, Stamp: stamp})
}

// ClientDown implements msgnet.Bus.
func (b *Bus) ClientDown(clientID, sessionID string) {
	if !b.attached.Load() || b.closed.Load() {
		return
	}
	b.mu.Lock()
	l, ok := b.local[clientID]
	ok = ok && l.session == sessionID
	if ok {
		delete(b.local, clientID)
	}
	b.mu.Unlock()
	if ok {
		b.sendJSON(b.subjD, kindDown, clientID, dirEvent{Instance: b.instance, Session: sessionID, Stamp: l.stamp})
	}
}

// GroupUp implements msgnet.Bus: the node subscribes to the group's subject.
func (b *Bus) GroupUp(group string) { b.groupDelta(group, 1) }

// GroupDown implements msgnet.Bus: the node unsubscribes.
func (b *Bus) GroupDown(group string) { b.groupDelta(group, -1) }

// groupDelta counts ups and downs rather than trusting their order: the
// server may report a join and the following leave from two goroutines.
func (b *Bus) groupDelta(group string, d int) {
	if !b.attached.Load() || b.closed.Load() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	g := b.groups[group]
	if g == nil {
		g = &groupSub{}
		b.groups[group] = g
	}
	g.n += d
	switch {
	case g.n > 0 && g.sub == nil:
		sub, err := b.nc.ChanSubscribe(b.groupSubject(group), b.in)
		if err != nil {
			b.errs.Add(1)
			b.log.Warn("cluster: group subscription failed", "group", group, "err", err)
		}
		g.sub = sub
	case g.n <= 0 && g.sub != nil:
		g.sub.Unsubscribe()
		g.sub = nil
	}
	if g.n == 0 && g.sub == nil {
		delete(b.groups, group)
	}
}

// Stats implements msgnet.Bus.
func (b *Bus) Stats() msgnet.ClusterStats {
	st := msgnet.ClusterStats{
		Published: make(map[string]uint64, 3),
		Received:  make(map[string]uint64, 3),
		Errors:    b.errs.Load(),
	}
	for k, name := range kindNames {
		st.Published[name] = b.pub[k].Load()
		st.Received[name] = b.recv[k].Load()
	}
	b.mu.RLock()
	st.Nodes = len(b.peers) + 1
	b.mu.RUnlock()
	return st
}

var kindNames = map[msgnet.ClusterMessageKind]string{
	msgnet.ClusterBroadcast: "broadcast",
	msgnet.ClusterGroup:     "group",
	msgnet.ClusterDirect:    "direct",
}

// Nodes returns the nodes known alive, this one included, with their last
// published load and message rates: what a balancer needs.
func (b *Bus) Nodes() []NodeInfo {
	now := time.Now()
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make([]NodeInfo, 0, len(b.peers)+1)
	if b.self.hasLoad {
		out = append(out, NodeInfo{NodeLoad: b.self.load, InRate: b.self.inRate, OutRate: b.self.outRate, Self: true, Age: now.Sub(b.self.seen)})
	}
	for _, p := range b.peers {
		if p.hasLoad {
			out = append(out, NodeInfo{NodeLoad: p.load, InRate: p.inRate, OutRate: p.outRate, Age: now.Sub(p.seen)})
		}
	}
	return out
}

// Loads returns the nodes' last published loads, this one included: a
// source for balance.WithLoadSource.
func (b *Bus) Loads() []msgnet.NodeLoad {
	nodes := b.Nodes()
	out := make([]msgnet.NodeLoad, len(nodes))
	for i, n := range nodes {
		out[i] = n.NodeLoad
	}
	return out
}

// Lookup says which node holds a client id (or a session id that
// connected with a hello), as far as this node's directory knows.
func (b *Bus) Lookup(id string) (node string, ok bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if e, found := b.local[id]; found {
		return e.node, true
	}
	if e, found := b.remote[id]; found {
		return e.node, true
	}
	if cid, found := b.sessions[id]; found {
		return b.remote[cid].node, true
	}
	for _, e := range b.local {
		if e.session == id {
			return e.node, true
		}
	}
	return "", false
}

// ClusterAddr is where the embedded server accepts routes, or nil.
func (b *Bus) ClusterAddr() string {
	if b.ns == nil {
		return ""
	}
	if a := b.ns.ClusterAddr(); a != nil {
		return a.String()
	}
	return ""
}

// ClientURL is the embedded server's NATS client URL, for other programs
// (a LoadWatcher, tools), when it has a client port (Embedded.ClientListen,
// or the loopback port a server with ClusterListen opens); else "".
func (b *Bus) ClientURL() string {
	if b.ns == nil || b.ns.Addr() == nil {
		return ""
	}
	return b.ns.ClientURL()
}

// Close implements msgnet.Bus: it tells the other nodes this one is
// leaving, so they drop its directory entries at once, then disconnects
// and stops an embedded server.
func (b *Bus) Close() error {
	b.closeOnce.Do(func() {
		b.attachMu.Lock() // an Attach in progress finishes first
		b.closed.Store(true)
		b.attachMu.Unlock()
		wasAttached := b.attached.Load()
		close(b.stop)
		b.wg.Wait()
		if wasAttached && b.nc.IsConnected() {
			b.sendJSON(b.subjD, kindBye, "", byeBody{Instance: b.instance})
			b.nc.FlushTimeout(time.Second)
		}
		b.nc.Close()
		if b.ns != nil {
			b.ns.Shutdown()
			b.ns.WaitForShutdown()
		}
	})
	return nil
}

// tick returns a stamp for a new local connection: later than the wall
// clock and than every stamp seen from other nodes, so a client that moves
// from node A to node B is newer on B even if B's clock is behind A's.
func (b *Bus) tick() uint64 {
	for {
		last := b.clock.Load()
		next := max(uint64(time.Now().UnixNano()), last+1)
		if b.clock.CompareAndSwap(last, next) {
			return next
		}
	}
}

func (b *Bus) observe(stamp uint64) {
	for {
		last := b.clock.Load()
		if stamp <= last || b.clock.CompareAndSwap(last, stamp) {
			return
		}
	}
}

func (b *Bus) warnOnce(key, msg string, args ...any) {
	b.mu.Lock()
	seen := b.warned[key]
	b.warned[key] = true
	b.mu.Unlock()
	if !seen {
		b.log.Warn(msg, args...)
	}
}
