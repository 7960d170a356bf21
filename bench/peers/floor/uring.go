//go:build linux

package main

import (
	"fmt"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// The pass's writes as one io_uring submission (--writes uring): a SEND
// per connection with output, all submitted and waited for with one
// io_uring_enter, instead of a write(2) each. It measures what batching
// the system calls of a pass saves; the TCP work inside is the same.

// io_uring ABI (include/uapi/linux/io_uring.h).
const (
	setupCQSize       = 1 << 3
	setupSubmitAll    = 1 << 7
	setupCoopTaskrun  = 1 << 8
	setupSingleIssuer = 1 << 12
	setupDeferTaskrun = 1 << 13
	featSingleMmap    = 1 << 0
	offSQEs           = 0x10000000
	enterGetEvents    = 1 << 0
	opSend            = 26
	sysIoUringSetup   = 425
	sysIoUringEnter   = 426
)

type sqOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type ringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqOffsets
	cqOff                                                                  cqOffsets
}

type sqe struct {
	opcode, flags uint8
	ioprio        uint16
	fd            int32
	off, addr     uint64
	len, opFlags  uint32
	userData      uint64
	bufIndex      uint16
	personality   uint16
	spliceFdIn    int32
	addr3         uint64
	_             uint64
}

type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// uringSends counts the sends made through a ring, for the tests.
var uringSends atomic.Uint64

// ring is a mapped io_uring instance, used by one thread.
type ring struct {
	fd             int
	sqTail, cqHead *uint32
	cqTail         *uint32
	sqMask, cqMask uint32
	size           uint32
	sqes           []sqe
	cqes           []cqe
	tail           uint32
}

func newRing(entries uint32) (*ring, error) {
	p := ringParams{cqEntries: 2 * entries,
		flags: setupCQSize | setupSubmitAll | setupCoopTaskrun | setupSingleIssuer | setupDeferTaskrun}
	fd, _, errno := syscall.Syscall(sysIoUringSetup, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	if p.features&featSingleMmap == 0 {
		return nil, fmt.Errorf("io_uring: the kernel lacks IORING_FEAT_SINGLE_MMAP")
	}
	sz := max(int(p.sqOff.array+p.sqEntries*4), int(p.cqOff.cqes+p.cqEntries*uint32(unsafe.Sizeof(cqe{}))))
	rm, err := syscall.Mmap(int(fd), 0, sz, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("mmap rings: %w", err)
	}
	sm, err := syscall.Mmap(int(fd), offSQEs, int(p.sqEntries)*int(unsafe.Sizeof(sqe{})), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("mmap sqes: %w", err)
	}
	u32 := func(off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&rm[off])) }
	r := &ring{fd: int(fd), sqTail: u32(p.sqOff.tail), cqHead: u32(p.cqOff.head), cqTail: u32(p.cqOff.tail),
		sqMask: *u32(p.sqOff.ringMask), cqMask: *u32(p.cqOff.ringMask), size: p.sqEntries,
		sqes: unsafe.Slice((*sqe)(unsafe.Pointer(&sm[0])), p.sqEntries),
		cqes: unsafe.Slice((*cqe)(unsafe.Pointer(&rm[p.cqOff.cqes])), p.cqEntries)}
	arr := unsafe.Slice((*uint32)(unsafe.Pointer(&rm[p.sqOff.array])), p.sqEntries)
	for i := range arr {
		arr[i] = uint32(i)
	}
	r.tail = atomic.LoadUint32(r.sqTail)
	return r, nil
}

// sendAll writes each of cs's output with one SEND each (MSG_DONTWAIT: what
// the socket takes, as write(2) on a non-blocking socket), ring-sized
// batches, one io_uring_enter per batch, and trims what was written.
func (r *ring) sendAll(cs []*conn) {
	for len(cs) > 0 {
		batch := cs[:min(len(cs), int(r.size))]
		cs = cs[len(batch):]
		for i, c := range batch {
			s := &r.sqes[r.tail&r.sqMask]
			*s = sqe{opcode: opSend, fd: int32(c.fd), addr: uint64(uintptr(unsafe.Pointer(&c.out[0]))),
				len: uint32(len(c.out)), opFlags: syscall.MSG_DONTWAIT, userData: uint64(i)}
			r.tail++
		}
		atomic.StoreUint32(r.sqTail, r.tail)
		uringSends.Add(uint64(len(batch)))
		n := uint32(len(batch))
		for n > 0 {
			_, _, errno := syscall.RawSyscall6(sysIoUringEnter, uintptr(r.fd), uintptr(n), uintptr(n), enterGetEvents, 0, 0)
			if errno != 0 && errno != syscall.EINTR && errno != syscall.EAGAIN && errno != syscall.EBUSY {
				panic(fmt.Sprintf("io_uring_enter: %v", errno))
			}
			head, tail := atomic.LoadUint32(r.cqHead), atomic.LoadUint32(r.cqTail)
			for ; head != tail; head++ {
				e := r.cqes[head&r.cqMask]
				c := batch[e.userData]
				if e.res > 0 {
					c.out = c.out[:copy(c.out, c.out[e.res:])]
				}
				n--
			}
			atomic.StoreUint32(r.cqHead, head)
		}
	}
}
