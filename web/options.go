package web

import "github.com/msgnet/msgnet/transport/ws"

type config struct {
	chat   bool
	wsOpts []ws.Option
	hosts  []string
}

// Option configures Handler.
type Option func(*config)

// WithChat serves WebSocket sessions on the server at /ws and shows the
// page's chat box. Without it /ws is 404 and the page has no chat. Read
// the package documentation first: the chat's sessions skip the client
// certificates a TLS listener of the server may demand.
func WithChat() Option { return func(c *config) { c.chat = true } }

// WithWebSocketOptions passes options to the WebSocket handler at /ws
// (with WithChat), e.g. ws.WithOriginPatterns. By default only pages from
// the same host and port may open sessions, which is what the page itself
// needs; an Origin must also name an allowed host (WithAllowedHosts).
func WithWebSocketOptions(opts ...ws.Option) Option {
	return func(c *config) { c.wsOpts = append(c.wsOpts, opts...) }
}

// WithAllowedHosts adds hosts the handler answers to, in the forms package
// monitor/hostcheck accepts (a name, an IP address, *.domain; no port): the
// names operators use for the page's address. localhost, loopback
// addresses and the IP address a request came in on are always allowed.
func WithAllowedHosts(hosts ...string) Option {
	return func(c *config) { c.hosts = append(c.hosts, hosts...) }
}
