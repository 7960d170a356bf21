// Package balance spreads msgnet clients over several servers: a Pool
// knows the servers' addresses, checks their health with periodic pings,
// and picks one per request by a strategy: RoundRobin, LeastLoaded (by
// published node loads, or by measured round-trip time) or ConsistentHash
// (a key, such as a user id, always lands on the same node while that node
// is healthy; when it dies its keys move to the next node on the ring).
//
// Three ways to use it:
//
//	p, err := balance.New([]string{"10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"},
//		balance.WithStrategy(balance.ConsistentHash))
//	defer p.Close()
//
//	// 1. Your own client, connected where its key belongs, failing over
//	//    along the ring (Order) when its node dies:
//	c := msgnet.NewClient(userID, msgnet.WithReconnect(100*time.Millisecond, 2*time.Second, 0))
//	c.OnMessage(...)
//	err = p.Connect(ctx, c, userID)
//
//	// 2. The seed's client_pool: a client for your exclusive use, given back
//	//    with release.
//	c, release, err := p.Acquire(ctx, key)
//	defer release()
//
//	// 3. A shared client of the chosen node (safe for concurrent Send,
//	//    Request, Ping; do not Close it or set its handlers).
//	c, err := p.Get(key)
package balance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msgnet/msgnet"
)

// Errors.
var (
	// ErrNoNode is returned when no node is healthy.
	ErrNoNode = errors.New("balance: no healthy node")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("balance: pool closed")
)

// Strategy chooses a node for each request.
type Strategy int

// Strategies.
const (
	// RoundRobin takes the healthy nodes in turn; the key is ignored.
	RoundRobin Strategy = iota
	// LeastLoaded takes the healthy node with the fewest sessions in the
	// loads from WithLoadSource (counting the clients this pool placed
	// there since the node last published), or, without a load source, the
	// one with the lowest measured round-trip time weighted by the pool's
	// clients in use on it. Ties go round robin.
	LeastLoaded
	// ConsistentHash hashes the key onto a ring of virtual nodes: a key
	// lands on the same node while it is healthy, and only the keys of a
	// node that dies move (to the next node on the ring).
	ConsistentHash
)

func (s Strategy) String() string {
	switch s {
	case RoundRobin:
		return "round-robin"
	case LeastLoaded:
		return "least-loaded"
	case ConsistentHash:
		return "consistent-hash"
	}
	return "Strategy(" + strconv.Itoa(int(s)) + ")"
}

// Option configures a Pool.
type Option func(*config)

type config struct {
	strategy   Strategy
	loads      func() []msgnet.NodeLoad
	interval   time.Duration
	timeout    time.Duration
	size       int
	vnodes     int
	clientOpts []msgnet.Option
	idPrefix   string
	dial       func(ctx context.Context, addr string) (net.Conn, error)
}

// WithStrategy sets how nodes are chosen (default RoundRobin).
func WithStrategy(s Strategy) Option { return func(c *config) { c.strategy = s } }

// WithLoadSource gives LeastLoaded the nodes' published loads, matched to
// the pool's addresses by NodeLoad.Addr: e.g. (*natsbus.Bus).Loads or
// (*natsbus.LoadWatcher).Loads.
func WithLoadSource(f func() []msgnet.NodeLoad) Option { return func(c *config) { c.loads = f } }

// WithHealthCheck sets how often each node is pinged and how long a ping
// (or a connection attempt) may take before the node counts as down
// (defaults 1s and 1s). A node is also down the moment its probe
// connection breaks.
func WithHealthCheck(interval, timeout time.Duration) Option {
	return func(c *config) { c.interval, c.timeout = interval, timeout }
}

// WithSize bounds the clients Acquire keeps per node (default 4).
func WithSize(n int) Option { return func(c *config) { c.size = n } }

// WithVirtualNodes sets the points per node on the hash ring (default 128).
func WithVirtualNodes(n int) Option { return func(c *config) { c.vnodes = n } }

// WithClientOptions adds options to the clients the pool makes (Acquire's
// and the probes). Acquire's clients reconnect by themselves by default
// (msgnet.WithReconnect(100ms, 2s, forever)), failing over in Order.
func WithClientOptions(opts ...msgnet.Option) Option {
	return func(c *config) { c.clientOpts = append(c.clientOpts, opts...) }
}

