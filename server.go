package msgnet

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	_ "unsafe" // for go:linkname

	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/internal/conn"
	"github.com/msgnet/msgnet/internal/netpoll"
	"github.com/msgnet/msgnet/pipeline"
)

// MessageHandler receives one DATA message (or one text line). msg is valid
// only until the handler returns: copy it to keep it. Messages of one
// session arrive in order, one at a time; sessions run concurrently. A
// handler may block; that session's input waits, no other session's does.
type MessageHandler func(s *Session, msg []byte)

// ConnectHandler runs once per session, before its first message, after the
// client's hello if it sent one (so ClientID is final).
type ConnectHandler func(s *Session)

// DisconnectHandler runs exactly once for every session whose connect
// handler ran, after its last message handler returned. reason says why:
// test it with errors.Is against ErrPeerClosed, ErrIdleTimeout,
// ErrServerShutdown, or inspect a *DisconnectError, *ProtocolError or
// *HandlerPanicError.
type DisconnectHandler func(s *Session, reason error)

// PublishHandler decides what becomes of a client's publish to a stream
// (docs/PROTOCOL.md 6.7) before it is stored: it returns what the group's
// members (or the client id's session) that did not subscribe receive as a
// plain message, nil for nothing, or an error to refuse the publish (the
// publisher is told; a *ProtocolError's code is sent). The stream keeps
// msg as published. Without one, relay is msg itself.
type PublishHandler func(s *Session, stream string, msg []byte) (relay []byte, err error)

type handlers struct {
	request    RequestHandler
	message    MessageHandler
	connect    ConnectHandler
	disconnect DisconnectHandler
	publish    PublishHandler
}

// Server accepts connections and runs a Session for each. Create one with
// NewServer, set its handlers, then Serve a listener or Start on an address.
//
//	srv := msgnet.NewServer("main_server", msgnet.WithMaxConnections(1000))
//	srv.OnMessage(func(s *msgnet.Session, msg []byte) {
//		s.SendString("Echo: " + string(msg))
//	})
//	if err := srv.Start("127.0.0.1:8080"); err != nil { ... }
//	defer srv.Shutdown(context.Background())
type Server struct {
	id       string
	cfg      config
	log      *slog.Logger
	handlers atomic.Pointer[handlers]

	idPrefix string
	nextID   atomic.Uint64

	limits   atomic.Pointer[Limits]           // now; SetLimits changes them
	connCfg  atomic.Pointer[limitsConnConfig] // the engine configuration of new connections (connConfig)
	retickCh chan struct{}                    // tells the sweeper the timeouts changed

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	perIP     map[netip.Addr]int // open sessions per remote IP
	started   bool
	stopping  bool
	pollers   []*netpoll.Poller // parked sessions; one per GOMAXPROCS with inline handlers

	reg     *registry
	groups  groups
	bus     Bus
	ctr     counters
	streams *streams // nil: WithoutStreams
	start   time.Time
	count   atomic.Int64  // open sessions
	pollGen atomic.Uint32 // generations of poller registrations
	running atomic.Bool
	sessWG  sync.WaitGroup // one per session until it has ended
	bgWG    sync.WaitGroup // accept loops, poller, sweeper
	done    chan struct{}  // closed when the server has stopped (finishStop)
	stopCh  chan struct{}  // closed when stopping starts
	sweepCh chan struct{}  // closed when every session has ended: the sweeper cuts lingers until then

}

