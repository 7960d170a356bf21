package msgnet

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/pipeline"
	"golang.org/x/time/rate"
)

// The handshake (docs/PROTOCOL.md, sections 3 and 6): the client's hello
// names what it would like; with authentication on, the server answers a
// challenge that the client must meet; the server's welcome says what was
// granted. Until then the session is held: DATA sent to it waits (see
// Session.appendLocked).

// hello is the client's first CONTROL frame.
type hello struct {
	Op          string     `json:"op"`
	ClientID    string     `json:"client_id"`
	Features    []string   `json:"features,omitempty"`    // extensions asked for
	Compression []string   `json:"compression,omitempty"` // codecs, in the client's order of preference
	Encryption  *helloSeal `json:"encryption,omitempty"`
	Auth        string     `json:"auth,omitempty"`   // "hmac-sha256" when the client holds a key
	KeyID       string     `json:"key_id,omitempty"` // which of the server's keys (WithAuth)
}

type helloSeal struct {
	Suites []string `json:"suites"`
	Nonce  []byte   `json:"nonce"` // 32 random bytes, base64 in JSON
}

// welcome is the server's answer to hello.
type welcome struct {
	Op             string       `json:"op"`
	SessionID      string       `json:"session_id"`
	ServerID       string       `json:"server_id"`
	MaxMessageSize int          `json:"max_message_size"`
	IdleTimeoutMS  int64        `json:"idle_timeout_ms"`
	Features       []string     `json:"features,omitempty"`    // extensions granted
	Compression    string       `json:"compression,omitempty"` // the codec chosen
	Encryption     *welcomeSeal `json:"encryption,omitempty"`
}

type welcomeSeal struct {
	Suite string `json:"suite"`
	Nonce []byte `json:"nonce"`
}

// challenge asks the client to prove it holds its key.
type challenge struct {
	Op     string `json:"op"`
	Method string `json:"method"`
	Nonce  []byte `json:"nonce"`
}

// authAnswer meets a challenge.
type authAnswer struct {
	Op  string `json:"op"`
	MAC []byte `json:"mac"`
}

type pendingAuth struct {
	hello hello
	nonce []byte
}

// ErrHandshakeTimeout ends a session that did not complete its handshake
// (or, without one, send its first message) in time.
var ErrHandshakeTimeout = errors.New("handshake timeout")

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
}

func (srv *Server) handleControl(s *Session, p []byte) {
	var m controlMsg
	if err := json.Unmarshal(p, &m); err != nil || m.Op == nil {
		if !s.established && !srv.establish(s) {
			return
		}
		s.sendError(frame.CodeBadControl, frame.ErrBadControl.Error())
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
			Encryption: m.Encryption, Auth: m.Auth, KeyID: m.KeyID}
		if h.ClientID != "" {
			if !validClientID(h.ClientID, srv.cfg.maxClientIDLen) {
				s.closeWith(&ProtocolError{Code: CodeBadClientID, Message: "a client id is 1 to " +
					strconv.Itoa(srv.cfg.maxClientIDLen) + " bytes of UTF-8 without control, format or white-space characters"}, true)
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
				s.closeWith(&ProtocolError{Code: CodeAuthFailed, Message: "no randomness"}, true)
				return
			}
			s.x().auth = &pendingAuth{hello: h, nonce: nonce}
			c, _ := json.Marshal(challenge{Op: "challenge", Method: "hmac-sha256", Nonce: nonce})
			s.enqueue(frame.KindControl, 0, c)
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
		s.sendError(frame.CodeBadControl, "hello must be the first frame")
	default:
		if !s.established && !srv.establish(s) {
			return
		}
		s.sendError(frame.CodeBadControl, "unknown op "+strconv.Quote(op))
	}
}

// refuseAuth closes a session whose authentication failed, after a fixed
// delay: the same for a wrong key, an unknown client id and a malformed
// answer, so that timing tells an attacker nothing, and slow enough to make
// guessing expensive.
func (srv *Server) refuseAuth(s *Session) {
	s.stopRead.Store(true)
	e := s.x()
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		return
	}
	e.authTimer = time.AfterFunc(srv.cfg.authDelay, func() {
		s.closeWith(&ProtocolError{Code: CodeAuthFailed, Message: "authentication failed"}, true)
	})
}

