package msgnet_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

// DATA held for a session whose handshake fails is never written to it: a
// server that requires encryption must not leak a broadcast in clear.
func TestHeldDataNotLeakedToRefusedPeer(t *testing.T) {
	srv, addr := startServer(t, msgnet.WithEncryption([]byte("0123456789abcdef0123456789abcdef")))
	r := dialRaw(t, addr)
	r.write(frame.Append(nil, frame.KindControl, 0, nil)[:4]) // "MSGI": binary mode, handshake not done
	waitFor(t, "session registered", func() bool { return srv.ConnectionCount() == 1 })
	srv.Broadcast([]byte("SECRET-BROADCAST"))
	r.write(frame.Append(nil, frame.KindControl, 0, []byte(`{"op":"hello","client_id":"plain"}`))[4:])
	r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var all bytes.Buffer
	buf := make([]byte, 4096)
	for {
		n, err := r.nc.Read(buf)
		all.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if bytes.Contains(all.Bytes(), []byte("SECRET")) {
		t.Fatalf("a refused peer received held DATA: %q", all.Bytes())
	}
	if !bytes.Contains(all.Bytes(), []byte(msgnet.CodeEncryptionRequired)) {
		t.Fatalf("no encryption_required: %q", all.Bytes())
	}
}

func TestMaxConnectionsRefusesWithServerFull(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := echoServer(t, append(opts, msgnet.WithMaxConnections(3))...)
		var connects int
		var mu sync.Mutex
		srv.OnConnect(func(*msgnet.Session) { mu.Lock(); connects++; mu.Unlock() })
		ctx := context.Background()
		var clients []*msgnet.Client
		for i := 0; i < 3; i++ {
			c := msgnet.NewClient(fmt.Sprint("c", i))
			if err := c.Connect(ctx, addr); err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			clients = append(clients, c)
		}
		extra := msgnet.NewClient("extra")
		err := extra.Connect(ctx, addr)
		if !errors.Is(err, msgnet.ErrServerFull) {
			t.Fatalf("4th client: got %v, want server_full", err)
		}
		// A raw peer sees the ERROR then DISCONNECT, as frames.
		r := dialRaw(t, addr)
		r.expectError(frame.CodeServerFull)
		r.expect(frame.KindDisconnect)
		r.expectEOF()
		// The others go on.
		for i, c := range clients {
			if _, err := c.Ping(ctx); err != nil {
				t.Fatalf("client %d after refusal: %v", i, err)
			}
		}
		if srv.ConnectionCount() != 3 {
			t.Fatalf("ConnectionCount = %d, want 3", srv.ConnectionCount())
		}
		mu.Lock()
		defer mu.Unlock()
		if connects != 3 {
			t.Fatalf("connect handler ran %d times, want 3 (never for refused)", connects)
		}
	})
}

// Messages sent to a session before its mode is known wait, and are
// written in the mode it turns out to speak.
func TestQueuedBeforeModeKnown(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, opts...)
		srv.OnMessage(func(s *msgnet.Session, msg []byte) {})
		for _, mode := range []string{"text", "binary"} {
			t.Run(mode, func(t *testing.T) {
				r := dialRaw(t, addr)
				waitFor(t, "session registered", func() bool { return srv.ConnectionCount() == 1 })
				if d := srv.Broadcast([]byte("early")); d.Queued != 1 || d.Failed != nil {
					t.Fatalf("broadcast: %+v", d)
				}
				if mode == "text" {
					r.write([]byte("x\n"))
					r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
					if got, err := bufio.NewReader(r.nc).ReadString('\n'); got != "early\n" || err != nil {
						t.Fatalf("got %q %v", got, err)
					}
				} else {
					r.send(frame.KindHeartbeat, "")
					if got := r.expect(frame.KindData); string(got) != "early" {
						t.Fatalf("got %q", got)
					}
				}
				r.nc.Close()
				waitFor(t, "session gone", func() bool { return srv.ConnectionCount() == 0 })
			})
		}
	})
}

func TestConnectErrors(t *testing.T) {
	// Nothing listening.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	if err := msgnet.NewClient("c").Connect(context.Background(), addr); err == nil {
		t.Fatal("connect to a closed port succeeded")
	}
	// A listener that never answers the hello: the context's deadline.
	l, _ = net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	served := make(chan struct{})
	go func() {
		defer close(served)
		c, err := l.Accept()
		if err == nil {
			defer c.Close()
			io.Copy(io.Discard, c) // the hello, never answered, until the client gives up
		}
	}()
	defer func() { <-served }()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := msgnet.NewClient("c").Connect(ctx, l.Addr().String()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want context.DeadlineExceeded", err)
	}
}

// A session counted by ConnectionCount is already in the registry: a
// caller who waits for the count and then broadcasts reaches it.
func TestCountedSessionIsRegistered(t *testing.T) {
	srv, addr := startServer(t)
	for i := 1; i <= 200; i++ {
		dialRaw(t, addr)
		deadline := time.Now().Add(5 * time.Second)
		for srv.ConnectionCount() < i { // spun, not slept: the window is short
			if time.Now().After(deadline) {
				t.Fatalf("connection %d never counted", i)
			}
			runtime.Gosched()
		}
		if n := len(srv.Sessions()); n < i {
			t.Fatalf("ConnectionCount %d but %d sessions in the registry", i, n)
		}
	}
}