// NewServer returns a server with the given id (reported to clients in the
// welcome) and options.
func NewServer(id string, opts ...Option) *Server {
	cfg := newConfig(opts)
	if cfg.compression == nil {
		cfg.compression = pipeline.Codecs() // a server agrees to every codec unless told
	}
	if !netpoll.Supported {
		cfg.engine = EngineGoroutine
	}
	var p [4]byte
	rand.Read(p[:])
	srv := &Server{
		id:        id,
		cfg:       cfg,
		log:       cfg.logger,
		idPrefix:  hex.EncodeToString(p[:]) + "-",
		listeners: make(map[net.Listener]struct{}),
		perIP:     make(map[netip.Addr]int),
		reg:       newRegistry(),
		groups:    groups{m: make(map[string]*members)},
		done:      make(chan struct{}),
		stopCh:    make(chan struct{}),
		sweepCh:   make(chan struct{}),
	}
	srv.handlers.Store(&handlers{})
	srv.bus = cfg.bus
	srv.ctr.Log = cfg.logger
	l := cfg.limits
	l.MessageSize, l.SendQueueBytes = cfg.maxPayload, cfg.queueBytes
	l = l.normalized()
	srv.limits.Store(&l)
	srv.retickCh = make(chan struct{}, 1)
	srv.ctr.Budget = conn.NewBudget(l.ServerQueueBytes)
	if !cfg.noStreams {
		st := cfg.store
		if st == nil {
			st = MemoryStore()
		}
		srv.streams = newStreams(srv, st)
	}
	srv.start = time.Now()
	return srv
}

func (srv *Server) setHandlers(f func(h *handlers)) {
	for {
		old := srv.handlers.Load()
		h := *old
		f(&h)
		if srv.handlers.CompareAndSwap(old, &h) {
			return
		}
	}
}

// OnMessage sets the handler for DATA messages and text lines.
func (srv *Server) OnMessage(h MessageHandler) { srv.setHandlers(func(x *handlers) { x.message = h }) }

// OnRequest sets the handler for requests from clients that negotiated
// request/reply (the Go client does). Its return value is sent back as the
// reply. It runs in the session's order, like OnMessage.
func (srv *Server) OnRequest(h RequestHandler) { srv.setHandlers(func(x *handlers) { x.request = h }) }

// OnPublish sets the handler of clients' publishes to streams (see
// PublishHandler). It runs in the session's order, like OnMessage.
func (srv *Server) OnPublish(h PublishHandler) { srv.setHandlers(func(x *handlers) { x.publish = h }) }

// OnConnect sets the handler run when a session is established.
func (srv *Server) OnConnect(h ConnectHandler) { srv.setHandlers(func(x *handlers) { x.connect = h }) }

// OnDisconnect sets the handler run when a session has ended.
func (srv *Server) OnDisconnect(h DisconnectHandler) {
	srv.setHandlers(func(x *handlers) { x.disconnect = h })
}

// ID is the server id given to NewServer.
func (srv *Server) ID() string { return srv.id }

// IsRunning reports whether the server is serving and not stopping.
func (srv *Server) IsRunning() bool { return srv.running.Load() }

// ConnectionCount is the number of open sessions.
func (srv *Server) ConnectionCount() int { return int(srv.count.Load()) }

// Addr is the address of the first listener, or nil before one is served.
func (srv *Server) Addr() net.Addr {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for l := range srv.listeners {
		return l.Addr()
	}
	return nil
}

// Start listens on a TCP address and serves it in the background. It
// returns once the listener is open; use Wait or Done to block until the
// server stops.
func (srv *Server) Start(addr string) error {
	l, err := srv.Listen(addr)
	if err != nil {
		return err
	}
	if srv.cfg.tls != nil {
		l = tls.NewListener(l, srv.cfg.tls)
	}
	if err := srv.track(l); err != nil {
		l.Close()
		return err
	}
	go func() {
		defer srv.bgWG.Done()
		srv.serve(l)
	}()
	return nil
}

// Listen opens a TCP listener on addr suited to the server, for Serve.
// When the server has an idle timeout, which already ends sessions whose
// peer has vanished, accepted connections skip TCP keepalive: its four
// setsockopt calls are a visible part of what accepting a connection costs.
func (srv *Server) Listen(addr string) (net.Listener, error) {
	lc := net.ListenConfig{}
	if srv.lim().IdleTimeout > 0 {
		lc.KeepAlive = -1
	}
	return lc.Listen(context.Background(), "tcp", addr)
}

