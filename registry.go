package msgnet

// Sessions returns a snapshot of the open sessions. It holds no lock once it
// returns, so the caller may send to them freely.
func (srv *Server) Sessions() []*Session {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	list := make([]*Session, 0, len(srv.sessions))
	for s := range srv.sessions {
		list = append(list, s)
	}
	return list
}

// Session returns the open session with the given session id.
func (srv *Server) Session(id string) (*Session, bool) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for s := range srv.sessions {
		if s.id == id {
			return s, true
		}
	}
	return nil, false
}

// SessionByClientID returns an established session whose client id is cid.
func (srv *Server) SessionByClientID(cid string) (*Session, bool) {
	for _, s := range srv.Sessions() {
		if s.ClientID() == cid {
			return s, true
		}
	}
	return nil, false
}

// Broadcast queues msg on every open session except those in except. It
// returns how many sessions queued it; sessions whose queue was full or
// that were closing are returned in failed with their error. It never waits
// on any session's network.
func (srv *Server) Broadcast(msg []byte, except ...*Session) (queued int, failed map[*Session]error) {
	for _, s := range srv.Sessions() {
		skip := false
		for _, e := range except {
			if e == s {
				skip = true
				break
			}
		}
		if skip {
			continue
		}
		if err := s.Send(msg); err != nil {
			if failed == nil {
				failed = make(map[*Session]error)
			}
			failed[s] = err
			continue
		}
		queued++
	}
	return queued, failed
}
