// Package transporttest is a table of protocol cases (limits, bad input,
// text mode, max connections) that every msgnet transport must handle
// exactly as TCP does. A transport's tests call Run with a function that
// serves a msgnet server on that transport and returns how to dial it.
package transporttest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

// Limits of the servers the cases run against.
const (
	MaxPayload = 1024 // message size limit
	MaxConns   = 3    // max connections
)

// Timeout bounds every wait of a case; generous, for loaded machines.
const Timeout = 10 * time.Second

// Dial opens a connection to the server under test.
type Dial func(ctx context.Context) (net.Conn, error)

// Serve exposes srv on the transport under test and returns how to dial
// it. It must register its own cleanup with t.Cleanup; the cases shut srv
// down before that cleanup runs.
type Serve func(t *testing.T, srv *msgnet.Server) Dial

// TCP serves srv on a loopback TCP listener.
func TCP(t *testing.T, srv *msgnet.Server) Dial {
	t.Helper()
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr().String()
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

// TLS serves srv on a loopback TCP listener with TLS and dials with
// client. The server must have been made with msgnet.WithTLS: pass it to
// Run. Text mode works over TLS as over TCP.
func TLS(client *tls.Config) Serve {
	return func(t *testing.T, srv *msgnet.Server) Dial {
		t.Helper()
		if err := srv.Start("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		addr := srv.Addr().String()
		return func(ctx context.Context) (net.Conn, error) {
			d := tls.Dialer{Config: client}
			return d.DialContext(ctx, "tcp", addr)
		}
	}
}

// Engine is one of the server's ways of reading plain TCP connections:
// each has its own read path (and its own buffers carried between reads),
// so each must be held to the table.
type Engine struct {
	Name string
	Opts []msgnet.Option
}

// Engines are the four engine configurations the root package's tests use:
// parked connections, a goroutine per connection, handlers on the event
// loops, and event loops that wait in a blocking epoll_wait.
var Engines = []Engine{
	{"parked", []msgnet.Option{msgnet.WithEngine(msgnet.EngineParked)}},
	{"goroutine", []msgnet.Option{msgnet.WithEngine(msgnet.EngineGoroutine)}},
	{"loop", []msgnet.Option{msgnet.WithEngine(msgnet.EngineLoop)}},
	{"blocking-loop", []msgnet.Option{msgnet.WithEngine(msgnet.EngineLoopBlocking)}},
}

// Server is the msgnet server a case runs against: it echoes every
// message, answers every request with its body (or fails one whose body is
// FailRequest), and records why sessions ended and what its handler got.
type Server struct {
	*msgnet.Server
	Dial  Dial
	Ended chan error // disconnect reasons, in order

	seg *pass // the pass of Run this server is for; nil outside Run

	mu       sync.Mutex
	received []string
}

// FailRequest is the request body the server's request handler fails on,
// with the error FailRequest.
const FailRequest = "fail"

// NewServer starts an echo server with MaxPayload and MaxConns on the
// transport, and shuts it down when the test ends (before the transport's
// own cleanup runs).
func NewServer(t *testing.T, serve Serve, opts ...msgnet.Option) *Server {
	t.Helper()
	opts = append([]msgnet.Option{
		msgnet.WithMessageSizeLimit(MaxPayload),
		msgnet.WithMaxConnections(MaxConns),
		msgnet.WithLogger(slog.New(slog.DiscardHandler)),
	}, opts...)
	srv := &Server{Server: msgnet.NewServer("transporttest", opts...), Ended: make(chan error, 64)}
	srv.OnMessage(func(s *msgnet.Session, msg []byte) {
		srv.mu.Lock()
		srv.received = append(srv.received, string(msg))
		srv.mu.Unlock()
		s.Send(msg)
	})
	// No case before the request cases sends a request: answering them
	// changes nothing for the others.
	srv.OnRequest(func(s *msgnet.Session, req []byte) ([]byte, error) {
		if string(req) == FailRequest {
			return nil, errors.New(FailRequest)
		}
		return req, nil
	})
	srv.OnDisconnect(func(s *msgnet.Session, reason error) {
		select {
		case srv.Ended <- reason:
		default:
		}
	})
	srv.Dial = serve(t, srv.Server)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), Timeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return srv
}

// Received returns the messages the server's message handler got, in
// order (for one peer at a time: sessions run concurrently).
func (s *Server) Received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.received)
}

