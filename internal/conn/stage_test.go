package conn

import (
	"errors"
	"io"
	"testing"

	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/internal/gid"
	"github.com/msgnet/msgnet/internal/netpoll"
)

// The order rule of an event loop's turn, without the loop: what the
// handlers staged goes in front of what another goroutine queued during the
// turn, and once another goroutine has queued, nothing more is staged.
func TestStageGoesFirst(t *testing.T) {
	if !gid.Supported || !netpoll.Supported {
		t.Skip("no event loops on this platform")
	}
	p, err := netpoll.New(false)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { p.Close(); p.Release() }()
	c, r, peer := pipeConn(t, Config{})
	st := &stager{loop: p, buf: make([]byte, 0, stageLimit)}
	c.mu.Lock()
	c.beginTurnLocked(st)
	c.mu.Unlock()
	if !c.turn() {
		t.Fatal("a plain binary connection with nothing queued does not stage")
	}
	if !c.stageFrame(st, 0, []byte("staged")) {
		t.Fatal("the first frame was not staged")
	}
	// Not the loop's goroutine (the poller is not running): this send takes
	// the lock, lands in out and marks the turn shared.
	if err := c.Send([]byte("other goroutine")); err != nil {
		t.Fatal(err)
	}
	if c.stageFrame(st, 0, []byte("too late")) {
		t.Fatal("staged after another goroutine queued: it would overtake that send")
	}
	got := make(chan []frame.Frame, 1)
	go func() { got <- readAll(t, peer) }()
	c.mu.Lock()
	c.endStageLocked(st)
	c.flags &^= flushAfter
	start := c.wantWriterLocked()
	c.mu.Unlock()
	if start {
		go c.writeLoop()
	}
	c.Close(errors.New("x"), Drain, nil)
	frames := <-got
	if len(frames) != 2 || string(frames[0].Payload) != "staged" || string(frames[1].Payload) != "other goroutine" {
		t.Fatalf("got %v, want the staged frame first", frames)
	}
	r.waitEnded(t)
}

// A connection with anything queued, a pipeline or no binary mode does not
// stage: the stage could not simply go first.
func TestNoStageWhenQueued(t *testing.T) {
	if !gid.Supported {
		t.Skip("no goroutine ids on this platform")
	}
	c, r, peer := pipeConn(t, Config{})
	c.mu.Lock()
	c.flags |= writerActive
	c.mu.Unlock()
	c.Send([]byte("queued"))
	st := &stager{buf: make([]byte, 0, stageLimit)}
	c.mu.Lock()
	c.beginTurnLocked(st)
	turn := c.turn()
	c.flags &^= flushAfter | writerActive
	c.mu.Unlock()
	if turn {
		t.Fatal("staged with frames already queued")
	}
	drained := make(chan struct{})
	go func() { io.Copy(io.Discard, peer); close(drained) }()
	c.Close(errors.New("x"), Abort, nil)
	r.waitEnded(t)
	<-drained // the pipe is closed: the copy returns
}
