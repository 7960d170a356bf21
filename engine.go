package msgnet

import "strconv"

// Engine is how a server's sessions wait for input, and where their
// handlers run (WithEngine). TLS, WebSocket and HTTP/2 sessions, and every
// session on a platform without epoll, always have a goroutine of their
// own.
type Engine int

const (
	// EngineParked (the default): idle plain-TCP connections wait in an
	// epoll set watched by one goroutine, and a goroutine reads each burst
	// of input and runs its handlers; a connection whose bursts come close
	// together keeps its goroutine in a blocking read until it goes quiet.
	// An idle connection costs no goroutine and no buffer. Handlers may
	// block: only their own session waits.
	EngineParked Engine = iota
	// EngineGoroutine: a goroutine per connection for its whole life, in
	// blocking reads, with a buffer of its own. An idle connection costs a
	// goroutine and a buffer; for comparison and debugging.
	EngineGoroutine
	// EngineLoop: handlers run on event loops, one per GOMAXPROCS, as
	// gnet's do: a burst of input costs one read and one write system call
	// and no goroutine switch. Handlers must never block (they compute,
	// send and return; sends never wait): one that blocks holds up every
	// session of its loop. An idle loop parks on the Go runtime's poller,
	// so the rest of the process is served as usual.
	EngineLoop
	// EngineLoopBlocking is EngineLoop whose idle loops wait in epoll_wait
	// as a blocking system call, as gnet's do: a wake-up is the call
	// returning, with no pass through the scheduler, for less CPU per
	// message and cheaper connection setup. While it waits a loop holds
	// its processor (P) until the runtime takes it back (20 µs or more),
	// and meanwhile the runtime's poller is not run: other goroutines of
	// the process that use the network answer late. For a dedicated server
	// process (msgnet serve uses it); the server's own listener is watched
	// by the loops, so accepting is not delayed.
	EngineLoopBlocking
)

var engineNames = [...]string{"parked", "goroutine", "loop", "loop-blocking"}

func (e Engine) String() string {
	if e >= 0 && int(e) < len(engineNames) {
		return engineNames[e]
	}
	return "Engine(" + strconv.Itoa(int(e)) + ")"
}

// loops reports whether the engine runs handlers on event loops.
func (e Engine) loops() bool { return e == EngineLoop || e == EngineLoopBlocking }

// polls reports whether the engine registers connections with pollers.
func (e Engine) polls() bool { return e != EngineGoroutine }

// WithEngine chooses how sessions wait for input and where their handlers
// run (default EngineParked; see Engine). Server only.
func WithEngine(e Engine) Option { return func(c *config) { c.engine = e } }
