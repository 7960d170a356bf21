// Package natsrun runs an embedded nats-server as the whole of a process,
// as the benchmarks' NATS servers (cmd/natsd with JetStream, peers/nats
// without) do: one server per process, so that a script can pin it to a
// core and read its CPU time and memory from /proc like msgnet's server.
// The two commands differ only in their options and messages; the
// start-up, readiness wait and signal handling live here.
package natsrun

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ErrNotReady is Start's error when the server does not accept
// connections within ReadyTimeout; callers say so in their own words.
var ErrNotReady = errors.New("not ready after 10s")

// ReadyTimeout is how long Start waits for the server to accept
// connections: the scripts give a server 10 s to listen, too.
const ReadyTimeout = 10 * time.Second

// SplitAddr splits "host:port" into nats-server's Host and Port options.
// The port must be a real one (1-65535): nats-server reads 0 as its
// default port and -1 as a random one, neither of which a script can
// connect to.
func SplitAddr(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", addr)
	}
	return host, port, nil
}

// Start creates a server from opts, starts it and waits for it to accept
// connections. It sets NoSigs, so that Wait, not nats-server's own
// handler, decides what a signal does.
func Start(opts *server.Options) (*server.Server, error) {
	opts.NoSigs = true
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, err
	}
	ns.Start()
	if !ns.ReadyForConnections(ReadyTimeout) {
		return nil, ErrNotReady
	}
	return ns, nil
}

// Wait blocks until SIGTERM or SIGINT, then shuts ns down and waits until
// it has: the scripts stop a server with SIGTERM and wait for it to exit
// before the next test starts.
func Wait(ns *server.Server) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	ns.Shutdown()
	ns.WaitForShutdown()
}
