package loadgen

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/msgnet/msgnet/frame"
)

// runner holds what every mode shares during one Run.
type runner struct {
	cfg     Config
	errs    *errorLog
	loadCPU float64 // the load tool's CPU seconds over the window
}

// clockBase anchors the monotonic clock used for every measurement.
var clockBase = time.Now()

// nanotime is monotonic nanoseconds since clockBase.
func nanotime() int64 { return int64(time.Since(clockBase)) }

// sleepUntil sleeps until the monotonic instant t (see nanotime) or until ctx
// is done; it reports whether t was reached.
func sleepUntil(ctx context.Context, t int64) bool {
	d := time.Duration(t - nanotime())
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// window is the measured interval [start, end) in nanotime units.
type window struct{ start, end int64 }

// contains reports whether t falls in the window.
func (w window) contains(t int64) bool { return t >= w.start && t < w.end }

// seconds is the window's length.
func (w window) seconds() float64 { return float64(w.end-w.start) / 1e9 }

// errorLog counts errors and keeps the first few distinct messages.
type errorLog struct {
	n       atomic.Int64
	mu      sync.Mutex
	samples map[string]int
}

const maxErrorSamples = 8

func newErrorLog() *errorLog { return &errorLog{samples: map[string]int{}} }

// add counts err.
func (l *errorLog) add(err error) {
	l.n.Add(1)
	msg := err.Error()
	l.mu.Lock()
	if _, ok := l.samples[msg]; ok || len(l.samples) < maxErrorSamples {
		l.samples[msg]++
	}
	l.mu.Unlock()
}

// snapshot returns the count and the sample messages, each with how often
// it was seen.
func (l *errorLog) snapshot() (int64, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.samples))
	for m, c := range l.samples {
		if c > 1 {
			m = fmt.Sprintf("%s (x%d)", m, c)
		}
		out = append(out, m)
	}
	sort.Strings(out)
	return l.n.Load(), out
}

// Histogram bounds: 1 ns to one hour at 3 significant digits.
const (
	histMin    = 1
	histMax    = int64(time.Hour)
	histDigits = 3
)

// newHist returns an empty latency histogram in nanoseconds.
func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histDigits) }

// shardedHist is a latency histogram that many goroutines record into, split
// into shards with a lock each so that they seldom contend. A goroutine
// records into the shard of its own index.
type shardedHist struct {
	shards []histShard
}

type histShard struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
	_  [40]byte // keep shards on separate cache lines
}

// maxShards bounds the memory of a shardedHist (a histogram is ~270 KB).
const maxShards = 64

func newShardedHist(n int) *shardedHist {
	n = min(max(n, 1), maxShards)
	s := &shardedHist{shards: make([]histShard, n)}
	for i := range s.shards {
		s.shards[i].h = newHist()
	}
	return s
}

// record adds one value in nanoseconds, clamped to the histogram's range,
// into the shard of goroutine index i.
func (s *shardedHist) record(i int, ns int64) {
	ns = min(max(ns, histMin), histMax)
	sh := &s.shards[i%len(s.shards)]
	sh.mu.Lock()
	_ = sh.h.RecordValue(ns)
	sh.mu.Unlock()
}

// merge adds h into the shard of goroutine index i.
func (s *shardedHist) merge(i int, h *hdrhistogram.Histogram) {
	sh := &s.shards[i%len(s.shards)]
	sh.mu.Lock()
	sh.h.Merge(h)
	sh.mu.Unlock()
}

// merged returns one histogram of everything recorded.
func (s *shardedHist) merged() *hdrhistogram.Histogram {
	out := newHist()
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		out.Merge(sh.h)
		sh.mu.Unlock()
	}
	return out
}

// meter is a set of counters, one per goroutine, that the progress line
// sums without making the goroutines contend.
type meter struct {
	c []paddedCounter
}

type paddedCounter struct {
	atomic.Int64
	_ [56]byte
}

func newMeter(n int) *meter { return &meter{c: make([]paddedCounter, max(n, 1))} }

// add counts n events of goroutine i.
func (m *meter) add(i int, n int64) { m.c[i%len(m.c)].Add(n) }

// total sums every counter.
func (m *meter) total() int64 {
	var t int64
	for i := range m.c {
		t += m.c[i].Load()
	}
	return t
}

