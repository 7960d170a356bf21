package transporttest

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/msgnet/msgnet/frame"
)

// Segmentation: Run runs every case twice, once with each of the Peer's
// writes going out whole and once trickled, cut at random points into
// small pieces (single bytes among them) with short random pauses between
// some of them. A server must not care where its input was cut: a defect
// that only shows when a frame, a line or a hello arrives in pieces (a
// long text line came back corrupted when it arrived in two reads) passes
// every test that writes whole frames. Both passes run the case's own
// expectations, and everything each Peer read from the server must be
// byte for byte the same in both.

// SeedEnv names the environment variable that replays a segmentation seed.
// Every trickled pass logs its seed; to cut the input at the same points
// again:
//
//	MSGNET_SEGMENT_SEED=12345 go test -run 'TestTCP/parked/long_text_line' ./transport/transporttest
//
// The pieces and pauses are the same for the same seed and case (on every
// transport); how the server's reads fall still depends on timing.
const SeedEnv = "MSGNET_SEGMENT_SEED"

// Trickling's shape. A write is cut into at most maxPieces pieces, so that
// a 300 KB write does not become 300,000 system calls; a write of up to
// byteByByte bytes (a header, a hello, a short line) is often sent one byte
// at a time. After one piece in pauseOneIn the writer pauses for up to
// maxPause: enough for the server to read the pieces apart, and a few
// milliseconds per case in all.
const (
	maxPieces  = 32
	byteByByte = 64
	pauseOneIn = 6
	maxPause   = 1500 * time.Microsecond
)

// segmentSeed returns the seed of this run: SeedEnv's value, or a new one.
func segmentSeed(t *testing.T) uint64 {
	if v := os.Getenv(SeedEnv); v != "" {
		seed, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", SeedEnv, v, err)
		}
		return seed
	}
	return rand.Uint64()
}

// pass is one run of a case, whole or trickled. It records what each of
// the case's peers read, in the order the case connected them.
type pass struct {
	trickle bool
	seed    uint64
	name    string // the case's; with the seed, it picks each peer's cuts
	ran     bool   // the pass ran (-run may select one pass only)

	mu    sync.Mutex
	peers []*segConn
}

// conn wraps a peer's connection: it records what is read and, on a
// trickled pass, cuts what is written.
func (p *pass) conn(nc net.Conn) *segConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := &segConn{Conn: nc}
	if p.trickle {
		h := fnv.New64a()
		h.Write([]byte(p.name))
		c.rng = rand.New(rand.NewPCG(p.seed, h.Sum64()+uint64(len(p.peers))))
	}
	p.peers = append(p.peers, c)
	return c
}

// segConn is a peer's connection as the case sees it.
type segConn struct {
	net.Conn
	rng *rand.Rand // nil: writes go out whole

	mu   sync.Mutex
	raw  []byte // every byte read from the server
	seen []byte // what the case took from raw (frames, lines), normalised
	eof  bool   // the case saw the server end the stream
}

func (c *segConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.mu.Lock()
		c.raw = append(c.raw, b[:n]...)
		c.mu.Unlock()
	}
	return n, err
}

// Write writes b whole, or, trickling, in pieces.
func (c *segConn) Write(b []byte) (int, error) {
	if c.rng == nil || len(b) == 0 {
		return c.Conn.Write(b)
	}
	done := 0
	for _, end := range c.cuts(len(b)) {
		n, err := c.Conn.Write(b[done:end])
		done += n
		if err != nil {
			return done, err
		}
		if c.rng.IntN(pauseOneIn) == 0 {
			time.Sleep(time.Duration(c.rng.Int64N(int64(maxPause))))
		}
	}
	return done, nil
}

