package conn

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/msgnet/msgnet/frame"
	"go.uber.org/goleak"
)

// White-box tests of the engine without sockets: a Conn on one end of a
// net.Pipe, with a Handler that records what the engine tells it, and a
// peer reading the other end.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a Handler that dispatches nothing and records its calls.
type recorder struct {
	mu      sync.Mutex
	ingests [][]byte
	ended   []error
	done    chan struct{}
}

func newRecorder() *recorder { return &recorder{done: make(chan struct{})} }

func (r *recorder) Ingest(b []byte) (int, int) {
	r.mu.Lock()
	r.ingests = append(r.ingests, bytes.Clone(b))
	r.mu.Unlock()
	return len(b), 0
}
func (r *recorder) Flush([]byte) {}
func (r *recorder) Ended(reason error) {
	r.mu.Lock()
	r.ended = append(r.ended, reason)
	n := len(r.ended)
	r.mu.Unlock()
	if n == 1 {
		close(r.done)
	}
}
func (r *recorder) Ident() (string, string) { return "s1", "c1" }

func (r *recorder) waitEnded(t *testing.T) error {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the connection did not end")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.ended) != 1 {
		t.Fatalf("Ended called %d times", len(r.ended))
	}
	return r.ended[0]
}

// pipeConn is a Conn on one end of a net.Pipe in binary mode, and the
// other end for the test to read.
func pipeConn(t *testing.T, cfg Config) (*Conn, *recorder, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	if cfg.MaxPayload == 0 {
		cfg.MaxPayload = 1 << 20
	}
	if cfg.QueueLimit == 0 {
		cfg.QueueLimit = 1 << 20
	}
	if cfg.Drain == 0 {
		cfg.Drain = time.Second
	}
	if cfg.Mode == frame.ModeUnknown {
		cfg.Mode = frame.ModeBinary
	}
	if cfg.Shared == nil {
		cfg.Shared = &Shared{}
	}
	c := new(Conn)
	r := newRecorder()
	c.Init(r, a, &cfg)
	return c, r, b
}

// readAll reads frames from the peer's end until EOF.
func readAll(t *testing.T, nc net.Conn) []frame.Frame {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	fr := frame.NewReader(nc, 1<<20)
	var out []frame.Frame
	for {
		f, err := fr.ReadFrame()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("after %d frames: %v", len(out), err)
		}
		f.Payload = bytes.Clone(f.Payload)
		out = append(out, f)
	}
}