// Peer drives a connection by hand: it writes exactly the bytes a case
// chooses and reads frames or lines with a deadline.
type Peer struct {
	t   testing.TB
	srv *Server
	NC  net.Conn
	seg *segConn // NC when Run records the pass; nil otherwise
	fr  *frame.Reader
	br  *bufio.Reader
}

// Connect dials the server and closes the connection when the test ends.
func (s *Server) Connect(t testing.TB) *Peer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	nc, err := s.Dial(ctx)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	p := &Peer{t: t, srv: s, NC: nc}
	if s.seg != nil {
		p.seg = s.seg.conn(nc)
		p.NC = p.seg
	}
	return p
}

// Write writes b in one Write call; on a trickled pass, in pieces.
//
// A trickled write may still be going when the server has already ended
// the session for what came first (a DISCONNECT, bad input): then it may
// fail, as a whole write that was already in would not. That is logged,
// not fatal: what the peer reads next decides, and must be what it read
// in the whole pass.
func (p *Peer) Write(b []byte) {
	p.t.Helper()
	p.NC.SetWriteDeadline(time.Now().Add(Timeout))
	if _, err := p.NC.Write(b); err != nil {
		if p.seg != nil && p.seg.rng != nil {
			p.t.Logf("trickled write cut short: %v", err)
			return
		}
		p.t.Fatalf("write: %v", err)
	}
}

// WriteReceived writes b and waits until the server has read all of it,
// so that the next write reaches the server in a read of its own. Only
// for cases with one sending peer: it watches the server's byte count.
func (p *Peer) WriteReceived(b []byte) {
	p.t.Helper()
	want := p.srv.Stats().BytesIn + uint64(len(b))
	p.Write(b)
	AwaitQuick(p.t, fmt.Sprintf("the server to read %d bytes", want), func() bool { return p.srv.Stats().BytesIn >= want })
}

// CloseWrite ends the peer's side of the stream, keeping the server's, and
// reports whether the transport can (TCP, TLS and HTTP/2 can; WebSocket
// cannot).
func (p *Peer) CloseWrite() bool {
	p.t.Helper()
	var nc net.Conn = p.NC
	if p.seg != nil {
		nc = p.seg.Conn
	}
	cw, ok := nc.(interface{ CloseWrite() error })
	if !ok {
		return false
	}
	if err := cw.CloseWrite(); err != nil {
		p.t.Fatalf("close write: %v", err)
	}
	return true
}

// Frame reads the next frame.
func (p *Peer) Frame() (frame.Frame, error) {
	if p.fr == nil {
		p.fr = frame.NewReader(p.NC, 16<<20)
	}
	p.NC.SetReadDeadline(time.Now().Add(Timeout))
	f, err := p.fr.ReadFrame()
	if p.seg != nil {
		switch {
		case err == nil:
			p.seg.took(normalise(f))
		case err == io.EOF:
			p.seg.sawEOF()
		}
	}
	return f, err
}

// ExpectFrame reads the next frame and checks its kind, its flags and,
// unless payload is nil, its payload.
func (p *Peer) ExpectFrame(kind frame.Kind, flags frame.Flags, payload []byte) frame.Frame {
	p.t.Helper()
	f := p.Expect(kind, payload)
	if f.Flags != flags {
		p.t.Fatalf("got %v with flags %#x, want %#x", f.Kind, f.Flags, flags)
	}
	return f
}

// Expect reads the next frame and checks its kind and, unless payload is
// nil, its payload.
func (p *Peer) Expect(kind frame.Kind, payload []byte) frame.Frame {
	p.t.Helper()
	f, err := p.Frame()
	if err != nil {
		p.t.Fatalf("reading %v: %v", kind, err)
	}
	if f.Kind != kind || payload != nil && !bytes.Equal(f.Payload, payload) {
		p.t.Fatalf("got %v %q, want %v %q", f.Kind, f.Payload, kind, payload)
	}
	return f
}

