//go:build linux

package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/msgnet/msgnet/internal/loadgen"
)

// start runs the floor's loop with h on a loopback port. The loop has no
// stop: it ends with the test binary.
func start(t *testing.T, h handler, ringSize int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		// It returns only on failure, which the test then sees as a
		// load that cannot connect or gets nothing.
		err := loop(ln.(*net.TCPListener), h, ringSize)
		fmt.Fprintln(os.Stderr, "floor loop:", err)
	}()
	return ln.Addr().String()
}

// The echo floor passes the load tool's throughput and latency tests, which
// check every echo's sequence number: bytes echoed unparsed are the frames.
func TestFloorEcho(t *testing.T) {
	addr := start(t, &echo{}, 0)
	for _, cfg := range []loadgen.Config{
		{Mode: loadgen.ModeThroughput, Conns: 4, Inflight: 16, Size: 64},
		{Mode: loadgen.ModeThroughput, Conns: 2, Inflight: 4, Size: 200 << 10},
		{Mode: loadgen.ModeLatency, Conns: 2},
	} {
		cfg.Addr, cfg.Duration = addr, 200*time.Millisecond
		res, err := loadgen.Run(context.Background(), cfg)
		if err != nil {
			t.Fatalf("%s: %v", cfg.Mode, err)
		}
		if res.Errors != 0 || res.Messages == 0 {
			t.Errorf("%s size %d: %d messages, %d errors %v", cfg.Mode, cfg.Size, res.Messages, res.Errors, res.ErrorSamples)
		}
	}
}

// The fan-out floor delivers every message of `msgnet bench fanout --proto
// nats` to every subscriber, in order, with either way of writing.
func TestFloorFanout(t *testing.T) {
	for _, writes := range []string{"write", "uring"} {
		t.Run(writes, func(t *testing.T) {
			ringSize := 0
			if writes == "uring" {
				ringSize = 8 // fewer than the subscribers: a pass takes batches
			}
			addr := start(t, &fanout{}, ringSize)
			res, err := loadgen.Run(context.Background(), loadgen.Config{Mode: loadgen.ModeFanout, Proto: loadgen.ProtoNATS,
				Addr: addr, Conns: 20, Rate: 500, Duration: 500 * time.Millisecond, Warmup: 100 * time.Millisecond,
				Drain: 2 * time.Second, JoinWait: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			f := res.Fanout
			if res.Errors != 0 || f == nil || res.Sent == 0 || res.Messages != res.Sent*20 || f.Delivered != res.Expected ||
				f.Gaps != 0 || f.OutOfOrder != 0 || f.Duplicates != 0 {
				t.Fatalf("sent %d, delivered %d of %d, errors %d %v, fanout %+v", res.Sent, res.Messages, res.Expected, res.Errors, res.ErrorSamples, f)
			}
		})
	}
}
