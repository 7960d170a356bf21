package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"

	natsbus "github.com/msgnet/msgnet/cluster/nats"
	"github.com/nats-io/nats.go"
)

// The security flags of the cluster feature: credentials and TLS for the
// embedded NATS server's routes and client port, or for the connection to
// an external NATS (docs/CLUSTER.md, "Security"). Secrets come from files:
// a command line is visible to every user of the machine.
type clusterSecurity struct {
	authFile, creds                 string
	cert, key, ca                   string
	clientAuthFile                  string
	clientCert, clientKey, clientCA string
	insecure                        bool
}

func (s *clusterSecurity) register(fs *flag.FlagSet) {
	fs.StringVar(&s.authFile, "cluster-auth-file", "", `file holding "user:password": the route credentials of the embedded server, the same on every node; with --cluster, the NATS user (or a token: a line without ":")`)
	fs.StringVar(&s.cert, "cluster-tls-cert", "", "PEM certificate: the embedded server's for its routes (valid for server and client auth); with --cluster, a client certificate")
	fs.StringVar(&s.key, "cluster-tls-key", "", "PEM key of --cluster-tls-cert")
	fs.StringVar(&s.ca, "cluster-tls-ca", "", "PEM CAs: routes are mutual TLS, every node's certificate signed by them; with --cluster, the CAs that verify the NATS server")
	fs.StringVar(&s.creds, "cluster-creds", "", "with --cluster: NATS credentials file (.creds: user JWT and nkey seed)")
	fs.StringVar(&s.clientAuthFile, "cluster-client-auth-file", "", `file holding "user:password", or a token, required by the embedded server's client port`)
	fs.StringVar(&s.clientCert, "cluster-client-tls-cert", "", "serve the embedded server's client port over TLS with this PEM certificate")
	fs.StringVar(&s.clientKey, "cluster-client-tls-key", "", "PEM key of --cluster-client-tls-cert")
	fs.StringVar(&s.clientCA, "cluster-client-tls-ca", "", "require client certificates signed by these PEM CAs on the embedded server's client port")
	fs.BoolVar(&s.insecure, "cluster-insecure", false, "allow a non-loopback --cluster-listen without route authentication, and --cluster-client-listen without client authentication")
}

// given reports whether any credential or TLS flag is set.
func (s *clusterSecurity) given() bool {
	return s.authFile != "" || s.creds != "" || s.cert != "" || s.key != "" || s.ca != "" ||
		s.clientAuthFile != "" || s.clientCert != "" || s.clientKey != "" || s.clientCA != ""
}

// embedded adds route and client port security to e. It refuses to open a
// route or client port beyond loopback that anyone could use, unless
// --cluster-insecure says the network is trusted.
func (s *clusterSecurity) embedded(e *natsbus.Embedded, log *slog.Logger) error {
	if s.creds != "" {
		return errors.New("--cluster-creds is for an external NATS (--cluster); the embedded server's routes use --cluster-auth-file")
	}
	if s.authFile != "" {
		var err error
		if e.RouteUser, e.RoutePassword, _, err = credentials("--cluster-auth-file", s.authFile, false); err != nil {
			return err
		}
	}
	if s.cert != "" || s.key != "" || s.ca != "" {
		if s.cert == "" || s.key == "" || s.ca == "" {
			return errors.New("--cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca go together: routes are mutual TLS")
		}
		cfg, err := natsbus.RouteTLSConfig(s.cert, s.key, s.ca)
		if err != nil {
			return err
		}
		e.RouteTLS = cfg
	}
	if s.clientAuthFile != "" {
		var err error
		if e.ClientUser, e.ClientPassword, e.ClientToken, err = credentials("--cluster-client-auth-file", s.clientAuthFile, true); err != nil {
			return err
		}
	}
	if s.clientCert != "" || s.clientKey != "" || s.clientCA != "" {
		if s.clientCert == "" || s.clientKey == "" {
			return errors.New("--cluster-client-tls-cert and --cluster-client-tls-key go together, and --cluster-client-tls-ca needs them")
		}
		cfg, err := natsbus.ClientTLSConfig(s.clientCert, s.clientKey, s.clientCA)
		if err != nil {
			return err
		}
		e.ClientTLS = cfg
	}

	routeAuth := e.RouteUser != "" || e.RouteTLS != nil
	if err := s.exposed("--cluster-listen", e.ClusterListen, routeAuth, log,
		"anyone who reaches it could join the cluster as a route, broadcast to every session and take over any client id",
		"give every node --cluster-auth-file, and --cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca to encrypt and authenticate the routes"); err != nil {
		return err
	}
	clientAuth := e.ClientUser != "" || e.ClientToken != "" || s.clientCA != ""
	if e.ClientListen != "" {
		if err := s.exposed("--cluster-client-listen", e.ClientListen, clientAuth, log,
			"anyone who reaches it could publish to the cluster",
			"give --cluster-client-auth-file, or --cluster-client-tls-cert, --cluster-client-tls-key and --cluster-client-tls-ca"); err != nil {
			return err
		}
	}
	if routeAuth && e.RouteTLS == nil && !loopbackOnly(e.ClusterListen) {
		log.Warn("cluster: route credentials cross the network in clear; add --cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca")
	}
	return nil
}

