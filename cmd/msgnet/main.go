// Command msgnet runs a msgnet server, sends messages, chats interactively
// and benchmarks servers.
//
//	msgnet serve [--addr 127.0.0.1:8080] [--mode managed|echo] ...
//	msgnet send --addr 127.0.0.1:8080 hello world
//	msgnet chat --addr 127.0.0.1:8080
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/msgnet/msgnet/internal/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `msgnet: asynchronous TCP messaging

Usage:
  msgnet serve [flags]            run a server (default: managed mode on 127.0.0.1:8080)
  msgnet send --addr A MESSAGE... send messages and print the replies
  msgnet chat --addr A            send stdin lines, print what arrives
  msgnet sub --group G [--reliable]         print a group's messages, one per line
  msgnet pub --group G [--reliable] [--count N] [--rate R] TEXT
                                  publish TEXT to a group ({n}: the message's number)
  msgnet bench MODE [flags]       load-test a server: throughput, latency, connrate, idle, fanout, reliable
  msgnet container --from F --to F  convert a container on stdin (text|binary|json) to stdout
  msgnet version                  print the version and the revision it was built from

Run 'msgnet COMMAND -h' for a command's flags.
`

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "send":
		return send(ctx, args[1:], stdout, stderr)
	case "chat":
		return chat(ctx, args[1:], stdin, stdout, stderr)
	case "sub":
		return sub(ctx, args[1:], stdout, stderr)
	case "pub":
		return pub(ctx, args[1:], stdout, stderr)
	case "container":
		return containerCmd(args[1:], stdin, stdout, stderr)
	case "bench":
		return loadgen.Main(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		return version(stdout)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "msgnet: unknown command %q\n\n%s", args[0], usage)
	return 2
}
