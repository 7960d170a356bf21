package msgnet_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

// A handler's oversized send on its own loop is refused with
// ErrMessageTooLarge, though it would fit the stage, and nothing of it goes
// out; the replies staged around it do, in order.
func TestStagingRefusesOversizedSend(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, append(opts, msgnet.WithMessageSizeLimit(1024))...)
		errs := make(chan error, 1)
		srv.OnMessage(func(s *msgnet.Session, msg []byte) {
			s.Send([]byte("before"))
			errs <- s.Send(make([]byte, 2000))
			s.Send([]byte("after"))
		})
		r := dialRaw(t, addr)
		r.hello("big")
		r.send(frame.KindData, "go")
		if err := <-errs; !errors.Is(err, msgnet.ErrMessageTooLarge) {
			t.Fatalf("oversized send: %v, want ErrMessageTooLarge", err)
		}
		for _, want := range []string{"before", "after"} {
			if got := r.expect(frame.KindData); string(got) != want {
				t.Fatalf("got %q, want %q", got, want)
			}
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
