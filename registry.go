package msgnet

import (
	"hash/maphash"
	"slices"
	"sync"
)

// registry indexes the open sessions by session id and by client id. It is
// sharded so that a broadcast walking it, connects and disconnects do not
// all queue on one lock; a walk holds one shard's read lock at a time and
// only queues (never writes to the network) while holding it.
type registry struct {
	seed   maphash.Seed
	shards [registryShards]registryShard
}

const registryShards = 64

type registryShard struct {
	mu       sync.RWMutex
	byID     map[string]*Session
	byClient map[string]*Session // the session with that client id: the newest (see claimClientID)
}

func newRegistry() *registry {
	r := &registry{seed: maphash.MakeSeed()}
	for i := range r.shards {
		r.shards[i].byID = make(map[string]*Session)
		r.shards[i].byClient = make(map[string]*Session)
	}
	return r
}

func (r *registry) shard(key string) *registryShard {
	return &r.shards[maphash.String(r.seed, key)%registryShards]
}

func (r *registry) add(s *Session) {
	sh := r.shard(s.id)
	sh.mu.Lock()
	sh.byID[s.id] = s
	sh.mu.Unlock()
}

// setClient indexes s under its client id once the hello has named it,
// unless a session accepted after s holds it already, and returns the
// session that lost the id: the one indexed there before, or s itself;
// nil if none. Two sessions' hellos may finish in either order on their
// own goroutines; the one accepted later must win all the same.
func (r *registry) setClient(s *Session, cid string) (lost *Session) {
	sh := r.shard(cid)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	old := sh.byClient[cid]
	if old == s {
		return nil
	}
	if old != nil && acceptedAfter(old, s) {
		return s
	}
	sh.byClient[cid] = s
	return old
}

// acceptedAfter reports whether a was accepted after b by the same server:
// session ids are the server's prefix and an increasing decimal count.
func acceptedAfter(a, b *Session) bool {
	return len(a.id) > len(b.id) || len(a.id) == len(b.id) && a.id > b.id
}

func (r *registry) remove(s *Session) {
	sh := r.shard(s.id)
	sh.mu.Lock()
	delete(sh.byID, s.id)
	sh.mu.Unlock()
	if cid := s.ClientID(); cid != s.id {
		sh := r.shard(cid)
		sh.mu.Lock()
		if sh.byClient[cid] == s {
			delete(sh.byClient, cid)
		}
		sh.mu.Unlock()
	}
}

func (r *registry) get(id string) *Session {
	sh := r.shard(id)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return sh.byID[id]
}

func (r *registry) getClient(cid string) *Session {
	sh := r.shard(cid)
	sh.mu.RLock()
	s := sh.byClient[cid]
	sh.mu.RUnlock()
	if s == nil {
		// A session without a hello has its session id as client id.
		s = r.get(cid)
	}
	return s
}

// each calls f for every session, one shard at a time under its read lock;
// f must not block and must not take registry locks.
func (r *registry) each(f func(*Session) bool) {
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.RLock()
		for _, s := range sh.byID {
			if !f(s) {
				sh.mu.RUnlock()
				return
			}
		}
		sh.mu.RUnlock()
	}
}

// Sessions returns a snapshot of the open sessions.
func (srv *Server) Sessions() []*Session {
	list := make([]*Session, 0, srv.ConnectionCount())
	srv.reg.each(func(s *Session) bool { list = append(list, s); return true })
	return list
}

// Range calls f for each open session until f returns false. f runs while a
// part of the registry is read-locked: it may send (sends never block) but
// must not wait, and must not call methods that change the registry.
func (srv *Server) Range(f func(s *Session) bool) { srv.reg.each(f) }

// Session returns the open session with the given session id.
func (srv *Server) Session(id string) (*Session, bool) {
	s := srv.reg.get(id)
	return s, s != nil
}

// SessionByClientID returns the newest open session whose client id is cid.
func (srv *Server) SessionByClientID(cid string) (*Session, bool) {
	s := srv.reg.getClient(cid)
	return s, s != nil
}

// Delivery reports the outcome of a send to many sessions.
type Delivery struct {
	Queued int       // sessions that queued the message
	Failed []Failure // sessions that did not, and why
}

// Failure is one session that did not take a message.
type Failure struct {
	Session *Session
	Err     error // ErrQueueFull, ErrSlowConsumer, ErrSessionClosed, ...
}

func (d *Delivery) add(s *Session, err error) {
	if err != nil {
		d.Failed = append(d.Failed, Failure{Session: s, Err: err})
		return
	}
	d.Queued++
}

// Broadcast queues msg on every open session except those listed. It never
// waits on a session's network: a slow session's bounded queue absorbs it,
// or the session is reported in Failed (and, under SlowConsumerDisconnect,
// disconnected). In a cluster it is also published to the other nodes,
// whose deliveries are not counted here.
func (srv *Server) Broadcast(msg []byte, except ...*Session) Delivery {
	d := srv.broadcastLocal(msg, except)
	if srv.bus != nil {
		if err := srv.bus.Publish(ClusterMessage{Kind: ClusterBroadcast, Origin: srv.id, Payload: msg}); err != nil {
			srv.log.Warn("cluster broadcast failed", "err", err)
		}
	}
	return d
}

func (srv *Server) broadcastLocal(msg []byte, except []*Session) Delivery {
	var d Delivery
	srv.reg.each(func(s *Session) bool {
		if !slices.Contains(except, s) {
			d.add(s, s.Send(msg))
		}
		return true
	})
	return d
}

// SendTo queues msg on the session whose session id, or else client id, is
// id. It fails with ErrNoSession when there is none. In a cluster, an id not
// found here is sent to the node the directory names.
//
// When the client id has a stream (its client subscribed to it), the
// message is appended to it and kept while the client is away, within the
// stream's retention; the client gets it with its position, now or when
// it comes back. SendTo then succeeds even if the client is not connected.
func (srv *Server) SendTo(id string, msg []byte) error {
	if srv.appendIfStream(clientPrefix, id, msg) {
		srv.sendToPlain(id, msg, true)
		return nil
	}
	return srv.sendToPlain(id, msg, false)
}

// sendToPlain sends msg to the session of id, here or on another node, if
// it did not subscribe to the id's stream (which delivers it itself);
// stored says msg was appended to that stream.
func (srv *Server) sendToPlain(id string, msg []byte, stored bool) error {
	if s := srv.lookup(id); s != nil {
		if stored && s.subscribed(ClientStream(id)) {
			return nil
		}
		return s.Send(msg)
	}
	if srv.bus != nil {
		return srv.bus.Publish(ClusterMessage{Kind: ClusterDirect, Target: id, Origin: srv.id, Payload: msg, Stored: stored})
	}
	return ErrNoSession
}