// Serve accepts connections on l until the server stops, and returns
// ErrServerClosed then. It takes ownership of l.
func (srv *Server) Serve(l net.Listener) error {
	if srv.cfg.tls != nil {
		l = tls.NewListener(l, srv.cfg.tls)
	}
	if err := srv.track(l); err != nil {
		l.Close()
		return err
	}
	defer srv.bgWG.Done()
	return srv.serve(l)
}

// track registers a listener about to be served, and counts its accept
// loop in bgWG, under the lock that stopping is set under: a stop either
// sees the listener or refuses it.
func (srv *Server) track(l net.Listener) error {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.stopping {
		return ErrServerClosed
	}
	if err := srv.startLocked(); err != nil {
		return err
	}
	srv.listeners[l] = struct{}{}
	srv.bgWG.Add(1)
	return nil
}

// startLocked does what the first Serve, Start or ServeConn does: attach
// the cluster bus and start the sweeper (idle and handshake timeouts,
// parking of quiet hot readers). A server fed only by ServeConn (WebSocket,
// HTTP/2) starts here too.
func (srv *Server) startLocked() error {
	if srv.started {
		return nil
	}
	if srv.bus != nil {
		if err := srv.bus.Attach(clusterNode{srv}); err != nil {
			return err
		}
	}
	srv.started = true
	srv.running.Store(true)
	srv.bgWG.Add(1)
	go srv.sweep()
	return nil
}

