package msgnet_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

// WithCompressionThreshold: payloads below it go out as they are, larger
// ones compressed (flag 0x01), when the peer asked for compression.
func TestCompressionThreshold(t *testing.T) {
	srv, addr := startServer(t, msgnet.WithCompressionThreshold(100))
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.Send(msg) })
	r := dialRaw(t, addr)
	r.send(frame.KindControl, `{"op":"hello","client_id":"z","compression":["s2"]}`)
	r.expect(frame.KindControl)
	for _, tc := range []struct {
		size       int
		compressed bool
	}{{99, false}, {100, true}, {5000, true}} {
		r.send(frame.KindData, strings.Repeat("a", tc.size))
		r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		f, err := r.r.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Flags&frame.FlagCompressed != 0; got != tc.compressed {
			t.Fatalf("a %d-byte echo compressed=%v, want %v with a threshold of 100", tc.size, got, tc.compressed)
		}
	}
}

// The options both sides share work on a client too: its size limit
// refuses a large send, and its logger hears the server's ERROR frames.
func TestClientSharedOptions(t *testing.T) {
	_, addr := echoServer(t)
	var logs syncBuffer
	c := msgnet.NewClient("c",
		msgnet.WithMessageSizeLimit(200), // ERROR frames must still fit
		msgnet.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Connect(ctx, addr); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Send(make([]byte, 201)); !errors.Is(err, msgnet.ErrMessageTooLarge) {
		t.Fatalf("a 201-byte send with a 200-byte limit: %v", err)
	}
	if err := c.SendRaw(frame.Append(nil, frame.Kind(0x77), 0, nil)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the client to log the server's ERROR", func() bool {
		return strings.Contains(logs.String(), "server reported an error") && strings.Contains(logs.String(), "unknown_type")
	})
}

// A client's queue bound: a server that never reads fills it, and a send
// past it fails with ErrQueueFull.
func TestClientSendQueueBytes(t *testing.T) {
	addr := stuckServer(t, true)
	c := msgnet.NewClient("c", msgnet.WithSendQueueBytes(64<<10), msgnet.WithHeartbeat(0, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Connect(ctx, addr); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 8<<10)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := c.Send(msg)
		if errors.Is(err, msgnet.ErrQueueFull) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the queue bound never refused a send to a server that does not read")
		}
	}
}

// WithConnectTimeout bounds each attempt a reconnecting client makes by
// itself: against a server that accepts and never answers, Connect gives
// up after its attempts, each cut at the timeout, not at the default 5s.
func TestConnectTimeoutBoundsAttempts(t *testing.T) {
	addr := stuckServer(t, false)
	c := msgnet.NewClient("c", msgnet.WithConnectTimeout(100*time.Millisecond),
		msgnet.WithReconnect(10*time.Millisecond, 10*time.Millisecond, 3))
	start := time.Now()
	err := c.Connect(context.Background(), addr)
	if err == nil {
		c.Close()
		t.Fatal("connected to a server that never answers")
	}
	// Three attempts of 100 ms and two short waits: far below one attempt
	// at the default timeout.
	if took := time.Since(start); took > 4*time.Second {
		t.Fatalf("Connect took %v: the connect timeout did not bound the attempts", took)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect: %v, want the attempts' deadline", err)
	}
}

// With WithReconnect the first connection is retried like a lost one: a
// client started before its server connects once the server is up.
func TestConnectWaitsForLateServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there yet
	c := msgnet.NewClient("early", msgnet.WithReconnect(20*time.Millisecond, 100*time.Millisecond, 0))
	connected := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() { connected <- c.Connect(ctx, addr) }()
	// Let a few attempts fail before the server comes up.
	time.Sleep(150 * time.Millisecond)
	srv := msgnet.NewServer("late")
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.Send(msg) })
	if err := srv.Start(addr); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	if err := recv(t, connected, "Connect to return"); err != nil {
		t.Fatalf("Connect to a server that started late: %v", err)
	}
	defer c.Close()
	got := make(chan []byte, 1)
	c.OnMessage(func(m []byte) { got <- bytes.Clone(m) })
	c.SendString("hello")
	if m := recv(t, got, "the echo"); string(m) != "hello" {
		t.Fatalf("got %q", m)
	}
}

// A refusal that retrying cannot mend ends Connect at once, reconnect or
// not.
func TestConnectStopsOnPermanentRefusal(t *testing.T) {
	_, addr := echoServer(t, msgnet.WithAuthKey([]byte("0123456789abcdef0123")), msgnet.WithAuthFailureDelay(time.Millisecond))
	c := msgnet.NewClient("c", msgnet.WithAuthKey([]byte("wrong key, wrong key")),
		msgnet.WithReconnect(10*time.Millisecond, 10*time.Millisecond, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Connect(ctx, addr); !errors.Is(err, &msgnet.ProtocolError{Code: msgnet.CodeAuthFailed}) {
		t.Fatalf("Connect with a wrong key: %v, want auth_failed at once", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Connect retried a wrong key until its context ended")
	}
}

// stuckServer accepts connections and never reads them; with welcome set it
// first answers the hello, so a client connects and then its sends pile up.
func stuckServer(t *testing.T, welcome bool) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, nc)
			if welcome {
				fr := frame.NewReader(nc, 1<<20)
				if _, err := fr.ReadFrame(); err == nil {
					frame.WriteFrame(nc, frame.KindControl, 0, []byte(`{"op":"welcome","session_id":"x","server_id":"stuck","max_message_size":1048576,"idle_timeout_ms":0}`))
				}
			}
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		for _, nc := range conns {
			nc.Close()
		}
	})
	return l.Addr().String()
}
