//go:build linux

package netpoll

import (
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/msgnet/msgnet/internal/gid"
	"golang.org/x/sys/unix"
)

// Supported reports whether this platform can park connections.
const Supported = true

// Poller is an epoll set watched by one goroutine.
type Poller struct {
	epfd   int
	wakefd int      // eventfd used to stop Run
	file   *os.File // epfd, registered with the Go runtime's poller; nil for a blocking poller

	mu     sync.RWMutex
	slots  []slot // indexed by fd
	closed bool

	owner atomic.Uintptr // gid.Current() of the goroutine in Run, 0 outside it

	// Local is for the owners' use on the poller's goroutine only, in
	// their Readable callbacks: scratch space shared by every owner,
	// since Run calls one at a time. Set it before Run.
	Local any
}

// slot is what an fd is registered for. The generation lets the poller
// ignore an event that was already in flight when its fd was removed and
// reused by a new connection.
type slot struct {
	gen uint32
	r   Readable
}

// New creates a poller. Run must be called to deliver events.
//
// A poller Run waits in one of two ways. By default its epoll set is
// itself registered with the Go runtime's poller, and Run parks its
// goroutine until the set is readable: every goroutine that waits on the
// network is woken by the runtime as usual. A blocking poller (for event
// loops that run handlers) waits in epoll_wait as a blocking system call
// instead: a wake-up costs one epoll_wait and no pass through the
// scheduler (less CPU per message under load; docs/BENCHMARKS.md), but while it
// waits it holds its P until the runtime's monitor takes it back (20 µs or
// more), which delays goroutines that the runtime's poller would wake.
func New(blocking bool) (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, err
	}
	if blocking {
		return &Poller{epfd: epfd, wakefd: wakefd}, nil
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, err
	}
	return &Poller{epfd: epfd, wakefd: wakefd, file: os.NewFile(uintptr(epfd), "epoll")}, nil
}

const (
	watchEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT
	edgeEvents  = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET
)

// Add starts watching fd for r, armed, under generation gen (which Rearm
// must be given). Callers choose gen, distinct from the generation of any
// earlier registration of the same descriptor number, and set up whatever
// r needs before calling Add: r may be called before Add returns.
func (p *Poller) Add(fd int, r Readable, gen uint32) error {
	return p.add(fd, r, gen, watchEvents)
}

// AddEdge starts watching fd for r edge-triggered: r is told whenever new
// data arrives, with no Rearm, for owners that read on the poller's own
// goroutine. Such an owner may stop reading as soon as a read returns less
// than it asked for, since any later data brings a new report: that saves
// the read that would only have found the socket empty.
func (p *Poller) AddEdge(fd int, r Readable, gen uint32) error {
	return p.add(fd, r, gen, edgeEvents)
}

func (p *Poller) add(fd int, r Readable, gen uint32, events uint32) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if fd >= len(p.slots) {
		n := max(2*len(p.slots), fd+1, 1024)
		slots := make([]slot, n)
		copy(slots, p.slots)
		p.slots = slots
	}
	p.slots[fd] = slot{gen: gen, r: r}
	ev := unix.EpollEvent{Events: events, Fd: int32(fd), Pad: int32(gen)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.slots[fd].r = nil
		return err
	}
	return nil
}

// Rearm watches fd again after a readiness report. If data is already
// waiting, the report comes at once.
func (p *Poller) Rearm(fd int, gen uint32) error {
	// Under the read lock, so that it cannot race Close: once closed, the
	// epoll set's number may be freed by Release and reused.
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	ev := unix.EpollEvent{Events: watchEvents, Fd: int32(fd), Pad: int32(gen)}
	return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
}

// Forget stops reporting fd, which its owner is about to close: closing a
// descriptor takes it out of the epoll set, so no system call is needed.
// An event already fetched for it is dropped, and one for a new socket
// that reuses the number is told apart by its generation.
func (p *Poller) Forget(fd int) {
	p.mu.Lock()
	if fd < len(p.slots) {
		p.slots[fd].r = nil
	}
	p.mu.Unlock()
}

// Owner identifies the goroutine running Run (see gid.Current), or is 0
// when none is: an owner told on that goroutine that its socket is
// readable can tell its own callbacks apart from other goroutines' calls.
func (p *Poller) Owner() uintptr { return p.owner.Load() }

