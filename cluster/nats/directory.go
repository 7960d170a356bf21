package natsbus

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/nats-io/nats.go"
)

// syncBatch bounds the entries in one sync message, far below NATS's
// default 1 MB payload limit.
const syncBatch = 1000

// dispatch handles what arrives, one message at a time in arrival order:
// what one node published reaches this node's sessions in that order.
func (b *Bus) dispatch() {
	defer b.wg.Done()
	for {
		select {
		case <-b.stop:
			return
		case m := <-b.in:
			b.handle(m)
		}
	}
}

func (b *Bus) handle(nm *nats.Msg) {
	m, err := parseMsg(nm.Data)
	if err == nil && m.kind == kindBatch {
		err = eachBatched(m, func(r wireMsg) { b.handleMsg(r, nm.Subject) })
	} else if err == nil {
		b.handleMsg(m, nm.Subject)
	}
	if err != nil {
		b.errs.Add(1)
		b.warnOnce("bad:"+nm.Subject, "cluster: malformed message", "subject", nm.Subject)
	}
}

// handleMsg acts on one message that arrived on subject subj.
func (b *Bus) handleMsg(m wireMsg, subj string) {
	if m.origin == b.id {
		// NoEcho keeps our own messages away; one arriving means another
		// node uses our id.
		if m.kind == kindLoad || m.kind == kindUp {
			var c struct{ Instance string }
			if json.Unmarshal(m.body, &c) == nil && c.Instance != b.instance {
				b.warnOnce("dupid", "cluster: another node uses this node's id; node ids must differ", "id", b.id)
			}
		}
		return
	}
	switch k := m.kind; {
	case isData(k):
		kind := msgnet.ClusterMessageKind(m.kind &^ flagStored)
		err := b.node.Deliver(msgnet.ClusterMessage{Kind: kind, Target: m.target, Origin: m.origin, Payload: m.body,
			Stored: m.kind&flagStored != 0})
		switch {
		case err == nil:
			b.recv[kind].Add(1)
		case errors.Is(err, msgnet.ErrNoSession) && subj == b.subjA:
			// Sent to every node; another holds it, or none does.
		default:
			b.errs.Add(1)
		}
	case k == kindUp || k == kindDown:
		var ev dirEvent
		if json.Unmarshal(m.body, &ev) != nil {
			b.errs.Add(1)
			return
		}
		known := b.heard(m.origin, ev.Instance)
		if !known {
			b.sendSync(m.origin, false)
		}
		if m.kind == kindUp {
			b.up(entry{node: m.origin, session: ev.Session, stamp: ev.Stamp}, m.target)
		} else {
			b.down(m.origin, m.target, ev.Session)
		}
	case k == kindSync:
		var s syncBody
		if json.Unmarshal(m.body, &s) != nil {
			b.errs.Add(1)
			return
		}
		b.heard(m.origin, s.Instance)
		b.peerBatches(m.origin, s.Batch)
		for _, e := range s.Entries {
			b.up(entry{node: m.origin, session: e.Session, stamp: e.Stamp}, e.Client)
		}
		if !s.Reply {
			b.sendSync(m.origin, true)
		}
	case k == kindLoad:
		var l loadBody
		if json.Unmarshal(m.body, &l) != nil {
			b.errs.Add(1)
			return
		}
		if !b.heard(m.origin, l.Instance) {
			b.sendSync(m.origin, false)
		}
		b.mu.Lock()
		if p := b.peers[m.origin]; p != nil {
			p.sample(msgnet.NodeLoad{Node: m.origin, Addr: l.Addr, Sessions: l.Sessions, MsgsIn: l.MsgsIn, MsgsOut: l.MsgsOut}, l.At)
		}
		b.mu.Unlock()
		b.peerBatches(m.origin, l.Batch)
	case k == kindBye:
		var y byeBody
		json.Unmarshal(m.body, &y)
		b.mu.Lock()
		if p := b.peers[m.origin]; p != nil && p.instance == y.Instance {
			b.dropLocked(m.origin)
		}
		b.mu.Unlock()
		b.log.Info("cluster: node left", "node", m.origin)
	}
}

// heard records that node (in its life instance) is alive, and reports
// whether it was known already. A node heard of for the first time, or
// again after it expired or restarted, has its old entries dropped; the
// caller then exchanges directories with it.
func (b *Bus) heard(node, instance string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.peers[node]
	if p != nil && p.instance == instance {
		p.seen = time.Now()
		return true
	}
	if p != nil {
		b.dropLocked(node)
		b.log.Info("cluster: node restarted", "node", node)
	} else {
		b.log.Info("cluster: node joined", "node", node)
	}
	b.peers[node] = &peer{instance: instance, inbox: b.inbox(node), seen: time.Now()}
	b.batchOK.Store(false) // until it says it reads batches
	return false
}