func (srv *Server) serve(l net.Listener) error {
	var delay time.Duration
	accept := srv.acceptFunc(l)
	for {
		nc, err := accept()
		if err != nil {
			select {
			case <-srv.stopCh:
				return ErrServerClosed
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
				errors.Is(err, syscall.ECONNABORTED) {
				// Out of descriptors or a transient failure: back off
				// rather than spin, as net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				srv.log.Warn("accept failed; retrying", "err", err, "delay", delay)
				select {
				case <-time.After(delay):
				case <-srv.stopCh:
					return ErrServerClosed
				}
				continue
			}
			srv.mu.Lock()
			delete(srv.listeners, l)
			srv.mu.Unlock()
			return err
		}
		delay = 0
		srv.ServeConn(nc)
	}
}

// acceptFunc returns how serve accepts from l. With event loops, a plain
// TCP listener's connections are accepted as conn.Sockets: descriptors the
// loops own, with no net.Conn or runtime poll descriptor, which is most of
// what an idle connection would cost and a part of what accepting and
// closing one costs. They inherit TCP_NODELAY and keepalive from the
// listener (as Listen sets them: keepalive only without an idle timeout).
// A loop's epoll set watches the listener (acceptGate), and each report
// accepts every connection pending.
func (srv *Server) acceptFunc(l net.Listener) func() (net.Conn, error) {
	tl, ok := l.(*net.TCPListener)
	if !ok || !conn.SocketsSupported || !srv.cfg.engine.loops() {
		return l.Accept
	}
	rc, err := tl.SyscallConn()
	if err != nil || conn.PrepareListener(rc, srv.lim().IdleTimeout <= 0) != nil {
		return l.Accept
	}
	gate := srv.acceptGate(rc)
	if gate == nil {
		return l.Accept
	}
	a := conn.NewAcceptor(rc)
	return func() (net.Conn, error) {
		for {
			s, err := a.Accept()
			switch {
			case err == nil:
				return s, nil
			case err != conn.ErrWouldBlock:
				return nil, err
			}
			gate.rearm()
			if !gate.wait(srv.stopCh) {
				return nil, ErrServerClosed
			}
		}
	}
}

// ServeConn runs a session on a connection accepted elsewhere: transports
// such as WebSocket or HTTP/2 hand their streams to the server here. It
// returns at once; the session runs until it ends.
func (srv *Server) ServeConn(nc net.Conn) {
	srv.mu.Lock()
	if srv.stopping {
		srv.mu.Unlock()
		nc.Close()
		return
	}
	if err := srv.startLocked(); err != nil {
		srv.mu.Unlock()
		srv.log.Error("cannot start serving", "err", err)
		nc.Close()
		return
	}
	lim := srv.lim()
	// Every check and the count's increment are under srv.mu, so accepts
	// cannot overtake each other past the limit; the count goes up only once
	// the session is in the registry, so that a caller who sees it counted
	// finds it there (a Broadcast reaches it).
	if lim.MaxConnections > 0 && srv.count.Load() >= int64(lim.MaxConnections) {
		srv.bgWG.Add(1)
		srv.mu.Unlock()
		go srv.refuse(nc, frame.CodeServerFull, "server at max connections", "server full")
		return
	}
	if srv.ctr.Budget.Over() {
		srv.bgWG.Add(1)
		srv.mu.Unlock()
		go srv.refuse(nc, CodeServerBusy, "the server's send queues are full; try again later", "server busy")
		return
	}
	{ // counted whatever the limit, so that SetLimits can turn it on
		ip := peerIP(nc)
		if lim.MaxConnectionsPerIP > 0 && srv.perIP[ip] >= lim.MaxConnectionsPerIP {
			srv.bgWG.Add(1)
			srv.mu.Unlock()
			go srv.refuse(nc, CodePerIPLimit, "too many connections from this address", "per-IP connection limit")
			return
		}
		srv.perIP[ip]++
	}
	srv.cfg.applySocketBuffers(nc)
	id := srv.idPrefix + strconv.FormatUint(srv.nextID.Add(1), 10)
	s := newSession(srv, &srv.ctr, id, nc, srv.connConfig(lim))
	s.handshaking.Store(true)
	srv.reg.add(s)
	srv.count.Add(1)
	srv.sessWG.Add(1)
	registered := srv.registerLocked(s)
	srv.mu.Unlock()
	srv.ctr.accepted.Add(1)
	if !registered {
		s.c.Start()
	}
}

// connConfig is the engine's configuration of the connections accepted
// under lim: one for all of them, made again when the limits change, so
// that a connection does not carry a copy.
func (srv *Server) connConfig(lim *Limits) *conn.Config {
	if cc := srv.connCfg.Load(); cc != nil && cc.lim == lim {
		return cc.cfg
	}
	cc := &limitsConnConfig{lim: lim, cfg: &conn.Config{
		MaxPayload:     lim.MessageSize,
		QueueLimit:     lim.SendQueueBytes,
		Drain:          srv.cfg.drainTimeout,
		SlowDisconnect: srv.cfg.slowConsumer == SlowConsumerDisconnect,
		Secure:         srv.cfg.auth != nil || srv.cfg.psk != nil,
		Held:           true,
		Shared:         &srv.ctr.Shared,
	}}
	srv.connCfg.Store(cc)
	return cc.cfg
}

// limitsConnConfig is a connConfig and the limits it was made for.
type limitsConnConfig struct {
	lim *Limits
	cfg *conn.Config
}

// refuse answers a connection beyond max connections, on its own goroutine
// so that lingering over its close does not hold up accepting.
func (srv *Server) refuse(nc net.Conn, code, message, reason string) {
	defer srv.bgWG.Done()
	srv.ctr.refused.Add(code)
	b := frame.Append(nil, frame.KindError, 0, frame.AppendError(nil, code, message))
	b = frame.Append(b, frame.KindDisconnect, 0, []byte(reason))
	nc.SetWriteDeadline(time.Now().Add(time.Second))
	nc.Write(b)
	conn.LingerClose(nc)
}

// acceptGate returns a gate that tells serve when the listener rc has a
// connection waiting, or nil: a loop's epoll set watches it. (Blocking
// loops wait in epoll_wait holding their P (see netpoll.New), so an Accept
// waiting on the runtime's poller would be woken only once the runtime
// takes the P back; the loop itself notices a connection at once.)
func (srv *Server) acceptGate(rc syscall.RawConn) *acceptGate {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if !srv.startPollersLocked() {
		return nil
	}
	g := &acceptGate{rc: rc, p: srv.pollers[0], gen: srv.pollGen.Add(1), ready: make(chan struct{}, 1), idle: time.NewTimer(gateIdle)}
	err := errors.ErrUnsupported
	rc.Control(func(fd uintptr) { err = g.p.Add(int(fd), g, g.gen) })
	if err != nil {
		return nil
	}
	return g
}

// acceptGate tells an accept loop when its listener has a connection
// waiting. Its registration is one-shot, rearmed once the loop has
// accepted every connection pending; rearming reports at once if one came
// meanwhile.
type acceptGate struct {
	rc    syscall.RawConn // the listener's: its descriptor is used only inside rc.Control, so never after a close freed the number
	p     *netpoll.Poller
	gen   uint32
	ready chan struct{}
	idle  *time.Timer
}

// gateIdle is how long serve waits for the gate before it tries to accept
// anyway: a listener closed by its owner (which takes it out of the epoll
// set without a report) still ends Serve with the accept's error.
const gateIdle = time.Second

// wait waits for a report, for gateIdle, or for stop; it reports false on
// stop.
func (g *acceptGate) wait(stop <-chan struct{}) bool {
	g.idle.Reset(gateIdle)
	defer g.idle.Stop()
	select {
	case <-g.ready:
	case <-g.idle.C:
	case <-stop:
		return false
	}
	return true
}

// Readable implements netpoll.Readable, on the loop.
func (g *acceptGate) Readable(int64, bool, bool) bool {
	select {
	case g.ready <- struct{}{}:
	default:
	}
	return false
}

// rearm watches the listener again once no connection is pending. A
// report left from before is dropped: the accepts since took its
// connections.
func (g *acceptGate) rearm() {
	select {
	case <-g.ready:
	default:
	}
	g.rc.Control(func(fd uintptr) { g.p.Rearm(int(fd), g.gen) })
}

// registerLocked hands a session to one of the server's pollers (starting
// them on first use), as its engine says. It reports false for a session
// that needs a goroutine of its own (not plain TCP, or EngineGoroutine).
// Lock must be held (srv.mu).
func (srv *Server) registerLocked(s *Session) bool {
	if !srv.startPollersLocked() {
		return false
	}
	gen := srv.pollGen.Add(1)
	return s.c.Register(srv.pollers[int(gen)%len(srv.pollers)], gen, srv.cfg.engine.loops())
}

// startPollersLocked starts the server's pollers on first use, and reports
// whether there are any. Called with srv.mu held. A stopping server starts
// none: finishStop has taken the pollers to close, or is about to.
func (srv *Server) startPollersLocked() bool {
	if !srv.cfg.engine.polls() || srv.stopping {
		return false
	}
	if srv.pollers == nil {
		n := 1
		if srv.cfg.engine.loops() {
			// Handlers run on the loops: one per processor.
			n = runtime.GOMAXPROCS(0)
		}
		for range n {
			p, err := netpoll.New(srv.cfg.engine == EngineLoopBlocking)
			if err != nil {
				srv.log.Warn("cannot park idle connections; every session gets a goroutine", "err", err)
				for _, p := range srv.pollers {
					p.Close()
				}
				srv.pollers = nil
				srv.cfg.engine = EngineGoroutine
				return false
			}
			if srv.cfg.engine.loops() {
				conn.PrepareLoop(p)
			}
			srv.pollers = append(srv.pollers, p)
			srv.bgWG.Add(1)
			go func() {
				defer srv.bgWG.Done()
				if err := p.Run(); !errors.Is(err, netpoll.ErrClosed) {
					// Not expected from epoll; its sessions are no longer
					// read, so say so, and keep the descriptors until the
					// server stops rather than free numbers still in use.
					srv.log.Error("event loop stopped; its sessions will only end by timeout or shutdown", "err", err)
					<-srv.stopCh
				}
				p.Release()
			}()
		}
	}
	return len(srv.pollers) > 0
}

// admit implements peer: until the session is established it completes
// or skips the handshake, and it applies the rate limits to frames other
// than DATA.
func (srv *Server) admit(s *Session, f frame.Frame) bool {
	if !s.established {
		if f.Kind != frame.KindControl && s.authPending() {
			srv.refuseAuth(s) // anything but the answer to a challenge fails it
			return false
		}
		if !srv.inHandshake(s, f) && !srv.establish(s) {
			return false
		}
	}
	if f.Kind != frame.KindData && f.Kind != frame.KindDisconnect {
		if s.established && srv.lim().ControlRate > 0 && !srv.allowControl(s) {
			return false
		}
		if !srv.allowMessage(s) {
			return false
		}
	}
	return true
}

// handleData implements peer: a message, a request or a reply.
func (srv *Server) handleData(s *Session, f frame.Frame) error {
	switch f.Flags {
	case frame.FlagRequest:
		if !srv.allowMessage(s) {
			return nil
		}
		h := srv.handlers.Load().request
		s.handleRequest(f.Payload, func(req []byte) ([]byte, error) {
			if h == nil {
				return nil, ErrNoRequestHandler
			}
			return h(s, req)
		})
	case frame.FlagReply:
		s.handleReply(f.Payload)
	case frame.FlagPublish:
		if e := s.x(); !e.pubHalted && !srv.allowMessage(s) {
			// Not a refusal of the message: over the rate, the session
			// ends, and the client resends it, in order, once reconnected.
			// Acknowledging later publishes instead would reorder them.
			srv.streams.flushStaged(s) // its answers go first
			e.flushPubAcks(s)
			e.pubHalted = true
			s.close(&ProtocolError{Code: CodeRateLimited, Message: "over the message rate: reconnect and publish again"}, true)
			return nil
		}
		srv.streams.publish(s, f.Payload)
	case frame.FlagAck:
		return srv.streams.ack(s, f.Payload)
	case frame.FlagStream:
		// A stream's message goes from server to client only.
		s.sendError(CodeUnknownType, "flag 0x10 (stream) is the server's to send")
	default:
		srv.deliver(s, f.Payload)
	}
	return nil
}

// handleError implements peer.
func (srv *Server) handleError(s *Session, e frame.ErrorBody) {
	// Debug level: a peer must not be able to flood the log.
	srv.log.Debug("peer reported an error", "session", s.id, "code", e.Code, "message", e.Message)
}

// handlePong implements peer: a server sends no PING of its own.
func (srv *Server) handlePong(*Session, []byte) {}

// deliver hands a message to the message handler, within the rate limit.
func (srv *Server) deliver(s *Session, msg []byte) {
	if !srv.allowMessage(s) {
		return
	}
	if h := srv.handlers.Load().message; h != nil {
		s.callMessage(h, msg)
	}
}

// plainHandler implements peer: on an established session without a
// pipeline or a rate limit, a plain message is only its handler's call.
func (srv *Server) plainHandler(s *Session) MessageHandler {
	if !s.established || s.c.Pipe() != nil || s.limited() {
		return nil
	}
	return srv.handlers.Load().message
}

// handleLine implements text mode: every line is a message.
func (srv *Server) handleLine(s *Session, line []byte) {
	if !s.established && !srv.establish(s) {
		return
	}
	srv.deliver(s, line)
}

// nanotime is the runtime's monotonic clock: one clock reading where
// time.Now takes two (wall and monotonic), for timing handlers.
//
//go:linkname nanotime runtime.nanotime
func nanotime() int64

// sessionEnded is the last step of every session.
func (srv *Server) sessionEnded(s *Session, reason error) {
	// Leaving the registry and folding the session's counts into the
	// totals is one step for Stats, so that no total ever goes down.
	c := &srv.ctr
	c.fold.Lock()
	srv.reg.remove(s)
	in, out, bin, bout := s.c.Counts()
	c.endedMsgsIn.Add(in)
	c.endedMsgsOut.Add(out)
	c.endedBytesIn.Add(bin)
	c.endedBytesOut.Add(bout)
	c.fold.Unlock()
	srv.leaveAll(s)
	if srv.streams != nil {
		srv.streams.dropSubscriptions(s)
	}
	if srv.bus != nil {
		if cid := s.ClientID(); cid != s.id {
			srv.bus.ClientDown(cid, s.id)
		}
	}
	c.disconnects.Add(ReasonClass(reason))
	ip := peerIP(s.c.NetConn())
	srv.mu.Lock()
	if srv.perIP[ip]--; srv.perIP[ip] <= 0 {
		delete(srv.perIP, ip)
	}
	srv.mu.Unlock()
	srv.count.Add(-1)
	if s.established {
		if srv.log.Enabled(context.Background(), slog.LevelInfo) {
			srv.log.Info("session disconnected", "session", s.id, "client", s.ClientID(), "reason", reason)
		}
		if h := srv.handlers.Load().disconnect; h != nil {
			func() {
				defer func() {
					if r := recover(); r != nil {
						srv.log.Error("disconnect handler panicked", "session", s.id, "panic", r)
					}
				}()
				h(s, reason)
			}()
		}
	}
	srv.sessWG.Done()
}

// sweep closes sessions that have been silent for the idle timeout, and
// parks hot readers that went quiet. One goroutine checks all sessions, so
// an idle session costs no timer.
func (srv *Server) sweep() {
	defer srv.bgWG.Done()
	tick := sweepTick(srv.lim())
	t := time.NewTicker(tick)
	defer t.Stop()
	var idle, late, cut []*Session
	var lastExpire time.Time
	var expiring atomic.Bool
	for {
		select {
		case <-srv.sweepCh:
			return
		case <-srv.retickCh:
			if next := sweepTick(srv.lim()); next != tick {
				tick = next
				t.Reset(tick)
			}
		case now := <-t.C:
			l := srv.lim()
			timeout, hsTimeout := l.IdleTimeout, l.HandshakeTimeout
			idleLimit := now.Add(-timeout).UnixNano()
			parkLimit := now.Add(-conn.ParkAfter).UnixNano()
			hsLimit := now.Add(-hsTimeout).UnixNano()
			lingerLimit := now.Add(-conn.LingerTime).UnixNano()
			idle, late, cut = idle[:0], late[:0], cut[:0]
			srv.reg.each(func(s *Session) bool {
				if s.c.LingeredSince(lingerLimit) {
					cut = append(cut, s)
				} else if hsTimeout > 0 && s.handshaking.Load() && s.connectAt < hsLimit {
					late = append(late, s)
				} else if timeout > 0 && s.c.LastActivity() < idleLimit {
					idle = append(idle, s)
				} else {
					s.c.DemoteIfIdle(parkLimit) // only parked sessions wait hot
				}
				return true
			})
			for i, s := range idle {
				s.close(ErrIdleTimeout, true)
				idle[i] = nil
			}
			for i, s := range late {
				s.close(ErrHandshakeTimeout, true)
				late[i] = nil
			}
			for i, s := range cut {
				s.c.CutLinger()
				cut[i] = nil
			}
			if srv.streams != nil && now.Sub(lastExpire) >= time.Second && !expiring.Load() {
				// On a goroutine of its own, one at a time: a shared
				// store that does not answer holds it up to its timeout
				// per stream, and must not hold up the idle timeouts.
				lastExpire = now
				expiring.Store(true)
				srv.bgWG.Add(1) // the sweeper's own count keeps the group open
				go func() {
					defer srv.bgWG.Done()
					defer expiring.Store(false)
					srv.streams.expire(now)
				}()
			}
		}
	}
}

// sweepTick is how often the sweeper looks: an eighth of the shortest
// timeout (at least 10 ms), and often enough to demote quiet hot readers.
func sweepTick(l *Limits) time.Duration {
	tick := conn.ParkAfter / 4
	for _, d := range []time.Duration{l.IdleTimeout, l.HandshakeTimeout} {
		if d > 0 {
			tick = min(max(d/8, 10*time.Millisecond), tick)
		}
	}
	return tick
}

// retick tells the sweeper that the timeouts may have changed.
func (srv *Server) retick() {
	select {
	case srv.retickCh <- struct{}{}:
	default:
	}
}

// Shutdown stops the server gracefully: it stops accepting, sends every
// session what was queued for it followed by DISCONNECT "server shutting
// down", and waits until every session has ended (its handlers returned,
// its disconnect handler run) or ctx is done. In the latter case it calls
// Close and returns ctx.Err() at once, without waiting for handlers that
// are still running; Wait tells when they have.
func (srv *Server) Shutdown(ctx context.Context) error {
	for _, s := range srv.beginStop() {
		s.close(ErrServerShutdown, true)
	}
	select {
	case <-srv.done:
		return nil
	case <-ctx.Done():
		srv.Close()
		return ctx.Err()
	}
}

// Close stops the server at once: it closes the listeners and every
// connection without writing what is queued, and returns. It does not wait
// for handlers: a session whose handler is still running ends when the
// handler returns, and its disconnect handler runs then. Wait (or Done)
// tells when every session has ended and the server's goroutines are gone.
func (srv *Server) Close() error {
	for _, s := range srv.beginStop() {
		s.abort(ErrServerClosed)
	}
	return nil
}

// beginStop closes the listeners and returns the sessions to close. The
// first call also starts what finishes the stop once every session has
// ended.
func (srv *Server) beginStop() []*Session {
	srv.mu.Lock()
	if !srv.stopping {
		srv.stopping = true
		srv.running.Store(false)
		close(srv.stopCh)
		go srv.finishStop()
	}
	for l := range srv.listeners {
		l.Close()
		delete(srv.listeners, l)
	}
	srv.mu.Unlock()
	// No session can be added once stopping is set, so this list is final.
	return srv.Sessions()
}

// finishStop waits for every session to end, then stops the background
// goroutines (pollers, sweeper, accept loops) and the bus, and closes done.
func (srv *Server) finishStop() {
	srv.sessWG.Wait()
	close(srv.sweepCh)
	srv.mu.Lock()
	ps := srv.pollers
	srv.pollers = nil
	srv.mu.Unlock()
	for _, p := range ps {
		p.Close()
	}
	srv.bgWG.Wait()
	// The streams' watches are told to stop first, and waited for last:
	// a JetStream consumer whose connection is reconnecting stops only
	// once the store closes that connection (a CI run found finishStop
	// blocked in such a Stop).
	var watchesStopped <-chan struct{}
	if srv.streams != nil {
		watchesStopped = srv.streams.close()
	}
	if srv.bus != nil {
		srv.bus.Close()
	}
	if srv.streams != nil {
		if err := srv.streams.store.Close(); err != nil {
			srv.log.Warn("closing the stream store", "err", err)
		}
		select {
		case <-watchesStopped:
		case <-time.After(10 * time.Second):
			srv.log.Warn("stream watches still stopping 10 s after the store closed")
		}
	}
	close(srv.done)
}

// Wait blocks until the server has stopped (Shutdown or Close has finished).
func (srv *Server) Wait() { <-srv.done }

// Done is closed when the server has stopped.
func (srv *Server) Done() <-chan struct{} { return srv.done }
