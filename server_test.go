package msgnet_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

// 100 clients each send 1,000 numbered messages and get every echo back,
// in order, none lost.
func TestEchoManyClientsInOrder(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		const clients, perClient = 100, 1000
		_, addr := echoServer(t, opts...)
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for c := 0; c < clients; c++ {
			wg.Add(1)
			go func(c int) {
				defer wg.Done()
				next := 0
				done := make(chan struct{})
				cl := msgnet.NewClient(fmt.Sprintf("client_%03d", c))
				cl.OnMessage(func(msg []byte) {
					if got := int(binary.BigEndian.Uint64(msg)); got != next {
						errs <- fmt.Errorf("client %d: got message %d, want %d", c, got, next)
					}
					next++
					if next == perClient {
						close(done)
					}
				})
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := cl.Connect(ctx, addr); err != nil {
					errs <- err
					return
				}
				defer cl.Close()
				for i := 0; i < perClient; i++ {
					if err := cl.Send(seqMsg(i)); err != nil {
						errs <- fmt.Errorf("client %d send %d: %w", c, i, err)
						return
					}
				}
				select {
				case <-done:
				case <-ctx.Done():
					errs <- fmt.Errorf("client %d: %d of %d echoes arrived", c, next, perClient)
				}
			}(c)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
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

func TestOversizedFrameRefusedFromHeader(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		var got int
		var mu sync.Mutex
		srv, addr := startServer(t, append(opts, msgnet.WithMessageSizeLimit(1024))...)
		srv.OnMessage(func(*msgnet.Session, []byte) { mu.Lock(); got++; mu.Unlock() })
		r := dialRaw(t, addr)
		r.hello("big")
		// Only the header of a 1 GiB frame is sent: the server must answer
		// from the header alone, not wait for (or buffer) the payload.
		r.write(frame.AppendHeader(nil, frame.KindData, 0, 1<<30))
		r.expectError(frame.CodeMessageTooLarge)
		if reason := r.expect(frame.KindDisconnect); len(reason) == 0 {
			t.Fatal("DISCONNECT without a reason")
		}
		r.expectEOF()
		mu.Lock()
		defer mu.Unlock()
		if got != 0 {
			t.Fatalf("handler saw %d messages", got)
		}
	})
}

func TestBadFramesRejected(t *testing.T) {
	cases := map[string][]byte{
		"bad magic":   []byte("XSGI\x00\x00\x00\x0c\x00\x10hi"),
		"length < 10": []byte("MSGI\x00\x00\x00\x09\x00\x10"),
		"length 0":    []byte("MSGI\x00\x00\x00\x00\x00\x10"),
	}
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		_, addr := echoServer(t, opts...)
		for name, in := range cases {
			t.Run(name, func(t *testing.T) {
				r := dialRaw(t, addr)
				r.send(frame.KindData, "first") // binary mode from here on
				if got := r.expect(frame.KindData); string(got) != "first" {
					t.Fatalf("echo %q", got)
				}
				r.write(in)
				r.expectError(frame.CodeBadFrame)
				r.expect(frame.KindDisconnect)
				r.expectEOF()
			})
		}
	})
}

func TestUnknownKindAndFlagsAndControl(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		_, addr := echoServer(t, opts...)
		r := dialRaw(t, addr)
		r.hello("c1")
		r.send(frame.Kind(0x77), "?")
		r.expectError(frame.CodeUnknownType)
		r.write(frame.Append(nil, frame.KindData, frame.FlagCompressed, []byte("x")))
		r.expectError(frame.CodeUnknownType)
		r.send(frame.KindControl, `not json`)
		r.expectError(frame.CodeBadControl)
		r.send(frame.KindControl, `{"op":"frobnicate"}`)
		r.expectError(frame.CodeBadControl)
		r.send(frame.KindControl, `{"op":"hello","client_id":"again"}`)
		r.expectError(frame.CodeBadControl)
		// A received ERROR is never answered, HEARTBEAT does nothing, and
		// the session goes on.
		r.send(frame.KindError, `{"code":"x","message":"y"}`)
		r.send(frame.KindHeartbeat, "")
		r.send(frame.KindPing, "ping-payload")
		if got := r.expect(frame.KindPong); string(got) != "ping-payload" {
			t.Fatalf("PONG carried %q", got)
		}
		r.send(frame.KindData, "still here")
		if got := r.expect(frame.KindData); string(got) != "still here" {
			t.Fatalf("echo %q", got)
		}
	})
}

