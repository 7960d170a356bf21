package msgnet

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"time"

	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/pipeline"
)

// Option configures a Server (NewServer) or a Client (NewClient). Most
// settings mean the same to both: the size limit, the queue bound, TLS,
// compression, encryption, authentication, filters, the logger. An option
// that means something to only one of them says so, and the other ignores
// it.
type Option func(*config)

// config holds every setting. Every default is in defaultConfig.
type config struct {
	// Both sides.
	maxPayload        int
	queueBytes        int
	drainTimeout      time.Duration
	logger            *slog.Logger
	tls               *tls.Config
	compression       []string // nil: the side's default (see WithCompression)
	compressThreshold int
	psk               []byte // encryption required (server) or asked for (client) when set
	suites            []string
	auth              *authKeys // server: clients must authenticate; client: the key to answer with
	filters           pipeline.Chain
	readBuffer        int // SO_RCVBUF; 0: the kernel's
	writeBuffer       int // SO_SNDBUF; 0: the kernel's

	// Server.
	limits       Limits // MessageSize and SendQueueBytes are copied in by NewServer
	engine       Engine
	slowConsumer SlowConsumerPolicy
	bus          Bus
	authDelay    time.Duration
	store        Store // nil: a memory store, unless noStreams
	noStreams    bool
	retention    Retention
	groupRet     []patternRetention

	// Client.
	dial           func(ctx context.Context, addr string) (net.Conn, error)
	connectTimeout time.Duration
	reconnect      bool
	backoffBase    time.Duration
	backoffCap     time.Duration
	maxAttempts    int // 0: forever
	bufferBytes    int
	reliable       *ReliableOptions // nil: streams without resumption (WithReliable)
	hbInterval     time.Duration    // 0: from the welcome's idle timeout
	hbTimeout      time.Duration
	hbOff          bool
}

// defaultConfig is every setting's default.
func defaultConfig() config {
	return config{
		maxPayload:        frame.DefaultMaxPayload,
		queueBytes:        DefaultSendQueueBytes,
		drainTimeout:      5 * time.Second,
		logger:            slog.New(slog.DiscardHandler),
		compressThreshold: 512,
		suites:            pipeline.Suites(),

		limits:    DefaultLimits(),
		engine:    EngineParked,
		authDelay: time.Second,

		connectTimeout: 5 * time.Second,
		bufferBytes:    1 << 20,
	}
}

