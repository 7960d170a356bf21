package msgnet

import (
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/pipeline"
	"golang.org/x/time/rate"
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
	inline         bool // handlers promised not to block: run them on the event loops
	blockingLoops  bool // the loops wait in a blocking epoll_wait (WithBlockingEventLoops)
	slowConsumer   SlowConsumerPolicy
	bus            Bus

	compression       []string // codecs offered to clients, in the server's order
	compressThreshold int
	psk               []byte // encryption required when set
	suites            []string
	auth              *authKeys // clients must authenticate when set
	authDelay         time.Duration
	filters           pipeline.Chain
	tls               *tls.Config
	handshakeTimeout  time.Duration
	perIP             int
	rate              rate.Limit
	burst             int

	controlRate     rate.Limit
	controlBurst    int
	maxClientIDLen  int
	maxGroups       int
	maxGroupNameLen int
	queueBudget     int64
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

		compression:       pipeline.Codecs(),
		compressThreshold: 512,
		suites:            pipeline.Suites(),
		authDelay:         time.Second,
		handshakeTimeout:  10 * time.Second,

		maxClientIDLen:  DefaultMaxClientIDLength,
		maxGroups:       DefaultMaxGroupsPerSession,
		maxGroupNameLen: DefaultMaxGroupNameLength,
		queueBudget:     DefaultServerQueueBytes,
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
//
// With WithNonBlockingHandlers, what a session's own handlers send while
// its event loop runs them (at most 256 KiB, and never more than the bound
// itself) is not seen by sends from other goroutines until the handlers
// return, so for that moment the queue may hold up to that much more.
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

// WithNonBlockingHandlers promises that the server's handlers never block:
// they compute, send (sends never wait) and return, and do not wait on I/O,
// locks held for long, channels or sleeps. The server may then run them on
// its event loops (one per GOMAXPROCS, plain TCP on Linux): a burst of input
// costs one read and one write system call and no goroutine switch, as in
// an event-loop server. A handler that blocks anyway holds up every session
// of its loop, so leave this off (the default) when handlers call databases,
// other services or anything else that waits; they then run on a goroutine
// per active connection. TLS, WebSocket and HTTP/2 sessions always run
// their handlers on their own goroutine.
func WithNonBlockingHandlers() Option { return func(c *config) { c.inline = true } }

// WithBlockingEventLoops makes the event loops of WithNonBlockingHandlers
// wait for input in epoll_wait as a blocking system call, on a thread each,
// as gnet's loops do, instead of parking on the Go runtime's poller. A
// wake-up is then the system call returning, with no second epoll_wait and
// no pass through the scheduler: about a tenth less CPU per message under
// load, and cheaper connection setup. The price is paid by the rest of the
// process: a waiting loop holds its processor (P) until the runtime takes
// it back (20 µs or more), and meanwhile the runtime's poller, which wakes
// every other goroutine that waits on the network, is not run. Goroutines
// that talk over the network in the same process (clients, writers to
// slow peers, an HTTP server) then answer tens of microseconds late: an
// in-process round trip takes 40 µs instead of 9. It is for a dedicated
// server process (msgnet serve uses it); the server's own listener is
// watched by the loops, so accepting is not delayed. It has no effect
// without WithNonBlockingHandlers.
func WithBlockingEventLoops() Option { return func(c *config) { c.blockingLoops = true } }

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

// WithCompression sets the codecs the server agrees to when a client asks
// (default: all of pipeline.Codecs()); none disables compression. The
// client's order of preference decides among them.
func WithCompression(codecs ...string) Option {
	return func(c *config) { c.compression = codecs }
}

// WithCompressionThreshold sets the smallest payload worth compressing
// (default 512 bytes); smaller ones, and ones that do not shrink, are sent
// as they are.
func WithCompressionThreshold(n int) Option { return func(c *config) { c.compressThreshold = n } }

// WithEncryption requires every client to encrypt its DATA with a key
// derived from psk (at least 16 bytes) and nonces exchanged in the
// handshake, for deployments without TLS. Suites are offered in order
// (default: ChaCha20-Poly1305, AES-256-GCM). Clients that do not ask for
// encryption are refused with ERROR encryption_required.
func WithEncryption(psk []byte, suites ...string) Option {
	return func(c *config) {
		c.psk = append([]byte(nil), psk...)
		if len(suites) > 0 {
			c.suites = suites
		}
	}
}

// WithAuthKey requires every client to prove, in the handshake, that it
// holds key: it answers a challenge with HMAC-SHA256 over the server's
// nonce and its client id. The key never crosses the wire. Every holder of
// the one key may claim any client id; to bind client ids to credentials,
// use WithAuth with a key per holder.
func WithAuthKey(key []byte) Option {
	return WithAuth(AuthKey{Secret: key})
}

// WithAuthKeys is WithAuthKey with a key per client id; keyFor returns nil
// for an unknown client id (refused exactly like a wrong key). A client id
// is then bound to its key.
func WithAuthKeys(keyFor func(clientID string) []byte) Option {
	return func(c *config) { c.auth = &authKeys{byClient: keyFor} }
}

// AuthKey is one credential of a server that authenticates its clients
// (WithAuth).
type AuthKey struct {
	// ID names the key; a client names it in its hello (WithClientAuthKeyID,
	// "key_id"). A hello without a key id uses the key whose ID is "".
	ID string
	// Secret is the key itself; it never crosses the wire.
	Secret []byte
	// ClientIDs are the client ids a holder of this key may claim, as
	// patterns in which '*' stands for any run of characters, e.g.
	// "sensor-*". None: any client id. A hello claiming another client id
	// is refused exactly like a wrong key (auth_failed).
	ClientIDs []string
}

// WithAuth requires every client to prove, in the handshake, that it holds
// one of keys, and binds client ids to keys: a holder of one key cannot
// claim a client id that belongs to another (see AuthKey).
//
//	msgnet.WithAuth(
//		msgnet.AuthKey{ID: "sensors", Secret: s1, ClientIDs: []string{"sensor-*"}},
//		msgnet.AuthKey{ID: "ops", Secret: s2, ClientIDs: []string{"ops-alice", "ops-bob"}},
//	)
func WithAuth(keys ...AuthKey) Option {
	ring := make(map[string]AuthKey, len(keys))
	for _, k := range keys {
		k.Secret = append([]byte(nil), k.Secret...)
		k.ClientIDs = append([]string(nil), k.ClientIDs...)
		ring[k.ID] = k
	}
	return func(c *config) { c.auth = &authKeys{byID: ring} }
}

// authKeys finds the key a client must prove it holds.
type authKeys struct {
	byID     map[string]AuthKey           // WithAuth, WithAuthKey
	byClient func(clientID string) []byte // WithAuthKeys
}

// key returns the key a client that named keyID and claims clientID must
// hold, or nil when there is none or it may not claim that client id.
func (a *authKeys) key(keyID, clientID string) []byte {
	if a.byClient != nil {
		return a.byClient(clientID)
	}
	k, ok := a.byID[keyID]
	if !ok || len(k.Secret) == 0 {
		return nil
	}
	if len(k.ClientIDs) == 0 {
		return k.Secret
	}
	for _, p := range k.ClientIDs {
		if matchID(p, clientID) {
			return k.Secret
		}
	}
	return nil
}

// matchID reports whether id matches pattern, in which '*' stands for any
// run of characters (none included) and every other character for itself.
func matchID(pattern, id string) bool {
	star, at := -1, 0 // the last '*' seen, and where in id its run ends
	for p, i := 0, 0; ; {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, at = p, i
			p++
		case p < len(pattern) && i < len(id) && pattern[p] == id[i]:
			p, i = p+1, i+1
		case p == len(pattern) && i == len(id):
			return true
		case star >= 0 && at < len(id):
			at++ // let the last '*' take one more character
			p, i = star+1, at
		default:
			return false
		}
	}
}

