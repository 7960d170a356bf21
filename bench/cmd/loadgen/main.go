// Command loadgen is a stand-in for `msgnet bench` while cmd/msgnet does not
// have the bench command: it runs the same engine, internal/loadgen.
//
//	loadgen [bench] MODE [flags]
//
// The optional leading "bench" word lets scripts call it exactly as they
// call `msgnet bench`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/msgnet/msgnet/internal/loadgen"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "bench" {
		args = args[1:]
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := loadgen.Main(ctx, args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