// client is one connection to the server with its frame reader.
type client struct {
	nc          net.Conn
	r           *frame.Reader
	sessionID   string
	idleTimeout time.Duration
	nats        *natsConn // with ProtoNATS, instead of r
}

// welcome is the part of the server's welcome that loadgen uses.
type welcome struct {
	Op            string `json:"op"`
	SessionID     string `json:"session_id"`
	IdleTimeoutMS int64  `json:"idle_timeout_ms"`
}

// dial connects to the server, wraps TLS if configured and, unless NoHello,
// makes the hello / welcome handshake, all within DialTimeout.
func (r *runner) dial(ctx context.Context, id int) (*client, error) {
	if r.cfg.Proto == ProtoNATS {
		return r.dialNATS(ctx, id)
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", r.cfg.Addr)
	if err != nil {
		return nil, err
	}
	if r.cfg.TLS != nil {
		tc := tls.Client(nc, r.tlsConfig())
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("tls handshake: %w", err)
		}
		nc = tc
	}
	c := &client{nc: nc, r: frame.NewReader(nc, r.cfg.MaxPayload)}
	if r.cfg.NoHello {
		return c, nil
	}
	if err := c.hello(ctx, r.cfg.ClientID+"-"+strconv.Itoa(id)); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// tlsConfig is Config.TLS with ServerName taken from Addr when empty.
func (r *runner) tlsConfig() *tls.Config {
	tc := r.cfg.TLS
	if tc.ServerName != "" || tc.InsecureSkipVerify {
		return tc
	}
	tc = tc.Clone()
	if host, _, err := net.SplitHostPort(r.cfg.Addr); err == nil {
		tc.ServerName = host
	}
	return tc
}

// ErrNoWelcome is returned when the server answered hello with something
// other than a welcome.
var ErrNoWelcome = errors.New("loadgen: server did not answer hello with welcome (try --no-hello)")

// hello sends CONTROL hello and waits for the welcome, with ctx's deadline
// as the connection deadline.
func (c *client) hello(ctx context.Context, clientID string) error {
	if dl, ok := ctx.Deadline(); ok {
		c.nc.SetDeadline(dl)
		defer c.nc.SetDeadline(time.Time{})
	}
	p, _ := json.Marshal(map[string]string{"op": "hello", "client_id": clientID})
	if err := frame.WriteFrame(c.nc, frame.KindControl, 0, p); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}
	for {
		f, err := c.r.ReadFrame()
		if err != nil {
			if ctx.Err() != nil || isTimeout(err) {
				return fmt.Errorf("%w: no welcome within the dial timeout", ErrNoWelcome)
			}
			return fmt.Errorf("wait for welcome: %w", err)
		}
		switch f.Kind {
		case frame.KindControl:
			var w welcome
			if json.Unmarshal(f.Payload, &w) != nil || w.Op != "welcome" {
				return fmt.Errorf("%w: got CONTROL %.200q", ErrNoWelcome, f.Payload)
			}
			c.sessionID = w.SessionID
			c.idleTimeout = time.Duration(w.IdleTimeoutMS) * time.Millisecond
			return nil
		case frame.KindError:
			e := frame.ParseError(f.Payload)
			return fmt.Errorf("%w: got ERROR %s: %s", ErrNoWelcome, e.Code, e.Message)
		case frame.KindDisconnect:
			return fmt.Errorf("%w: got DISCONNECT %.200q", ErrNoWelcome, f.Payload)
		}
		// HEARTBEAT, PING and the like before the welcome: keep waiting.
	}
}

// isTimeout reports whether err is a deadline being reached.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// frameError turns a frame the load tool did not expect into an error.
func frameError(f frame.Frame) error {
	switch f.Kind {
	case frame.KindError:
		e := frame.ParseError(f.Payload)
		return fmt.Errorf("server sent ERROR %s: %s", e.Code, e.Message)
	case frame.KindDisconnect:
		return fmt.Errorf("server sent DISCONNECT %.200q", f.Payload)
	}
	return fmt.Errorf("unexpected %v frame", f.Kind)
}

// ignorable reports whether a frame that is not the expected answer can be
// skipped without breaking the exchange: heartbeats, pongs and CONTROL.
func ignorable(k frame.Kind) bool {
	return k == frame.KindHeartbeat || k == frame.KindPong || k == frame.KindControl || k == frame.KindPing
}

// dataFrames is a reusable buffer of DATA frames of a fixed payload size,
// each carrying a sequence number, for writing many frames in one Write.
type dataFrames struct {
	size int
	tmpl []byte // the payload pattern after the sequence number
	buf  []byte
}