// peerBatches records whether node reads batches, and whether all known
// nodes now do.
func (b *Bus) peerBatches(node string, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.peers[node]
	if p != nil {
		p.batch = ok
	}
	if !ok {
		b.lastOld.Store(time.Now().UnixNano())
		// Once per node life: a cluster that mixes versions works, but
		// every message to or past this node leaves alone, at several
		// times the CPU (docs/CLUSTER.md, "Batches").
		if p != nil && !p.toldOld {
			p.toldOld = true
			b.log.Info("cluster: node does not read batches (an older version); cluster messages go one by one until it is upgraded", "node", node)
		}
	}
	b.setBatchOKLocked()
}

// setBatchOKLocked lets the queue batch when every known node reads
// batches, and at least one is known. Lock must be held.
func (b *Bus) setBatchOKLocked() {
	all := len(b.peers) > 0
	for _, p := range b.peers {
		all = all && p.batch
	}
	b.batchOK.Store(all)
}

// dropLocked forgets a node and every directory entry it held.
func (b *Bus) dropLocked(node string) {
	delete(b.peers, node)
	b.setBatchOKLocked()
	for cid, e := range b.remote {
		if e.node == node {
			delete(b.remote, cid)
			delete(b.sessions, e.session)
		}
	}
}

// up applies a remote connection of a client id: the newest connection
// (entry.newer) wins everywhere. When this node holds an older one, it is
// kicked; when this node's is newer, the remote node kicks its own once our
// announcement reaches it, so the remote entry is ignored.
func (b *Bus) up(e entry, cid string) {
	b.observe(e.stamp)
	kick := false
	b.mu.Lock()
	if l, ok := b.local[cid]; ok {
		if l.newer(e) {
			b.mu.Unlock()
			return
		}
		kick = true
	}
	if r, ok := b.remote[cid]; !ok || e.newer(r) || (r.node == e.node && r.session == e.session) {
		if ok {
			delete(b.sessions, r.session)
		}
		b.remote[cid] = e
		b.sessions[e.session] = cid
	}
	b.mu.Unlock()
	if kick {
		// Kick spares the remote session only by id; a local connection of
		// cid made between the check above and this call would be kicked
		// too (see docs/CLUSTER.md).
		b.node.Kick(cid, e.session)
	}
}

func (b *Bus) down(node, cid, session string) {
	b.mu.Lock()
	if r, ok := b.remote[cid]; ok && r.node == node && r.session == session {
		delete(b.remote, cid)
		delete(b.sessions, session)
	}
	b.mu.Unlock()
}

// sendSync sends this node's whole table to node, in batches.
func (b *Bus) sendSync(node string, reply bool) {
	b.mu.RLock()
	entries := make([]syncEntry, 0, len(b.local))
	for cid, e := range b.local {
		entries = append(entries, syncEntry{Client: cid, Session: e.session, Stamp: e.stamp})
	}
	b.mu.RUnlock()
	subj := b.inbox(node)
	for first := true; first || len(entries) > 0; first = false {
		n := min(len(entries), syncBatch)
		b.sendJSON(subj, kindSync, "", syncBody{Instance: b.instance, Reply: reply, Entries: entries[:n], Batch: true})
		entries = entries[n:]
		reply = true // only the first batch asks for an answer
	}
}

// heartbeat publishes this node's load every interval and expires the
// nodes not heard from within the TTL.
func (b *Bus) heartbeat() {
	defer b.wg.Done()
	t := time.NewTicker(b.cfg.heartbeat)
	defer t.Stop()
	for {
		b.publishLoad()
		b.expire()
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
	}
}

func (b *Bus) publishLoad() {
	l := b.node.Load()
	l.Node = b.id
	if b.cfg.advertise != "" {
		l.Addr = b.cfg.advertise
	}
	at := time.Now().UnixNano()
	b.mu.Lock()
	b.self.sample(l, at)
	b.self.seen = time.Now()
	b.mu.Unlock()
	b.sendJSON(b.subjL, kindLoad, "", loadBody{
		Instance: b.instance, Addr: l.Addr, Sessions: l.Sessions, MsgsIn: l.MsgsIn, MsgsOut: l.MsgsOut,
		At: at, IntervalMS: b.cfg.heartbeat.Milliseconds(), Batch: true,
	})
}

func (b *Bus) expire() {
	cutoff := time.Now().Add(-b.cfg.ttl)
	var gone []string
	b.mu.Lock()
	for node, p := range b.peers {
		if p.seen.Before(cutoff) {
			b.dropLocked(node)
			gone = append(gone, node)
		}
	}
	b.mu.Unlock()
	for _, node := range gone {
		b.log.Warn("cluster: node expired: no heartbeat within the TTL", "node", node, "ttl", b.cfg.ttl)
	}
}

// sample records a load and derives rates from the previous one.
func (p *peer) sample(l msgnet.NodeLoad, at int64) {
	if p.hasLoad && at > p.at {
		dt := time.Duration(at - p.at).Seconds()
		p.inRate = float64(l.MsgsIn-min(l.MsgsIn, p.load.MsgsIn)) / dt
		p.outRate = float64(l.MsgsOut-min(l.MsgsOut, p.load.MsgsOut)) / dt
	}
	p.load, p.at, p.hasLoad = l, at, true
}
