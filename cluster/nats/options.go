package natsbus

import (
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
)

// Option configures a Bus.
type Option func(*config)

type config struct {
	urls      []string
	natsOpts  []nats.Option
	embedded  *Embedded
	prefix    string
	heartbeat time.Duration
	ttl       time.Duration
	log       *slog.Logger
	advertise string
	pending   int
}

func defaultConfig() config {
	return config{
		prefix:    "msgnet",
		heartbeat: time.Second,
		log:       slog.New(slog.DiscardHandler),
		pending:   1 << 17,
	}
}

// Embedded describes a NATS server the bus starts inside the process.
// Nodes whose embedded servers are joined by routes form one NATS cluster,
// so a msgnet cluster needs no separate infrastructure.
type Embedded struct {
	// ClientListen, when set ("host:port"; port 0: chosen by the OS),
	// opens the server's client port, for other programs. Unset, a server
	// with ClusterListen still opens a client port on a loopback port
	// chosen by the OS (NATS starts routing only once a client port is
	// open); one without has none. The bus connects to the client port
	// over TCP when there is one without ClientTLS (see InProcess), else
	// in-process.
	ClientListen string
	// InProcess connects the bus through nats.go's in-process pipe even
	// when the server has a client port: each write waits for the
	// server's reader, so a message that crosses nodes alone arrives
	// sooner, but under load every message costs more CPU than over the
	// loopback socket the bus dials by default (docs/BENCHMARKS.md). A
	// store's connection (Bus.Store) is always in-process.
	InProcess bool
	// ClusterListen ("host:port"; port 0: chosen by the OS) is where the
	// server accepts routes from other nodes' servers. Needed to be routed
	// to, and to use Routes.
	ClusterListen string
	// Routes are other nodes' cluster addresses, "nats-route://host:port".
	// One reachable node is enough: NATS routes gossip the rest.
	Routes []string
	// ClusterName must be the same on every node (default "msgnet").
	ClusterName string
	// ServerName names the NATS server in its own logs and monitoring
	// (default: the NATS server's generated id).
	ServerName string
	// MaxPayload bounds one published message (default 8 MiB): a msgnet
	// message plus the bus's header (docs/CLUSTER.md) must fit.
	MaxPayload int
	// StoreDir, when set, enables JetStream, keeping its files there, for
	// Bus.Store. In a cluster every node needs its own directory and a
	// distinct ServerName, and JetStream needs a majority of the nodes up.
	StoreDir string

	// RouteUser and RoutePassword, set together, are the route credentials
	// (nats-server's cluster authorization), the same pair on every node:
	// the server refuses a route that does not present them and presents
	// them on every route it dials, to Routes (unless a route URL carries
	// its own) and to the nodes NATS gossips. The password is sent as is,
	// so it cannot be a bcrypt hash; without RouteTLS it crosses the
	// network in clear.
	RouteUser, RoutePassword string
	// RouteTLS, when set, makes every route mutual TLS. The server uses it
	// to accept routes and to dial them, so it must present a certificate
	// valid for both server and client authentication, naming the
	// addresses other nodes dial, and must verify peers (ClientCAs with
	// tls.RequireAndVerifyClientCert; RootCAs defaults to ClientCAs).
	// RouteTLSConfig builds one from PEM files. The server keeps it: do not
	// change it afterwards.
	RouteTLS *tls.Config

	// ClientUser and ClientPassword, or ClientToken, when set, are
	// required from every connection to the client port. The bus's own
	// connection presents them. As with routes, the password
	// is sent as is and cannot be a bcrypt hash.
	ClientUser, ClientPassword string
	ClientToken                string
	// ClientTLS, when set, makes the client port TLS; with ClientCAs and
	// tls.RequireAndVerifyClientCert it also requires client certificates
	// signed by those CAs. The bus then connects in-process, without TLS.
	// The server keeps it: do not change it afterwards.
	ClientTLS *tls.Config
}

// WithURL connects the bus to an external NATS server or cluster; several
// URLs are tried in turn and used for reconnecting.
func WithURL(urls ...string) Option {
	return func(c *config) { c.urls = append(c.urls, urls...) }
}

// WithEmbedded starts a NATS server in-process and connects to it (see
// Embedded). It cannot be combined with WithURL.
func WithEmbedded(e Embedded) Option { return func(c *config) { c.embedded = &e } }

// WithNATSOptions adds options to the NATS connection, e.g. credentials or
// TLS for an external server. The bus's own options (no echo, endless
// reconnect, error handlers) come first and may be overridden.
func WithNATSOptions(opts ...nats.Option) Option {
	return func(c *config) { c.natsOpts = append(c.natsOpts, opts...) }
}

// WithPrefix sets the first token(s) of every subject (default "msgnet"):
// clusters sharing a NATS system need distinct prefixes.
func WithPrefix(p string) Option { return func(c *config) { c.prefix = p } }

// WithHeartbeat sets how often the node publishes its load, which is also
// how the others know it is alive (default 1s).
func WithHeartbeat(d time.Duration) Option { return func(c *config) { c.heartbeat = d } }

// WithTTL sets how long a node may stay silent before the others drop it
// and its directory entries (default 3 heartbeats).
func WithTTL(d time.Duration) Option { return func(c *config) { c.ttl = d } }

// WithLogger sets where the bus (and an embedded NATS server's warnings
// and errors) log. Default: nowhere.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// WithAdvertiseAddr sets the address published in the node's load, for
// balancers (default: the server's listener address, which is useless to
// clients when it is 0.0.0.0).
func WithAdvertiseAddr(addr string) Option { return func(c *config) { c.advertise = addr } }

// WithPendingLimit bounds the messages received from NATS and not yet
// delivered to local sessions (default 131072). Past it NATS drops
// messages for this node, and Stats().Errors counts them.
func WithPendingLimit(n int) Option { return func(c *config) { c.pending = n } }