// WithIDPrefix sets the client ids of the pool's own clients:
// <prefix>-probe-<n> and <prefix>-<n> (default "balance-" and 8 random hex
// digits). In a cluster a client id connected twice disconnects the older
// connection, so two pools must not share a prefix.
func WithIDPrefix(p string) Option { return func(c *config) { c.idPrefix = p } }

// WithDialer sets how the pool's clients open connections (default TCP).
func WithDialer(dial func(ctx context.Context, addr string) (net.Conn, error)) Option {
	return func(c *config) { c.dial = dial }
}

// Pool balances clients over a fixed set of server addresses. Its methods
// are safe for concurrent use.
type Pool struct {
	cfg   config
	nodes []*node
	ring  []point
	rr    atomic.Uint64
	seq   atomic.Uint64
	life  context.Context
	stop  context.CancelFunc
	wg    sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	clients []*pooled     // Acquire's clients
	changed chan struct{} // closed and replaced when a client is released or dropped
}

type node struct {
	addr  string
	index int

	mu       sync.Mutex
	healthy  bool
	rtt      time.Duration // moving average of pings
	probe    *msgnet.Client
	assigned int // placed here since the node's load last changed (LeastLoaded with loads)
	lastLoad msgnet.NodeLoad
	fails    uint64
}

type pooled struct {
	c     *msgnet.Client
	addr  atomic.Pointer[string] // where it is connected now
	inUse bool
}

