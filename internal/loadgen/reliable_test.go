package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
)

// startMsgnet starts a msgnet server with streams in memory.
func startMsgnet(t *testing.T) string {
	t.Helper()
	srv := msgnet.NewServer("bench-test")
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv.Addr().String()
}

func TestReliableMsgnet(t *testing.T) {
	addr := startMsgnet(t)
	res := run(t, Config{Mode: ModeReliable, Addr: addr, Size: 100, Inflight: 32, MaxLag: 64,
		Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond, Drain: 5 * time.Second, PID: os.Getpid()})
	noErrors(t, res)
	rs := res.Reliable
	if rs == nil || res.Messages <= 0 || rs.Published < res.Messages {
		t.Fatalf("nothing measured: %+v %+v", res, rs)
	}
	if rs.Delivered != rs.Published || rs.Gaps != 0 || rs.Repeats != 0 || res.Lost != 0 {
		t.Errorf("not exactly once: %+v, lost %d", rs, res.Lost)
	}
	if res.Latency.Count != res.Messages || res.Inflight != 32 || res.MaxLag != 64 || res.Size != 100 || res.Conns != 2 {
		t.Errorf("result: %d latencies for %d messages, inflight %d, lag %d, size %d, conns %d",
			res.Latency.Count, res.Messages, res.Inflight, res.MaxLag, res.Size, res.Conns)
	}
	if res.Server == nil || res.Server.MsgsPerCPUSecond <= 0 {
		t.Errorf("server stats: %+v", res.Server)
	}
}

// lossyClient delivers each publish at once, but drops every tenth and
// repeats every hundred-and-first.
type lossyClient struct {
	deliver func([]byte)
	n       int
	prev    []byte
}

func (c *lossyClient) Subscribe(_ context.Context, d func([]byte)) error { c.deliver = d; return nil }
func (c *lossyClient) WaitWindow(context.Context, int) error             { return nil }
func (c *lossyClient) Close() error                                      { return nil }
func (c *lossyClient) Publish(p []byte) error {
	c.n++
	if c.n%101 == 0 && c.prev != nil {
		c.deliver(c.prev)
	}
	c.prev = append(c.prev[:0], p...)
	if c.n%10 != 0 {
		c.deliver(p)
	}
	return nil
}

func TestReliableCountsGapsAndRepeats(t *testing.T) {
	res, err := RunReliable(context.Background(), Config{Addr: "nowhere:1", Size: 16,
		Duration: 50 * time.Millisecond, Drain: time.Millisecond}, &lossyClient{})
	if err != nil {
		t.Fatal(err)
	}
	rs := res.Reliable
	if rs.Gaps == 0 || rs.Repeats == 0 || res.Errors == 0 || res.Mode != ModeReliable || res.Inflight != DefaultReliableInflight {
		t.Fatalf("gaps %d, repeats %d, errors %d (%v), mode %s, inflight %d", rs.Gaps, rs.Repeats, res.Errors, res.ErrorSamples, res.Mode, res.Inflight)
	}
}

func TestMainReliable(t *testing.T) {
	addr := startMsgnet(t)
	var out, errOut bytes.Buffer
	code := Main(context.Background(), []string{"reliable", "--addr", addr, "--size", "1KiB", "--inflight", "16",
		"--duration", "200ms", "--warmup", "0s", "--json", "--quiet"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var res Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if res.Mode != ModeReliable || res.Inflight != 16 || res.MaxLag != 16 || res.Size != 1024 || res.Reliable == nil || res.Messages <= 0 || res.Errors != 0 {
		t.Fatalf("result %+v %+v", res, res.Reliable)
	}
	for _, args := range [][]string{
		{"reliable", "--size", "8"},     // no room for the timestamp
		{"reliable", "--conns", "2"},    // one publisher, one subscriber
		{"reliable", "--inflight", "0"}, // no window
		{"reliable", "--max-lag", "-2"},
	} {
		if code := Main(context.Background(), args, &out, &errOut); code != 2 {
			t.Errorf("Main(%q) = %d, want 2", args, code)
		}
	}
}
