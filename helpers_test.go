package msgnet_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(farmEnv) != "" {
		os.Exit(runFarm())
	}
	goleak.VerifyTestMain(m)
}

// engines runs a test with parked connections, with a goroutine per
// connection, and with handlers on the event loops: the three read paths
// must behave the same.
func engines(t *testing.T, f func(t *testing.T, opts ...msgnet.Option)) {
	t.Run("parked", func(t *testing.T) { f(t, msgnet.WithEngine(msgnet.EngineParked)) })
	t.Run("goroutine", func(t *testing.T) { f(t, msgnet.WithEngine(msgnet.EngineGoroutine)) })
	t.Run("loop", func(t *testing.T) { f(t, msgnet.WithEngine(msgnet.EngineLoop)) })
	t.Run("blocking-loop", func(t *testing.T) {
		f(t, msgnet.WithEngine(msgnet.EngineLoopBlocking))
	})
}

// startServer serves on a loopback port and stops the server when the test
// ends, checking that it stops cleanly.
func startServer(t testing.TB, opts ...msgnet.Option) (*msgnet.Server, string) {
	t.Helper()
	srv := msgnet.NewServer("test_server", opts...)
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
	return srv, srv.Addr().String()
}

func echoServer(t testing.TB, opts ...msgnet.Option) (*msgnet.Server, string) {
	srv, addr := startServer(t, opts...)
	srv.OnMessage(func(s *msgnet.Session, msg []byte) {
		if err := s.Send(msg); err != nil {
			t.Errorf("echo send: %v", err)
		}
	})
	return srv, addr
}

// raw is a hand-driven connection that speaks bytes, for testing what a
// server does with exactly the input a test chooses.
type raw struct {
	t  testing.TB
	nc net.Conn
	r  *frame.Reader
}

func dialRaw(t testing.TB, addr string) *raw {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &raw{t: t, nc: nc, r: frame.NewReader(nc, 16<<20)}
}

func (r *raw) write(b []byte) {
	r.t.Helper()
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

func (r *raw) send(kind frame.Kind, payload string) {
	r.t.Helper()
	r.write(frame.Append(nil, kind, 0, []byte(payload)))
}

func (r *raw) hello(id string) {
	r.t.Helper()
	r.send(frame.KindControl, `{"op":"hello","client_id":"`+id+`"}`)
	f := r.expect(frame.KindControl)
	if op, _ := frame.ControlOp(f); op != "welcome" {
		r.t.Fatalf("got %s, want welcome", f)
	}
}

// next reads one frame within a few seconds.
func (r *raw) next() (frame.Kind, []byte, error) {
	r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := r.r.ReadFrame()
	if err != nil {
		return 0, nil, err
	}
	return f.Kind, bytes.Clone(f.Payload), nil
}

func (r *raw) expect(kind frame.Kind) []byte {
	r.t.Helper()
	k, p, err := r.next()
	if err != nil {
		r.t.Fatalf("waiting for %v: %v", kind, err)
	}
	if k != kind {
		r.t.Fatalf("got %v %q, want %v", k, p, kind)
	}
	return p
}

func (r *raw) expectError(code string) {
	r.t.Helper()
	p := r.expect(frame.KindError)
	if e := frame.ParseError(p); e.Code != code {
		r.t.Fatalf("got ERROR %q, want %q", e.Code, code)
	}
}

// expectEOF checks that the server closes the connection.
func (r *raw) expectEOF() {
	r.t.Helper()
	k, p, err := r.next()
	if err == nil {
		r.t.Fatalf("got %v %q, want the connection closed", k, p)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		r.t.Fatalf("got %v, want EOF", err)
	}
}

func seqMsg(i int) []byte { return binary.BigEndian.AppendUint64(nil, uint64(i)) }

// waitFor polls cond until it holds or the deadline passes: for state that
// settles asynchronously (counts after a disconnect).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// recv receives from ch within a few seconds, or fails the test naming
// what it waited for: a bare receive would turn a lost message into the
// package's timeout, minutes later and without a clear message.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
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
