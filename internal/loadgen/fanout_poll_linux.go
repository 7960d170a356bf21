//go:build linux

package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"unsafe"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/internal/netpoll"
	"golang.org/x/sys/unix"
)

// Polled fan-out receivers. A goroutine per receiver costs, for every
// wake-up, a pass through the runtime's poller and scheduler, a read and a
// second read that finds the socket empty; at a thousand receivers and a
// million deliveries a second that saturates the load tool's core, and the
// latency it measures then includes its own queueing. Here a few
// goroutines (pollReader, one per P: the benchmark pins the tool to one
// core, so one) each own an epoll set over their receivers' raw sockets,
// level-triggered. Each round takes the ready sockets from one epoll_wait
// and makes one read(2) on each, into a scratch buffer the reader shares
// among its sockets (so that it stays in cache), then parses every
// complete message in what it got and keeps the incomplete tail for the
// socket's next read. Data still waiting after that read (the buffer was
// filled) is reported again by the next round.
//
// Clock: each read is followed by one clock read, which stamps every
// message that read returned. The message's bytes were in the tool's hands
// from that instant on, so the latency is the same as a reader that took
// the clock per message right after its read, without a clock read per
// message. A clock read per epoll round would be cheaper still, but a round
// over a thousand sockets lasts milliseconds under load, which is the order
// of the latencies measured.

// fanoutPolling enables the polled receivers; tests turn it off to check
// the goroutine-per-receiver path.
var fanoutPolling = true

// pollReadSize is the least room a read of a polled receiver is given.
const pollReadSize = 64 << 10

// pollYieldEvery is how many sockets a reader reads before letting other
// goroutines (the sender, above all) run, within a round and at its end.
const pollYieldEvery = 64

// fanoutPolled hands the receivers of sink to polled readers started on wg,
// which stop when ctx is done, and returns the indices of those it could
// not take (TLS, or a failure to set up), for a goroutine each.
func (r *runner) fanoutPolled(ctx context.Context, wg *sync.WaitGroup, sink *fanoutSink) []int {
	all := make([]int, len(sink.workers))
	for i := range all {
		all[i] = i
	}
	if !fanoutPolling || r.cfg.TLS != nil || len(all) == 0 {
		return all
	}
	n := min(max(runtime.GOMAXPROCS(0), 1), len(all))
	readers := make([]*pollReader, 0, n)
	for k := range n {
		rd, err := newPollReader(sink, k, r.cfg.MaxPayload)
		if err != nil {
			for _, rd := range readers {
				rd.close()
			}
			return all
		}
		readers = append(readers, rd)
	}
	var rest []int
	for i := range all {
		if err := readers[i%n].add(i); err != nil {
			rest = append(rest, i)
		}
	}
	for _, rd := range readers {
		wg.Go(func() { rd.run(ctx) })
	}
	return rest
}

// pollReader is one goroutine's epoll set of receivers.
type pollReader struct {
	sink       *fanoutSink
	id         int // its index among the readers, for the meter and the histogram
	maxPayload int
	epfd       int
	file       *os.File // epfd, registered with the runtime's poller to park on
	rc         syscall.RawConn
	efd        int // eventfd that wakes the reader to stop
	subs       []*pollSub
	events     []unix.EpollEvent
	buf        []byte // scratch for reads
	hist       *hdrhistogram.Histogram
	got, inW   int64 // deliveries and window deliveries not yet added to the sink's counters
	nready     int   // events found by look
	lookErr    error
}

// pollSub is one receiver of a pollReader.
type pollSub struct {
	i            int // index in fanoutSink
	fd           int // our own duplicate of the socket, non-blocking
	cw           *connWorker
	nats         bool
	tail         []byte // bytes of an incomplete message, carried to the next read
	need         int    // bytes the message at the start of tail needs in all, if known
	inMsg        bool   // tail is inside a message (an end of stream there is unexpected)
	laddr, raddr net.Addr
	read         int64 // bytes read, for tests
	dead         bool
}

func newPollReader(sink *fanoutSink, id, maxPayload int) (*pollReader, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd), Pad: 0}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(efd)
		return nil, err
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		unix.Close(efd)
		return nil, err
	}
	rd := &pollReader{sink: sink, id: id, maxPayload: maxPayload, epfd: epfd, efd: efd,
		file: os.NewFile(uintptr(epfd), "fanout-epoll"), buf: make([]byte, pollReadSize), hist: newHist()}
	if rd.rc, err = rd.file.SyscallConn(); err != nil {
		rd.file.Close()
		unix.Close(efd)
		return nil, err
	}
	return rd, nil
}

