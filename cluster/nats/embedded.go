package natsbus

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// startEmbedded starts a NATS server in this process.
func startEmbedded(e Embedded, log *slog.Logger) (*server.Server, error) {
	o := &server.Options{
		ServerName: e.ServerName,
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: 8 << 20,
	}
	if e.MaxPayload > 0 {
		o.MaxPayload = int32(e.MaxPayload)
	}
	switch {
	case e.ClientListen == "" && e.ClusterListen == "":
		o.DontListen = true
	case e.ClientListen == "":
		// nats-server starts routing only once its client port is open
		// (v2.15: StartRouting waits for the accept loop), so a clustered
		// server gets a loopback port chosen by the OS.
		o.Host, o.Port = "127.0.0.1", server.RANDOM_PORT
	default:
		host, port, err := hostPort(e.ClientListen)
		if err != nil {
			return nil, fmt.Errorf("natsbus: client listen address: %w", err)
		}
		o.Host, o.Port = host, port
	}
	if e.ClusterListen != "" {
		host, port, err := hostPort(e.ClusterListen)
		if err != nil {
			return nil, fmt.Errorf("natsbus: cluster listen address: %w", err)
		}
		o.Cluster.Host, o.Cluster.Port = host, port
		o.Cluster.Name = e.ClusterName
		if o.Cluster.Name == "" {
			o.Cluster.Name = "msgnet"
		}
	}
	for _, r := range e.Routes {
		u, err := url.Parse(r)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("natsbus: route %q: want nats-route://host:port", redact(r))
		}
		if u.User == nil && e.RouteUser != "" {
			// nats-server presents a configured route's credentials from
			// its URL, and the cluster's only on routes it learns by gossip.
			u.User = url.UserPassword(e.RouteUser, e.RoutePassword)
		}
		o.Routes = append(o.Routes, u)
	}
	if len(o.Routes) > 0 && o.Cluster.Port == 0 {
		return nil, fmt.Errorf("natsbus: routes need a cluster listen address")
	}
	if e.StoreDir != "" {
		o.JetStream = true
		o.StoreDir = e.StoreDir
		if o.Cluster.Port != 0 && o.ServerName == "" {
			return nil, fmt.Errorf("natsbus: clustered JetStream needs a ServerName for each node")
		}
	}
	if err := secure(e, o); err != nil {
		return nil, err
	}
	ns, err := server.NewServer(o)
	if err != nil {
		return nil, fmt.Errorf("natsbus: embedded NATS server: %w", err)
	}
	ns.SetLoggerV2(natsLogger{log}, false, false, false)
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("natsbus: embedded NATS server did not start (ports %q, %q)", e.ClientListen, e.ClusterListen)
	}
	return ns, nil
}

// redact hides a password in a route URL that is to be shown.
func redact(route string) string {
	u, err := url.Parse(route)
	switch {
	case err == nil && u.User != nil:
		return u.Redacted()
	case err != nil && strings.Contains(route, "@"):
		return "(a route URL with credentials)"
	}
	return route
}

// hostPort splits "host:port"; port 0 asks the OS for one (NATS spells it -1).
func hostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

// natsLogger passes an embedded server's warnings and errors to slog; its
// notices are debug-level.
type natsLogger struct{ l *slog.Logger }

func (n natsLogger) Noticef(f string, v ...any) { n.l.Debug("nats: " + fmt.Sprintf(f, v...)) }
func (n natsLogger) Warnf(f string, v ...any)   { n.l.Warn("nats: " + fmt.Sprintf(f, v...)) }
func (n natsLogger) Fatalf(f string, v ...any)  { n.l.Error("nats: " + fmt.Sprintf(f, v...)) }
func (n natsLogger) Errorf(f string, v ...any)  { n.l.Error("nats: " + fmt.Sprintf(f, v...)) }
func (n natsLogger) Debugf(f string, v ...any)  {}
func (n natsLogger) Tracef(f string, v ...any)  {}