// New returns a pool over addrs and checks every node once before
// returning, so that the first requests find the healthy ones. It fails
// only on a bad configuration; nodes that are down are retried every
// health-check interval.
func New(addrs []string, opts ...Option) (*Pool, error) {
	cfg := config{interval: time.Second, timeout: time.Second, size: 4, vnodes: 128}
	for _, o := range opts {
		o(&cfg)
	}
	if len(addrs) == 0 {
		return nil, errors.New("balance: no addresses")
	}
	if cfg.interval <= 0 || cfg.timeout <= 0 || cfg.size <= 0 || cfg.vnodes <= 0 {
		return nil, errors.New("balance: interval, timeout, size and virtual nodes must be positive")
	}
	if cfg.strategy < RoundRobin || cfg.strategy > ConsistentHash {
		return nil, fmt.Errorf("balance: unknown strategy %d", cfg.strategy)
	}
	if cfg.idPrefix == "" {
		var b [4]byte
		rand.Read(b[:])
		cfg.idPrefix = "balance-" + hex.EncodeToString(b[:])
	}
	if cfg.dial == nil {
		var d net.Dialer
		cfg.dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	p := &Pool{cfg: cfg, changed: make(chan struct{})}
	seen := make(map[string]bool)
	for _, a := range addrs {
		if seen[a] {
			return nil, fmt.Errorf("balance: address %s given twice", a)
		}
		seen[a] = true
		p.nodes = append(p.nodes, &node{addr: a, index: len(p.nodes)})
	}
	p.ring = buildRing(addrs, cfg.vnodes)
	p.life, p.stop = context.WithCancel(context.Background())
	var first sync.WaitGroup
	for _, n := range p.nodes {
		first.Add(1)
		p.wg.Add(1)
		go p.watch(n, &first)
	}
	first.Wait()
	return p, nil
}

// watch checks one node every interval; the first check is reported done
// on first.
func (p *Pool) watch(n *node, first *sync.WaitGroup) {
	defer p.wg.Done()
	t := time.NewTicker(p.cfg.interval)
	defer t.Stop()
	p.check(n)
	first.Done()
	for {
		select {
		case <-p.life.Done():
			n.mu.Lock()
			probe := n.probe
			n.probe = nil
			n.mu.Unlock()
			if probe != nil {
				probe.Close()
			}
			return
		case <-t.C:
			p.check(n)
		}
	}
}

// check pings the node's probe client, connecting it first if needed.
func (p *Pool) check(n *node) {
	n.mu.Lock()
	probe := n.probe
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(p.life, p.cfg.timeout)
	defer cancel()
	if probe == nil || !probe.IsConnected() {
		if probe != nil {
			probe.Close()
		}
		probe = p.newProbe(n)
		if err := probe.Connect(ctx, n.addr); err != nil {
			probe.Close()
			p.setHealth(n, nil, false, 0)
			return
		}
		p.setHealth(n, probe, true, 0)
	}
	rtt, err := probe.Ping(ctx)
	if err != nil {
		probe.Close()
		p.setHealth(n, nil, false, 0)
		return
	}
	p.setHealth(n, probe, true, rtt)
}

func (p *Pool) newProbe(n *node) *msgnet.Client {
	id := p.cfg.idPrefix + "-probe-" + strconv.Itoa(n.index)
	opts := append(slices.Clone(p.cfg.clientOpts), msgnet.WithDialer(p.cfg.dial))
	c := msgnet.NewClient(id, opts...)
	c.OnDisconnect(func(error) {
		// Down at once: do not wait for the next ping.
		n.mu.Lock()
		if n.probe == c {
			n.healthy = false
		}
		n.mu.Unlock()
	})
	return c
}

// setHealth records a check's outcome. Only the node's watch goroutine
// replaces n.probe, and it closes the last one when the pool closes.
func (p *Pool) setHealth(n *node, probe *msgnet.Client, healthy bool, rtt time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.probe = probe
	n.healthy = healthy && probe != nil && probe.IsConnected()
	if !healthy {
		n.fails++
		return
	}
	if rtt > 0 {
		if n.rtt == 0 {
			n.rtt = rtt
		} else {
			n.rtt = (n.rtt*7 + rtt) / 8
		}
	}
}

// NodeStatus is a node as the pool sees it.
type NodeStatus struct {
	Addr    string
	Healthy bool
	RTT     time.Duration // moving average of health-check pings
	Clients int           // Acquire's clients connected there
	InUse   int           // of which acquired now
	Fails   uint64        // failed health checks
}

// Nodes reports every node's status, in the order the addresses were given.
func (p *Pool) Nodes() []NodeStatus {
	out := make([]NodeStatus, len(p.nodes))
	for i, n := range p.nodes {
		n.mu.Lock()
		out[i] = NodeStatus{Addr: n.addr, Healthy: n.healthy, RTT: n.rtt, Fails: n.fails}
		n.mu.Unlock()
	}
	p.mu.Lock()
	for _, pc := range p.clients {
		a := pc.addr.Load()
		for i := range out {
			if a != nil && *a == out[i].Addr {
				out[i].Clients++
				if pc.inUse {
					out[i].InUse++
				}
			}
		}
	}
	p.mu.Unlock()
	return out
}

// Pick returns the address of the node the strategy chooses for key.
func (p *Pool) Pick(key string) (string, error) {
	n, err := p.pick(key)
	if err != nil {
		return "", err
	}
	return n.addr, nil
}

// Order returns every address in the order a client for key should try
// them: the strategy's choice first, then the other healthy nodes (for
// ConsistentHash, in ring order: the node that inherits the key if the
// first dies), then the unhealthy ones.
func (p *Pool) Order(key string) []string {
	first, _ := p.pick(key)
	return p.order(first, key)
}

// order lists the addresses with first (if not nil) in front.
func (p *Pool) order(first *node, key string) []string {
	var healthy, sick []*node
	if p.cfg.strategy == ConsistentHash {
		for _, n := range p.ringOrder(key) {
			if n.isHealthy() {
				healthy = append(healthy, n)
			} else {
				sick = append(sick, n)
			}
		}
	} else {
		rest := p.healthy()
		if p.cfg.strategy == LeastLoaded {
			scores := p.scores(rest)
			slices.SortStableFunc(rest, func(a, b *node) int { return compareScore(scores[a.index], scores[b.index]) })
		} else if len(rest) > 0 {
			k := int(p.rr.Load() % uint64(len(rest)))
			rest = slices.Concat(rest[k:], rest[:k])
		}
		healthy = rest
		for _, n := range p.nodes {
			if !slices.Contains(healthy, n) {
				sick = append(sick, n)
			}
		}
	}
	if i := slices.Index(healthy, first); i > 0 {
		healthy = slices.Insert(slices.Delete(healthy, i, i+1), 0, first)
	}
	out := make([]string, 0, len(p.nodes))
	for _, n := range append(healthy, sick...) {
		out = append(out, n.addr)
	}
	return out
}

// Connect connects c (made by the caller, with its handlers set) to the
// node chosen for key, trying the others in Order. With
// msgnet.WithReconnect, c fails over along the same order when its node
// dies. It stays where it reconnected when the first node comes back.
func (p *Pool) Connect(ctx context.Context, c *msgnet.Client, key string) error {
	if p.isClosed() {
		return ErrClosed
	}
	return c.Connect(ctx, p.Order(key)...)
}

// Get returns the pool's shared client of the node chosen for key: its
// health-check connection, safe for concurrent Send, Request and Ping.
// Do not Close it or set its handlers; replies to Request come back to
// the caller, other messages sent to it are dropped.
func (p *Pool) Get(key string) (*msgnet.Client, error) {
	if p.isClosed() {
		return nil, ErrClosed
	}
	n, err := p.pick(key)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	c := n.probe
	n.mu.Unlock()
	if c == nil || !c.IsConnected() {
		return nil, ErrNoNode
	}
	return c, nil
}

// Acquire returns a client for the caller's exclusive use until release
// is called: an idle one already connected to the node the strategy
// chooses for key, or a new one if that node has fewer than WithSize
// clients; otherwise it waits for a release, within ctx. release gives
// the client back (its handlers are reset); calling it again does
// nothing. A client that broke while acquired reconnects by itself.
func (p *Pool) Acquire(ctx context.Context, key string) (*msgnet.Client, func(), error) {
	for {
		n, err := p.pick(key)
		if err != nil {
			return nil, nil, err
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, nil, ErrClosed
		}
		count := 0
		var take *pooled
		live := p.clients[:0]
		for _, pc := range p.clients {
			st := pc.c.State()
			if st == msgnet.StateClosed && !pc.inUse {
				continue // gave up reconnecting: drop it
			}
			live = append(live, pc)
			if a := pc.addr.Load(); a == nil || *a != n.addr {
				continue
			}
			count++
			if take == nil && !pc.inUse && st == msgnet.StateConnected {
				take = pc
			}
		}
		clear(p.clients[len(live):])
		p.clients = live
		if take != nil {
			take.inUse = true
			p.mu.Unlock()
			return take.c, p.releaser(take), nil
		}
		if count < p.cfg.size {
			pc := p.newPooled(n.addr)
			p.clients = append(p.clients, pc)
			p.mu.Unlock()
			if err := pc.c.Connect(ctx, p.order(n, key)...); err != nil {
				pc.c.Close()
				p.drop(pc)
				return nil, nil, err
			}
			return pc.c, p.releaser(pc), nil
		}
		wait := p.changed
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-wait:
		}
	}
}

