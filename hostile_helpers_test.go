package msgnet_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/internal/testenv"
	"github.com/msgnet/msgnet/managed"
)

// The hostile-client suite (hostile_test.go) runs every case against
// servers configured as `msgnet serve` configures them. These are its
// helpers: the servers, the honest client that must not notice the
// attack, and the attackers' plumbing.

// target is one server configuration the attacks run against.
type target struct {
	name    string
	managed bool // managed.Install; otherwise an echo handler, as --mode echo
	opts    []msgnet.Option
}

// serveTargets are the two modes of `msgnet serve` with the engines
// --engine auto picks for them: managed (parked: handlers on a goroutine
// per active connection, idle connections in epoll) and echo
// (loop-blocking: handlers on event loops that wait in epoll_wait).
func serveTargets() []target {
	return []target{
		{name: "managed", managed: true, opts: []msgnet.Option{msgnet.WithEngine(msgnet.EngineParked)}},
		{name: "echo", opts: []msgnet.Option{msgnet.WithEngine(msgnet.EngineLoopBlocking)}},
	}
}

// forServeTargets runs f against both modes of msgnet serve.
func forServeTargets(t *testing.T, f func(t *testing.T, tg target)) {
	for _, tg := range serveTargets() {
		t.Run(tg.name, func(t *testing.T) { f(t, tg) })
	}
}

// forEngines runs f against managed mode and against echo mode on each of
// the four engines (its blocking-loop run is msgnet serve --mode echo):
// for cases cheap enough to run five times.
func forEngines(t *testing.T, f func(t *testing.T, tg target)) {
	t.Run("managed", func(t *testing.T) { f(t, serveTargets()[0]) })
	t.Run("echo", func(t *testing.T) {
		engines(t, func(t *testing.T, opts ...msgnet.Option) { f(t, target{name: "echo", opts: opts}) })
	})
}

// start serves tg on a loopback port, with extra options (limits set as
// the flags of msgnet serve would set them), until the test ends.
func (tg target) start(t *testing.T, extra ...msgnet.Option) (*msgnet.Server, string) {
	t.Helper()
	srv, addr := startServer(t, append(slices.Clone(tg.opts), extra...)...)
	if tg.managed {
		managed.Install(srv)
	} else {
		srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.Send(msg) }) // as msgnet serve: errors ignored
	}
	return srv, addr
}

// reply is what the server answers to a plain message that is no command.
func (tg target) reply(msg string) string {
	if tg.managed {
		return "Echo: " + msg
	}
	return msg
}

// The honest client's bound. Before an attack it measures its own round
// trip (p99 of baselineTrips echoes) on the same server, in the same run,
// so the bound follows the machine's speed and the race detector. Under
// attack its p99 must stay under max(rttK × baseline, rttFloor), and no
// single round trip may take longer than rttHard.
//
// The attackers, the server and the honest client share two cores, so a
// fair server still slows the honest client while a flood saturates them:
// it shares its cores between the sessions, it does not ration the
// attacker. The costliest case is a flood of 11-byte frames that each
// need an ERROR: an event loop's turn (64 KiB of input) is then ~6,000
// handler calls, about 120 ms under -race on a 2-core machine, and the
// honest client may wait for both flooders' turns: its p99 reaches
// ~260 ms there (~15 ms without -race; the goroutine engines stay under
// ~50 ms). The floor leaves that a margin of two; a server that starves
// the honest session takes seconds, or never answers, and fails. The
// baseline term only matters on a machine much slower than this one.
const (
	baselineTrips = 200
	rttK          = 20
	rttFloor      = 500 * time.Millisecond
	rttHard       = 2 * time.Second
)

// honest is a well-behaved raw client beside the attackers: it sends
// numbered messages and checks that every answer comes, in order, within
// its bound. Other frames it receives (broadcasts, group messages) go to
// other, which must accept them; without one they fail the test.
type honest struct {
	t       *testing.T
	tg      target
	nc      net.Conn
	replies chan string
	done    chan struct{}
	seq     int
	base    time.Duration // baseline p99
	bound   time.Duration // p99 bound under attack
	trips   []time.Duration
	other   atomic.Pointer[func(k frame.Kind, p []byte) bool]
}

// newHonest connects an honest client, waits for its welcome and measures
// its baseline.
func newHonest(t *testing.T, tg target, addr string) *honest {
	t.Helper()
	return newHonestFrom(t, tg, addr, nil)
}

