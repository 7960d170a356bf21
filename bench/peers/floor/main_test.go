//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/msgnet/msgnet/bench/internal/echoproto"
	"github.com/msgnet/msgnet/frame"
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
			sends := uringSends.Load()
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
			if got := uringSends.Load() - sends; (writes == "uring") != (got > 0) {
				t.Errorf("%d sends through io_uring with --writes %s", got, writes)
			}
		})
	}
}

// Hostile input to the echo floor: the hello and DATA trickled a byte at a
// time come back whole; a bad header gets ERROR and DISCONNECT, then the
// connection ends, and other connections go on.
func TestFloorEchoHostile(t *testing.T) {
	addr := start(t, &echo{}, 0)
	dial := func() net.Conn {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		return nc
	}
	hello := frame.Append(nil, frame.KindControl, 0, []byte(`{"op":"hello"}`))
	data := frame.Append(nil, frame.KindData, 0, []byte("trickled"))

	good := dial()
	for _, b := range append(append([]byte(nil), hello...), data...) {
		if _, err := good.Write([]byte{b}); err != nil {
			t.Fatal(err)
		}
	}
	rd := frame.NewReader(good, echoproto.MaxPayload)
	if f, err := rd.ReadFrame(); err != nil || f.Kind != frame.KindControl {
		t.Fatalf("welcome: %v %v", f.Kind, err)
	}
	if f, err := rd.ReadFrame(); err != nil || f.Kind != frame.KindData || string(f.Payload) != "trickled" {
		t.Fatalf("echo of trickled DATA: %v %q %v", f.Kind, f.Payload, err)
	}

	bad := dial()
	bad.Write(append(append([]byte(nil), hello...), "NOT A FRAME"...))
	rb := frame.NewReader(bad, echoproto.MaxPayload)
	var kinds []frame.Kind
	for {
		f, err := rb.ReadFrame()
		if err != nil {
			break // the floor closed the connection
		}
		kinds = append(kinds, f.Kind)
	}
	if want := []frame.Kind{frame.KindControl, frame.KindError, frame.KindDisconnect}; !slices.Equal(kinds, want) {
		t.Fatalf("after a bad header: %v, want %v", kinds, want)
	}

	good.Write(data)
	if f, err := rd.ReadFrame(); err != nil || string(f.Payload) != "trickled" {
		t.Fatalf("the first connection after another's bad header: %q %v", f.Payload, err)
	}
}

// Hostile input to the fan-out floor: a PUB announcing more than the
// maximum payload, and a line that never ends, each end their own
// connection at once; a subscriber still gets what a good publisher sends.
func TestFloorFanoutHostile(t *testing.T) {
	addr := start(t, &fanout{}, 0)
	dial := func() (net.Conn, *bufio.Reader) {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(nc)
		if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "INFO ") {
			t.Fatalf("first line %q %v", line, err)
		}
		return nc, br
	}
	sub, sr := dial()
	sub.Write([]byte("SUB s 7\r\nPING\r\n"))
	if line, err := sr.ReadString('\n'); err != nil || line != "PONG\r\n" {
		t.Fatalf("PONG: %q %v", line, err)
	}
	for _, bad := range []string{"PUB s 1048577\r\n", "PUB s " + strings.Repeat("x", 70<<10)} {
		nc, br := dial()
		nc.Write([]byte(bad))
		if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
			t.Fatalf("%.20q: read %q, %v; want the connection closed", bad, rest, err)
		}
	}
	pub, _ := dial()
	pub.Write([]byte("PUB s 2\r\nok\r\n"))
	if line, err := sr.ReadString('\n'); err != nil || line != "MSG s 7 2\r\n" {
		t.Fatalf("MSG line %q %v", line, err)
	}
}