// Frames queued from many goroutines are written whole, each goroutine's
// in its order; a graceful close writes them all, then the last word.
func TestQueueThenNotify(t *testing.T) {
	c, r, peer := pipeConn(t, Config{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				if err := c.Send([]byte{byte(g), byte(i)}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	got := make(chan []frame.Frame, 1)
	go func() { got <- readAll(t, peer) }()
	wg.Wait()
	c.Close(errors.New("bye"), Notify, &frame.ErrorBody{Code: "test_code", Message: "m"})
	frames := <-got
	if len(frames) != 202 {
		t.Fatalf("%d frames, want 200 messages, ERROR and DISCONNECT", len(frames))
	}
	next := [4]int{}
	for _, f := range frames[:200] {
		g, i := int(f.Payload[0]), int(f.Payload[1])
		if f.Kind != frame.KindData || i != next[g] {
			t.Fatalf("goroutine %d: message %d out of order (want %d)", g, i, next[g])
		}
		next[g]++
	}
	if e := frame.ParseError(frames[200].Payload); frames[200].Kind != frame.KindError || e.Code != "test_code" {
		t.Fatalf("got %v %s, want ERROR test_code", frames[200].Kind, frames[200].Payload)
	}
	if frames[201].Kind != frame.KindDisconnect || string(frames[201].Payload) != "bye" {
		t.Fatalf("got %v %q, want DISCONNECT bye", frames[201].Kind, frames[201].Payload)
	}
	if reason := r.waitEnded(t); reason.Error() != "bye" {
		t.Fatalf("ended with %v", reason)
	}
	if st := c.State(); st != StateEnded {
		t.Fatalf("state %v", st)
	}
	if _, out, _, _ := c.Counts(); out != 202 {
		t.Fatalf("msgsOut %d, want 202", out)
	}
}

// Only the first Close counts: its reason is the one Ended gets; a later
// abort still cuts what is left.
func TestCloseFirstReasonWins(t *testing.T) {
	c, r, peer := pipeConn(t, Config{})
	go io.Copy(io.Discard, peer)
	first := errors.New("first")
	c.Close(first, Drain, nil)
	c.Close(errors.New("second"), Notify, nil)
	c.Close(errors.New("third"), Abort, nil)
	if reason := r.waitEnded(t); reason != first {
		t.Fatalf("ended with %v, want the first reason", reason)
	}
	if err := c.Send([]byte("late")); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("send after close: %v", err)
	}
}

// An abort drops what is queued: the peer gets nothing of it.
func TestAbortDropsQueue(t *testing.T) {
	c, r, peer := pipeConn(t, Config{})
	c.mu.Lock()
	c.flags |= writerActive // hold the writer off, as if it were busy
	c.mu.Unlock()
	for range 10 {
		c.Send([]byte("never"))
	}
	c.mu.Lock()
	c.flags &^= writerActive
	c.mu.Unlock()
	c.Close(errors.New("cut"), Abort, nil)
	if frames := readAll(t, peer); len(frames) != 0 {
		t.Fatalf("peer got %d frames after an abort", len(frames))
	}
	r.waitEnded(t)
	if q := c.QueuedBytes(); q != 0 {
		t.Fatalf("%d bytes still queued", q)
	}
}

// The queue bound: a send that would pass it fails and is counted as a
// drop; under SlowDisconnect the connection is closed instead.
func TestQueueBound(t *testing.T) {
	for _, slow := range []bool{false, true} {
		sh := &Shared{}
		c, r, peer := pipeConn(t, Config{QueueLimit: 100, SlowDisconnect: slow, Shared: sh})
		c.mu.Lock()
		c.flags |= writerActive // nothing leaves: the queue only grows
		c.mu.Unlock()
		var err error
		n := 0
		for ; err == nil && n < 100; n++ {
			err = c.Send(make([]byte, 30))
		}
		want := ErrQueueFull
		if slow {
			want = ErrSlowConsumer
		}
		if !errors.Is(err, want) || n != 3 { // two 40-byte frames fit in 100, not a third
			t.Fatalf("slow=%v: send %d failed with %v, want %v on the third", slow, n, err, want)
		}
		reason := map[bool]string{false: DropQueueFull, true: DropSlowConsumer}[slow]
		if d := sh.Dropped.Snapshot()[reason]; d != 1 || sh.SlowConsumers.Load() != 1 {
			t.Fatalf("slow=%v: dropped %v, slow consumers %d", slow, sh.Dropped.Snapshot(), sh.SlowConsumers.Load())
		}
		c.mu.Lock()
		c.flags &^= writerActive
		c.mu.Unlock()
		if slow {
			if reason := r.waitEnded(t); !errors.Is(reason, ErrSlowConsumer) {
				t.Fatalf("ended with %v", reason)
			}
			continue
		}
		c.Close(errors.New("done"), Abort, nil)
		r.waitEnded(t)
		peer.Close()
	}
}

// A held connection writes the handshake's answer first, then what was
// sent before it, encoded as the handshake decided.
func TestHeldUntilEstablished(t *testing.T) {
	c, r, peer := pipeConn(t, Config{Held: true})
	got := make(chan []frame.Frame, 1)
	go func() { got <- readAll(t, peer) }()
	c.Send([]byte("early 1"))
	c.Send([]byte("early 2"))
	c.Establish(nil, []byte(`{"op":"welcome"}`))
	c.Send([]byte("late"))
	c.Close(errors.New("x"), Drain, nil)
	frames := <-got
	want := []string{`{"op":"welcome"}`, "early 1", "early 2", "late"}
	if len(frames) != len(want) {
		t.Fatalf("%d frames, want %d", len(frames), len(want))
	}
	for i, f := range frames {
		if string(f.Payload) != want[i] {
			t.Fatalf("frame %d: %q, want %q", i, f.Payload, want[i])
		}
	}
	r.waitEnded(t)
}

// A held connection that never completes a required handshake drops what
// was held for it: it was not for this peer.
func TestSecureHeldDroppedOnClose(t *testing.T) {
	c, r, peer := pipeConn(t, Config{Held: true, Secure: true})
	c.Send([]byte("secret"))
	got := make(chan []frame.Frame, 1)
	go func() { got <- readAll(t, peer) }()
	c.Close(errors.New("no handshake"), Notify, nil)
	frames := <-got
	if len(frames) != 1 || frames[0].Kind != frame.KindDisconnect {
		t.Fatalf("got %v, want only DISCONNECT", frames)
	}
	r.waitEnded(t)
}

// Text mode: what was queued before the mode was known is written as
// lines once it is.
func TestSetModeReencodes(t *testing.T) {
	c, r, peer := pipeConn(t, Config{Mode: frame.ModeUnknown})
	c.cfg.Mode = frame.ModeUnknown
	c.mode = frame.ModeUnknown
	c.Send([]byte("one"))
	c.Send([]byte("two"))
	got := make(chan []byte, 1)
	go func() {
		peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(peer)
		got <- b
	}()
	c.SetMode(frame.ModeText)
	c.Close(errors.New("x"), Drain, nil)
	if b := <-got; string(b) != "one\ntwo\n" {
		t.Fatalf("got %q", b)
	}
	r.waitEnded(t)
}

// Under Salvage, what was never handed to the socket is kept for the next
// connection.
func TestSalvage(t *testing.T) {
	c, r, _ := pipeConn(t, Config{Salvage: true})
	c.mu.Lock()
	c.flags |= writerActive
	c.mu.Unlock()
	c.Send([]byte("keep me"))
	c.mu.Lock()
	c.flags &^= writerActive
	c.mu.Unlock()
	c.Close(errors.New("lost"), Abort, nil)
	r.waitEnded(t)
	b := c.TakeUnsent()
	f, err := frame.NewReader(bytes.NewReader(b), 1<<20).ReadFrame()
	if err != nil || string(f.Payload) != "keep me" {
		t.Fatalf("unsent %q (%v)", b, err)
	}
}

// The budget is charged in granules while frames are queued and released
// when they are written or dropped.
func TestBudgetCharge(t *testing.T) {
	b := NewBudget(64 << 10)
	c, r, peer := pipeConn(t, Config{Shared: &Shared{Budget: b}})
	c.mu.Lock()
	c.flags |= writerActive
	c.mu.Unlock()
	c.Send(make([]byte, 20<<10))
	if got := b.Used(); got != 2*budgetGranule {
		t.Fatalf("charged %d for 20 KiB, want two granules", got)
	}
	var err error
	for err == nil {
		err = c.Send(make([]byte, 20<<10))
	}
	if !errors.Is(err, ErrServerQueueFull) || b.Used() > b.Limit() {
		t.Fatalf("send past the budget: %v, charged %d of %d", err, b.Used(), b.Limit())
	}
	if !b.Over() {
		t.Fatal("the budget does not say it is spent")
	}
	c.mu.Lock()
	c.flags &^= writerActive
	c.mu.Unlock()
	go io.Copy(io.Discard, peer)
	c.Close(errors.New("x"), Drain, nil)
	r.waitEnded(t)
	if got := b.Used(); got != 0 {
		t.Fatalf("%d bytes still charged after the end", got)
	}
}

// Input read by the goroutine reader goes to the Handler; the end of the
// stream closes the connection as closed by the peer.
func TestGoroutineReaderToEOF(t *testing.T) {
	c, r, peer := pipeConn(t, Config{Pending: []byte("pre")})
	c.Start()
	peer.Write([]byte("abc"))
	peer.Close()
	if reason := r.waitEnded(t); !errors.Is(reason, ErrPeerClosed) {
		t.Fatalf("ended with %v", reason)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var all []byte
	for _, b := range r.ingests {
		all = append(all, b...)
	}
	if string(all) != "preabc" {
		t.Fatalf("ingested %q", all)
	}
	if _, _, in, _ := c.Counts(); in != 3 {
		t.Fatalf("bytes in %d", in)
	}
}

// Every state has a name, in the order a connection goes through them.
func TestStateNames(t *testing.T) {
	want := []string{"open", "closing", "lingering", "closed", "ended"}
	for s := StateOpen; s <= StateEnded; s++ {
		if s.String() != want[s] {
			t.Fatalf("state %d is %q, want %q", s, s, want[s])
		}
	}
}