// finishHello grants what the hello asked for and can be granted, answers
// with the welcome and establishes the session.
func (srv *Server) finishHello(s *Session, h *hello) {
	granted, mask := grantFeatures(h.Features)
	s.features.Store(mask)
	w := welcome{
		Op: "welcome", SessionID: s.id, ServerID: srv.id,
		MaxMessageSize: srv.cfg.maxPayload, IdleTimeoutMS: srv.cfg.idleTimeout.Milliseconds(),
		Features: granted,
	}
	pipe := srv.basePipe()
	if name := pipeline.Negotiate(srv.cfg.compression, h.Compression); name != "" {
		if c, ok := pipeline.CompressorByName(name); ok {
			pipe = orNewPipe(pipe, srv.cfg.maxPayload)
			pipe.p.Compressor, pipe.p.Threshold = c, srv.cfg.compressThreshold
			w.Compression = name
		}
	}
	if srv.cfg.psk != nil {
		if h.Encryption == nil || len(h.Encryption.Nonce) != pipeline.HandshakeNonceSize {
			s.closeWith(&ProtocolError{Code: CodeEncryptionRequired, Message: "this server requires encryption"}, true)
			return
		}
		suite := pipeline.Negotiate(srv.cfg.suites, h.Encryption.Suites)
		if suite == "" {
			s.closeWith(&ProtocolError{Code: CodeEncryptionRequired, Message: "no cipher suite in common"}, true)
			return
		}
		nonce, err := pipeline.NewNonce()
		if err != nil {
			s.closeWith(&ProtocolError{Code: CodeEncryptionRequired, Message: "no randomness"}, true)
			return
		}
		sealer, opener, err := pipeline.NewSessionKeys(srv.cfg.psk, h.Encryption.Nonce, nonce, suite, pipeline.RoleServer)
		if err != nil {
			s.closeWith(&ProtocolError{Code: CodeEncryptionRequired, Message: err.Error()}, true)
			return
		}
		pipe = orNewPipe(pipe, srv.cfg.maxPayload)
		pipe.p.Sealer, pipe.p.Opener = sealer, opener
		w.Encryption = &welcomeSeal{Suite: suite, Nonce: nonce}
	}
	if h.ClientID != "" {
		srv.claimClientID(s, h.ClientID)
	}
	s.establishWith(pipe, w.appendJSON(make([]byte, 0, 256)))
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
	if old := srv.reg.setClient(s, cid); old != nil && old != s {
		old.closeWith(ErrReplaced, true)
	}
	if srv.bus != nil {
		srv.bus.ClientUp(cid, s.id)
	}
}

func orNewPipe(p *sessionPipe, maxPayload int) *sessionPipe {
	if p == nil {
		p = &sessionPipe{p: pipeline.Pipeline{MaxPayload: maxPayload}}
	}
	return p
}

// basePipe is the pipeline every binary session gets: the user's filters.
func (srv *Server) basePipe() *sessionPipe {
	if len(srv.cfg.filters) == 0 {
		return nil
	}
	return &sessionPipe{p: pipeline.Pipeline{Filters: srv.cfg.filters, MaxPayload: srv.cfg.maxPayload}}
}

// establish makes a session that skipped the handshake (no hello, or text
// mode) established, unless the server requires a handshake, in which case
// it closes the session and reports false.
func (srv *Server) establish(s *Session) bool {
	switch {
	case srv.cfg.auth != nil:
		s.closeWith(&ProtocolError{Code: CodeAuthRequired, Message: "this server requires authentication"}, true)
		return false
	case srv.cfg.psk != nil:
		s.closeWith(&ProtocolError{Code: CodeEncryptionRequired, Message: "this server requires encryption"}, true)
		return false
	}
	var pipe *sessionPipe
	if s.readerMode() == frame.ModeBinary {
		pipe = srv.basePipe()
	}
	s.establishWith(pipe, nil)
	srv.connected(s)
	return true
}

// connected runs the connect handler, once, on the session's reader.
func (srv *Server) connected(s *Session) {
	s.established = true
	if srv.cfg.rate > 0 {
		s.x().limiter = rate.NewLimiter(srv.cfg.rate, srv.cfg.burst)
	}
	if srv.log.Enabled(context.Background(), slog.LevelInfo) {
		srv.log.Info("session connected", "session", s.id, "client", s.ClientID(), "remote", s.RemoteAddr())
	}
	if h := srv.handlers.Load().connect; h != nil {
		h(s)
	}
}

