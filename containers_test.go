package msgnet_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/container"
	"github.com/msgnet/msgnet/frame"
)

// The seed's container server: user_login and data_update routed by
// message type, a response addressed back to the source.
func TestContainerRouting(t *testing.T) {
	srv, addr := startServer(t)
	srv.Handle("user_login", func(s *msgnet.Session, c *container.Container) {
		user, err := c.GetString("username")
		resp := c.Reply("response")
		resp.SourceID, resp.SourceSubID = "server", "main"
		if err != nil {
			resp.Add(container.String("status", "error"), container.String("error", err.Error()))
		} else {
			resp.Add(container.String("status", "success"), container.String("user", user),
				container.Int64("timestamp", time.Now().Unix()))
		}
		s.SendContainer(resp)
	})
	badPayloads := make(chan error, 4)
	srv.OnContainerError(func(_ *msgnet.Session, _ []byte, err error) { badPayloads <- err })

	replies := make(chan *container.Container, 4)
	c := msgnet.NewClient("client_01")
	c.OnContainer(func(ct *container.Container) { replies <- ct }, nil)
	protoErrs := make(chan *msgnet.ProtocolError, 4)
	c.OnError(func(e *msgnet.ProtocolError) { protoErrs <- e })
	if err := c.Connect(context.Background(), addr); err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	login := &container.Container{SourceID: "client_01", SourceSubID: "ui", TargetID: "server", MessageType: "user_login"}
	login.Add(container.String("username", "alice"), container.String("password", "pw"))
	if err := c.SendContainer(login); err != nil {
		t.Fatal(err)
	}
	resp := <-replies
	if resp.MessageType != "response" || resp.TargetID != "client_01" || resp.TargetSubID != "ui" || resp.SourceID != "server" {
		t.Fatalf("response header %+v", resp)
	}
	if st, _ := resp.GetString("status"); st != "success" {
		t.Fatalf("status %q", st)
	}
	if _, err := resp.GetInt64("timestamp"); err != nil {
		t.Fatalf("timestamp: %v", err)
	}

	// The same request in the JSON and C++ text forms is understood too.
	js, _ := login.Encode(container.JSON)
	c.Send(js)
	if st, _ := (<-replies).GetString("status"); st != "success" {
		t.Fatal("JSON request not answered")
	}
	txt, _ := login.Encode(container.Text)
	c.Send(txt)
	if st, _ := (<-replies).GetString("status"); st != "success" {
		t.Fatal("text request not answered")
	}

	// Garbage and an unrouted type reach the error path, never a panic,
	// and the session goes on.
	c.Send([]byte("\x01\xff\xff\xff\xff"))
	if e := <-protoErrs; e.Code != "bad_container" {
		t.Fatalf("ERROR %q", e.Code)
	}
	if err := <-badPayloads; err == nil {
		t.Fatal("error hook got nil")
	}
	c.SendContainer(&container.Container{MessageType: "data_update"})
	if e := <-protoErrs; e.Code != "bad_container" {
		t.Fatalf("ERROR %q", e.Code)
	}
	if err := <-badPayloads; !errors.Is(err, msgnet.ErrNoRoute) {
		t.Fatalf("unrouted: %v", err)
	}
	c.SendContainer(login)
	<-replies
}

// A hostile container payload over a raw socket: ERROR back, session lives.
func TestContainerHostilePayload(t *testing.T) {
	srv, addr := startServer(t)
	srv.OnContainer(func(s *msgnet.Session, c *container.Container) { s.SendContainer(c.Reply("ok")) })
	r := dialRaw(t, addr)
	r.hello("raw")
	// Version byte, then a header claiming a 2^60-byte string.
	r.send(frame.KindData, "\x01\xff\xff\xff\xff\xff\xff\xff\xff\x0f")
	r.expectError("bad_container")
	ok := &container.Container{MessageType: "ping"}
	b, _ := ok.Marshal()
	r.send(frame.KindData, string(b))
	got, err := container.Unmarshal(r.expect(frame.KindData))
	if err != nil || got.MessageType != "ok" {
		t.Fatalf("reply %v %v", got, err)
	}
}