// exposed refuses a listen address beyond loopback without authentication,
// unless --cluster-insecure allows it.
func (s *clusterSecurity) exposed(flagName, addr string, auth bool, log *slog.Logger, risk, fix string) error {
	if auth || loopbackOnly(addr) {
		return nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%s %s: %w", flagName, addr, err)
	}
	if !s.insecure {
		return fmt.Errorf("%s %s is not a loopback address and has no authentication: %s. To secure it, %s; or add --cluster-insecure if only trusted hosts can reach it", flagName, addr, risk, fix)
	}
	log.Warn("cluster: "+flagName+" is open to anyone who reaches it (--cluster-insecure)", "addr", addr)
	return nil
}

// external returns the connection options for an external NATS.
func (s *clusterSecurity) external() ([]nats.Option, error) {
	switch {
	case s.clientAuthFile != "" || s.clientCert != "" || s.clientKey != "" || s.clientCA != "":
		return nil, errors.New("the --cluster-client-* flags are for the embedded server's client port, not an external NATS")
	case s.creds != "" && s.authFile != "":
		return nil, errors.New("--cluster-creds and --cluster-auth-file exclude each other: both are the NATS user's credentials")
	case (s.cert == "") != (s.key == ""):
		return nil, errors.New("--cluster-tls-cert and --cluster-tls-key go together")
	}
	var opts []nats.Option
	if s.creds != "" {
		// nats.go reads the file only when it connects; read it now for
		// a clear error.
		if _, err := readSecret("--cluster-creds", s.creds); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(s.creds))
	}
	if s.authFile != "" {
		user, pass, token, err := credentials("--cluster-auth-file", s.authFile, true)
		if err != nil {
			return nil, err
		}
		if token != "" {
			opts = append(opts, nats.Token(token))
		} else {
			opts = append(opts, nats.UserInfo(user, pass))
		}
	}
	if s.ca != "" {
		opts = append(opts, nats.RootCAs(s.ca))
	}
	if s.cert != "" {
		opts = append(opts, nats.ClientCert(s.cert, s.key))
	}
	return opts, nil
}

// credentials reads "user:password" from a file of one line or, if
// tokenOK, a token: a line without ":".
func credentials(flagName, path string, tokenOK bool) (user, pass, token string, err error) {
	secret, err := readSecret(flagName, path)
	if err != nil {
		return "", "", "", err
	}
	if strings.ContainsAny(secret, "\r\n") {
		return "", "", "", fmt.Errorf("%s %s: the credentials must be on one line", flagName, path)
	}
	user, pass, ok := strings.Cut(secret, ":")
	switch {
	case ok && user != "" && pass != "":
		return user, pass, "", nil
	case !ok && tokenOK:
		return "", "", secret, nil
	case tokenOK:
		return "", "", "", fmt.Errorf(`%s %s: want "user:password", or a token without ":"`, flagName, path)
	}
	return "", "", "", fmt.Errorf(`%s %s: want "user:password" on one line`, flagName, path)
}

// readSecret reads a secret file without its trailing newline; an empty
// file is an error, as it would turn authentication off.
func readSecret(flagName, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flagName, err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if strings.TrimSpace(s) == "" {
		return "", fmt.Errorf("%s %s is empty", flagName, path)
	}
	return s, nil
}

// loopbackOnly reports whether addr ("host:port") listens on loopback only:
// localhost or a loopback IP. An empty host, 0.0.0.0 and :: listen on every
// interface; any other name may resolve beyond the machine.
func loopbackOnly(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// redactURLs hides the passwords of comma-separated URLs, for the log.
func redactURLs(list string) string {
	parts := splitList(list)
	for i, p := range parts {
		if u, err := url.Parse(p); err == nil {
			parts[i] = u.Redacted()
		} else if strings.Contains(p, "@") {
			parts[i] = "(a URL with credentials)"
		}
	}
	return strings.Join(parts, ",")
}