// add takes receiver i of the sink: it duplicates the connection's socket,
// watches the duplicate and closes the net.Conn, so that the runtime's
// poller no longer hears of the socket. Bytes the connection's reader had
// buffered beyond the handshake are carried over. On error the connection
// is left as it was.
func (rd *pollReader) add(i int) error {
	cw := rd.sink.workers[i]
	c := cw.c
	sc, ok := c.nc.(syscall.Conn)
	if !ok {
		return fmt.Errorf("loadgen: %T has no socket", c.nc)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	fd := -1
	var derr error
	if err := raw.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return err
	}
	if derr != nil {
		return derr
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return err
	}
	s := &pollSub{i: i, fd: fd, cw: cw, nats: c.nats != nil,
		laddr: c.nc.LocalAddr(), raddr: c.nc.RemoteAddr()}
	switch {
	case c.nats != nil:
		s.tail = append(s.tail, c.nats.rd.buf[c.nats.rd.start:c.nats.rd.end]...)
	case c.r != nil:
		s.tail = append(s.tail, c.r.Buffered()...)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd), Pad: int32(len(rd.subs) + 1)}
	if err := unix.EpollCtl(rd.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		unix.Close(fd)
		return err
	}
	rd.subs = append(rd.subs, s)
	c.nc.Close()
	return nil
}

// run reads until ctx is done, then closes the sockets and merges its
// histogram into the sink's.
func (rd *pollReader) run(ctx context.Context) {
	woke := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		one := [8]byte{1}
		unix.Write(rd.efd, one[:])
		close(woke)
	})
	defer func() {
		if !stop() {
			<-woke // its write is done: efd can be closed
		}
		rd.close()
	}()
	rd.carried()
	for {
		done, err := rd.round(-1)
		if done {
			return
		}
		if err != nil {
			for _, s := range rd.subs {
				if !s.dead {
					rd.fail(s, fmt.Errorf("loadgen: epoll: %w", err))
				}
			}
			<-ctx.Done()
			return
		}
		runtime.Gosched()
	}
}

// carried parses what the receivers' readers had buffered before the
// switch, with nothing read yet.
func (rd *pollReader) carried() {
	t := nanotime()
	for _, s := range rd.subs {
		if len(s.tail) > 0 {
			b := s.tail
			s.tail = nil
			rd.consume(s, b, t)
		}
	}
	rd.flush()
}

// round waits for ready sockets (timeout in milliseconds; -1 parks the
// goroutine on the runtime's poller until one is ready) and reads each
// once. It reports whether the reader was told to stop.
func (rd *pollReader) round(timeout int) (stop bool, err error) {
	if len(rd.events) < len(rd.subs)+1 {
		rd.events = make([]unix.EpollEvent, len(rd.subs)+1)
	}
	n, err := rd.wait(timeout)
	if err != nil {
		return false, err
	}
	for k := range n {
		ev := &rd.events[k]
		if ev.Pad == 0 {
			stop = true
			continue
		}
		if s := rd.subs[ev.Pad-1]; !s.dead {
			rd.read(s)
		}
		if k%pollYieldEvery == pollYieldEvery-1 {
			rd.flush()
			runtime.Gosched()
		}
	}
	rd.flush()
	return stop, nil
}

// wait fetches the ready sockets: a look that cannot block first, a raw
// system call the runtime need not hear of, then a wait if there are none.
func (rd *pollReader) wait(timeout int) (int, error) {
	n, err := netpoll.PollNow(rd.epfd, rd.events)
	if n > 0 || err != nil || timeout == 0 {
		return n, err
	}
	if timeout > 0 {
		for {
			n, err := unix.EpollWait(rd.epfd, rd.events, timeout)
			if err != unix.EINTR {
				return n, err
			}
		}
	}
	rd.nready, rd.lookErr = 0, nil
	if err := rd.rc.Read(rd.look); err != nil {
		return 0, err
	}
	return rd.nready, rd.lookErr
}

// look is the parking wait's test: false parks until the set is readable.
func (rd *pollReader) look(uintptr) bool {
	rd.nready, rd.lookErr = netpoll.PollNow(rd.epfd, rd.events)
	return rd.nready > 0 || rd.lookErr != nil
}

