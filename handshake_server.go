package msgnet

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/internal/conn"
	"github.com/msgnet/msgnet/pipeline"
	"golang.org/x/time/rate"
)

// The server's side of the handshake (handshake.go): it answers the hello
// with a challenge (authentication) or the welcome, establishes the
// session, and runs the connect handler.

type pendingAuth struct {
	hello hello
	nonce []byte
}

// inHandshake reports whether f is part of a handshake still under way.
func (srv *Server) inHandshake(s *Session, f frame.Frame) bool {
	if f.Kind != frame.KindControl {
		return false
	}
	if s.frames == 1 {
		return true
	}
	e := s.ext.Load()
	return e != nil && e.auth != nil
}

// authPending reports whether a hello waits for its answer to a challenge.
// Reader only.
func (s *Session) authPending() bool {
	e := s.ext.Load()
	return e != nil && e.auth != nil
}

// controlMsg is any CONTROL frame from a client, decoded once: the op, and
// the fields of the ops a server understands (hello, auth).
type controlMsg struct {
	Op          *string    `json:"op"`
	ClientID    string     `json:"client_id"`
	Features    []string   `json:"features"`
	Compression []string   `json:"compression"`
	Encryption  *helloSeal `json:"encryption"`
	Auth        string     `json:"auth"`
	KeyID       string     `json:"key_id"`
	MAC         []byte     `json:"mac"`
	Publisher   string     `json:"publisher"` // hello, with reliable: the publisher's id for this process
	Stream      string     `json:"stream"`    // sub, unsub
	Epoch       string     `json:"epoch"`     // sub
	After       *uint64    `json:"after"`     // sub
}

// controlMsgs recycles the decoded control messages: every connection
// decodes a hello, and an idle server's memory is what its burst of
// handshakes left behind.
var controlMsgs = sync.Pool{New: func() any { return new(controlMsg) }}

func (srv *Server) handleControl(s *Session, p []byte) {
	m := controlMsgs.Get().(*controlMsg)
	defer func() {
		*m = controlMsg{}
		controlMsgs.Put(m)
	}()
	if err := json.Unmarshal(p, m); err != nil || m.Op == nil {
		if !s.established && !srv.establish(s) {
			return
		}
		s.sendError(CodeBadControl, frame.ErrBadControl.Error())
		return
	}
	op := *m.Op
	var pending *pendingAuth
	if e := s.ext.Load(); e != nil {
		pending = e.auth
	}
	switch {
	case op == "hello" && s.frames == 1:
		h := hello{Op: op, ClientID: m.ClientID, Features: m.Features, Compression: m.Compression,
			Encryption: m.Encryption, Auth: m.Auth, KeyID: m.KeyID, Publisher: m.Publisher}
		if h.ClientID != "" {
			if n := srv.lim().MaxClientIDLength; !validClientID(h.ClientID, n) {
				s.close(&ProtocolError{Code: CodeBadClientID, Message: "a client id is 1 to " +
					strconv.Itoa(n) + " bytes of UTF-8 without control, format or white-space characters"}, true)
				return
			}
			// A fresh pointer: &h.ClientID would keep the whole decoded
			// hello alive for the session's life.
			cid := new(string)
			*cid = h.ClientID
			s.clientID.Store(cid)
		}
		if srv.cfg.auth != nil {
			nonce, err := pipeline.NewChallenge()
			if err != nil {
				s.close(&ProtocolError{Code: CodeAuthFailed, Message: "no randomness"}, true)
				return
			}
			s.x().auth = &pendingAuth{hello: h, nonce: nonce}
			c, _ := json.Marshal(challenge{Op: "challenge", Method: "hmac-sha256", Nonce: nonce})
			s.c.Enqueue(frame.KindControl, 0, c)
			return
		}
		srv.finishHello(s, &h)
	case op == "auth" && pending != nil:
		s.x().auth = nil
		// The key is the one the hello named (or the client id's); a key
		// not allowed to claim this client id counts as no key, so it is
		// refused exactly like a wrong MAC.
		key := srv.cfg.auth.key(pending.hello.KeyID, pending.hello.ClientID)
		if key == nil || !pipeline.VerifyAuth(key, pending.nonce, pending.hello.ClientID, m.MAC) {
			srv.refuseAuth(s)
			return
		}
		srv.finishHello(s, &pending.hello)
	case pending != nil:
		srv.refuseAuth(s)
	case op == "hello":
		s.sendError(CodeBadControl, "hello must be the first frame")
	case (op == "sub" || op == "unsub") && s.features.Load()&featReliable != 0:
		if !s.established && !srv.establish(s) {
			return
		}
		if op == "sub" {
			srv.streams.subscribe(s, m)
		} else {
			srv.streams.unsubscribe(s, m.Stream)
		}
	default:
		if !s.established && !srv.establish(s) {
			return
		}
		s.sendError(CodeBadControl, "unknown op "+strconv.Quote(op))
	}
}

// refuseAuth closes a session whose authentication failed, after a fixed
// delay: the same for a wrong key, an unknown client id and a malformed
// answer, so that timing tells an attacker nothing, and slow enough to make
// guessing expensive.
func (srv *Server) refuseAuth(s *Session) {
	s.c.StopReading()
	if !s.c.Open() {
		return
	}
	e := s.x()
	e.authTimer = time.AfterFunc(srv.cfg.authDelay, func() {
		s.close(&ProtocolError{Code: CodeAuthFailed, Message: "authentication failed"}, true)
	})
}

// maxPublisherID bounds a hello's publisher id, which the server keeps per
// publisher for de-duplication.
const maxPublisherID = 64

