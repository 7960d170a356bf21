package msgnet

// Bus joins servers into a cluster: broadcasts, group messages and direct
// messages published by one node are delivered by the others to their own
// sessions, and a directory says which node holds which client id. The
// default is no bus (a single server, and no cluster code on any path);
// package cluster/nats provides one on NATS. Set it with WithBus.
//
// The server calls the bus from many goroutines; implementations must be
// safe for concurrent use. Publish must not block on the network for long:
// it is called from Broadcast, SendGroup and SendTo.
type Bus interface {
	// Attach is called once, when the server starts serving: the bus
	// delivers what other nodes publish through node.
	Attach(node ClusterNode) error
	// Publish sends a message to the other nodes. For ClusterDirect it
	// returns ErrNoSession when no node holds the target.
	Publish(m ClusterMessage) error
	// ClientUp and ClientDown keep the directory: a session with a client
	// id (from its hello) opened or ended on this node. On ClientUp, a bus
	// must have the other nodes Kick an older session with that client id.
	ClientUp(clientID, sessionID string)
	ClientDown(clientID, sessionID string)
	// GroupUp and GroupDown say that this node's first member joined a
	// group, or its last one left, so a bus may route group messages only
	// to nodes with members.
	GroupUp(group string)
	GroupDown(group string)
	// Stats reports the bus's traffic for monitors.
	Stats() ClusterStats
	// Close detaches the bus; it is called when the server stops.
	Close() error
}

// ClusterMessageKind says how a cluster message is delivered.
type ClusterMessageKind uint8

// Kinds of cluster message.
const (
	ClusterBroadcast ClusterMessageKind = iota + 1 // every session of every node
	ClusterGroup                                   // members of Target on every node
	ClusterDirect                                  // the session or client id Target, wherever it is
)

// ClusterMessage is what nodes exchange.
type ClusterMessage struct {
	Kind    ClusterMessageKind
	Target  string // group name, or session or client id
	Origin  string // node id of the publisher
	Payload []byte
	// Stored: the origin appended the message to the stream of its group
	// or client id. With a SharedStore, the other nodes then deliver it
	// to that stream's subscribers from the log, and not again.
	Stored bool
}

// ClusterNode is a server as its bus sees it.
type ClusterNode interface {
	// NodeID is the server's id; nodes of a cluster need distinct ids.
	NodeID() string
	// Deliver hands a message from another node to this node's sessions.
	// For ClusterDirect it returns ErrNoSession when the target is not here.
	Deliver(m ClusterMessage) error
	// Kick disconnects this node's session with clientID, unless it is
	// keepSession: the client connected again elsewhere, and the newest
	// connection wins.
	Kick(clientID, keepSession string)
	// Load reports the node's load, for publishing to balancers.
	Load() NodeLoad
}

// NodeLoad is a node's load as published to balancers.
type NodeLoad struct {
	Node     string
	Addr     string
	Sessions int
	MsgsIn   uint64 // totals; a bus derives rates from successive samples
	MsgsOut  uint64
}

// ClusterStats is a bus's traffic, for monitors.
type ClusterStats struct {
	Nodes     int               // nodes known alive, this one included
	Published map[string]uint64 // by kind: "broadcast", "group", "direct"
	Received  map[string]uint64
	Errors    uint64
}

// WithBus joins the server to a cluster through b (see Bus).
func WithBus(b Bus) Option { return func(c *config) { c.bus = b } }

// clusterNode adapts a Server to ClusterNode without putting the bus's
// methods on the Server's own API.
type clusterNode struct{ srv *Server }

func (n clusterNode) NodeID() string { return n.srv.id }

func (n clusterNode) Deliver(m ClusterMessage) error {
	srv := n.srv
	switch m.Kind {
	case ClusterBroadcast:
		srv.broadcastLocal(m.Payload, nil)
	case ClusterGroup:
		if ss := srv.streams; ss != nil && ss.shared == nil {
			srv.appendIfStream(groupPrefix, m.Target, m.Payload) // this node's own log
		}
		srv.sendGroupLocal(m.Target, m.Payload, nil)
	case ClusterDirect:
		s := srv.lookup(m.Target)
		if s == nil {
			return ErrNoSession
		}
		if cid := s.ClientID(); cid != "" && s.subscribed(ClientStream(cid)) {
			switch {
			case srv.streams.shared == nil:
				srv.appendIfStream(clientPrefix, cid, m.Payload) // this node's own log
				return nil
			case m.Stored:
				return nil // the shared log's watch delivers it
			}
		}
		return s.Send(m.Payload)
	}
	return nil
}

func (n clusterNode) Kick(clientID, keepSession string) {
	if s := n.srv.reg.getClient(clientID); s != nil && s.id != keepSession && s.ClientID() == clientID {
		s.close(ErrReplaced, true)
	}
}

func (n clusterNode) Load() NodeLoad {
	l := NodeLoad{Node: n.srv.id, Sessions: n.srv.ConnectionCount()}
	if a := n.srv.Addr(); a != nil {
		l.Addr = a.String()
	}
	l.MsgsIn, l.MsgsOut = n.srv.ctr.endedMsgsIn.Load(), n.srv.ctr.endedMsgsOut.Load()
	n.srv.reg.each(func(s *Session) bool {
		in, out, _, _ := s.c.Counts()
		l.MsgsIn += in
		l.MsgsOut += out
		return true
	})
	return l
}

// lookup finds a local session by session id, then by client id.
func (srv *Server) lookup(id string) *Session {
	if s := srv.reg.get(id); s != nil {
		return s
	}
	return srv.reg.getClient(id)
}
