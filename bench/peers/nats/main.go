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
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/msgnet/msgnet/bench/internal/natsrun"
	"github.com/nats-io/nats-server/v2/server"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:4222", "address to listen on")
	flag.Parse()
	host, port, err := natsrun.SplitAddr(*addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nats peer:", err)
		os.Exit(2)
	}
	ns, err := natsrun.Start(&server.Options{
		Host:      host,
		Port:      port,
		NoLog:     true,
		JetStream: false,
		// No HTTP monitoring port, no cluster, no leaf nodes: all off
		// unless set.
	})
	if errors.Is(err, natsrun.ErrNotReady) {
		fmt.Fprintln(os.Stderr, "nats peer: not ready after 10s")
		os.Exit(1)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nats peer:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "nats peer (nats-server %s) listening on %s\n", server.VERSION, ns.Addr())
	natsrun.Wait(ns)
}