// finishHello grants what the hello asked for and can be granted, answers
// with the welcome and establishes the session.
// welcomeBufs holds the buffers welcomes are encoded in: one per accepted
// connection would be garbage that an idle server's memory carries until
// the next collection.
var welcomeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

func (srv *Server) finishHello(s *Session, h *hello) {
	offered := featRequest
	if srv.streams != nil {
		offered |= featReliable
	}
	granted, mask := grantFeatures(h.Features, offered)
	if len(h.Publisher) > maxPublisherID {
		s.close(&ProtocolError{Code: CodeBadControl, Message: "a publisher id is at most 64 bytes"}, true)
		return
	}
	if mask&featReliable != 0 {
		s.x().publisher = h.Publisher
	}
	s.features.Store(mask)
	w := welcome{
		Op: "welcome", SessionID: s.id, ServerID: srv.id,
		MaxMessageSize: s.c.MaxPayload(), IdleTimeoutMS: srv.lim().IdleTimeout.Milliseconds(),
		Features: granted,
	}
	var sealer *pipeline.Sealer
	var opener *pipeline.Opener
	if name := pipeline.Negotiate(srv.cfg.compression, h.Compression); name != "" {
		if _, ok := pipeline.CompressorByName(name); ok {
			w.Compression = name
		}
	}
	if srv.cfg.psk != nil {
		if h.Encryption == nil || len(h.Encryption.Nonce) != pipeline.HandshakeNonceSize {
			s.close(&ProtocolError{Code: CodeEncryptionRequired, Message: "this server requires encryption"}, true)
			return
		}
		suite := pipeline.Negotiate(srv.cfg.suites, h.Encryption.Suites)
		if suite == "" {
			s.close(&ProtocolError{Code: CodeEncryptionRequired, Message: "no cipher suite in common"}, true)
			return
		}
		nonce, err := pipeline.NewNonce()
		if err != nil {
			s.close(&ProtocolError{Code: CodeEncryptionRequired, Message: "no randomness"}, true)
			return
		}
		sealer, opener, err = pipeline.NewSessionKeys(srv.cfg.psk, h.Encryption.Nonce, nonce, suite, pipeline.RoleServer)
		if err != nil {
			s.close(&ProtocolError{Code: CodeEncryptionRequired, Message: err.Error()}, true)
			return
		}
		w.Encryption = &welcomeSeal{Suite: suite, Nonce: nonce}
	}
	s.handshaking.Store(false)
	bp := welcomeBufs.Get().(*[]byte)
	*bp = w.appendJSON((*bp)[:0])
	s.c.Establish(srv.cfg.negotiatedPipe(w.Compression, sealer, opener), *bp) // copies it
	welcomeBufs.Put(bp)
	// The welcome is queued before the id is claimed: a newer session of
	// the same client that replaces this one at once then ends it after
	// its welcome, never before.
	if h.ClientID != "" {
		srv.claimClientID(s, h.ClientID)
	}
	srv.connected(s)
}

// claimClientID makes s the session of client id cid. The newest session
// of a client id wins, as an MQTT broker does: an older one on this node is
// ended with DISCONNECT "replaced" (ErrReplaced), and in a cluster the bus
// has other nodes end theirs. So a client that reconnects after its
// connection silently died is not refused while the dead one lingers, and
// a client id always names one session. With authentication, only a
// holder of a key allowed that client id gets this far.
func (srv *Server) claimClientID(s *Session, cid string) {
	lost := srv.reg.setClient(s, cid)
	if lost != nil {
		lost.close(ErrReplaced, true)
	}
	if lost == s {
		return // a session accepted after s got here first: it is the newest
	}
	if srv.bus != nil {
		srv.bus.ClientUp(cid, s.id)
	}
}

// establish makes a session that skipped the handshake (no hello, or text
// mode) established, unless the server requires a handshake, in which case
// it closes the session and reports false.
func (srv *Server) establish(s *Session) bool {
	switch {
	case srv.cfg.auth != nil:
		s.close(&ProtocolError{Code: CodeAuthRequired, Message: "this server requires authentication"}, true)
		return false
	case srv.cfg.psk != nil:
		s.close(&ProtocolError{Code: CodeEncryptionRequired, Message: "this server requires encryption"}, true)
		return false
	}
	var pipe *pipeline.Pipeline
	if s.c.ReaderMode() == frame.ModeBinary {
		pipe = srv.cfg.negotiatedPipe("", nil, nil) // the user's filters, if any
	}
	s.handshaking.Store(false)
	s.c.Establish(pipe, nil)
	srv.connected(s)
	return true
}

// connected runs the connect handler, once, on the session's reader.
func (srv *Server) connected(s *Session) {
	s.established = true
	if l := srv.lim(); l.MessageRate > 0 {
		s.x().limiter = rate.NewLimiter(rate.Limit(l.MessageRate), l.MessageBurst)
	}
	if srv.log.Enabled(context.Background(), slog.LevelInfo) {
		srv.log.Info("session connected", "session", s.id, "client", s.ClientID(), "remote", s.RemoteAddr())
	}
	if h := srv.handlers.Load().connect; h != nil {
		h(s)
	}
}

// ipOf is the key for the per-IP connection limit.
func ipOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	if a == nil {
		return netip.Addr{}
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		host = a.String()
	}
	ip, _ := netip.ParseAddr(host) // not an IP (a pipe): all such peers count as one
	return ip.Unmap()
}

// peerIP is ipOf the connection's peer, without allocating for the
// server's own sockets.
func peerIP(nc net.Conn) netip.Addr {
	if s, ok := nc.(*conn.Socket); ok {
		return s.PeerIP()
	}
	return ipOf(nc.RemoteAddr())
}
