package loadgen

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// startNATS runs a nats-server in the test process on a loopback port.
func startNATS(t *testing.T) string {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return ns.Addr().String()
}

func TestFanoutNATS(t *testing.T) {
	addr := startNATS(t)
	res := run(t, Config{Mode: ModeFanout, Proto: ProtoNATS, Addr: addr, Conns: 5, Rate: 200,
		Duration: 500 * time.Millisecond, Warmup: 100 * time.Millisecond, Drain: 2 * time.Second, JoinWait: 50 * time.Millisecond})
	noErrors(t, res)
	if want := int64(200 * 0.5); res.Sent < want-1 || res.Sent > want+1 {
		t.Errorf("sent %d in the window, want %d ± 1", res.Sent, want)
	}
	f := res.Fanout
	if f == nil || f.Proto != ProtoNATS {
		t.Fatalf("fanout stats %+v, want proto nats", f)
	}
	if res.Expected != res.Sent*5 || res.Messages != res.Expected || f.Delivered != res.Expected {
		t.Errorf("delivered %d (%d distinct) of %d; NATS on loopback loses none", res.Messages, f.Delivered, res.Expected)
	}
	if f.Gaps != 0 || f.OutOfOrder != 0 || f.Duplicates != 0 || !f.Sustained || f.DeliveredPct != 100 || f.Polled != polledWant(5) {
		t.Errorf("per-message accounting %+v, want everything in order", f)
	}
	if res.Latency.Count != res.Messages {
		t.Errorf("%d latencies for %d deliveries", res.Latency.Count, res.Messages)
	}
	if f.CPUWait == nil || f.CPUWait.Load < 0 {
		t.Errorf("no CPU wait for the load tool: %+v", f.CPUWait)
	}
}

func TestFanoutNATSNotANATSServer(t *testing.T) {
	s := startServer(t, serverOpts{}) // msgnet's protocol: no INFO
	_, err := Run(t.Context(), Config{Mode: ModeFanout, Proto: ProtoNATS, Addr: s.addr(), Conns: 1,
		Duration: 100 * time.Millisecond, DialTimeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "NATS") {
		t.Fatalf("Run against a msgnet server with proto nats: %v, want a NATS handshake error", err)
	}
}

func TestProtoValidation(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Mode: ModeFanout, Proto: "mqtt"}, "unknown protocol"},
		{Config{Mode: ModeThroughput, Proto: ProtoNATS}, "fanout only"},
		{Config{Mode: ModeFanout, Proto: ProtoNATS, Group: "a b"}, "NATS subject"},
		{Config{Mode: ModeFanout, Proto: ProtoNATS, Group: "a.*"}, "NATS subject"},
	} {
		tc.cfg.Addr = "127.0.0.1:1"
		err := tc.cfg.WithDefaults().Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
	if err := (Config{Mode: ModeFanout, Proto: ProtoNATS, Addr: "x:1", Group: "bench.fan"}).WithDefaults().Validate(); err != nil {
		t.Errorf("a valid nats fanout: %v", err)
	}
}

func TestNATSReader(t *testing.T) {
	stream := "INFO {\"server_id\":\"x\"}\r\n" +
		"PING\r\n" +
		"MSG bench 1 5\r\nhello\r\n" +
		"MSG bench 1 _INBOX.r 4\r\na\r\nb\r\n" + // a reply subject; a payload with CRLF in it
		"+OK\r\n" +
		"MSG bench 1 0\r\n\r\n" +
		"PONG\r\n" +
		"-ERR 'Slow Consumer'\r\n"
	type op struct {
		op  natsOp
		arg string
	}
	want := []op{{natsINFO, `{"server_id":"x"}`}, {natsPING, ""}, {natsMSG, "hello"}, {natsMSG, "a\r\nb"},
		{natsOK, ""}, {natsMSG, ""}, {natsPONG, ""}, {natsERR, "'Slow Consumer'"}}
	// Whole, and one byte per read (every split of a line and a payload).
	for _, r := range []io.Reader{strings.NewReader(stream), iotest.OneByteReader(strings.NewReader(stream))} {
		rd := newNATSReader(r, 1<<20)
		rd.buf = make([]byte, 8) // small, so that it moves and grows
		for i, w := range want {
			o, arg, err := rd.next()
			if err != nil || o != w.op || string(arg) != w.arg {
				t.Fatalf("op %d: %v %q %v, want %v %q", i, o, arg, err, w.op, w.arg)
			}
		}
		if _, _, err := rd.next(); err != io.EOF {
			t.Errorf("at the end: %v, want EOF", err)
		}
	}
	for _, bad := range []string{"MSG bench 1 x\r\n", "MSG bench 1 3\r\nabcd\r\n", "HELLO\r\n", "\x00\x01\x02\r\n"} {
		rd := newNATSReader(strings.NewReader(bad), 1<<20)
		if _, _, err := rd.next(); !errors.Is(err, errNATSProto) {
			t.Errorf("%q: %v, want a protocol error", bad, err)
		}
	}
	rd := newNATSReader(strings.NewReader("MSG bench 1 2000\r\n"), 1000)
	if _, _, err := rd.next(); err == nil || !strings.Contains(err.Error(), "above the limit") {
		t.Errorf("a MSG above the limit: %v", err)
	}
	rd = newNATSReader(strings.NewReader("MSG bench 1 10\r\nabc"), 1000)
	if _, _, err := rd.next(); err != io.ErrUnexpectedEOF {
		t.Errorf("a MSG cut short: %v, want unexpected EOF", err)
	}
}

func TestAppendNATSPub(t *testing.T) {
	got := appendNATSPub([]byte("x"), "bench", []byte("GROUP:bench:1:2"))
	if want := "xPUB bench 15\r\nGROUP:bench:1:2\r\n"; string(got) != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestNATSPingAnswered checks that a receiver answers the server's PING
// while it waits for messages, as a NATS server expects of its clients.
func TestNATSPingAnswered(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &client{nc: a, nats: &natsConn{rd: newNATSReader(a, 1<<20)}}
	go func() {
		b.Write([]byte("PING\r\n"))
		buf := make([]byte, 6)
		if _, err := io.ReadFull(b, buf); err != nil || !bytes.Equal(buf, []byte("PONG\r\n")) {
			b.Write([]byte("-ERR 'no pong'\r\n"))
			return
		}
		b.Write([]byte("MSG s 1 2\r\nok\r\n"))
	}()
	p, err := c.natsNextMsg()
	if err != nil || string(p) != "ok" {
		t.Fatalf("natsNextMsg: %q %v", p, err)
	}
}
