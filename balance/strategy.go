package balance

import (
	"cmp"
	"hash/fnv"
	"slices"
	"sort"
	"strconv"

	"github.com/msgnet/msgnet"
)

// pick chooses a healthy node for key by the pool's strategy.
func (p *Pool) pick(key string) (*node, error) {
	if p.cfg.strategy == ConsistentHash {
		for _, n := range p.ringOrder(key) {
			if n.isHealthy() {
				return n, nil
			}
		}
		return nil, ErrNoNode
	}
	h := p.healthy()
	if len(h) == 0 {
		return nil, ErrNoNode
	}
	if p.cfg.strategy == RoundRobin {
		return h[(p.rr.Add(1)-1)%uint64(len(h))], nil
	}
	scores := p.scores(h)
	best := h[:0:0]
	for _, n := range h {
		switch {
		case len(best) == 0:
			best = append(best, n)
		default:
			switch c := compareScore(scores[n.index], scores[best[0].index]); {
			case c < 0:
				best = append(best[:0], n)
			case c == 0:
				best = append(best, n)
			}
		}
	}
	n := best[(p.rr.Add(1)-1)%uint64(len(best))]
	if p.cfg.loads != nil {
		n.mu.Lock()
		n.assigned++
		n.mu.Unlock()
	}
	return n, nil
}

// score ranks nodes for LeastLoaded: nodes with a published load before
// nodes without one, then the lower value.
type score struct {
	known bool
	v     float64
}

func compareScore(a, b score) int {
	if a.known != b.known {
		if a.known {
			return -1
		}
		return 1
	}
	return cmp.Compare(a.v, b.v)
}

// scores are indexed by node index. With a load source a node's value is
// its published sessions plus what this pool placed there since that
// load was published (loads come once a heartbeat; without the correction
// a burst of picks would all go to the same node). Without one, or for a
// node missing from the loads, it is the ping RTT weighted by the pool's
// clients in use there.
func (p *Pool) scores(nodes []*node) []score {
	out := make([]score, len(p.nodes))
	var byAddr map[string]msgnet.NodeLoad
	if p.cfg.loads != nil {
		loads := p.cfg.loads()
		byAddr = make(map[string]msgnet.NodeLoad, len(loads))
		for _, l := range loads {
			byAddr[l.Addr] = l
		}
	}
	inUse := make([]int, len(p.nodes))
	p.mu.Lock()
	for _, pc := range p.clients {
		if a := pc.addr.Load(); pc.inUse && a != nil {
			for _, n := range p.nodes {
				if n.addr == *a {
					inUse[n.index]++
				}
			}
		}
	}
	p.mu.Unlock()
	for _, n := range nodes {
		n.mu.Lock()
		if l, ok := byAddr[n.addr]; ok {
			if l != n.lastLoad {
				n.lastLoad, n.assigned = l, 0
			}
			out[n.index] = score{known: true, v: float64(l.Sessions + n.assigned)}
		} else {
			rtt := max(n.rtt.Seconds(), 1e-6)
			out[n.index] = score{v: rtt * float64(1+inUse[n.index])}
		}
		n.mu.Unlock()
	}
	return out
}

// point is a virtual node on the hash ring.
type point struct {
	hash uint64
	node int
}

func buildRing(addrs []string, vnodes int) []point {
	ring := make([]point, 0, len(addrs)*vnodes)
	for i, a := range addrs {
		for v := 0; v < vnodes; v++ {
			ring = append(ring, point{hash: hashKey(a + "#" + strconv.Itoa(v)), node: i})
		}
	}
	slices.SortFunc(ring, func(a, b point) int {
		if c := cmp.Compare(a.hash, b.hash); c != 0 {
			return c
		}
		return cmp.Compare(a.node, b.node)
	})
	return ring
}

// ringOrder lists every node once, in the order met walking the ring
// clockwise from key's hash.
func (p *Pool) ringOrder(key string) []*node {
	h := hashKey(key)
	i := sort.Search(len(p.ring), func(i int) bool { return p.ring[i].hash >= h })
	out := make([]*node, 0, len(p.nodes))
	seen := make([]bool, len(p.nodes))
	for j := 0; j < len(p.ring) && len(out) < len(p.nodes); j++ {
		pt := p.ring[(i+j)%len(p.ring)]
		if !seen[pt.node] {
			seen[pt.node] = true
			out = append(out, p.nodes[pt.node])
		}
	}
	return out
}

// hashKey is FNV-1a followed by a 64-bit finalizer (from SplitMix64), so
// that similar keys such as "node#1" and "node#2" spread over the ring.
func hashKey(s string) uint64 {
	f := fnv.New64a()
	f.Write([]byte(s))
	x := f.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
