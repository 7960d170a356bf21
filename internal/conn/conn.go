// Package conn is msgnet's connection engine: one Conn per connection, on a
// server and in a client alike. A Conn reads bytes and hands them to its
// Handler, which gives them meaning (msgnet's sessions); it queues frames
// and writes them; and it closes, through one function. It knows frames
// and payload pipelines, not what a message means.
//
// Each path is a file: read.go (with a file for each way of waiting for
// input: reader_goroutine.go, reader_parked.go, reader_loop.go), write.go
// (with queue.go and the event loop's stage, stage.go), and close.go. The
// state machine is State and the flags in state.go.
//
// Lock order: a caller may hold its own locks (a server's registry, a
// group) while calling a Conn's methods, which take Conn.mu; a Conn never
// calls out (Handler, poller) while holding mu, except Poller.Forget,
// which takes only the poller's table lock.
package conn

import (
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/internal/netpoll"
	"github.com/msgnet/msgnet/pipeline"
)

// Handler is what a Conn works for: it gives the bytes meaning. Its methods
// are called by the connection's reader, one at a time, except Ended.
type Handler interface {
	// Ingest dispatches the complete frames or lines at the start of b, in
	// order, and returns the bytes it used, and, when what is left starts
	// a frame whose header gives its total length, that length (else 0).
	// To end the connection on bad input it calls Close itself; the rest
	// of b is then dropped.
	Ingest(b []byte) (used, need int)
	// Flush is given what the end of the stream left unconsumed (an
	// unterminated last text line), when input is still being dispatched.
	Flush(rest []byte)
	// Ended is called exactly once, when the connection has ended: its
	// descriptor is closed and no reader or writer is left. reason is the
	// first Close's.
	Ended(reason error)
	// Ident names the connection in logs: its session and client ids.
	Ident() (session, client string)
}

// Config is a connection's settings, fixed when it is made.
type Config struct {
	MaxPayload     int           // message size limit (payload bytes), both directions
	QueueLimit     int           // bytes queued for writing before a send fails (ErrQueueFull)
	Drain          time.Duration // how long a closing connection may take to write what is queued
	SlowDisconnect bool          // a full queue closes the connection (ErrSlowConsumer) instead of failing the send
	Secure         bool          // a handshake is required: what is held for it is dropped if it never completes
	Salvage        bool          // keep what was never handed to the socket when the connection dies (TakeUnsent)
	Held           bool          // start held: DATA sent waits until Establish
	Mode           frame.Mode    // the peer's mode, when known from the start (a client's: binary)
	Pipe           *pipeline.Pipeline
	Pending        []byte  // input already read by someone else (a client's handshake)
	Shared         *Shared // what the connections of one server (or client) share
}

// Conn is one connection's engine. It is safe for concurrent use: sends
// from any goroutine, one reader at a time (the engine's own).
type Conn struct {
	h   Handler
	nc  net.Conn
	cfg *Config // read-only, and shared by the connections of one server

	lastActivity atomic.Int64 // unix nanoseconds: when bytes were last received
	stopRead     atomic.Bool  // set by Close: dispatch no more input
	hotWait      atomic.Bool  // parked: a hot reader holds the socket in a blocking read loop
	loopLinger   atomic.Bool  // lingering on its event loop since lastActivity (CutLinger)

	// How the connection waits for input (read.go): set by Start or
	// Register before the reader can run, read-only after.
	kind      readerKind
	gen       uint32
	rc        syscall.RawConn
	poller    *netpoll.Poller
	lastBurst int64 // reader-owned: unix nanoseconds when the last burst started

	mu    sync.Mutex
	state State
	mode  frame.Mode
	flags flags
	fd    int32 // set with rc (fields above it), placed here to fill the row
	out   queue // encoded bytes to write, in order
	pipe  *pipeline.Pipeline
	// reason is the first Close's; writingBytes the batch being written;
	// queuedMsgs the messages queued since msgsOut was last brought up to
	// date (one atomic add per batch, not per message); charged what is
	// charged to the shared budget.
	reason       error
	writingBytes int
	queuedMsgs   uint64
	charged      int64

	// Reader-owned: touched only by the goroutine that holds readerActive.
	pending       []byte // a partial frame or line kept between bursts
	need          int    // total length of the incomplete frame at the head of pending, when known
	peerHup       bool   // the poller reported the peer's hang-up: read to the end
	carried       bool   // event loop: waiting in the loop's list for another turn
	countPerBurst bool   // event loop, no writer running: msgsIn is added once per burst

	drainArmed bool // writer-owned: the drain deadline is set

	// The event loop's turn (stage.go): the loop's stage while a turn
	// stages (changed under mu, by the loop), and whether another
	// goroutine queued into out during the turn.
	stage  atomic.Pointer[stager]
	shared atomic.Bool

	x atomic.Pointer[connExt]

	msgsIn, msgsOut, bytesIn, bytesOut atomic.Uint64
}

// connExt is what few connections use, allocated on first use.
type connExt struct {
	early       queue        // DATA sent while held, plain, to be encoded by Establish; under mu
	unsent      []byte       // Salvage: what was queued but never handed to the socket; under mu
	lastDropLog atomic.Int64 // nanotime of the last drop logged
}

