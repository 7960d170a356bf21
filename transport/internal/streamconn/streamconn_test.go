package streamconn

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const long = 10 * time.Second

func done(ctx context.Context) bool { return ctx.Err() != nil }

func TestDeadline(t *testing.T) {
	d := NewDeadline(context.Background())
	defer d.Stop()
	if done(d.Context()) {
		t.Fatal("done without a deadline")
	}
	d.Set(time.Now().Add(long))
	ctx := d.Context()
	d.Set(time.Now().Add(2 * long)) // moving it keeps the same context
	if d.Context() != ctx || done(ctx) {
		t.Fatal("moved deadline ended or replaced the context")
	}
	d.Set(time.Unix(1, 0)) // the past: ends the waiting context at once
	if !done(ctx) {
		t.Fatal("a past deadline did not end the context")
	}
	d.Set(time.Time{}) // after it fired, a new deadline gets a fresh context
	if done(d.Context()) {
		t.Fatal("cleared deadline still done")
	}
	d.Set(time.Now().Add(10 * time.Millisecond))
	select {
	case <-d.Context().Done():
	case <-time.After(long):
		t.Fatal("deadline did not fire")
	}
	// A stopped timer that fired late must not end a later context.
	for range 100 {
		d.Set(time.Now().Add(time.Microsecond))
		d.Set(time.Now().Add(long))
		if c := d.Context(); done(c) {
			// The first deadline may have fired before the second Set:
			// then the second Set started a fresh context that must stay.
			t.Fatal("extended deadline ended")
		}
	}
}

// chunks is a source that yields its chunks one per Read, then err.
type chunks struct {
	parts [][]byte
	err   error
	reads atomic.Int32
}

func (c *chunks) Read(p []byte) (int, error) {
	c.reads.Add(1)
	if len(c.parts) == 0 {
		return 0, c.err
	}
	n := copy(p, c.parts[0])
	c.parts[0] = c.parts[0][n:]
	if len(c.parts[0]) == 0 {
		c.parts = c.parts[1:]
	}
	return n, nil
}

func TestReaderInOrderThenError(t *testing.T) {
	boom := errors.New("boom")
	src := &chunks{parts: [][]byte{[]byte("hello "), []byte("world")}, err: boom}
	r := NewReader(src, 4, NewDeadline(context.Background()))
	var got []byte
	buf := make([]byte, 3)
	var err error
	for {
		var n int
		n, err = r.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
	}
	if string(got) != "hello world" || err != boom {
		t.Fatalf("got %q, %v", got, err)
	}
	<-r.Ended()
}

// blocking is a source whose Read waits until released.
type blocking struct {
	release chan struct{}
	reads   atomic.Int32
}

func (b *blocking) Read(p []byte) (int, error) {
	b.reads.Add(1)
	<-b.release
	return 0, io.EOF
}

func TestReaderDeadlineAndClose(t *testing.T) {
	src := &blocking{release: make(chan struct{})}
	dl := NewDeadline(context.Background())
	r := NewReader(src, 16, dl)
	buf := make([]byte, 8)

	dl.Set(time.Now().Add(10 * time.Millisecond))
	if _, err := r.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past deadline: %v", err)
	}
	// Expired deadline: fails at once; extended: waits again.
	if _, err := r.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with an expired deadline: %v", err)
	}
	dl.Set(time.Time{})
	woke := make(chan error, 1)
	go func() {
		_, err := r.Read(buf)
		woke <- err
	}()
	dl.Set(time.Unix(1, 0))
	if err := <-woke; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read woken by a past deadline: %v", err)
	}
	dl.Set(time.Time{})
	go func() {
		_, err := r.Read(buf)
		woke <- err
	}()
	r.Close(net.ErrClosed)
	if err := <-woke; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read woken by Close: %v", err)
	}
	if _, err := r.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close: %v", err)
	}
	close(src.release)
	<-r.Ended()
}

// TestReaderBackpressure: the pump holds at most one chunk that Read has
// not taken.
func TestReaderBackpressure(t *testing.T) {
	src := &chunks{parts: [][]byte{[]byte("a"), []byte("b"), []byte("c"), []byte("d")}, err: io.EOF}
	r := NewReader(src, 1, NewDeadline(context.Background()))
	buf := make([]byte, 1)
	if n, err := r.Read(buf); n != 1 || err != nil || buf[0] != 'a' {
		t.Fatalf("first read: %d %q %v", n, buf, err)
	}
	// The pump may have read "b" and wait to hand it over; never "c".
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) {
		if n := src.reads.Load(); n > 2 {
			t.Fatalf("source read %d times with one chunk taken", n)
		}
		time.Sleep(time.Millisecond)
	}
	r.Close(net.ErrClosed)
	<-r.Ended()
}