// newDataFrames returns a buffer with room for n frames of size payload bytes.
func newDataFrames(size, n int) *dataFrames {
	t := make([]byte, size)
	for i := range t {
		t[i] = byte('a' + i%26)
	}
	return &dataFrames{size: size, tmpl: t, buf: make([]byte, 0, n*(frame.HeaderLen+size))}
}

// reset empties the buffer.
func (d *dataFrames) reset() { d.buf = d.buf[:0] }

// add appends one DATA frame whose payload starts with seq, little-endian so
// that a payload shorter than 8 bytes keeps its low bytes, followed by a
// fixed pattern.
func (d *dataFrames) add(seq uint64) {
	d.buf = frame.AppendHeader(d.buf, frame.KindData, 0, d.size)
	start := len(d.buf)
	d.buf = append(d.buf, d.tmpl...)
	var s [8]byte
	binary.LittleEndian.PutUint64(s[:], seq)
	copy(d.buf[start:], s[:])
}

// checkSeq reports whether an echoed payload carries seq as dataFrames.add
// wrote it.
func checkSeq(p []byte, size int, seq uint64) error {
	if len(p) != size {
		return fmt.Errorf("echo of %d bytes, sent %d", len(p), size)
	}
	var s [8]byte
	binary.LittleEndian.PutUint64(s[:], seq)
	n := min(8, size)
	for i := range n {
		if p[i] != s[i] {
			return fmt.Errorf("echo out of order: expected frame %d", seq)
		}
	}
	return nil
}

// dialAll opens n connections with at most DialConcurrency being opened at
// once and, with DialRate, at most DialRate per second. Failed dials are
// counted as errors and leave a nil entry. It stops early when ctx is done
// or when deadline (a nanotime, 0 for none) passes. onOpen, if not nil, is
// called for every connection opened (from the dialing goroutine) with the
// time the connect plus handshake took.
func (r *runner) dialAll(ctx context.Context, n int, deadline int64, onOpen func(i int, c *client, took time.Duration)) []*client {
	conns := make([]*client, n)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if deadline > 0 {
		var c2 context.CancelFunc
		ctx, c2 = context.WithTimeout(ctx, time.Duration(deadline-nanotime()))
		defer c2()
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	var interval int64
	if r.cfg.DialRate > 0 {
		interval = int64(1e9 / r.cfg.DialRate)
	}
	t0 := nanotime()
	for range min(r.cfg.DialConcurrency, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if interval > 0 && !sleepUntil(ctx, t0+int64(i)*interval) {
					return
				}
				start := time.Now()
				c, err := r.dial(ctx, i)
				if err != nil {
					if ctx.Err() == nil {
						r.errs.add(err)
					}
					continue
				}
				conns[i] = c
				if onOpen != nil {
					onOpen(i, c, time.Since(start))
				}
			}
		})
	}
	wg.Wait()
	return conns
}

// opened returns the non-nil connections of conns.
func opened(conns []*client) []*client {
	out := conns[:0:0]
	for _, c := range conns {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

// closeAll closes every connection.
func closeAll(conns []*client) {
	for _, c := range conns {
		if c != nil {
			c.nc.Close()
		}
	}
}

// errNoConns is returned when no connection at all could be opened.
// openConns starts a message-driven mode: a meter of messages with its
// progress line, and the mode's Conns connections dialled, of which those
// that opened are returned. The caller stops the progress line.
func (r *runner) openConns(ctx context.Context) ([]*client, *meter, *progress, error) {
	msgs := newMeter(r.cfg.Conns)
	prog := r.startProgress(msgs, nil)
	cs := opened(r.dialAll(ctx, r.cfg.Conns, 0, nil))
	if len(cs) == 0 {
		prog.stop()
		return nil, nil, nil, r.errNoConns()
	}
	return cs, msgs, prog, nil
}

func (r *runner) errNoConns() error {
	_, samples := r.errs.snapshot()
	if len(samples) > 0 {
		return fmt.Errorf("loadgen: could not open any connection to %s: %s", r.cfg.Addr, samples[0])
	}
	return fmt.Errorf("loadgen: could not open any connection to %s", r.cfg.Addr)
}

// isClosed reports whether err comes from using a connection that this
// process closed (how a run stops its readers and writers).
func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe)
}
