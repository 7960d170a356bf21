package main

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/msgnet/msgnet/internal/loadgen"
	"github.com/panjf2000/gnet/v2"
)

// The peer answers the load tool's hello and echoes every frame in order:
// the load tool checks each echo's sequence number and counts errors.
func TestGnetPeerEcho(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	srv := &echoServer{addr: "tcp://" + addr}
	done := make(chan error, 1)
	go func() { done <- gnet.Run(srv, srv.addr, options(true)...) }()
	for deadline := time.Now().Add(10 * time.Second); srv.eng.Load() == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("gnet engine did not boot")
		}
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.eng.Load().Stop(ctx)
		<-done
	}()
	for _, cfg := range []loadgen.Config{
		{Mode: loadgen.ModeThroughput, Conns: 4, Inflight: 16, Size: 64},
		{Mode: loadgen.ModeThroughput, Conns: 2, Inflight: 4, Size: 200 << 10},
		{Mode: loadgen.ModeLatency, Conns: 2},
		{Mode: loadgen.ModeConnRate, Conns: 2},
		{Mode: loadgen.ModeIdle, Conns: 50, Hold: 100 * time.Millisecond},
	} {
		cfg.Addr, cfg.Duration = addr, 200*time.Millisecond
		res, err := loadgen.Run(context.Background(), cfg)
		if err != nil {
			t.Fatalf("%s: %v", cfg.Mode, err)
		}
		if res.Errors != 0 || (res.Messages == 0 && cfg.Mode != loadgen.ModeIdle) || (cfg.Mode == loadgen.ModeIdle && res.Connections != 50) {
			t.Errorf("%s size %d: %d messages, %d conns, %d errors %v", cfg.Mode, cfg.Size, res.Messages, res.Connections, res.Errors, res.ErrorSamples)
		}
	}
}
