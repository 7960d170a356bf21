package conn

import (
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
)

// The flusher: what other goroutines queue on a registered connection
// (a group send to many sessions) is written by a shared flusher
// goroutine rather than by a writer goroutine started for each
// connection. It walks the connections it was handed, writes each one's
// queue with one non-blocking writev, and exits when none is left, so a
// send to a thousand sessions starts one goroutine, not a thousand, and
// what was queued on a connection while the flusher was busy with the
// others goes out in the same write. A connection whose socket does not
// take everything (a slow peer) gets a writer goroutine of its own
// (writeLoop), which may wait; the flusher never waits on a socket.

// flushShards bounds the flushers of one Shared: one per core, at most.
const flushShards = 8

// flusher is one shard's list of connections to write, and whether a
// goroutine is walking it.
type flusher struct {
	mu      sync.Mutex
	list    []*Conn
	spare   []*Conn
	running bool
}

// flushers are a Shared's flusher shards.
type flushers struct {
	n      atomic.Int32 // shards in use, set on first use
	shards [flushShards]flusher
}

// startWriter runs the writer that the caller has just claimed
// (writerActive): through a flusher when the connection's descriptor can
// be written without waiting (rc, fd: c.rc and c.fd, read under the lock,
// since Register may set them concurrently), else a writer goroutine.
func (c *Conn) startWriter(rc syscall.RawConn, fd int32) {
	if rc == nil {
		go c.writeLoop()
		return
	}
	fs := &c.cfg.Shared.flush
	n := fs.n.Load()
	if n == 0 {
		n = int32(min(flushShards, runtime.GOMAXPROCS(0)))
		fs.n.Store(n)
	}
	fs.shards[int(uint32(fd)%uint32(n))].add(c)
}

// add hands c, whose writer role the caller holds, to the flusher.
func (f *flusher) add(c *Conn) {
	f.mu.Lock()
	f.list = append(f.list, c)
	start := !f.running
	f.running = true
	f.mu.Unlock()
	if start {
		go f.run()
	}
}

// run writes the connections handed to the flusher until none is left.
func (f *flusher) run() {
	w := writerPool.Get().(*writer)
	defer writerPool.Put(w)
	for {
		f.mu.Lock()
		list := f.list
		if len(list) == 0 {
			f.running = false
			f.mu.Unlock()
			return
		}
		f.list = f.spare[:0]
		f.mu.Unlock()
		for i, c := range list {
			list[i] = nil
			if c.flushOnce(w) {
				f.mu.Lock()
				f.list = append(f.list, c)
				f.mu.Unlock()
			}
		}
		f.mu.Lock()
		f.spare = list[:0]
		f.mu.Unlock()
	}
}

// flushOnce writes what c has queued with one non-blocking writev, as its
// writer. It reports whether more was queued meanwhile, for another pass;
// otherwise it has ended the writer's role, or handed it to a writer
// goroutine (a slow peer, or a connection that is closing).
func (c *Conn) flushOnce(w *writer) (again bool) {
	c.mu.Lock()
	c.writingBytes = 0
	c.chargeLocked()
	if c.state != StateOpen || len(c.out.chunks) == 0 {
		if c.state == StateOpen || c.state >= StateLingering {
			end := c.writerDoneLocked()
			c.mu.Unlock()
			if end {
				go c.finish() // Handler.Ended may block; the flusher must not
			}
			return false
		}
		c.mu.Unlock()
		go c.writeLoop() // closing: the writer drains and closes
		return false
	}
	c.takeBatchLocked(w)
	rc := c.rc
	c.mu.Unlock()

	var n int
	var err error
	if werr := rc.Write(func(fd uintptr) bool {
		n, err = tryWriteResult(w.writeOnce(int(fd)))
		return true
	}); werr != nil && err == nil {
		err = werr
	}
	rest, restBytes := w.unwritten(n)
	c.bytesOut.Add(uint64(n))

	c.mu.Lock()
	c.writingBytes = 0
	if err != nil {
		c.mu.Unlock()
		for _, ch := range rest {
			putChunk(ch)
		}
		c.Close(writeError(err), Abort, nil)
		c.mu.Lock()
		end := c.writerDoneLocked()
		c.mu.Unlock()
		if end {
			go c.finish() // Handler.Ended may block; the flusher must not
		}
		return false
	}
	c.requeueLocked(rest, restBytes)
	c.chargeLocked()
	switch {
	case len(c.out.chunks) == 0 || c.state >= StateLingering:
		end := c.writerDoneLocked()
		c.mu.Unlock()
		if end {
			go c.finish() // Handler.Ended may block; the flusher must not
		}
		return false
	case len(rest) > 0 || c.state != StateOpen:
		c.mu.Unlock()
		go c.writeLoop() // the socket is full: a writer that may wait
		return false
	}
	c.mu.Unlock()
	return true
}
