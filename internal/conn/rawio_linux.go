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