// newHonestFrom is newHonest dialling from a given local address (for the
// per-IP limit).
func newHonestFrom(t *testing.T, tg target, addr string, local net.Addr) *honest {
	t.Helper()
	d := net.Dialer{LocalAddr: local}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	h := &honest{t: t, tg: tg, nc: nc, replies: make(chan string, 16), done: make(chan struct{})}
	rd := frame.NewReader(nc, 16<<20)
	if _, err := nc.Write(helloFrame("honest", "")); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := rd.ReadFrame()
	if op, _ := frame.ControlOp(f.Payload); err != nil || f.Kind != frame.KindControl || op != "welcome" {
		t.Fatalf("honest client: no welcome: %v %v %q", err, f.Kind, f.Payload)
	}
	nc.SetReadDeadline(time.Time{})
	go h.read(rd)
	t.Cleanup(func() {
		nc.Close()
		<-h.done // the reader ends when the connection is closed
	})
	h.baseline()
	return h
}

// read sorts what the honest client receives: answers to its own
// messages, and other frames for h.other.
func (h *honest) read(rd *frame.Reader) {
	defer close(h.done)
	defer close(h.replies)
	prefix := h.tg.reply("honest-")
	for {
		f, err := rd.ReadFrame()
		if err != nil {
			return
		}
		if f.Kind == frame.KindData && f.Flags == 0 && bytes.HasPrefix(f.Payload, []byte(prefix)) {
			h.replies <- string(f.Payload)
			continue
		}
		if o := h.other.Load(); o != nil && (*o)(f.Kind, f.Payload) {
			continue
		}
		h.t.Errorf("honest client got an unexpected %v %.200q", f.Kind, f.Payload)
	}
}

// onOther sets what accepts frames other than the honest client's answers.
func (h *honest) onOther(f func(k frame.Kind, p []byte) bool) { h.other.Store(&f) }

// roundTrip sends the next numbered message and waits for its answer,
// which must be the next one received.
func (h *honest) roundTrip() time.Duration {
	h.t.Helper()
	h.seq++
	msg := fmt.Sprintf("honest-%08d", h.seq)
	start := time.Now()
	h.nc.SetWriteDeadline(start.Add(rttHard))
	if _, err := h.nc.Write(frame.Append(nil, frame.KindData, 0, []byte(msg))); err != nil {
		h.t.Fatalf("honest client: write of message %d: %v", h.seq, err)
	}
	select {
	case got, ok := <-h.replies:
		d := time.Since(start)
		if !ok {
			h.t.Fatalf("honest client: connection closed waiting for message %d", h.seq)
		}
		if want := h.tg.reply(msg); got != want {
			h.t.Fatalf("honest client: got %q, want %q: a message lost or out of order", got, want)
		}
		return d
	case <-time.After(rttHard):
		h.t.Fatalf("honest client starved: no answer to message %d within %v (baseline p99 %v)", h.seq, rttHard, h.base)
		return 0
	}
}

func (h *honest) baseline() {
	h.t.Helper()
	trips := make([]time.Duration, baselineTrips)
	for i := range trips {
		trips[i] = h.roundTrip()
	}
	h.base = percentile(trips, 99)
	h.bound = max(rttK*h.base, rttFloor)
}

// during makes round trips until attackOver reports true (checked between
// round trips) and at least atLeast were made, then checks them against
// the bound. It fails if the attack has not ended within limit.
func (h *honest) during(atLeast int, limit time.Duration, attackOver func() bool) {
	h.t.Helper()
	h.trips = h.trips[:0]
	deadline := time.Now().Add(limit)
	for len(h.trips) < atLeast || !attackOver() {
		if time.Now().After(deadline) {
			h.t.Fatalf("the attack did not end within %v", limit)
		}
		h.trips = append(h.trips, h.roundTrip())
	}
	h.check()
}

// trip makes n round trips and checks them against the bound.
func (h *honest) trip(n int) {
	h.t.Helper()
	h.during(n, time.Minute, func() bool { return true })
}

func (h *honest) check() {
	h.t.Helper()
	p99, worst := percentile(h.trips, 99), slices.Max(h.trips)
	h.t.Logf("honest client: baseline p99 %v; under attack p99 %v, worst %v over %d round trips (bound %v)",
		h.base, p99, worst, len(h.trips), h.bound)
	if p99 > h.bound {
		h.t.Errorf("honest client slowed: p99 %v under attack, bound max(%d × baseline %v, %v) = %v",
			p99, rttK, h.base, rttFloor, h.bound)
	}
}

func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, (len(s)*p+99)/100-1)]
}

// attack runs attackers on goroutines until it is stopped, at the latest
// when the test ends (before its server stops).
type attack struct {
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

func newAttack(t *testing.T) *attack {
	a := &attack{stop: make(chan struct{})}
	t.Cleanup(a.end)
	return a
}

func (a *attack) goDo(f func(stop <-chan struct{})) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		f(a.stop)
	}()
}

