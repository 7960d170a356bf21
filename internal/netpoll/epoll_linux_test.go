//go:build linux

package netpoll

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/msgnet/msgnet/internal/gid"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// report is one Readable call.
type report struct {
	hangup, carried bool
	owner           bool // the call ran on the goroutine Owner names
}

// target records its reports and asks for another turn as told.
type target struct {
	p     *Poller
	mu    sync.Mutex
	got   []report
	again int // how many more times to ask for another turn
	ch    chan report
}

func newTarget(p *Poller) *target { return &target{p: p, ch: make(chan report, 64)} }

func (t *target) Readable(now int64, hangup, carried bool) bool {
	r := report{hangup: hangup, carried: carried, owner: t.p.Owner() == gid.Current()}
	t.mu.Lock()
	t.got = append(t.got, r)
	more := t.again > 0
	if more {
		t.again--
	}
	t.mu.Unlock()
	t.ch <- r
	return more
}

func (t *target) next(tb testing.TB) report {
	tb.Helper()
	select {
	case r := <-t.ch:
		return r
	case <-time.After(5 * time.Second):
		tb.Fatal("no report")
		return report{}
	}
}

// none checks that no report comes: it waits a little, since the absence
// of an event can only be seen by waiting for it.
func (t *target) none(tb testing.TB) {
	tb.Helper()
	select {
	case r := <-t.ch:
		tb.Fatalf("unexpected report %+v", r)
	case <-time.After(50 * time.Millisecond):
	}
}

// running starts a poller of each kind and stops it when the test ends.
func running(t *testing.T, blocking bool) *Poller {
	t.Helper()
	p, err := New(blocking)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run() }()
	t.Cleanup(func() {
		p.Close()
		select {
		case err := <-done:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("Run returned %v, want ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not stop after Close")
		}
		p.Release()
	})
	return p
}

// pair is a connected pair of non-blocking stream sockets.
func pair(t *testing.T) (watched, peer int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

func drain(fd int) {
	var b [256]byte
	for {
		if n, err := unix.Read(fd, b[:]); n <= 0 || err != nil {
			return
		}
	}
}

func kinds(t *testing.T, f func(t *testing.T, blocking bool)) {
	t.Run("parking", func(t *testing.T) { f(t, false) })
	t.Run("blocking", func(t *testing.T) { f(t, true) })
}

// A one-shot registration reports once, then not again until Rearm,
// whatever arrives meanwhile; the report runs on the poller's goroutine.
func TestOneShot(t *testing.T) {
	kinds(t, func(t *testing.T, blocking bool) {
		p := running(t, blocking)
		fd, peer := pair(t)
		tg := newTarget(p)
		if err := p.Add(fd, tg, 1); err != nil {
			t.Fatal(err)
		}
		unix.Write(peer, []byte("a"))
		if r := tg.next(t); !r.owner || r.hangup || r.carried {
			t.Fatalf("report %+v", r)
		}
		unix.Write(peer, []byte("b"))
		tg.none(t)
		drain(fd)
		if err := p.Rearm(fd, 1); err != nil {
			t.Fatal(err)
		}
		unix.Write(peer, []byte("c"))
		tg.next(t)
	})
}

// An edge-triggered registration reports every new arrival without Rearm.
func TestEdge(t *testing.T) {
	kinds(t, func(t *testing.T, blocking bool) {
		p := running(t, blocking)
		fd, peer := pair(t)
		tg := newTarget(p)
		if err := p.AddEdge(fd, tg, 1); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			unix.Write(peer, []byte("x"))
			tg.next(t)
			drain(fd)
		}
	})
}

// The peer's close is reported with hangup set.
func TestHangup(t *testing.T) {
	kinds(t, func(t *testing.T, blocking bool) {
		p := running(t, blocking)
		fd, peer := pair(t)
		tg := newTarget(p)
		p.AddEdge(fd, tg, 1)
		unix.Write(peer, []byte("last"))
		unix.Shutdown(peer, unix.SHUT_WR)
		deadline := time.Now().Add(5 * time.Second)
		for !tg.next(t).hangup {
			if time.Now().After(deadline) {
				t.Fatal("no report with hangup")
			}
		}
	})
}

// An owner that asks for another turn gets it in the next round, marked
// carried, once per request.
func TestCarried(t *testing.T) {
	kinds(t, func(t *testing.T, blocking bool) {
		p := running(t, blocking)
		fd, peer := pair(t)
		tg := newTarget(p)
		tg.again = 2
		p.AddEdge(fd, tg, 1)
		unix.Write(peer, []byte("x"))
		if r := tg.next(t); r.carried {
			t.Fatal("the first report is carried")
		}
		if r := tg.next(t); !r.carried {
			t.Fatal("the second turn is not marked carried")
		}
		if r := tg.next(t); !r.carried {
			t.Fatal("the third turn is not marked carried")
		}
		tg.none(t)
	})
}

// Forget stops the reports at once; a report for a stale generation (a
// number reused by a new socket while an event for the old one was in
// flight) is dropped.
func TestForgetAndGeneration(t *testing.T) {
	p := running(t, false)
	fd, peer := pair(t)
	tg := newTarget(p)
	p.AddEdge(fd, tg, 7)
	p.Forget(fd)
	unix.Write(peer, []byte("x"))
	tg.none(t)

	fd2, peer2 := pair(t)
	tg2 := newTarget(p)
	p.Add(fd2, tg2, 8)
	p.mu.Lock()
	p.slots[fd2].gen = 9 // as if the number now belonged to a newer registration
	p.mu.Unlock()
	unix.Write(peer2, []byte("x"))
	tg2.none(t)
}

// A closed poller refuses registrations, and Owner is 0 outside Run.
func TestClosed(t *testing.T) {
	p, err := New(false)
	if err != nil {
		t.Fatal(err)
	}
	if p.Owner() != 0 {
		t.Fatal("Owner set before Run")
	}
	p.Close()
	fd, _ := pair(t)
	if err := p.Add(fd, newTarget(p), 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add on a closed poller: %v", err)
	}
	if err := p.Rearm(fd, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Rearm on a closed poller: %v", err)
	}
	if err := p.Run(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run on a closed poller: %v", err)
	}
	p.Release()
}