// allowMessage applies the per-session message rate limit (WithMessageRate)
// to one message or frame from the peer; see rateDrop for one over it.
func (srv *Server) allowMessage(s *Session) bool {
	e := s.ext.Load()
	if e == nil || e.limiter == nil || e.limiter.Allow() {
		return true
	}
	s.rateDrop(e)
	return false
}

// allowControl applies the per-session limit on frames other than DATA
// (WithControlRate) to one of them; see rateDrop for one over it.
func (srv *Server) allowControl(s *Session) bool {
	e := s.x()
	if e.ctlLimiter == nil {
		e.ctlLimiter = rate.NewLimiter(srv.cfg.controlRate, srv.cfg.controlBurst)
	}
	if e.ctlLimiter.Allow() {
		return true
	}
	s.rateDrop(e)
	return false
}

// rateDrop drops a message or frame over a rate limit: it is counted
// (Stats.Dropped "rate_limited"), and the peer is told with ERROR
// rate_limited, at most once per second, so that a flood does not turn
// into a flood of answers. Reader only.
func (s *Session) rateDrop(e *sessionExt) {
	e.rateDropped++
	s.noteDrop(DropRateLimited)
	if now := nanotime(); e.rateErrAt == 0 || now-e.rateErrAt >= int64(time.Second) {
		e.rateErrAt = now
		s.sendError(CodeRateLimited, "rate limit exceeded: "+
			strconv.FormatUint(e.rateDropped, 10)+" messages dropped on this session so far")
	}
}

// pipelineError decides what a failure to undo the payload stages means.
// Errors that break the stream's security end the session; the others drop
// the message and say so.
func (s *Session) pipelineError(err error) error {
	switch {
	case errors.Is(err, pipeline.ErrNotNegotiated):
		s.sendError(frame.CodeUnknownType, err.Error())
		return nil
	case errors.Is(err, pipeline.ErrDecrypt), errors.Is(err, pipeline.ErrNotEncrypted):
		return &ProtocolError{Code: CodeDecryptFailed, Message: err.Error()}
	case errors.Is(err, pipeline.ErrTooLarge):
		return &ProtocolError{Code: frame.CodeMessageTooLarge, Message: "decompressed payload exceeds the size limit"}
	case errors.Is(err, pipeline.ErrCorrupt):
		s.sendError(CodeBadCompression, err.Error())
		return nil
	}
	s.sendError(CodeFilterFailed, err.Error())
	return nil
}

// ipOf is the key for the per-IP connection limit.
func ipOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	if a == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// appendJSON appends w as json.Marshal would write it (a test holds the two
// to the same bytes). A welcome goes out on every connection, and
// reflection was a twentieth of what a short connection cost the server.
func (w *welcome) appendJSON(b []byte) []byte {
	b = append(b, `{"op":`...)
	b = appendJSONString(b, w.Op)
	b = append(b, `,"session_id":`...)
	b = appendJSONString(b, w.SessionID)
	b = append(b, `,"server_id":`...)
	b = appendJSONString(b, w.ServerID)
	b = append(b, `,"max_message_size":`...)
	b = strconv.AppendInt(b, int64(w.MaxMessageSize), 10)
	b = append(b, `,"idle_timeout_ms":`...)
	b = strconv.AppendInt(b, w.IdleTimeoutMS, 10)
	if len(w.Features) > 0 {
		b = append(b, `,"features":[`...)
		for i, f := range w.Features {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, f)
		}
		b = append(b, ']')
	}
	if w.Compression != "" {
		b = append(b, `,"compression":`...)
		b = appendJSONString(b, w.Compression)
	}
	if e := w.Encryption; e != nil {
		b = append(b, `,"encryption":{"suite":`...)
		b = appendJSONString(b, e.Suite)
		b = append(b, `,"nonce":`...)
		if e.Nonce == nil {
			b = append(b, "null"...)
		} else {
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, e.Nonce)
			b = append(b, '"')
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

// appendJSONString appends s quoted as encoding/json quotes it: plain
// ASCII is copied, and anything else is left to encoding/json, which knows
// its escapes (HTML characters, control bytes, invalid UTF-8, U+2028).
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
