//go:build linux

// Command floor is a measuring device, not a server: the least a server
// can do to pass the benchmark's load, so that bench/run.sh and
// bench/fanout.sh show where this machine's floor is. One thread, one
// epoll set, raw system calls, one shared read buffer; no goroutine per
// connection, no queue limits, no error handling beyond closing, nothing
// a real server needs. A server cannot beat it by much on the same
// system calls; if msgnet measures close to it, what is left is the
// kernel's.
//
//	floor --proto echo --addr 127.0.0.1:9001   msgnet framing: welcome for the
//	                                           hello, then every byte read is
//	                                           written back as it came (the
//	                                           throughput and latency tests
//	                                           send only DATA, echoed unchanged)
//	floor --proto nats --addr 127.0.0.1:4222   the NATS text protocol as far as
//	                                           `msgnet bench fanout --proto nats`
//	                                           uses it: INFO, CONNECT, PING, SUB,
//	                                           PUB -> MSG to every subscriber,
//	                                           one write per subscriber per pass
//
// Each turn of its loop takes the ready connections (one read each), then
// makes one pass over the connections with output, one write each.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"syscall"
	"unsafe"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9001", "address to listen on")
	proto := flag.String("proto", "echo", "echo (msgnet framing) or nats (fan-out)")
	writes := flag.String("writes", "write", "write: a write(2) per connection; uring: a pass's writes as one io_uring submission")
	flag.Parse()
	var h handler
	switch *proto {
	case "echo":
		h = &echo{}
	case "nats":
		h = &fanout{}
	default:
		fmt.Fprintf(os.Stderr, "floor: unknown protocol %q\n", *proto)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "floor peer (%s) listening on %s\n", *proto, ln.Addr())
	ringSize := 0 // write(2)
	switch *writes {
	case "write":
	case "uring":
		ringSize = 1024
	default:
		fmt.Fprintf(os.Stderr, "floor: unknown --writes %q\n", *writes)
		os.Exit(2)
	}
	if err := loop(ln.(*net.TCPListener), h, ringSize); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

// conn is one accepted connection.
type conn struct {
	fd     int
	in     []byte // input not yet understood (a partial line or frame)
	out    []byte // output the socket has not taken yet
	closed bool
	state  any // the handler's
}

// handler is a protocol: what to do with bytes read, and with a new
// connection. Both append output to the conns they concern.
type handler interface {
	open(c *conn)
	input(c *conn, b []byte) (close bool)
}

// loop runs the event loop until epoll fails, on its goroutine's thread.
// With ringSize > 0 a pass's writes go to an io_uring of that many
// entries, which only this thread may use.
func loop(ln *net.TCPListener, h handler, ringSize int) error {
	runtime.LockOSThread()
	var r *ring
	if ringSize > 0 {
		var err error
		if r, err = newRing(uint32(ringSize)); err != nil {
			return err
		}
	}
	lf, err := ln.File()
	if err != nil {
		return err
	}
	// Both own the listening socket (lf a duplicate of ln's descriptor),
	// and either's finalizer would close it.
	defer runtime.KeepAlive(ln)
	defer runtime.KeepAlive(lf)
	lfd := int(lf.Fd())
	if err := syscall.SetNonblock(lfd, true); err != nil {
		return err
	}
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, lfd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(lfd)}); err != nil {
		return err
	}
	byFD := map[int]*conn{}
	var all []*conn // in accept order: every pass writes in the same order
	var dirty []*conn
	evs := make([]syscall.EpollEvent, 256)
	rb := make([]byte, 64<<10)
	pending := false
	for {
		timeout := -1
		if pending {
			timeout = 0
		}
		n, err := syscall.EpollWait(ep, evs, timeout)
		if err != nil && err != syscall.EINTR {
			return err
		}
		for _, ev := range evs[:max(n, 0)] {
			fd := int(ev.Fd)
			if fd == lfd {
				for {
					nfd, _, err := syscall.Accept4(lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
					if err != nil {
						break
					}
					syscall.SetsockoptInt(nfd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
					c := &conn{fd: nfd}
					byFD[nfd] = c
					all = append(all, c)
					syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, nfd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(nfd)})
					h.open(c)
				}
				continue
			}
			c := byFD[fd]
			if c == nil {
				continue
			}
			m, errno := rawIO(syscall.SYS_READ, fd, rb)
			if errno == syscall.EAGAIN {
				continue
			}
			if m <= 0 || h.input(c, rb[:m]) {
				if m > 0 && len(c.out) > 0 {
					rawIO(syscall.SYS_WRITE, fd, c.out) // the ERROR that says why, if the socket takes it
				}
				c.closed = true
				delete(byFD, fd)
				syscall.Close(fd)
			}
		}
		// The pass: one write to each connection with output.
		live := all[:0]
		dirty = dirty[:0]
		for _, c := range all {
			if !c.closed {
				live = append(live, c)
				if len(c.out) > 0 {
					dirty = append(dirty, c)
				}
			}
		}
		if r != nil {
			r.sendAll(dirty)
		} else {
			for _, c := range dirty {
				w, errno := rawIO(syscall.SYS_WRITE, c.fd, c.out)
				if errno == 0 {
					c.out = c.out[:copy(c.out, c.out[w:])]
				}
			}
		}
		pending = false
		for _, c := range dirty {
			pending = pending || len(c.out) > 0
		}
		clear(all[len(live):])
		all = live
	}
}

// rawIO is read(2) or write(2) without the runtime's system-call
// bookkeeping, as msgnet's parked sessions make them.
func rawIO(trap uintptr, fd int, p []byte) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(r), 0
}