func newConfig(opts []Option) config {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// WithMessageSizeLimit bounds a message's payload in both directions
// (default 1 MiB). Larger frames are refused before they are buffered, and
// a send of a larger payload fails with ErrMessageTooLarge. A client also
// keeps to the server's limit, learnt in the welcome.
func WithMessageSizeLimit(n int) Option {
	return func(c *config) { c.maxPayload = min(max(n, 0), frame.MaxPayloadLimit) }
}

// WithSendQueueBytes bounds each session's queue of unsent bytes (default
// 4 MiB). A send that would exceed it fails with ErrQueueFull; a single
// message always fits an empty queue. On a server's event loops
// (EngineLoop), what a session's own handlers send during their turn (at
// most 256 KiB, and never more than the bound) is counted only when the
// turn ends, so for that moment the queue may hold up to that much more.
func WithSendQueueBytes(n int) Option { return func(c *config) { c.queueBytes = n } }

// WithDrainTimeout bounds how long a closing session may take to write what
// is queued for it (default 5s).
func WithDrainTimeout(d time.Duration) Option { return func(c *config) { c.drainTimeout = d } }

// WithLogger sets where connects, disconnects and errors are logged
// (default: nowhere).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithTLS serves TLS on the listeners given to Start and Serve (a server),
// or connects over TLS (a client: RootCAs, and a certificate for mutual
// TLS; ServerName defaults to the address's host). A server's TLS sessions
// keep a goroutine each: crypto/tls may hold decrypted bytes no socket
// event announces. See package tlsconfig for certificates that reload
// without a restart.
func WithTLS(cfg *tls.Config) Option { return func(c *config) { c.tls = cfg } }

// WithCompression sets the codecs (names from pipeline.Codecs) a server
// agrees to when a client asks (default: all; none given: no compression),
// or that a client asks for, in its order of preference (default: none). A
// server that supports none of a client's is used without compression.
func WithCompression(codecs ...string) Option {
	return func(c *config) { c.compression = append([]string{}, codecs...) }
}

// WithCompressionThreshold sets the smallest payload worth compressing
// (default 512 bytes); smaller ones, and ones that do not shrink, are sent
// as they are.
func WithCompressionThreshold(n int) Option { return func(c *config) { c.compressThreshold = n } }

// WithEncryption encrypts DATA with a key derived from psk (at least 16
// bytes) and nonces exchanged in the handshake, for deployments without
// TLS. A server requires it of every client (others are refused with ERROR
// encryption_required); a client refuses a server that does not agree:
// Connect fails rather than fall back to plaintext. Suites are offered in
// order (default: ChaCha20-Poly1305, AES-256-GCM).
func WithEncryption(psk []byte, suites ...string) Option {
	return func(c *config) {
		c.psk = append([]byte(nil), psk...)
		if len(suites) > 0 {
			c.suites = suites
		}
	}
}

// WithFilters adds user payload filters: Outbound on every DATA payload
// sent, before compression and encryption; Inbound, in reverse order, on
// every one received, after them. Both sides must use matching filters if
// the filters change the bytes.
func WithFilters(filters ...pipeline.Filter) Option {
	return func(c *config) { c.filters = append(c.filters, filters...) }
}

// WithAuthKey makes a server require every client to prove, in the
// handshake, that it holds key: the client answers a challenge with
// HMAC-SHA256 over the server's nonce and its client id, and the key never
// crosses the wire. A client answers with key. Every holder of the one key
// may claim any client id; to bind client ids to credentials, use WithAuth
// with a key per holder.
func WithAuthKey(key []byte) Option { return WithAuth(AuthKey{Secret: key}) }

// WithAuth gives a server its keys, each bound to the client ids its
// holder may claim (see AuthKey): a holder of one key cannot claim a client
// id that belongs to another. A client gives the one key it holds, and its
// ID, which its hello names:
//
//	msgnet.NewServer("s", msgnet.WithAuth(
//		msgnet.AuthKey{ID: "sensors", Secret: s1, ClientIDs: []string{"sensor-*"}},
//		msgnet.AuthKey{ID: "ops", Secret: s2, ClientIDs: []string{"ops-alice", "ops-bob"}},
//	))
//	msgnet.NewClient("sensor-17", msgnet.WithAuth(msgnet.AuthKey{ID: "sensors", Secret: s1}))
func WithAuth(keys ...AuthKey) Option {
	ring := &authKeys{byID: make(map[string]AuthKey, len(keys))}
	for _, k := range keys {
		k.Secret = append([]byte(nil), k.Secret...)
		k.ClientIDs = append([]string(nil), k.ClientIDs...)
		ring.byID[k.ID] = k
		ring.first = append(ring.first, k)
	}
	return func(c *config) { c.auth = ring }
}

// WithAuthKeys is a server's WithAuthKey with a key per client id: keyFor
// returns nil for an unknown client id (refused exactly like a wrong key).
// A client id is then bound to its key. Server only.
func WithAuthKeys(keyFor func(clientID string) []byte) Option {
	return func(c *config) { c.auth = &authKeys{byClient: keyFor} }
}

// AuthKey is one credential (WithAuth).
type AuthKey struct {
	// ID names the key; a client names it in its hello ("key_id"). A hello
	// without a key id uses the key whose ID is "".
	ID string
	// Secret is the key itself; it never crosses the wire.
	Secret []byte
	// ClientIDs are the client ids a holder of this key may claim, as
	// patterns in which '*' stands for any run of characters, e.g.
	// "sensor-*". None: any client id. A hello claiming another client id
	// is refused exactly like a wrong key (auth_failed).
	ClientIDs []string
}

// authKeys finds the key a client must prove it holds.
type authKeys struct {
	byID     map[string]AuthKey           // WithAuth, WithAuthKey
	first    []AuthKey                    // the same, in order: a client answers with the first
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

// clientKey is the key a client answers a challenge with, and its id.
func (a *authKeys) clientKey() (id string, secret []byte) {
	if a == nil || len(a.first) == 0 {
		return "", nil
	}
	return a.first[0].ID, a.first[0].Secret
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

// WithSocketBuffers sets the kernel's receive and send buffer sizes
// (SO_RCVBUF, SO_SNDBUF) of TCP connections, in bytes; 0 leaves one as the
// kernel sets it, the default. Linux sizes them itself, growing them with
// the traffic up to net.ipv4.tcp_rmem and tcp_wmem; setting one fixes it
// and turns that off. Larger buffers help a few connections over links
// with a large bandwidth-delay product; smaller ones bound the kernel
// memory that many slow connections can hold. Both sides.
func WithSocketBuffers(read, write int) Option {
	return func(c *config) { c.readBuffer, c.writeBuffer = max(read, 0), max(write, 0) }
}

// applySocketBuffers sets the socket buffer sizes on nc, if it is TCP (or
// TLS over TCP).
func (cfg *config) applySocketBuffers(nc net.Conn) {
	if cfg.readBuffer == 0 && cfg.writeBuffer == 0 {
		return
	}
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	tcp, ok := nc.(interface {
		SetReadBuffer(int) error
		SetWriteBuffer(int) error
	})
	if !ok {
		return
	}
	if cfg.readBuffer > 0 {
		tcp.SetReadBuffer(cfg.readBuffer)
	}
	if cfg.writeBuffer > 0 {
		tcp.SetWriteBuffer(cfg.writeBuffer)
	}
}

// Server options.

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
// SlowConsumerError). Either way the sender gets an error and the drop is
// counted. Server only.
func WithSlowConsumerPolicy(p SlowConsumerPolicy) Option {
	return func(c *config) { c.slowConsumer = p }
}

// WithAuthFailureDelay sets how long a failed authentication waits before
// it is answered (default 1s), the same whatever failed. Server only.
func WithAuthFailureDelay(d time.Duration) Option { return func(c *config) { c.authDelay = d } }

// Client options.

// WithDialer replaces how a client opens connections: WebSocket or HTTP/2
// transports plug in here. The default dials TCP. Client only.
func WithDialer(dial func(ctx context.Context, addr string) (net.Conn, error)) Option {
	return func(c *config) { c.dial = dial }
}

// WithConnectTimeout bounds each connection attempt a client makes by
// itself (reconnecting, and the first attempts under WithReconnect),
// dialling and handshake included (default 5s). Connect's own attempts are
// bounded by its context too. Client only.
func WithConnectTimeout(d time.Duration) Option {
	return func(c *config) { c.connectTimeout = d }
}

// WithReconnect makes a client reconnect by itself when a connection is
// lost: after base, then doubling up to max, each wait jittered (half
// fixed, half random), trying the addresses given to Connect in turn, for
// at most attempts rounds (0: forever). The hello carries the same client
// id. Client only.
func WithReconnect(base, max time.Duration, attempts int) Option {
	return func(c *config) {
		c.reconnect, c.backoffBase, c.backoffCap, c.maxAttempts = true, base, max, attempts
	}
}

// WithReconnectBuffer bounds, in payload bytes, what a client's Send
// buffers while it is reconnecting (default 1 MiB). Past it Send fails
// with ErrBufferFull. Client only.
func WithReconnectBuffer(n int) Option { return func(c *config) { c.bufferBytes = n } }

// WithHeartbeat makes a client send a PING every interval and declare the
// connection dead (ErrHeartbeatTimeout) when its PONG has not come within
// timeout. By default the interval is a third of the server's idle timeout
// (at most 15s) and the timeout equals the interval; an interval of 0
// turns heartbeats off. Client only.
func WithHeartbeat(interval, timeout time.Duration) Option {
	return func(c *config) {
		c.hbInterval, c.hbTimeout, c.hbOff = interval, timeout, interval <= 0
	}
}
