// Package hostcheck refuses HTTP requests that name a host other than the
// server's own: the defence of an operator's listener (packages monitor and
// web) against DNS rebinding.
//
// In a rebinding attack a web page on evil.example has that name resolve
// again, now to the address of a server in the visitor's network (or to
// 127.0.0.1). The page's requests then reach that server as requests to
// its own origin, so the browser lets the page read the answers. They
// still say "Host: evil.example", and that is what this package checks.
// The host in a request's Host header (the port aside) is allowed when it
// is
//
//   - localhost or a loopback address (127.0.0.0/8, ::1);
//   - the IP address the request came in on, so that a client using the
//     server's address (Prometheus scraping http://10.0.0.5:8222/metrics)
//     needs no configuration;
//   - one of the hosts given to New: a name, an IP address, or
//     "*.example.com" for every name under example.com.
//
// A request with an Origin header (browsers send one with every WebSocket
// handshake, every cross-origin request and every POST) is refused too
// unless the Origin's host is allowed by the same rules: that stops a page
// on another site from driving the server through its visitors' browsers
// (cross-site WebSocket hijacking). A request without an Origin comes from
// a program, not a page, and only its Host is checked.
package hostcheck

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// Checker decides which requests a server answers. Its zero value allows
// only the hosts every Checker allows (localhost, loopback addresses, the
// address a request came in on).
type Checker struct {
	names    map[string]bool
	ips      map[netip.Addr]bool
	suffixes []string // ".example.com" for "*.example.com"
}

// New returns a Checker that also allows the given hosts. Each is a host
// name ("monitor.example.com"), an IP address ("10.0.0.5", "::1" or
// "[::1]"), or "*.example.com", which allows the names under example.com
// but not example.com itself. Case and a trailing dot do not matter. An
// entry with a port, a scheme or a path is an error: a host is allowed on
// every port.
func New(hosts ...string) (*Checker, error) {
	c := &Checker{names: map[string]bool{}, ips: map[netip.Addr]bool{}}
	for _, h := range hosts {
		if err := c.add(h); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *Checker) add(entry string) error {
	h := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(entry), "."))
	switch {
	case h == "":
		return errors.New("allowed host: empty")
	case strings.Contains(h, "/"):
		return fmt.Errorf("allowed host %q: want a host, not a URL", entry)
	}
	if ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")); err == nil {
		c.ips[ip.Unmap().WithZone("")] = true
		return nil
	}
	if strings.Contains(h, ":") {
		return fmt.Errorf("allowed host %q: want a host without a port", entry)
	}
	name, wild := strings.CutPrefix(h, "*.")
	if !validName(name) {
		return fmt.Errorf("allowed host %q: not a host name, an IP address or *.domain", entry)
	}
	if wild {
		c.suffixes = append(c.suffixes, "."+name)
	} else {
		c.names[name] = true
	}
	return nil
}

// validName accepts dot-separated labels of letters, digits, '-' and '_'.
func validName(s string) bool {
	for label := range strings.SplitSeq(s, ".") {
		if label == "" {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// Check returns nil when r may be answered, or an error that says which
// header names a host that is not allowed.
func (c *Checker) Check(r *http.Request) error {
	local := localIP(r)
	if h := hostname(r.Host); !c.allowed(h, local) {
		return fmt.Errorf("host %q is not allowed", h)
	}
	if _, ok := r.Header["Origin"]; !ok {
		return nil
	}
	origin := r.Header.Get("Origin")
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" { // "null" (a sandboxed page, a file) and the like
		return fmt.Errorf("origin %q is not allowed", origin)
	}
	if h := hostname(u.Host); !c.allowed(h, local) {
		return fmt.Errorf("origin %q is not allowed", origin)
	}
	return nil
}

// Handler answers 403 Forbidden, with the reason and nothing else, to the
// requests Check refuses, and passes the others to h.
func (c *Checker) Handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := c.Check(r); err != nil {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintln(w, err)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// allowed applies the rules of the package documentation to a host
// (lower case, without port, brackets or trailing dot).
func (c *Checker) allowed(host string, local netip.Addr) bool {
	if host == "" {
		return false // HTTP/1.0 without a Host header: no name to check, so not ours
	}
	if host == "localhost" {
		return true
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap().WithZone("")
		return ip.IsLoopback() || (local.IsValid() && ip == local) || c.ips[ip]
	}
	if c.names[host] {
		return true
	}
	for _, s := range c.suffixes {
		if strings.HasSuffix(host, s) {
			return true
		}
	}
	return false
}

// hostname is the host of a Host header or an Origin's host: without the
// port and the brackets of an IPv6 address, lower case, without a
// trailing dot (a name with one is the same name).
func hostname(hostport string) string {
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

// localIP is the address the request's connection was accepted on, or
// the zero Addr when the server does not say.
func localIP(r *http.Request) netip.Addr {
	a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return netip.Addr{}
	}
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap().WithZone("")
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap().WithZone("")
}