// cuts returns the ends of the pieces b[:n] is written in, ascending, the
// last one n.
func (c *segConn) cuts(n int) []int {
	var at []int
	if n <= byteByByte && c.rng.IntN(3) == 0 {
		for i := 1; i < n; i++ {
			at = append(at, i)
		}
	} else if n > 1 {
		for range c.rng.IntN(maxPieces) {
			at = append(at, 1+c.rng.IntN(n-1))
		}
		if n > 2 { // a piece of one byte somewhere in the middle
			i := 1 + c.rng.IntN(n-2)
			at = append(at, i, i+1)
		}
	}
	at = append(at, n)
	slices.Sort(at)
	return slices.Compact(at)
}

// took records a frame or line the case read.
func (c *segConn) took(b []byte) {
	c.mu.Lock()
	c.seen = append(c.seen, b...)
	c.mu.Unlock()
}

func (c *segConn) sawEOF() {
	c.mu.Lock()
	c.eof = true
	c.mu.Unlock()
}

// sessionID matches the one value in the server's output that is random
// per connection and legitimately differs between two runs: the welcome's
// session_id ("<8 hex digits random per server>-<counter>"). Nothing else
// is normalised: error messages, reasons, payloads and every byte of
// framing must be the same.
var sessionID = regexp.MustCompile(`"session_id":"[^"]*"`)

// normalise returns the frame as recorded for comparison: as sent, but for
// a CONTROL frame's session id.
func normalise(f frame.Frame) []byte {
	p := f.Payload
	if f.Kind == frame.KindControl {
		p = sessionID.ReplaceAll(p, []byte(`"session_id":"*"`))
	}
	return frame.Append(nil, f.Kind, f.Flags, p)
}

// normaliseStream normalises the complete frames of a binary stream; a
// text stream, and a trailing partial frame, are returned as they are.
func normaliseStream(b []byte) []byte {
	if frame.Sniff(b) != frame.ModeBinary {
		return b
	}
	var out []byte
	for len(b) > 0 {
		n, err := frame.Split(b, frame.MaxPayloadLimit)
		if err != nil || n == 0 || n > len(b) {
			break
		}
		out = append(out, normalise(frame.Decode(b[:n]))...)
		b = b[n:]
	}
	return append(out, b...)
}

// compareOutputs fails t unless every peer read the same from the server
// in both passes: the same frames and lines, the same end of stream, and,
// beyond what the case read, raw bytes that agree as far as both go (a
// read may have fetched more in one pass than in the other).
func compareOutputs(t *testing.T, whole, trickled *pass) {
	t.Helper()
	if len(whole.peers) != len(trickled.peers) {
		t.Fatalf("%d peers whole, %d trickled", len(whole.peers), len(trickled.peers))
	}
	for i, w := range whole.peers {
		tr := trickled.peers[i]
		w.mu.Lock()
		tr.mu.Lock()
		if at, ok := firstDiff(w.seen, tr.seen); !ok {
			t.Errorf("peer %d read %d bytes whole and %d trickled, first different at byte %d:\n whole:    %s\n trickled: %s",
				i, len(w.seen), len(tr.seen), at, around(w.seen, at), around(tr.seen, at))
		} else if w.eof != tr.eof {
			t.Errorf("peer %d: end of stream seen whole %v, trickled %v", i, w.eof, tr.eof)
		} else {
			rw, rt := normaliseStream(w.raw), normaliseStream(tr.raw)
			n := min(len(rw), len(rt))
			if at, ok := firstDiff(rw[:n], rt[:n]); !ok {
				t.Errorf("peer %d: raw input differs at byte %d beyond what the case read:\n whole:    %s\n trickled: %s",
					i, at, around(rw, at), around(rt, at))
			}
		}
		tr.mu.Unlock()
		w.mu.Unlock()
	}
}

// firstDiff returns where a and b first differ, and whether they are equal.
func firstDiff(a, b []byte) (int, bool) {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i, false
		}
	}
	return n, len(a) == len(b)
}

// around quotes a little of b on either side of at.
func around(b []byte, at int) string {
	lo, hi := max(at-24, 0), min(at+40, len(b))
	return fmt.Sprintf("...%q... (%d bytes)", b[lo:hi], len(b))
}