func TestIdleTimeout(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := echoServer(t, append(opts, msgnet.WithIdleTimeout(200*time.Millisecond))...)
		reasons := make(chan error, 4)
		srv.OnDisconnect(func(_ *msgnet.Session, reason error) { reasons <- reason })

		r := dialRaw(t, addr)
		r.hello("idle")
		if got := string(r.expect(frame.KindDisconnect)); got != "idle timeout" {
			t.Fatalf("DISCONNECT %q", got)
		}
		r.expectEOF()
		if reason := <-reasons; !errors.Is(reason, msgnet.ErrIdleTimeout) {
			t.Fatalf("reason %v", reason)
		}

		// A connection that never sends a byte is closed without a word.
		silent := dialRaw(t, addr)
		silent.expectEOF()

		// Text mode: closed without writing.
		txt := dialRaw(t, addr)
		txt.write([]byte("hi\n"))
		line, err := bufio.NewReader(txt.nc).ReadString('\n')
		if line != "hi\n" || err != nil {
			t.Fatalf("text echo %q %v", line, err)
		}
		waitFor(t, "text session closed", func() bool { return srv.ConnectionCount() == 0 })
	})
}

func TestTextMode(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, append(opts, msgnet.WithMessageSizeLimit(16))...)
		srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.SendString("Echo: " + string(msg)) })

		r := dialRaw(t, addr)
		br := bufio.NewReader(r.nc)
		r.write([]byte("hello\r\nworld\n\nlast"))
		for _, want := range []string{"Echo: hello\n", "Echo: world\n", "Echo: \n"} {
			r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if got, err := br.ReadString('\n'); got != want || err != nil {
				t.Fatalf("got %q %v, want %q", got, err, want)
			}
		}
		// An unterminated last line at the end of the stream is a message.
		r.nc.(*net.TCPConn).CloseWrite()
		if got, err := br.ReadString('\n'); got != "Echo: last\n" || err != nil {
			t.Fatalf("last line: got %q %v", got, err)
		}

		// A line over the limit: ERROR line, then close.
		r2 := dialRaw(t, addr)
		br2 := bufio.NewReader(r2.nc)
		r2.write([]byte("ok\n" + strings.Repeat("x", 40)))
		r2.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if got, _ := br2.ReadString('\n'); got != "Echo: ok\n" {
			t.Fatalf("got %q", got)
		}
		if got, _ := br2.ReadString('\n'); got != "ERROR message_too_large\n" {
			t.Fatalf("got %q, want the ERROR line", got)
		}
		if rest, err := br2.ReadString('\n'); err == nil {
			t.Fatalf("connection still open, read %q", rest)
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

// Shutdown writes every frame queued before it, then DISCONNECT.
func TestShutdownDeliversQueuedFrames(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		const n = 20000
		srv := msgnet.NewServer("s", append(opts, msgnet.WithSendQueueBytes(64<<20))...)
		queued := make(chan struct{})
		srv.OnConnect(func(s *msgnet.Session) {
			for i := 0; i < n; i++ {
				if err := s.Send(seqMsg(i)); err != nil {
					t.Errorf("send %d: %v", i, err)
				}
			}
			close(queued)
		})
		if err := srv.Start("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		r := dialRaw(t, srv.Addr().String())
		r.hello("c")
		<-queued
		stopped := make(chan error)
		go func() { stopped <- srv.Shutdown(context.Background()) }()
		for i := 0; i < n; i++ {
			p := r.expect(frame.KindData)
			if got := binary.BigEndian.Uint64(p); got != uint64(i) {
				t.Fatalf("frame %d carried %d", i, got)
			}
		}
		if got := string(r.expect(frame.KindDisconnect)); got != "server shutting down" {
			t.Fatalf("DISCONNECT %q", got)
		}
		r.nc.Close()
		if err := <-stopped; err != nil {
			t.Fatal(err)
		}
		if srv.IsRunning() {
			t.Fatal("still running after Shutdown")
		}
	})
}

func TestHandlerPanicClosesOnlyItsSession(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, opts...)
		srv.OnMessage(func(s *msgnet.Session, msg []byte) {
			if string(msg) == "boom" {
				panic("handler exploded")
			}
			s.Send(msg)
		})
		reasons := make(chan error, 2)
		srv.OnDisconnect(func(_ *msgnet.Session, reason error) { reasons <- reason })
		ok := dialRaw(t, addr)
		ok.hello("ok")
		bad := dialRaw(t, addr)
		bad.hello("bad")
		bad.send(frame.KindData, "boom")
		if got := string(bad.expect(frame.KindDisconnect)); !strings.Contains(got, "handler panic") {
			t.Fatalf("DISCONNECT %q", got)
		}
		bad.expectEOF()
		var hp *msgnet.HandlerPanicError
		if reason := <-reasons; !errors.As(reason, &hp) {
			t.Fatalf("reason %v", reason)
		}
		ok.send(frame.KindData, "fine")
		if got := ok.expect(frame.KindData); string(got) != "fine" {
			t.Fatalf("other session got %q", got)
		}
	})
}

