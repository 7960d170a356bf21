package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/msgnet/msgnet/internal/loadgen"
	"github.com/nats-io/nats-server/v2/server"
)

// startJetStream starts a NATS server with JetStream in the test.
func startJetStream(t *testing.T) string {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT,
		JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(ns.Addr().(*net.TCPAddr).Port))
}

func TestJetStreamReliable(t *testing.T) {
	addr := startJetStream(t)
	for _, args := range [][]string{
		{"--storage", "file", "--consumer", "ordered"},
		{"--storage", "memory", "--consumer", "ackall"},
	} {
		var out, errOut bytes.Buffer
		args = append(args, "--addr", addr, "--size", "128", "--inflight", "64",
			"--duration", "300ms", "--warmup", "100ms", "--json", "--quiet")
		if code := run(context.Background(), args, &out, &errOut); code != 0 {
			t.Fatalf("%q: exit %d: %s", args, code, errOut.String())
		}
		var res loadgen.Result
		if err := json.Unmarshal(out.Bytes(), &res); err != nil {
			t.Fatalf("%v: %s", err, out.String())
		}
		rs := res.Reliable
		if res.Errors != 0 || rs == nil || res.Messages <= 0 || rs.Delivered != rs.Published || rs.Gaps+rs.Repeats != 0 {
			t.Fatalf("%q: %+v %+v", args, res, rs)
		}
		if res.Inflight != 64 || res.MaxLag != 64 || res.Size != 128 {
			t.Errorf("%q: inflight %d, lag %d, size %d", args, res.Inflight, res.MaxLag, res.Size)
		}
	}
}