// end stops the attackers and waits for them.
func (a *attack) end() {
	a.once.Do(func() { close(a.stop) })
	a.wg.Wait()
}

func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// dialAttacker connects from a goroutine other than the test's (no Fatal).
// A receive buffer of rcvbuf bytes (0: the system's) keeps a peer that
// does not read from absorbing megabytes in the kernel, so that what the
// server does with its queue shows sooner.
func dialAttacker(addr string, rcvbuf int) (net.Conn, error) {
	d := net.Dialer{}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = testenv.SetRcvBuf(fd, rcvbuf)
			})
			return errors.Join(err, serr)
		}
	}
	return d.Dial("tcp", addr)
}

// helloFrame is a hello for client id with extra JSON fields.
func helloFrame(id, extra string) []byte {
	return frame.Append(nil, frame.KindControl, 0, []byte(`{"op":"hello","client_id":"`+id+`"`+extra+`}`))
}

// handshake sends a hello and reads frames up to the welcome; it returns
// the reader, positioned after the welcome.
func handshake(nc net.Conn, id, extra string) (*frame.Reader, error) {
	rd, _, err := handshakeWelcome(nc, id, extra)
	return rd, err
}

// handshakeWelcome is handshake that also returns the welcome.
func handshakeWelcome(nc net.Conn, id, extra string) (*frame.Reader, map[string]any, error) {
	rd := frame.NewReader(nc, 16<<20)
	if _, err := nc.Write(helloFrame(id, extra)); err != nil {
		return nil, nil, err
	}
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer nc.SetReadDeadline(time.Time{})
	f, err := rd.ReadFrame()
	if err != nil {
		return nil, nil, fmt.Errorf("waiting for the welcome: %w", err)
	}
	var w map[string]any
	if f.Kind != frame.KindControl || json.Unmarshal(f.Payload, &w) != nil || w["op"] != "welcome" {
		return nil, nil, fmt.Errorf("got %v %.200q, want the welcome", f.Kind, f.Payload)
	}
	return rd, w, nil
}

// writeAll writes b, retrying short deadlines so that stop is noticed; a
// write the server does not take within limit fails.
func writeAll(nc net.Conn, b []byte, limit time.Duration) error {
	defer nc.SetWriteDeadline(time.Time{})
	deadline := time.Now().Add(limit)
	for len(b) > 0 {
		nc.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := nc.Write(b)
		b = b[n:]
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		if err != nil && time.Now().After(deadline) {
			return fmt.Errorf("the server took no input for %v: %w", limit, err)
		}
	}
	return nil
}

// rst closes nc with a reset instead of a FIN.
func rst(nc net.Conn) {
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	nc.Close()
}

// readUntilClosed reads what the server sends until it closes, within
// limit, and returns the bytes and when the close came.
func readUntilClosed(nc net.Conn, limit time.Duration) ([]byte, time.Time, error) {
	nc.SetReadDeadline(time.Now().Add(limit))
	b, err := io.ReadAll(nc)
	if errors.Is(err, syscall.ECONNRESET) {
		err = nil // closed all the same
	}
	return b, time.Now(), err
}

// frames splits bytes received into frames.
func frames(b []byte) ([]frame.Frame, error) {
	var fs []frame.Frame
	for len(b) > 0 {
		n, err := frame.Split(b, 16<<20)
		if err != nil {
			return fs, err
		}
		if n == 0 || n > len(b) {
			return fs, io.ErrUnexpectedEOF
		}
		fs = append(fs, frame.Decode(b[:n]))
		b = b[n:]
	}
	return fs, nil
}

// heapInuse is the heap in use after two collections, which also empty
// the sync.Pools: what the process holds, not what it has yet to free.
func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	// HeapAlloc after two collections: the live objects, pools emptied.
	// (HeapInuse counts whole spans, and moves by a megabyte or more with
	// fragmentation on a loaded machine.)
	return m.HeapAlloc
}

// heldSince is how much more heap the process holds than before: the
// least of three readings, since buffers in flight (the honest client's
// traffic goes on) come and go, and what is kept stays.
func heldSince(before uint64) int64 {
	return int64(min(heapInuse(), heapInuse(), heapInuse())) - int64(before)
}

// sessionOf returns the server's session of a client id, waiting for it.
func sessionOf(t *testing.T, srv *msgnet.Server, id string) *msgnet.Session {
	t.Helper()
	var s *msgnet.Session
	waitFor(t, "the session of "+id, func() bool {
		var ok bool
		s, ok = srv.SessionByClientID(id)
		return ok
	})
	return s
}

// waitForWithin is waitFor with a limit of its own.
func waitForWithin(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// ctx5s is a context for a client's Connect.
func ctx5s(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}
