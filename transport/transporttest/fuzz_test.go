package transporttest_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/transport/transporttest"
)

// FuzzSession feeds arbitrary bytes, cut into arbitrary pieces, to a live
// session of a real server on loopback TCP, and holds it to the protocol
// whatever it is sent:
//
//   - no panic (one in a server goroutine ends the process, which the
//     fuzzer reports);
//   - every frame it writes back is well formed (magic, length of at least
//     a header and at most the limit, a known kind, flags only of what the
//     welcome granted; CONTROL only as the welcome to a hello), and in text
//     mode it writes whole lines;
//   - after the input, the session either still serves, or has ended the
//     way the protocol says: a probe written after the input (behind what
//     completes a partial frame or line) is answered, and everything before
//     it was answered in order; or the session ended with ERROR and
//     DISCONNECT (the line "ERROR <code>" in text mode) for bad framing at
//     exactly the point the protocol names, or after the peer's own
//     DISCONNECT; it never serves past either;
//   - bounded memory: see allocBudget.
//
// in is the stream; cuts says how it is written (see writePieces): each
// byte is a piece and a pause after it; what the cuts do not cover is one
// last write. Large inputs make slow fuzzing (every new input is
// minimised by running it again and again): a header alone is completed
// with its payload, which the cuts trickle, and the large inputs that the
// segmentation defects needed are TestSessionLargeInputs. engine picks the engine (its low two bits) and the message
// size limit (bit 2: 1 KiB, where the fuzzer's inputs reach the limits,
// or 256 KiB, beyond the read buffers). The checks are in fuzzcheck_test.go,
// the seeds in fuzzseeds_test.go, and the protocol's reading of a stream
// in wiremodel_test.go.
//
// One server per engine and limit serves the whole run, one connection at
// a time: each input waits for its session to end.
func FuzzSession(f *testing.F) {
	servers := startFuzzServers(f)
	for _, s := range fuzzSeeds() {
		f.Add(s.in, s.cuts, s.engine)
	}
	f.Fuzz(func(t *testing.T, in, cuts []byte, engine uint8) {
		fs := servers[int(engine)%len(servers)]
		fs.run(t, in, cuts)
	})
}

// TestSessionLargeInputs runs FuzzSession's checks on inputs too large
// for its corpus: lines several times every read buffer, trickled, on
// every engine. (On the engine before 6e171be, one came back as its first
// 65,536 bytes.)
func TestSessionLargeInputs(t *testing.T) {
	servers := startFuzzServers(t)
	line := transporttest.CountingLine(150 << 10)
	for _, fs := range servers {
		if fs.limit != largeLimit {
			continue
		}
		for _, cuts := range [][]byte{nil, {0xbf, 0xbf, 0xff, 0xc0}, bytes.Repeat([]byte{0xbf}, 40)} {
			fs.run(t, append([]byte(line), "\r\nafter\n"...), cuts)
			fs.run(t, []byte(line), cuts) // its end completed by the probe
		}
	}
}

// The fuzz servers' message size limits.
const (
	smallLimit = 1 << 10
	largeLimit = 256 << 10
)

// fuzzServer is an echo server (messages and requests) on one engine.
type fuzzServer struct {
	name  string
	srv   *msgnet.Server
	addr  string
	limit int
}

func startFuzzServers(f testing.TB) []*fuzzServer {
	var out []*fuzzServer
	for _, limit := range []int{smallLimit, largeLimit} {
		for _, e := range transporttest.Engines {
			srv := msgnet.NewServer("fuzz", append([]msgnet.Option{
				msgnet.WithMessageSizeLimit(limit),
				msgnet.WithLogger(slog.New(slog.DiscardHandler)),
			}, e.Opts...)...)
			srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.Send(msg) })
			srv.OnRequest(func(s *msgnet.Session, req []byte) ([]byte, error) { return req, nil })
			if err := srv.Start("127.0.0.1:0"); err != nil {
				f.Fatal(err)
			}
			f.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), transporttest.Timeout)
				defer cancel()
				if err := srv.Shutdown(ctx); err != nil {
					f.Errorf("shutdown: %v", err)
				}
			})
			fs := &fuzzServer{name: fmt.Sprintf("%s/%d", e.Name, limit), srv: srv, addr: srv.Addr().String(), limit: limit}
			fs.warmUp(f)
			out = append(out, fs)
		}
	}
	return out
}

