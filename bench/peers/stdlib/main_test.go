package main

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/msgnet/msgnet/bench/internal/echoproto"
	"github.com/msgnet/msgnet/internal/loadgen"
)

// serveOn runs serve on a loopback listener until the test ends.
func serveOn(t *testing.T, serve func(net.Conn, *echoproto.Session)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { defer c.Close(); serve(c, echoproto.NewSession("test")) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// Both variants answer the load tool's hello and echo every frame in order:
// the load tool checks each echo's sequence number and counts errors.
func TestPeersEcho(t *testing.T) {
	for name, serve := range map[string]func(net.Conn, *echoproto.Session){"tuned": serveTuned, "naive": serveNaive} {
		addr := serveOn(t, serve)
		for _, cfg := range []loadgen.Config{
			{Mode: loadgen.ModeThroughput, Conns: 4, Inflight: 16, Size: 64},
			{Mode: loadgen.ModeThroughput, Conns: 2, Inflight: 4, Size: 200 << 10}, // larger than the tuned reader's buffer
			{Mode: loadgen.ModeLatency, Conns: 2},
			{Mode: loadgen.ModeConnRate, Conns: 2},
		} {
			cfg.Addr, cfg.Duration = addr, 200*time.Millisecond
			res, err := loadgen.Run(context.Background(), cfg)
			if err != nil {
				t.Fatalf("%s %s: %v", name, cfg.Mode, err)
			}
			if res.Errors != 0 || res.Messages == 0 {
				t.Errorf("%s %s size %d: %d messages, %d errors %v", name, cfg.Mode, cfg.Size, res.Messages, res.Errors, res.ErrorSamples)
			}
		}
	}
}
