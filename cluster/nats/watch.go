package natsbus

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/nats-io/nats.go"
)

// LoadWatcher follows the loads a cluster's nodes publish, for a balancer
// that is not itself a node (balance.WithLoadSource(w.Loads)). It listens
// only: the nodes do not know it.
type LoadWatcher struct {
	nc  *nats.Conn
	ttl time.Duration

	mu    sync.Mutex
	peers map[string]*peer
}

// WatchLoads connects to the cluster's NATS (WithURL, and WithPrefix,
// WithHeartbeat or WithTTL as the nodes have them; WithNATSOptions for
// credentials). A node not heard from within the TTL is left out.
func WatchLoads(opts ...Option) (*LoadWatcher, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if len(cfg.urls) == 0 || cfg.embedded != nil {
		return nil, errors.New("natsbus: WatchLoads needs WithURL (and no WithEmbedded)")
	}
	if cfg.ttl <= 0 {
		cfg.ttl = 3 * cfg.heartbeat
	}
	w := &LoadWatcher{ttl: cfg.ttl, peers: make(map[string]*peer)}
	nc, err := nats.Connect(strings.Join(cfg.urls, ","),
		append([]nats.Option{nats.Name("msgnet-load-watcher"), nats.MaxReconnects(-1)}, cfg.natsOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("natsbus: connect: %w", err)
	}
	for _, subj := range []string{cfg.prefix + ".l", cfg.prefix + ".d"} {
		if _, err := nc.Subscribe(subj, w.handle); err != nil {
			nc.Close()
			return nil, err
		}
	}
	if err := nc.Flush(); err != nil {
		nc.Close()
		return nil, err
	}
	w.nc = nc
	return w, nil
}

func (w *LoadWatcher) handle(nm *nats.Msg) {
	m, err := parseMsg(nm.Data)
	if err != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch m.kind {
	case kindLoad:
		var l loadBody
		if json.Unmarshal(m.body, &l) != nil {
			return
		}
		p := w.peers[m.origin]
		if p == nil || p.instance != l.Instance {
			p = &peer{instance: l.Instance}
			w.peers[m.origin] = p
		}
		p.seen = time.Now()
		p.sample(msgnet.NodeLoad{Node: m.origin, Addr: l.Addr, Sessions: l.Sessions, MsgsIn: l.MsgsIn, MsgsOut: l.MsgsOut}, l.At)
	case kindBye:
		var y byeBody
		if json.Unmarshal(m.body, &y) == nil {
			if p := w.peers[m.origin]; p != nil && p.instance == y.Instance {
				delete(w.peers, m.origin)
			}
		}
	}
}

// Nodes returns the nodes heard from within the TTL, with their loads and
// message rates.
func (w *LoadWatcher) Nodes() []NodeInfo {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []NodeInfo
	for node, p := range w.peers {
		if age := now.Sub(p.seen); age <= w.ttl {
			out = append(out, NodeInfo{NodeLoad: p.load, InRate: p.inRate, OutRate: p.outRate, Age: age})
		} else {
			delete(w.peers, node)
		}
	}
	return out
}

// Loads returns the live nodes' loads: a source for balance.WithLoadSource.
func (w *LoadWatcher) Loads() []msgnet.NodeLoad {
	nodes := w.Nodes()
	out := make([]msgnet.NodeLoad, len(nodes))
	for i, n := range nodes {
		out[i] = n.NodeLoad
	}
	return out
}

// Close disconnects.
func (w *LoadWatcher) Close() error {
	w.nc.Close()
	return nil
}
