// Command natsd is a standalone NATS server with JetStream, for the
// reliable-delivery benchmark (bench/reliable.sh): nats-server's own
// library (the version msgnet's go.mod requires, which `msgnet serve
// --store` embeds) in a process of its own, so that its CPU time can be
// read from /proc and it can be pinned to a core like `msgnet serve`.
//
//	natsd --addr 127.0.0.1:4222 --store /tmp/js
//
// Its options are nats-server's defaults but for JetStream's store
// directory and no logging, as `msgnet serve --store` runs its embedded
// server. It stops on SIGTERM or SIGINT.
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
	addr := flag.String("addr", "127.0.0.1:4222", "client address to listen on")
	store := flag.String("store", "", "JetStream's store directory (required)")
	flag.Parse()
	if *store == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: natsd --addr HOST:PORT --store DIR")
		os.Exit(2)
	}
	host, port, err := natsrun.SplitAddr(*addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "natsd: bad --addr %q\n", *addr)
		os.Exit(2)
	}
	ns, err := natsrun.Start(&server.Options{
		Host: host, Port: port, JetStream: true, StoreDir: *store, NoLog: true,
	})
	if errors.Is(err, natsrun.ErrNotReady) {
		fmt.Fprintln(os.Stderr, "natsd: the server did not start")
		os.Exit(1)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "natsd: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "natsd: nats-server %s with JetStream on %s, store %s\n", server.VERSION, *addr, *store)
	natsrun.Wait(ns)
}