func TestSendQueueBoundReturnsErrQueueFull(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, append(opts, msgnet.WithSendQueueBytes(64<<10))...)
		sessions := make(chan *msgnet.Session, 1)
		srv.OnConnect(func(s *msgnet.Session) { sessions <- s })
		r := dialRaw(t, addr) // never reads
		r.hello("slow")
		s := <-sessions
		msg := make([]byte, 1000)
		var err error
		for i := 0; i < 1e6 && err == nil; i++ {
			err = s.Send(msg)
		}
		if !errors.Is(err, msgnet.ErrQueueFull) {
			t.Fatalf("got %v, want ErrQueueFull", err)
		}
		if err := s.Send(make([]byte, 2<<20)); !errors.Is(err, msgnet.ErrMessageTooLarge) {
			t.Fatalf("oversized send: %v", err)
		}
	})
}

func TestSessionInfoAndDisconnect(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, opts...)
		type info struct {
			id, client, remote string
			port               int
			connected          bool
		}
		infos := make(chan info, 1)
		reasons := make(chan error, 1)
		srv.OnMessage(func(s *msgnet.Session, msg []byte) {
			s.SetData("last", string(msg))
			v, _ := s.Data("last")
			infos <- info{s.ID(), s.ClientID(), s.RemoteAddr(), s.RemotePort(), s.IsConnected()}
			if v == "bye" {
				s.Disconnect("we are done")
			}
		})
		srv.OnDisconnect(func(_ *msgnet.Session, reason error) { reasons <- reason })
		c := msgnet.NewClient("client_42")
		gone := make(chan error, 1)
		c.OnDisconnect(func(reason error) { gone <- reason })
		if err := c.Connect(context.Background(), addr); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SendString("bye")
		in := <-infos
		local := c.SessionID()
		if in.id != local || in.client != "client_42" || in.remote != "127.0.0.1" || in.port == 0 || !in.connected {
			t.Fatalf("session info %+v (client sees session %q)", in, local)
		}
		var de *msgnet.DisconnectError
		if reason := <-gone; !errors.As(reason, &de) || de.Reason != "we are done" || !de.Remote {
			t.Fatalf("client got reason %v", reason)
		}
		if reason := <-reasons; !errors.As(reason, &de) || de.Reason != "we are done" {
			t.Fatalf("server got reason %v", reason)
		}
	})
}

func TestClientDisconnectReasonReachesServer(t *testing.T) {
	srv, addr := startServer(t)
	reasons := make(chan error, 1)
	srv.OnDisconnect(func(_ *msgnet.Session, reason error) { reasons <- reason })
	c := msgnet.NewClient("c")
	if err := c.Connect(context.Background(), addr); err != nil {
		t.Fatal(err)
	}
	rtt, err := c.Ping(context.Background())
	if err != nil || rtt <= 0 {
		t.Fatalf("ping: %v %v", rtt, err)
	}
	c.Close()
	var de *msgnet.DisconnectError
	if reason := <-reasons; !errors.As(reason, &de) || de.Reason != "client closed" || !de.Remote {
		t.Fatalf("server got %v", reason)
	}
	if err := c.SendString("x"); !errors.Is(err, msgnet.ErrClientClosed) {
		t.Fatalf("send after close: %v", err)
	}
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
			c.Read(make([]byte, 64)) // the hello; never answered
			c.Read(make([]byte, 64)) // returns when the client gives up
		}
	}()
	defer func() { <-served }()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := msgnet.NewClient("c").Connect(ctx, l.Addr().String()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want context.DeadlineExceeded", err)
	}
}

func TestServeReturnsErrServerClosed(t *testing.T) {
	srv := msgnet.NewServer("s")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error)
	go func() { served <- srv.Serve(l) }()
	waitFor(t, "running", srv.IsRunning)
	c := msgnet.NewClient("c")
	if err := c.Connect(context.Background(), l.Addr().String()); err != nil {
		t.Fatal(err)
	}
	gone := make(chan error, 1)
	c.OnDisconnect(func(reason error) { gone <- reason })
	srv.Close()
	if err := <-served; !errors.Is(err, msgnet.ErrServerClosed) {
		t.Fatalf("Serve returned %v", err)
	}
	<-gone
	srv.Wait()
	c.Close()
}

// A server fed only through ServeConn (as the WebSocket and HTTP/2
// transports feed it) still runs its sweeper: idle timeouts hold.
func TestServeConnOnlyServerEnforcesTimeouts(t *testing.T) {
	srv := msgnet.NewServer("pipes", msgnet.WithIdleTimeout(150*time.Millisecond))
	defer srv.Close()
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.Send(msg) })
	client, server := net.Pipe()
	defer client.Close()
	srv.ServeConn(server)
	if !srv.IsRunning() {
		t.Fatal("a server serving a connection does not say it is running")
	}
	r := &raw{t: t, nc: client, r: frame.NewReader(client, 1<<20)}
	r.hello("piped")
	if got := string(r.expect(frame.KindDisconnect)); got != "idle timeout" {
		t.Fatalf("DISCONNECT %q", got)
	}
}
