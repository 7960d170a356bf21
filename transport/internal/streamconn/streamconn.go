// Package streamconn holds what the WebSocket and HTTP/2 transports share
// to present a message or request stream as a net.Conn: deadlines that can
// be moved while an operation waits on them, and a reader that gives a
// blocking source read deadlines.
package streamconn

import (
	"context"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Deadline is a net.Conn-style deadline. Its Context is done once the
// deadline has passed (or the parent context is done); setting a new
// deadline after that starts a fresh context, so a deadline can be
// extended after it fired, as net.Conn requires.
type Deadline struct {
	mu     sync.Mutex
	parent context.Context
	ctx    context.Context
	cancel context.CancelFunc
	timer  *time.Timer
	gen    uint64 // invalidates timers that were stopped too late
}

// NewDeadline returns a deadline with none set, under parent.
func NewDeadline(parent context.Context) *Deadline {
	d := &Deadline{parent: parent}
	d.ctx, d.cancel = context.WithCancel(parent)
	return d
}

// Set moves the deadline; the zero time means none. A time in the past
// ends the current context at once, which wakes operations waiting on it.
func (d *Deadline) Set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	if d.ctx.Err() != nil && d.parent.Err() == nil {
		d.ctx, d.cancel = context.WithCancel(d.parent)
	}
	if t.IsZero() {
		return
	}
	wait := time.Until(t)
	if wait <= 0 {
		d.cancel()
		return
	}
	gen, cancel := d.gen, d.cancel
	d.timer = time.AfterFunc(wait, func() {
		d.mu.Lock()
		if d.gen == gen {
			cancel()
		}
		d.mu.Unlock()
	})
}

// Context is done when the deadline current at the time of the call has
// passed, or when it is moved into the past.
func (d *Deadline) Context() context.Context {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ctx
}

// Stop releases the timer. The deadline keeps working if set again.
func (d *Deadline) Stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}

// Reader gives a blocking source net.Conn read semantics: one goroutine
// reads the source and hands over one chunk at a time, and Read waits for a
// chunk, the read deadline or Close, whichever comes first. The source is
// read only as fast as Read takes its bytes: at most one chunk is held.
type Reader struct {
	mu     sync.Mutex // one Read at a time
	cur    []byte     // what is left of the chunk being taken
	chunks chan []byte
	taken  chan struct{} // Read → pump: the chunk is used up
	ended  chan struct{} // closed when the pump has returned; err is set
	err    error
	stop   chan struct{} // closed by Close
	once   sync.Once
	cerr   error // what Read returns after Close
	dl     *Deadline
}

// NewReader starts reading src with a buffer of size bytes. Read honours
// dl. The pump returns when src fails (its error is what Read returns
// once the data before it is taken) or when Close is called; Close does
// not interrupt a src.Read in progress, so the owner must make src fail
// (close the underlying stream) to end it.
func NewReader(src io.Reader, size int, dl *Deadline) *Reader {
	r := &Reader{
		chunks: make(chan []byte),
		taken:  make(chan struct{}, 1),
		ended:  make(chan struct{}),
		stop:   make(chan struct{}),
		dl:     dl,
	}
	go r.pump(src, size)
	return r
}

func (r *Reader) pump(src io.Reader, size int) {
	defer close(r.ended)
	buf := make([]byte, size)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			select {
			case r.chunks <- buf[:n]:
			case <-r.stop:
				r.err = net.ErrClosed
				return
			}
			select {
			case <-r.taken:
			case <-r.stop:
				r.err = net.ErrClosed
				return
			}
		}
		if err != nil {
			r.err = err
			return
		}
	}
}

// Read implements net.Conn's Read: os.ErrDeadlineExceeded when the read
// deadline passes first, the close error after Close, else the bytes of
// the source in order and then its error.
func (r *Reader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ctx := r.dl.Context()
	select {
	case <-r.stop:
		return 0, r.cerr
	default:
	}
	if ctx.Err() != nil {
		return 0, os.ErrDeadlineExceeded
	}
	if len(p) == 0 {
		return 0, nil
	}
	if r.cur == nil {
		var c []byte
		select {
		case c = <-r.chunks:
		case <-r.ended:
		case <-r.stop:
		case <-ctx.Done():
		}
		// Close wins over whatever woke us with it: closing the source to
		// end the pump makes it fail at the same moment.
		select {
		case <-r.stop:
			if c != nil {
				r.taken <- struct{}{}
			}
			return 0, r.cerr
		default:
		}
		switch {
		case c != nil:
			r.cur = c
		case ctx.Err() != nil:
			return 0, os.ErrDeadlineExceeded
		default:
			return 0, r.err // ended
		}
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	if len(r.cur) == 0 {
		r.cur = nil
		r.taken <- struct{}{}
	}
	return n, nil
}

// Close makes Read return err from now on and lets the pump go once it is
// not inside src.Read. Only the first call counts.
func (r *Reader) Close(err error) {
	r.once.Do(func() {
		r.cerr = err
		close(r.stop)
	})
}

// Ended is closed when the pump has returned.
func (r *Reader) Ended() <-chan struct{} { return r.ended }

// Addr is a transport address: the network names the transport, the
// string is host:port as HTTP reported it.
type Addr struct {
	Net, Str string
}

func (a Addr) Network() string { return a.Net }
func (a Addr) String() string  { return a.Str }