// warmUp serves a few sessions of each mode, so that what a server makes
// once (its event loops and their buffers, the pools' first buffers) is
// not counted against the first input.
func (fs *fuzzServer) warmUp(f testing.TB) {
	for range 4 {
		for _, in := range [][]byte{
			frame.Append(nil, frame.KindData, 0, []byte("warm")),
			[]byte("warm\n"),
		} {
			r := fs.session(in, nil, false)
			if r.failure != "" {
				f.Fatalf("%s: warming up: %s", fs.name, r.failure)
			}
		}
	}
}

func (fs *fuzzServer) run(t *testing.T, in, cuts []byte) {
	r := fs.session(in, cuts, !raceEnabled)
	if r.failure != "" {
		t.Fatalf("%s: %s\ninput %d bytes: %s\noutput %d bytes: %s", fs.name, r.failure,
			len(in), clip(in), len(r.out), clip(r.out))
	}
	t.Logf("%s: %d bytes in, %d out, served on: %v; allocated %d of %d", fs.name, len(in), len(r.out), r.answered, r.alloc, r.budget)
}

// result is what became of one input.
type result struct {
	out      []byte
	answered bool   // the probe was answered
	alloc    uint64 // bytes allocated, when measured
	budget   uint64
	failure  string // "" if every invariant held
}

// session runs one input on a fresh connection and checks it, and what
// the process allocated meanwhile if measure is set.
func (fs *fuzzServer) session(in, cuts []byte, measure bool) result {
	// The stream: the input, what completes its last frame or line, and
	// the probe, whose answer tells that the session still serves.
	w := model(in, fs.limit)
	stream := append(slices.Clone(in), w.completion(fs.limit)...)
	probe, answer := newProbe(model(stream, fs.limit).mode)
	stream = append(stream, probe...)
	want := model(stream, fs.limit)

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	nc, err := net.DialTimeout("tcp", fs.addr, transporttest.Timeout)
	if err != nil {
		return result{failure: fmt.Sprintf("dial: %v", err)}
	}
	o := readOutput(nc)
	nc.SetWriteDeadline(time.Now().Add(transporttest.Timeout))
	pieces := writePieces(nc, stream[:len(stream)-len(probe)], cuts)
	nc.Write(probe) // the session may have ended: an error is for the checks to judge
	answered, waited := o.await(answer, transporttest.Timeout)
	// Close with RST (linger 0): tens of thousands of connections would
	// otherwise leave as many ports in TIME_WAIT.
	nc.(*net.TCPConn).SetLinger(0)
	nc.Close()
	<-o.done
	gone := awaitNoSessions(fs.srv)
	runtime.ReadMemStats(&after)

	r := result{out: o.b, answered: answered}
	c := checker{fs: fs, want: want, out: o.b, readErr: o.err, answered: answered}
	switch {
	case !waited:
		r.failure = "the session neither answered the probe nor ended within " + transporttest.Timeout.String()
	case !gone:
		r.failure = "the session was still open " + transporttest.Timeout.String() + " after its connection closed"
	default:
		r.failure = c.check(len(stream) - want.endAt)
	}
	if r.failure == "" && measure {
		r.budget = allocBudget(len(stream), len(o.b), len(want.frames)+len(want.lines)+pieces)
		if r.alloc = after.TotalAlloc - before.TotalAlloc; r.alloc > r.budget {
			r.failure = fmt.Sprintf("the session allocated %d bytes, over its budget of %d (%d bytes in, %d out, %d messages and pieces)",
				r.alloc, r.budget, len(stream), len(o.b), len(want.frames)+len(want.lines)+pieces)
		}
	}
	return r
}

// allocBudget is the most the process may allocate while it serves one
// input (the server, and the test's own reading of the output): a
// connection's constant, a constant per message and per piece written,
// and a small multiple of the bytes in and out.
//
//   - allocConst covers accepting and ending a session (the session, its
//     registry entries and goroutines' closures, a few KiB) and, mostly, a
//     pooled read buffer (64 KiB) that a garbage collection emptied from
//     its pool while the input ran, a few times over.
//   - allocPerMessage covers what a message may cost whatever its size: an
//     ERROR answer's JSON and queueing, the decoding of a CONTROL frame's
//     JSON and its error.
//   - allocPerByte covers copying: a frame or line kept across reads grows
//     by doubling (under twice its size), an echo is copied into the send
//     queue, and the test keeps the output in a growing buffer (under
//     twice its size).
//
// The limits' consequences: a header announcing 256 KiB does not make the
// server allocate it before the payload comes (allocConst is below it),
// and a frame trickled in many pieces is not copied again per piece.
func allocBudget(in, out, messages int) uint64 {
	return allocConst + allocPerMessage*uint64(messages) + allocPerByte*uint64(in+out)
}

