// Command nats is the fan-out benchmark's NATS peer: a nats-server
// (github.com/nats-io/nats-server/v2) run in this process and nothing else,
// so that bench/fanout.sh can start it, pin it and read its CPU time and
// memory from /proc like msgnet's server. Core NATS only: no JetStream, no
// cluster, no authentication, no TLS, logging off; every other setting is
// the server's default (among them a 64 MiB pending limit per client, past
// which the server cuts a slow consumer off, and a 10 s write deadline).
//
//	nats --addr 127.0.0.1:4222
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:4222", "address to listen on")
	flag.Parse()
	host, port, err := splitAddr(*addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nats peer:", err)
		os.Exit(2)
	}
	ns, err := server.NewServer(&server.Options{
		Host:      host,
		Port:      port,
		NoLog:     true,
		NoSigs:    true,
		JetStream: false,
		// No HTTP monitoring port, no cluster, no leaf nodes: all off
		// unless set.
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "nats peer:", err)
		os.Exit(1)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		fmt.Fprintln(os.Stderr, "nats peer: not ready after 10s")
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "nats peer (nats-server %s) listening on %s\n", server.VERSION, ns.Addr())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	ns.Shutdown()
	ns.WaitForShutdown()
}

// splitAddr splits host:port, with a port number.
func splitAddr(addr string) (string, int, error) {
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
