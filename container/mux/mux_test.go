package mux_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/container"
	"github.com/msgnet/msgnet/container/mux"
	"github.com/msgnet/msgnet/frame"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startServer(t *testing.T, m *mux.Mux) string {
	t.Helper()
	srv := msgnet.NewServer("mux_test")
	srv.OnMessage(m.ServeMessage)
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return srv.Addr().String()
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// The seed's container server: user_login routed by message type, a
// response addressed back to the source, in the encoding the peer used.
func TestRouting(t *testing.T) {
	m := mux.New()
	m.Handle("user_login", func(s *msgnet.Session, c *container.Container) {
		user, err := c.GetString("username")
		resp := c.Reply("response")
		resp.SourceID, resp.SourceSubID = "server", "main"
		if err != nil {
			resp.Add(container.String("status", "error"), container.String("error", err.Error()))
		} else {
			resp.Add(container.String("status", "success"), container.String("user", user),
				container.Int64("timestamp", time.Now().Unix()))
		}
		mux.Reply(s, resp)
	})
	badPayloads := make(chan error, 4)
	m.OnError(func(_ *msgnet.Session, _ []byte, err error) { badPayloads <- err })
	addr := startServer(t, m)

	replies := make(chan []byte, 4)
	c := msgnet.NewClient("client_01")
	c.OnMessage(func(msg []byte) { replies <- bytes.Clone(msg) })
	protoErrs := make(chan *msgnet.ProtocolError, 4)
	c.OnError(func(e *msgnet.ProtocolError) { protoErrs <- e })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Connect(ctx, addr); err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	login := &container.Container{SourceID: "client_01", SourceSubID: "ui", TargetID: "server", MessageType: "user_login"}
	login.Add(container.String("username", "alice"), container.String("password", "pw"))
	for _, f := range []container.Format{container.Binary, container.JSON, container.Text} {
		b, err := login.Encode(f)
		if err != nil {
			t.Fatal(err)
		}
		c.Send(b)
		raw := recv(t, replies, "the reply to a "+f.String()+" request")
		resp, got, err := mux.Decode(raw, container.DecodeOptions{})
		if err != nil || got != f {
			t.Fatalf("%s request: reply in %s (%v), want the same encoding", f, got, err)
		}
		if resp.MessageType != "response" || resp.TargetID != "client_01" || resp.TargetSubID != "ui" || resp.SourceID != "server" {
			t.Fatalf("response header %+v", resp)
		}
		if st, _ := resp.GetString("status"); st != "success" {
			t.Fatalf("status %q", st)
		}
	}

	// Garbage and an unrouted type reach the error path, never a panic,
	// and the session goes on.
	c.Send([]byte("\x01\xff\xff\xff\xff"))
	if e := recv(t, protoErrs, "ERROR bad_container"); e.Code != msgnet.CodeBadContainer {
		t.Fatalf("ERROR %q", e.Code)
	}
	if err := recv(t, badPayloads, "the error hook"); err == nil {
		t.Fatal("error hook got nil")
	}
	mux.SendClient(c, &container.Container{MessageType: "data_update"})
	if e := recv(t, protoErrs, "ERROR bad_container"); e.Code != msgnet.CodeBadContainer {
		t.Fatalf("ERROR %q", e.Code)
	}
	if err := recv(t, badPayloads, "the error hook"); !errors.Is(err, mux.ErrNoRoute) {
		t.Fatalf("unrouted: %v", err)
	}
	mux.SendClient(c, login)
	recv(t, replies, "a reply after the errors")
}

// A client decodes containers with ClientHandler; what does not decode goes
// to its error function.
func TestClientHandler(t *testing.T) {
	m := mux.New()
	m.HandleDefault(func(s *msgnet.Session, c *container.Container) {
		mux.Send(s, c.Reply("ok"))
		s.Send([]byte("not a container"))
	})
	addr := startServer(t, m)
	got, bad := make(chan *container.Container, 1), make(chan error, 1)
	c := msgnet.NewClient("c")
	c.OnMessage(mux.ClientHandler(func(ct *container.Container) { got <- ct }, func(_ []byte, err error) { bad <- err }))
	if err := c.Connect(context.Background(), addr); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mux.SendClient(c, &container.Container{MessageType: "ping"})
	if ct := recv(t, got, "the reply"); ct.MessageType != "ok" {
		t.Fatalf("got %q", ct.MessageType)
	}
	if err := recv(t, bad, "the error function"); err == nil {
		t.Fatal("nil error")
	}
}

// A hostile container payload over a raw socket: ERROR back, session lives.
func TestHostilePayload(t *testing.T) {
	m := mux.New()
	m.HandleDefault(func(s *msgnet.Session, c *container.Container) { mux.Send(s, c.Reply("ok")) })
	addr := startServer(t, m)
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	r := frame.NewReader(nc, 1<<20)
	// Version byte, then a header claiming a 2^60-byte string.
	frame.WriteFrame(nc, frame.KindData, 0, []byte("\x01\xff\xff\xff\xff\xff\xff\xff\xff\x0f"))
	f, err := r.ReadFrame()
	if err != nil || f.Kind != frame.KindError || frame.ParseError(f.Payload).Code != msgnet.CodeBadContainer {
		t.Fatalf("got %v %s %v, want ERROR bad_container", f.Kind, f.Payload, err)
	}
	b, _ := (&container.Container{MessageType: "ping"}).Marshal()
	frame.WriteFrame(nc, frame.KindData, 0, b)
	f, err = r.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := container.Unmarshal(f.Payload); err != nil || got.MessageType != "ok" {
		t.Fatalf("reply %v %v", got, err)
	}
}
