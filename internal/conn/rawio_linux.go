package conn

import (
	"syscall"
	"unsafe"
)

// The socket I/O of parked sessions is done with raw system calls: the
// descriptors are non-blocking, so a call never waits, and skipping the
// runtime's entersyscall/exitsyscall keeps the P with the goroutine. With
// the ordinary wrappers, a write that happens to take more than 20 µs
// (loopback delivery runs the receiver's TCP stack inside the sender's
// write) lets the runtime's monitor hand the P to another thread, and
// keeps that monitor waking every 20 µs: measurable context switches at
// a few hundred thousand writes a second.

func rawRead(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

func rawWrite(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

func rawWritev(fd int, iov []syscall.Iovec) (int, error) {
	r, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

// iovec is writev's argument.
type iovec = syscall.Iovec

// writeOnce writes as much of the batch as the socket takes with one
// non-blocking system call on fd, which the caller holds (the event loop
// in its turn). The chunks stay in the batch; see unwritten.
func (w *writer) writeOnce(fd int) (int, error) {
	if len(w.batch) == 1 {
		return rawWrite(fd, w.batch[0].b)
	}
	w.iovecs = w.iovecs[:0]
	for _, ch := range w.batch {
		if len(ch.b) > 0 {
			v := syscall.Iovec{Base: &ch.b[0]}
			v.SetLen(len(ch.b))
			w.iovecs = append(w.iovecs, v)
		}
	}
	if len(w.iovecs) == 0 {
		return 0, nil
	}
	if len(w.iovecs) > 1024 { // IOV_MAX; the rest goes on the next write
		w.iovecs = w.iovecs[:1024]
	}
	n, err := rawWritev(fd, w.iovecs)
	for i := range w.iovecs {
		w.iovecs[i].Base = nil
	}
	return n, err
}