// Run delivers readiness reports until Close. It is meant to run on its own
// goroutine.
func (p *Poller) Run() error {
	p.owner.Store(gid.Current())
	defer p.owner.Store(0)
	events := make([]unix.EpollEvent, 256)
	type report struct {
		r      Readable
		hangup bool
	}
	ready := make([]report, 0, 256)
	var again, next []Readable // owners that stopped short of draining their socket
	var now int64
	wait := p.lookThenBlock
	if p.file != nil {
		park, err := p.parker(events)
		if err != nil {
			return err
		}
		wait = park
	}
	for round := 0; ; round++ {
		// Each wait starts with a look that cannot block, a raw system
		// call the runtime need not hear of, and waits only if the set is
		// empty (see New). Owners waiting for another turn get only the
		// look.
		var n int
		var err error
		waited := false
		if len(again) > 0 {
			n, err = PollNow(p.epfd, events)
		} else {
			n, waited, err = wait(events)
		}
		if err != nil {
			return err
		}
		// The clock is read after a wait and every clockRounds rounds
		// otherwise: reading it costs as much as a tenth of a round under
		// load, and owners only need it to the millisecond.
		if waited || round%clockRounds == 0 {
			now = time.Now().UnixNano()
		}
		// Collect the targets under the lock and call them after it: a
		// Readable may take its owner's lock, and owners call Remove while
		// holding theirs.
		stop := false
		ready = ready[:0]
		p.mu.RLock()
		for i := 0; i < n; i++ {
			fd := int(events[i].Fd)
			if fd == p.wakefd {
				stop = true
				continue
			}
			if fd < len(p.slots) {
				s := p.slots[fd]
				if s.r != nil && s.gen == uint32(events[i].Pad) {
					hangup := events[i].Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0
					ready = append(ready, report{s.r, hangup})
				}
			}
		}
		p.mu.RUnlock()
		if stop {
			return ErrClosed
		}
		next = next[:0]
		for i, e := range ready {
			if e.r.Readable(now, e.hangup, false) {
				next = append(next, e.r)
			}
			ready[i] = report{}
		}
		// Then those that had a turn last round and asked for another,
		// after the new reports, so that one busy socket cannot keep the
		// others waiting.
		for i, r := range again {
			if r.Readable(now, false, true) {
				next = append(next, r)
			}
			again[i] = nil
		}
		again, next = next, again[:0]
		// Let other goroutines (writers, the accept loop) run between
		// rounds: under steady load the set is never empty, so Run would
		// otherwise only yield when preempted.
		runtime.Gosched()
	}
}

// clockRounds is how many rounds Run goes without reading the clock while
// it does not park. A round is bounded (256 reports, each a few reads), so
// under steady load the time given to owners lags by well under a
// millisecond.
const clockRounds = 16

// Close stops Run and releases the epoll set. Sockets still registered are
// left open: they belong to their owners.
func (p *Poller) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.slots = nil
	p.mu.Unlock()
	var one = [8]byte{1}
	_, err := unix.Write(p.wakefd, one[:])
	return err
}

// Release frees the epoll set and the wake descriptor once Run has returned.
func (p *Poller) Release() {
	if p.file != nil {
		p.file.Close() // closes epfd
	} else {
		unix.Close(p.epfd)
	}
	unix.Close(p.wakefd)
}

// PollNow fetches ready events of the epoll set epfd without waiting. It
// is a raw system call: it cannot block, so the runtime need not be told
// (see Run). The fan-out load tool's readers use it too.
func PollNow(epfd int, events []unix.EpollEvent) (int, error) {
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])),
			uintptr(len(events)), 0, 0, 0)
		switch e {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		}
		return 0, e
	}
}

// lookThenBlock fetches ready events, waiting for at least one as a
// blocking system call if there are none (see New); waited reports whether
// it waited. The goroutine is not locked to its thread: then every Gosched
// would hand the P to another thread and back.
func (p *Poller) lookThenBlock(events []unix.EpollEvent) (n int, waited bool, err error) {
	if n, err = PollNow(p.epfd, events); n > 0 || err != nil {
		return n, false, err
	}
	for {
		n, err = unix.EpollWait(p.epfd, events, -1)
		if err != unix.EINTR {
			return n, true, err
		}
	}
}

// parker returns lookThenBlock's counterpart for a parking poller: it
// parks Run's goroutine on the runtime's poller until the epoll set is
// readable, if a first look finds nothing (see New).
func (p *Poller) parker(events []unix.EpollEvent) (func([]unix.EpollEvent) (int, bool, error), error) {
	rc, err := p.file.SyscallConn()
	if err != nil {
		return nil, err
	}
	var n, looks int
	var werr error
	look := func(uintptr) bool {
		looks++
		n, werr = PollNow(p.epfd, events)
		return n > 0 || werr != nil // false: park until the set is readable
	}
	return func([]unix.EpollEvent) (int, bool, error) {
		looks = 0
		if err := rc.Read(look); err != nil {
			return 0, false, err
		}
		return n, looks > 1, werr
	}, nil
}