// ExpectError reads an ERROR frame with code.
func (p *Peer) ExpectError(code string) {
	p.t.Helper()
	f := p.Expect(frame.KindError, nil)
	if got := frame.ParseError(f.Payload).Code; got != code {
		p.t.Fatalf("ERROR code %q (%s), want %q", got, f.Payload, code)
	}
}

// ExpectEOF checks that the server ended the stream cleanly.
func (p *Peer) ExpectEOF() {
	p.t.Helper()
	if p.br != nil {
		p.NC.SetReadDeadline(time.Now().Add(Timeout))
		if line, err := p.br.ReadString('\n'); err != io.EOF {
			p.t.Fatalf("got %q, %v; want EOF", line, err)
		}
		if p.seg != nil {
			p.seg.sawEOF()
		}
		return
	}
	f, err := p.Frame()
	if err != io.EOF {
		p.t.Fatalf("got %v %q, %v; want EOF", f.Kind, f.Payload, err)
	}
}

// Line reads the next text mode line, without its "\n".
func (p *Peer) Line() string {
	p.t.Helper()
	if p.br == nil {
		p.br = bufio.NewReader(p.NC)
	}
	p.NC.SetReadDeadline(time.Now().Add(Timeout))
	line, err := p.br.ReadString('\n')
	if err != nil {
		p.t.Fatalf("reading a line: %q, %v", line, err)
	}
	if p.seg != nil {
		p.seg.took([]byte(line))
	}
	return strings.TrimSuffix(line, "\n")
}

// Ping checks that the session is alive: PING, then PONG with the payload.
func (p *Peer) Ping(payload string) {
	p.t.Helper()
	p.Write(frame.Append(nil, frame.KindPing, 0, []byte(payload)))
	p.Expect(frame.KindPong, []byte(payload))
}

