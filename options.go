package msgnet

import (
	"log/slog"
	"time"

	"github.com/msgnet/msgnet/frame"
)

// config holds what the options set; defaults come from defaultConfig.
type config struct {
	maxConnections int
	maxPayload     int
	idleTimeout    time.Duration
	queueBytes     int
	drainTimeout   time.Duration
	logger         *slog.Logger
	park           bool
	slowConsumer   SlowConsumerPolicy
	bus            Bus
}

func defaultConfig() config {
	return config{
		maxConnections: 1000,
		maxPayload:     frame.DefaultMaxPayload,
		idleTimeout:    30 * time.Second,
		queueBytes:     4 << 20,
		drainTimeout:   5 * time.Second,
		logger:         slog.New(slog.DiscardHandler),
		park:           true,
	}
}

// Option configures a Server.
type Option func(*config)

// WithMaxConnections bounds the sessions open at once (default 1000). A
// connection beyond it is answered ERROR server_full and closed; 0 means no
// limit.
func WithMaxConnections(n int) Option { return func(c *config) { c.maxConnections = n } }

// WithMessageSizeLimit bounds a message's payload in both directions
// (default 1 MiB). Larger frames are refused before they are buffered.
func WithMessageSizeLimit(n int) Option {
	return func(c *config) { c.maxPayload = min(max(n, 0), frame.MaxPayloadLimit) }
}

// WithIdleTimeout closes a session that has sent nothing for d (default
// 30s); 0 disables it.
func WithIdleTimeout(d time.Duration) Option { return func(c *config) { c.idleTimeout = d } }

// WithSendQueueBytes bounds each session's queue of unsent bytes (default
// 4 MiB). A send that would exceed it fails with ErrQueueFull; a single
// message always fits an empty queue.
func WithSendQueueBytes(n int) Option { return func(c *config) { c.queueBytes = n } }

// WithDrainTimeout bounds how long a closing session may take to write what
// is queued for it (default 5s).
func WithDrainTimeout(d time.Duration) Option { return func(c *config) { c.drainTimeout = d } }

// WithLogger sets where the server logs connects, disconnects and errors
// (default: nowhere).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithParking chooses whether idle plain-TCP connections are parked in an
// epoll set instead of each keeping a goroutine (default true, Linux only).
// Turning it off trades memory per idle connection for nothing; it exists
// for comparison and for debugging.
func WithParking(on bool) Option { return func(c *config) { c.park = on } }

// SlowConsumerPolicy says what happens when a send finds a session's queue
// full: the peer reads slower than it is sent to.
type SlowConsumerPolicy int

const (
	// SlowConsumerError fails the send with ErrQueueFull; the session goes
	// on and the sender decides (the default).
	SlowConsumerError SlowConsumerPolicy = iota
	// SlowConsumerDisconnect closes the session at once with reason
	// ErrSlowConsumer, dropping what it had queued, and fails the send with
	// ErrSlowConsumer, as NATS does: one slow reader cannot hold memory.
	SlowConsumerDisconnect
)

// WithSlowConsumerPolicy sets what a full send queue does (default
// SlowConsumerError). Either way the sender gets an error.
func WithSlowConsumerPolicy(p SlowConsumerPolicy) Option {
	return func(c *config) { c.slowConsumer = p }
}