// WithAuthFailureDelay sets how long a failed authentication waits before
// it is answered (default 1s), the same whatever failed.
func WithAuthFailureDelay(d time.Duration) Option { return func(c *config) { c.authDelay = d } }

// WithFilters adds user payload filters on binary sessions: Outbound on
// every DATA payload sent, before compression and encryption; Inbound, in
// reverse order, on every one received, after them. Clients must use the
// matching filters (WithClientFilters) if the filters change the bytes.
func WithFilters(filters ...pipeline.Filter) Option {
	return func(c *config) { c.filters = append(c.filters, filters...) }
}

// WithTLS serves TLS on the listeners given to Start and Serve. TLS
// sessions keep a goroutine each (they cannot be parked: crypto/tls may
// hold decrypted bytes no socket event announces). See package tlsconfig
// for certificates that reload without a restart.
func WithTLS(cfg *tls.Config) Option { return func(c *config) { c.tls = cfg } }

// WithHandshakeTimeout closes a connection that has not completed its
// handshake, or without one sent its first whole message, within d (default
// 10s): a slowloris connection trickling half a header is cut off. 0
// disables it.
func WithHandshakeTimeout(d time.Duration) Option { return func(c *config) { c.handshakeTimeout = d } }

// WithMaxConnectionsPerIP bounds the sessions open at once from one IP
// address (default 0: no limit); connections beyond it are refused with
// ERROR per_ip_limit.
func WithMaxConnectionsPerIP(n int) Option { return func(c *config) { c.perIP = n } }

// WithMessageRate limits each session to perSecond messages on average,
// with bursts of burst (default: no limit). It counts everything the peer
// sends on its own account: messages (DATA frames and text lines),
// requests, PING, CONTROL, HEARTBEAT and ERROR frames; not replies to the
// server's own requests, nor DISCONNECT. One over the limit is dropped and
// counted (Stats.Dropped), and the peer is told with ERROR rate_limited, at
// most once per second.
func WithMessageRate(perSecond float64, burst int) Option {
	return func(c *config) { c.rate, c.burst = rate.Limit(perSecond), max(burst, 1) }
}

// WithControlRate limits each session's frames other than DATA (PING,
// CONTROL, HEARTBEAT, PONG, ERROR) to perSecond on average, with bursts of
// burst (default: no limit), apart from WithMessageRate, which counts them
// too. One over the limit is dropped like a message over WithMessageRate.
// Without a limit, a flood of them is handled like a flood of messages:
// the session gets its fair share of its event loop, and answers it does
// not read are bounded by its queue.
func WithControlRate(perSecond float64, burst int) Option {
	return func(c *config) { c.controlRate, c.controlBurst = rate.Limit(perSecond), max(burst, 1) }
}