// Await waits until cond holds, checking it often, or fails after Timeout.
func Await(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// AwaitQuick is Await for conditions that hold within microseconds, such
// as the server having read what was just written: it checks at once, then
// ever less often, up to Await's interval.
func AwaitQuick(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for wait := 20 * time.Microsecond; !cond(); wait = min(2*wait, 2*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(wait)
	}
}

// ExpectEnded waits for the next session end and checks its reason.
func (s *Server) ExpectEnded(t testing.TB, check func(error) bool, want string) {
	t.Helper()
	select {
	case reason := <-s.Ended:
		if !check(reason) {
			t.Fatalf("session ended with %v, want %s", reason, want)
		}
	case <-time.After(Timeout):
		t.Fatalf("no session ended; want one ending with %s", want)
	}
}

// Case is one behaviour every transport must show.
type Case struct {
	Name string
	Run  func(t *testing.T, s *Server)
	Opts []msgnet.Option // server options beyond the defaults
}

// Cases is the table: the core cases here, and the cases of hostile and
// unlucky input (hostile.go). Each case gets a fresh server.
var Cases = append(coreCases, hostileCases...)

var coreCases = []Case{
	{Name: "hello_welcome", Run: func(t *testing.T, s *Server) {
		p := s.Connect(t)
		p.Write(frame.Append(nil, frame.KindControl, 0, []byte(`{"op":"hello","client_id":"tt1"}`)))
		f := p.Expect(frame.KindControl, nil)
		var w struct {
			Op        string `json:"op"`
			SessionID string `json:"session_id"`
			Max       int    `json:"max_message_size"`
		}
		if err := json.Unmarshal(f.Payload, &w); err != nil || w.Op != "welcome" || w.SessionID == "" || w.Max != MaxPayload {
			t.Fatalf("welcome %s (%v)", f.Payload, err)
		}
		p.Write(frame.Append(nil, frame.KindData, 0, []byte("x")))
		p.Expect(frame.KindData, []byte("x"))
		if ss, ok := s.SessionByClientID("tt1"); !ok || ss.ID() != w.SessionID {
			t.Fatalf("session by client id: %v", ss)
		}
	}},
	{Name: "oversized_frame", Run: func(t *testing.T, s *Server) {
		p := s.Connect(t)
		p.Ping("up")
		// The header announces one byte more than the limit; only a few
		// payload bytes follow: the server decides from the header.
		b := frame.AppendHeader(nil, frame.KindData, 0, MaxPayload+1)
		p.Write(append(b, "partial"...))
		p.ExpectError(frame.CodeMessageTooLarge)
		p.Expect(frame.KindDisconnect, nil)
		p.ExpectEOF()
		p.NC.Close() // the server lingers until the peer closes (or a second passes)
		s.ExpectEnded(t, func(err error) bool {
			var pe *msgnet.ProtocolError
			return errors.As(err, &pe) && pe.Code == frame.CodeMessageTooLarge
		}, "message_too_large")
	}},
	{Name: "largest_frame_passes", Run: func(t *testing.T, s *Server) {
		p := s.Connect(t)
		big := bytes.Repeat([]byte("m"), MaxPayload)
		p.Write(frame.Append(nil, frame.KindData, 0, big))
		p.Expect(frame.KindData, big)
	}},
	{Name: "bad_magic_after_binary", Run: func(t *testing.T, s *Server) {
		p := s.Connect(t)
		p.Ping("binary")
		bad := frame.Append(nil, frame.KindData, 0, []byte("hi"))
		copy(bad, "XSGI")
		p.Write(bad)
		p.ExpectError(frame.CodeBadFrame)
		p.Expect(frame.KindDisconnect, nil)
		p.ExpectEOF()
	}},
	{Name: "short_length", Run: func(t *testing.T, s *Server) {
		p := s.Connect(t)
		b := frame.Append(nil, frame.KindData, 0, []byte("hi"))
		b[7] = 9 // length 9 < 10
		p.Write(b)
		p.ExpectError(frame.CodeBadFrame)
		p.Expect(frame.KindDisconnect, nil)
		p.ExpectEOF()
	}},
	{Name: "unknown_kind_goes_on", Run: func(t *testing.T, s *Server) {
		p := s.Connect(t)
		p.Write(frame.Append(nil, frame.Kind(0x77), 0, []byte("?")))
		p.ExpectError(frame.CodeUnknownType)
		p.Write(frame.Append(nil, frame.KindData, 0, []byte("after")))
		p.Expect(frame.KindData, []byte("after"))
	}},
	{Name: "unagreed_flag_goes_on", Run: func(t *testing.T, s *Server) {
		p := s.Connect(t)
		p.Write(frame.Append(nil, frame.KindData, frame.FlagCompressed, []byte("z")))
		p.ExpectError(frame.CodeUnknownType)
		p.Ping("still")
	}},
	{Name: "bad_control_goes_on", Run: func(t *testing.T, s *Server) {
		p := s.Connect(t)
		p.Write(frame.Append(nil, frame.KindControl, 0, []byte(`{"no_op":1}`)))
		p.ExpectError(frame.CodeBadControl)
		p.Ping("still")
	}},
	{Name: "several_frames_in_one_write", Run: func(t *testing.T, s *Server) {
		p := s.Connect(t)
		var b []byte
		b = frame.Append(b, frame.KindData, 0, []byte("one"))
		b = frame.Append(b, frame.KindData, 0, []byte("two"))
		b = frame.Append(b, frame.KindPing, 0, []byte("three"))
		p.Write(b)
		p.Expect(frame.KindData, []byte("one"))
		p.Expect(frame.KindData, []byte("two"))
		p.Expect(frame.KindPong, []byte("three"))
	}},
	{Name: "frame_split_across_writes", Run: func(t *testing.T, s *Server) {
		p := s.Connect(t)
		b := frame.Append(nil, frame.KindData, 0, []byte("split in three"))
		p.Write(b[:3])
		p.Write(b[3:12])
		p.Write(b[12:])
		p.Expect(frame.KindData, []byte("split in three"))
	}},
	{Name: "text_mode_lines", Run: func(t *testing.T, s *Server) {
		p := s.Connect(t)
		p.Write([]byte("hello\n"))
		if got := p.Line(); got != "hello" {
			t.Fatalf("got %q", got)
		}
		p.Write([]byte("two\r\nlines\n"))
		for _, want := range []string{"two", "lines"} {
			if got := p.Line(); got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		}
	}},
	{Name: "text_line_too_long", Run: func(t *testing.T, s *Server) {
		p := s.Connect(t)
		p.Write([]byte("short\n"))
		p.Line()
		p.Write(bytes.Repeat([]byte("a"), MaxPayload+2))
		if got := p.Line(); got != "ERROR "+frame.CodeMessageTooLarge {
			t.Fatalf("got %q", got)
		}
		p.ExpectEOF()
	}},
	{Name: "peer_disconnect_frame", Run: func(t *testing.T, s *Server) {
		p := s.Connect(t)
		p.Ping("x")
		p.Write(frame.Append(nil, frame.KindDisconnect, 0, []byte("bye")))
		p.ExpectEOF()
		s.ExpectEnded(t, func(err error) bool {
			var de *msgnet.DisconnectError
			return errors.As(err, &de) && de.Remote && de.Reason == "bye"
		}, `DISCONNECT "bye"`)
	}},
	{Name: "peer_close_is_peer_closed", Run: func(t *testing.T, s *Server) {
		p := s.Connect(t)
		p.Ping("x")
		p.NC.Close()
		s.ExpectEnded(t, func(err error) bool { return errors.Is(err, msgnet.ErrPeerClosed) }, "ErrPeerClosed")
		Await(t, "no connections", func() bool { return s.ConnectionCount() == 0 })
	}},
	{Name: "idle_timeout", Opts: []msgnet.Option{msgnet.WithIdleTimeout(300 * time.Millisecond)}, Run: func(t *testing.T, s *Server) {
		if !s.IsRunning() {
			// A server used only through ServeConn never starts the
			// sweeper that enforces the idle timeout (msgnet core): serve
			// TCP as well, as a deployment of both would.
			t.Log("server not started by ServeConn alone: starting a TCP listener so the idle sweeper runs")
			if err := s.Start("127.0.0.1:0"); err != nil {
				t.Fatal(err)
			}
		}
		p := s.Connect(t)
		p.Ping("then silence")
		start := time.Now()
		p.Expect(frame.KindDisconnect, []byte(msgnet.ErrIdleTimeout.Error()))
		p.ExpectEOF()
		if d := time.Since(start); d < 250*time.Millisecond {
			t.Fatalf("closed after %v, before the idle timeout", d)
		}
		p.NC.Close() // the server lingers until the peer closes (or a second passes)
		s.ExpectEnded(t, func(err error) bool { return errors.Is(err, msgnet.ErrIdleTimeout) }, "ErrIdleTimeout")
	}},
	{Name: "max_connections", Run: func(t *testing.T, s *Server) {
		var peers []*Peer
		for i := range MaxConns {
			p := s.Connect(t)
			p.Ping(fmt.Sprint(i))
			peers = append(peers, p)
		}
		over := s.Connect(t)
		over.ExpectError(frame.CodeServerFull)
		over.Expect(frame.KindDisconnect, []byte("server full"))
		over.ExpectEOF()
		if st := s.Stats(); st.Refused[frame.CodeServerFull] == 0 {
			t.Errorf("refusal not counted: %+v", st.Refused)
		}
		peers[0].NC.Close()
		Await(t, "a free slot", func() bool { return s.ConnectionCount() < MaxConns })
		again := s.Connect(t)
		again.Ping("again")
		peers[1].Ping("others unaffected")
	}},
}

// Run runs every case against fresh servers on the transport, made with
// opts (an engine, TLS) and the case's own options, twice: with the
// peers' writes whole, then trickled (see SeedEnv). Everything the peers
// read must be the same in both passes.
func Run(t *testing.T, serve Serve, opts ...msgnet.Option) {
	seed := segmentSeed(t)
	for _, c := range Cases {
		t.Run(c.Name, func(t *testing.T) {
			whole := &pass{name: c.Name}
			trickled := &pass{name: c.Name, trickle: true, seed: seed}
			ok := t.Run("whole", func(t *testing.T) { runPass(t, serve, c, opts, whole) })
			ok = t.Run("trickled", func(t *testing.T) {
				t.Logf("segmentation seed %d (replay: %s=%d)", seed, SeedEnv, seed)
				runPass(t, serve, c, opts, trickled)
			}) && ok
			if ok && whole.ran && trickled.ran {
				compareOutputs(t, whole, trickled)
			}
		})
	}
}

func runPass(t *testing.T, serve Serve, c Case, opts []msgnet.Option, p *pass) {
	s := NewServer(t, serve, append(slices.Clone(opts), c.Opts...)...)
	s.seg = p
	p.ran = true
	c.Run(t, s)
}