// newPooled makes an acquired client, not connected yet, that records
// where it connects.
func (p *Pool) newPooled(addr string) *pooled {
	pc := &pooled{inUse: true}
	pc.addr.Store(&addr)
	id := p.cfg.idPrefix + "-" + strconv.FormatUint(p.seq.Add(1), 10)
	opts := []msgnet.Option{msgnet.WithReconnect(100*time.Millisecond, 2*time.Second, 0)}
	opts = append(opts, p.cfg.clientOpts...)
	opts = append(opts, msgnet.WithDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		conn, err := p.cfg.dial(ctx, addr)
		if err == nil {
			pc.addr.Store(&addr)
		}
		return conn, err
	}))
	pc.c = msgnet.NewClient(id, opts...)
	resetHandlers(pc.c)
	return pc
}

func resetHandlers(c *msgnet.Client) {
	c.OnMessage(func([]byte) {})
	c.OnRequest(nil)
	c.OnConnect(func() {})
	c.OnDisconnect(func(error) {})
	c.OnReconnect(func() {})
	c.OnClosed(func(error) {})
	c.OnError(func(*msgnet.ProtocolError) {})
}

func (p *Pool) releaser(pc *pooled) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			resetHandlers(pc.c)
			p.mu.Lock()
			closed := p.closed
			pc.inUse = false
			p.signalLocked()
			p.mu.Unlock()
			if closed {
				pc.c.Close()
			}
		})
	}
}

func (p *Pool) drop(pc *pooled) {
	p.mu.Lock()
	if i := slices.Index(p.clients, pc); i >= 0 {
		p.clients = slices.Delete(p.clients, i, i+1)
	}
	p.signalLocked()
	p.mu.Unlock()
}

func (p *Pool) signalLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *Pool) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// Close stops the health checks and closes every client the pool made,
// acquired ones included. Clients given to Connect are the caller's.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	clients := p.clients
	p.clients = nil
	p.signalLocked()
	p.mu.Unlock()
	p.stop()
	p.wg.Wait()
	for _, pc := range clients {
		pc.c.Close()
	}
	return nil
}

func (n *node) isHealthy() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.healthy
}

func (p *Pool) healthy() []*node {
	var out []*node
	for _, n := range p.nodes {
		if n.isHealthy() {
			out = append(out, n)
		}
	}
	return out
}
