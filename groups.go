package msgnet

import (
	"math/rand/v2"
	"slices"
	"sync"
)

// Groups are named sets of sessions (what chat and game servers call
// rooms). A session leaves all its groups when it ends.
type groups struct {
	mu sync.RWMutex
	m  map[string]*members
}

// members is one group: a slice for sends to walk (a map's iteration cost
// 7% of the server at 8M fan-out deliveries a second) and each member's
// index in it, so that leaving is a swap with the last.
type members struct {
	list []*Session
	at   map[*Session]int
}

// add puts s in the group unless it is in already. Lock must be held.
func (g *members) add(s *Session) {
	if _, ok := g.at[s]; !ok {
		g.at[s] = len(g.list)
		g.list = append(g.list, s)
	}
}

// remove takes s out of the group. Lock must be held.
func (g *members) remove(s *Session) {
	i, ok := g.at[s]
	if !ok {
		return
	}
	last := len(g.list) - 1
	if i != last {
		g.list[i] = g.list[last]
		g.at[g.list[i]] = i
	}
	g.list[last] = nil
	g.list = g.list[:last]
	delete(g.at, s)
}

// Join adds s to the named group. Joining twice is harmless. It fails with
// ErrBadGroup for a name that is empty, too long (WithMaxGroupNameLength)
// or has control, format or white-space characters other than the space,
// with ErrTooManyGroups
// when s is in as many groups as it may be (WithMaxGroupsPerSession), and
// with ErrSessionClosed when s has ended.
func (srv *Server) Join(s *Session, group string) error {
	if !validGroup(group, srv.lim().MaxGroupNameLength) {
		return ErrBadGroup
	}
	e := s.x()
	e.groupMu.Lock()
	defer e.groupMu.Unlock()
	if e.left {
		return ErrSessionClosed
	}
	// A linear scan, bounded by the groups-per-session limit.
	if slices.Contains(e.groups, group) {
		return nil
	}
	if len(e.groups) >= srv.lim().MaxGroupsPerSession {
		return ErrTooManyGroups
	}
	e.groups = append(e.groups, group)
	srv.groups.mu.Lock()
	g := srv.groups.m[group]
	first := g == nil
	if first {
		g = &members{at: make(map[*Session]int)}
		srv.groups.m[group] = g
	}
	g.add(s)
	srv.groups.mu.Unlock()
	if first && srv.bus != nil {
		srv.bus.GroupUp(group)
	}
	return nil
}

// Leave removes s from the named group.
func (srv *Server) Leave(s *Session, group string) {
	e := s.ext.Load()
	if e == nil {
		return
	}
	e.groupMu.Lock()
	defer e.groupMu.Unlock()
	i := slices.Index(e.groups, group)
	if i < 0 {
		return
	}
	e.groups = slices.Delete(e.groups, i, i+1)
	srv.removeMember(s, group)
}

func (srv *Server) removeMember(s *Session, group string) {
	last := false
	srv.groups.mu.Lock()
	if g := srv.groups.m[group]; g != nil {
		g.remove(s)
		if len(g.list) == 0 {
			delete(srv.groups.m, group)
			last = true
		}
	}
	srv.groups.mu.Unlock()
	if last && srv.bus != nil {
		srv.bus.GroupDown(group)
	}
}

// leaveAll removes an ending session from every group.
func (srv *Server) leaveAll(s *Session) {
	e := s.x() // so that a Join after the end finds it marked
	e.groupMu.Lock()
	defer e.groupMu.Unlock()
	e.left = true
	for _, g := range e.groups {
		srv.removeMember(s, g)
	}
	e.groups = nil
}

// Groups returns the names of the groups s belongs to.
func (s *Session) Groups() []string {
	e := s.ext.Load()
	if e == nil {
		return nil
	}
	e.groupMu.Lock()
	defer e.groupMu.Unlock()
	return slices.Clone(e.groups)
}

// GroupMembers returns a snapshot of the sessions in a group.
func (srv *Server) GroupMembers(group string) []*Session {
	srv.groups.mu.RLock()
	defer srv.groups.mu.RUnlock()
	if g := srv.groups.m[group]; g != nil {
		return slices.Clone(g.list)
	}
	return []*Session{}
}

// SendGroup queues msg on every member of group except those listed, with
// Broadcast's guarantees. In a cluster it is also published to the other
// nodes, for their members.
//
// When the group has a stream (a reliable client subscribed to it, or
// something was published to it), the message is appended to it too, and
// the stream's subscribers get it with its position (see Publish).
func (srv *Server) SendGroup(group string, msg []byte, except ...*Session) Delivery {
	stored := srv.appendIfStream(groupPrefix, group, msg)
	return srv.sendGroupPlain(group, msg, stored, except...)
}

// sendGroupPlain sends msg to the group's members, here and on the other
// nodes, without touching its stream; stored says it was appended to it.
func (srv *Server) sendGroupPlain(group string, msg []byte, stored bool, except ...*Session) Delivery {
	d := srv.sendGroupLocal(group, msg, except)
	if srv.bus != nil {
		if err := srv.bus.Publish(ClusterMessage{Kind: ClusterGroup, Target: group, Origin: srv.id, Payload: msg, Stored: stored}); err != nil {
			srv.log.Warn("cluster group message failed", "group", group, "err", err)
		}
	}
	return d
}

// appendIfStream appends msg to the stream named prefix+id (a group's or
// a client id's) if it exists on this server, and reports whether it did.
func (srv *Server) appendIfStream(prefix, id string, msg []byte) bool {
	ss := srv.streams
	if ss == nil {
		return false
	}
	// Most messages go to ids without a stream: with a store of this
	// node's own, a look at the open streams answers that without
	// building the name.
	var buf [80]byte
	key := append(append(buf[:0], prefix...), id...)
	if ss.shared == nil && !ss.isOpen(key) {
		return false
	}
	name := string(key)
	st, err := ss.get(name, false)
	if err != nil {
		srv.log.Warn("looking up a stream failed; the message is delivered but not kept", "stream", name, "err", err)
	}
	if st == nil {
		return false
	}
	_, _, err = st.append(msg, "")
	if err == errReclaimed {
		// Dropped meanwhile as empty: a stream existed, so one keeps it.
		_, _, err = srv.streams.append(name, msg, "")
	}
	if err != nil {
		srv.log.Warn("appending to a stream failed", "stream", name, "err", err)
	}
	return true
}

func (srv *Server) sendGroupLocal(group string, msg []byte, except []*Session) Delivery {
	var d Delivery
	srv.groups.mu.RLock()
	defer srv.groups.mu.RUnlock()
	g := srv.groups.m[group]
	if g == nil || len(g.list) == 0 {
		return d
	}
	// From a random member on: when the server's queue budget runs out
	// partway, the members refused are not the same ones every time.
	at := rand.IntN(len(g.list))
	for _, list := range [2][]*Session{g.list[at:], g.list[:at]} {
		for _, s := range list {
			if slices.Contains(except, s) {
				continue
			}
			d.add(s, s.Send(msg))
		}
	}
	return d
}