func (c *Conn) ext() *connExt {
	if e := c.x.Load(); e != nil {
		return e
	}
	c.x.CompareAndSwap(nil, &connExt{})
	return c.x.Load()
}

// Init makes c the engine of nc for h. c is the zero Conn, usually a field
// of its owner's struct so that a session is one allocation. It does not
// start reading: Start or Register does. cfg is not changed, and must not
// be changed afterwards: a server shares one among its connections.
func (c *Conn) Init(h Handler, nc net.Conn, cfg *Config) {
	c.h, c.nc, c.cfg = h, nc, cfg
	c.mode, c.pipe = cfg.Mode, cfg.Pipe
	if cfg.Held {
		c.flags |= held
	}
	if len(cfg.Pending) > 0 {
		c.pending = append([]byte(nil), cfg.Pending...)
	}
	c.lastActivity.Store(time.Now().UnixNano())
}

// NetConn is the connection's stream.
func (c *Conn) NetConn() net.Conn { return c.nc }

// MaxPayload is the message size limit.
func (c *Conn) MaxPayload() int { return c.cfg.MaxPayload }

// LastActivity is when bytes were last received (unix nanoseconds).
func (c *Conn) LastActivity() int64 { return c.lastActivity.Load() }

// Counts are the messages and bytes the connection received and sent.
func (c *Conn) Counts() (msgsIn, msgsOut, bytesIn, bytesOut uint64) {
	return c.msgsIn.Load(), c.msgsOut.Load(), c.bytesIn.Load(), c.bytesOut.Load()
}

// AddMsgsIn counts n messages received. The Handler counts a message
// before its handler runs, so that whoever sees a reply also sees its
// request counted; on an event loop with no writer running nothing leaves
// before the turn ends, so it counts once per burst (CountsPerBurst).
func (c *Conn) AddMsgsIn(n uint64) { c.msgsIn.Add(n) }

// CountsPerBurst reports whether the Handler may count the messages of an
// Ingest call once, at its end. Reader only.
func (c *Conn) CountsPerBurst() bool { return c.kind == loopReader && c.countPerBurst }

// Salvages reports whether the connection keeps what it never sent when it
// dies (Config.Salvage).
func (c *Conn) Salvages() bool { return c.cfg.Salvage }

// Open reports whether the connection is open: not closing or closed.
func (c *Conn) Open() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == StateOpen
}

// State is where the connection is in its life.
func (c *Conn) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Stopping reports whether input is no longer dispatched (the connection
// is closing, or StopReading was called). Lock-free, for the dispatch loop.
func (c *Conn) Stopping() bool { return c.stopRead.Load() }

// StopReading stops dispatching input, for a connection about to be
// closed a little later (a failed authentication waits out its delay).
func (c *Conn) StopReading() { c.stopRead.Store(true) }

// Mode is the peer's mode: unknown until its first bytes.
func (c *Conn) Mode() frame.Mode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mode
}

// ReaderMode is Mode for the reader, without the lock: only the reader
// changes it from unknown.
func (c *Conn) ReaderMode() frame.Mode { return c.mode }

// Pipe is the negotiated payload stages, for the reader to undo on input;
// nil when none. Reader only: Establish, which sets it, runs on the reader.
func (c *Conn) Pipe() *pipeline.Pipeline { return c.pipe }

// SendLimit is the largest DATA payload a send accepts: the message size
// limit, less what encryption adds.
func (c *Conn) SendLimit() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sendLimitLocked()
}

// sendLimitLocked is SendLimit. Lock must be held.
func (c *Conn) sendLimitLocked() int {
	if p := c.pipe; p != nil && p.Sealer != nil {
		return c.cfg.MaxPayload - pipeline.Overhead
	}
	return c.cfg.MaxPayload
}

// Parked reports whether the connection waits in a poller's epoll set
// rather than in a goroutine.
func (c *Conn) Parked() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flags.has(parked) && !c.hotWait.Load()
}

// Shared is what the connections of one server (or one client) share:
// counters, the queue budget and the logger. The counters are for rare
// events; the per-message counts are each Conn's own.
type Shared struct {
	Budget        *Budget      // bound on the bytes queued on all connections; nil: none
	Log           *slog.Logger // where drops are logged; nil: nowhere
	SlowConsumers atomic.Uint64
	Dropped       Labels // messages not delivered, by Drop* reason
	ErrorsSent    Labels // ERROR frames queued, by code

	// Frames and bytes queued of the kinds other than DATA.
	KindOut, KindBytesOut [256]atomic.Uint64

	flush flushers // the writers of what other goroutines queue (flush.go)
}

// countOut counts a queued frame of a kind other than DATA.
func (s *Shared) countOut(k frame.Kind, n int) {
	s.KindOut[k].Add(1)
	s.KindBytesOut[k].Add(uint64(n))
}

// Labels counts events by a short label.
type Labels struct {
	mu sync.Mutex
	m  map[string]uint64
}

// Add counts one event.
func (l *Labels) Add(label string) {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[string]uint64)
	}
	l.m[label]++
	l.mu.Unlock()
}

// Snapshot returns the counts.
func (l *Labels) Snapshot() map[string]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := make(map[string]uint64, len(l.m))
	for k, v := range l.m {
		m[k] = v
	}
	return m
}