// read makes one read on s's socket, after the tail of its last, and
// takes every complete message.
func (rd *pollReader) read(s *pollSub) {
	m := len(s.tail)
	var buf []byte
	if s.need > pollReadSize {
		// A large message on its way: it is read into the tail's own
		// buffer, after what has come, so that a message arriving in many
		// small segments is copied once, not once per segment.
		if cap(s.tail) < s.need {
			s.tail = append(make([]byte, 0, s.need), s.tail...)
		}
		buf = s.tail[:cap(s.tail)]
	} else {
		if want := m + pollReadSize; want > len(rd.buf) {
			rd.buf = make([]byte, want)
		}
		buf = rd.buf
		copy(buf, s.tail)
	}
	p := buf[m:]
	r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(s.fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	switch {
	case e == unix.EAGAIN || e == unix.EINTR:
		return // reported again if there is anything
	case e != 0:
		rd.fail(s, &net.OpError{Op: "read", Net: "tcp", Source: s.laddr, Addr: s.raddr, Err: os.NewSyscallError("read", e)})
		return
	case r == 0:
		if s.inMsg {
			rd.fail(s, io.ErrUnexpectedEOF)
		} else {
			rd.fail(s, io.EOF)
		}
		return
	}
	s.read += int64(r)
	rd.consume(s, buf[:m+int(r)], nanotime())
}

// consume takes the complete messages at the start of b, received at t,
// and keeps the rest as s's tail.
func (rd *pollReader) consume(s *pollSub, b []byte, t int64) {
	var off, need int
	var inMsg bool
	var err error
	if s.nats {
		off, need, inMsg, err = rd.natsMessages(s, b, t)
	} else {
		off, need, err = rd.frames(s, b, t)
		inMsg = off < len(b)
	}
	if err != nil {
		rd.fail(s, err)
		return
	}
	if rest := b[off:]; cap(s.tail) > pollReadSize && len(rest) <= pollReadSize {
		s.tail = append([]byte(nil), rest...) // a large message's buffer is not kept
	} else {
		s.tail = append(s.tail[:0], rest...) // may overlap b: append moves as copy does
	}
	s.need, s.inMsg = need, inMsg
}

// frames takes the msgnet frames in b; it returns the bytes taken and, for
// a frame not complete yet, how many bytes it needs in all. As
// nextDelivery, it takes DATA, skips other frames and ends with an error
// at ERROR or DISCONNECT.
func (rd *pollReader) frames(s *pollSub, b []byte, t int64) (off, need int, err error) {
	for {
		avail := b[off:]
		if n := frame.SplitPlain(avail, rd.maxPayload); n > 0 {
			rd.deliver(s, avail[frame.HeaderLen:n], t)
			off += n
			continue
		}
		total, err := frame.Split(avail, rd.maxPayload)
		if err != nil {
			return off, 0, err
		}
		if total == 0 || total > len(avail) {
			return off, total, nil
		}
		switch f := frame.Decode(avail[:total]); f.Kind {
		case frame.KindData:
			rd.deliver(s, f.Payload, t)
		case frame.KindError, frame.KindDisconnect:
			return off + total, 0, frameError(f)
		}
		off += total
	}
}

// natsMessages takes the NATS operations in b, as natsNextMsg: MSG is a
// delivery, PING is answered with PONG, -ERR ends the receiver. It
// returns the bytes taken, and for an operation not complete yet the bytes
// it needs and whether it is a MSG.
func (rd *pollReader) natsMessages(s *pollSub, b []byte, t int64) (off, need int, inMsg bool, err error) {
	for {
		op, arg, n, need, err := natsSplit(b[off:], rd.maxPayload)
		if err != nil {
			return off, 0, false, err
		}
		if n == 0 {
			return off, need, op == natsMSG, nil
		}
		off += n
		switch op {
		case natsMSG:
			rd.deliver(s, arg, t)
		case natsPING:
			if err := writePong(s.fd); err != nil {
				return off, 0, false, &net.OpError{Op: "write", Net: "tcp", Source: s.laddr, Addr: s.raddr, Err: err}
			}
		case natsERR:
			return off, 0, false, fmt.Errorf("server sent -ERR %s", arg)
		}
	}
}

// writePong answers a PING on the non-blocking socket fd without ever
// waiting: the reader serves every receiver, and a receiver writes
// nothing but PONGs, so a socket with no room for one belongs to a server
// that does not read it, and that receiver fails rather than stall the rest.
func writePong(fd int) error {
	pong := []byte("PONG\r\n")
	for {
		n, err := unix.Write(fd, pong)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN || (err == nil && n < len(pong)):
			return errors.New("no room for a PONG: the server does not read this connection")
		case err != nil:
			return os.NewSyscallError("write", err)
		}
		return nil
	}
}

// deliver records one delivered payload received at t, as fanoutSink's
// readLoop does, with the counters shared with other goroutines added
// once per round (flush) and the histogram the reader's own.
func (rd *pollReader) deliver(s *pollSub, p []byte, t int64) {
	at, ours, inW := rd.sink.take(s.i, p)
	if !ours {
		return
	}
	rd.got++
	if inW {
		_ = rd.hist.RecordValue(min(max(t-at, histMin), histMax))
		rd.inW++
	}
}

// flush adds the deliveries counted since the last flush to the sink's
// shared counters.
func (rd *pollReader) flush() {
	if rd.got > 0 {
		rd.sink.msgs.add(rd.id, rd.got)
		rd.got = 0
	}
	if rd.inW > 0 {
		rd.sink.inWindow.Add(rd.inW)
		rd.inW = 0
	}
}

// fail ends receiver s: its socket is closed and the failure reported as
// the goroutine-per-receiver path reports it.
func (rd *pollReader) fail(s *pollSub, err error) {
	rd.flush()
	unix.Close(s.fd) // its last descriptor: the close takes it out of the set
	s.dead, s.tail = true, nil
	s.cw.fail(err)
}

// close releases the reader's sockets and descriptors and merges its
// histogram into the sink's.
func (rd *pollReader) close() {
	for _, s := range rd.subs {
		if !s.dead {
			unix.Close(s.fd)
			s.dead = true
		}
	}
	rd.file.Close()
	unix.Close(rd.efd)
	rd.sink.hist.merge(rd.id, rd.hist)
}