const (
	allocConst      = 192 << 10
	allocPerMessage = 2 << 10
	allocPerByte    = 6
)

// newProbe returns what to write after the input to see whether the
// session serves, in the session's mode, and the answer to it: a PING
// and its PONG, or a line and its echo. Its payload is random, so the
// input cannot hold its answer.
func newProbe(mode frame.Mode) (probe, answer []byte) {
	token := []byte("probe-" + hex.EncodeToString(binary.BigEndian.AppendUint64(nil, rand.Uint64())))
	if mode == frame.ModeText {
		line := append(token, '\n')
		return line, line
	}
	return frame.Append(nil, frame.KindPing, 0, token), frame.Append(nil, frame.KindPong, 0, token)
}

// writePieces writes b, the input and what completes its last frame or
// line, cut as cuts says; what the cuts do not cover goes in one write.
// Cuts reach into the completion, so that a header alone can have its
// payload trickled. A byte of cuts is a piece of 1 to 32 bytes (its low
// five bits, plus one), times 128 with bit 0x20, and a pause after it (its
// top two bits): none, 50 µs, 500 µs (for the server to read the pieces
// apart), or 3 ms (beyond the 2 ms within which a parked connection's
// reader stays hot, so that each piece is a burst of its own, read into a
// fresh buffer). Pauses stop after maxPauses in all. It stops at the
// first error: the server may have ended the session. It returns the
// number of writes.
func writePieces(nc net.Conn, b []byte, cuts []byte) int {
	writes := 0
	write := func(p []byte) bool {
		writes++
		_, err := nc.Write(p)
		return err == nil
	}
	in := b
	var paused time.Duration
	for _, c := range cuts {
		if len(in) == 0 {
			break
		}
		k := int(c&0x1f) + 1
		if c&0x20 != 0 {
			k *= 128
		}
		k = min(k, len(in))
		if !write(in[:k]) {
			return writes
		}
		in = in[k:]
		if pause := pauses[c>>6]; pause > 0 && paused < maxPauses {
			time.Sleep(pause)
			paused += pause
		}
	}
	if len(in) > 0 {
		write(in)
	}
	return writes
}

var pauses = [4]time.Duration{0, 50 * time.Microsecond, 500 * time.Microsecond, 3 * time.Millisecond}

// maxPauses bounds the pauses of one input, and so its time.
const maxPauses = 50 * time.Millisecond

// output collects what the server writes, on a goroutine of its own so
// that the server is never held up by a peer that does not read.
type output struct {
	mu   sync.Mutex
	b    []byte
	err  error         // why reading ended
	more chan struct{} // a read happened
	done chan struct{} // reading ended
}

func readOutput(nc net.Conn) *output {
	o := &output{more: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(o.done)
		buf := make([]byte, 16<<10)
		for {
			n, err := nc.Read(buf)
			o.mu.Lock()
			o.b = append(o.b, buf[:n]...)
			if err != nil {
				o.err = err
			}
			o.mu.Unlock()
			select {
			case o.more <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	return o
}

// await waits until the output holds answer or has ended. It reports
// whether the answer came, and false for waited if neither happened within
// d.
func (o *output) await(answer []byte, d time.Duration) (answered, waited bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	from := 0
	for {
		o.mu.Lock()
		found := bytes.Contains(o.b[from:], answer)
		from = max(len(o.b)-len(answer), 0)
		ended := o.err != nil
		o.mu.Unlock()
		if found || ended {
			return found, true
		}
		select {
		case <-o.more:
		case <-o.done:
		case <-timer.C:
			return false, false
		}
	}
}

// awaitNoSessions waits for the server's session count to reach zero,
// without allocating (it runs inside the measured span).
func awaitNoSessions(srv *msgnet.Server) bool {
	deadline := time.Now().Add(transporttest.Timeout)
	for wait := 10 * time.Microsecond; srv.ConnectionCount() != 0; wait = min(2*wait, time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(wait)
	}
	return true
}

// clip quotes the start of b for a failure message; the fuzzer keeps the
// whole input in testdata/fuzz.
func clip(b []byte) string {
	if len(b) > 300 {
		return fmt.Sprintf("%q...", b[:300])
	}
	return fmt.Sprintf("%q", b)
}
