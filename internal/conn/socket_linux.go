//go:build linux

package conn

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Socket is a TCP connection's descriptor as the event loops own it:
// accepted with accept4 (AcceptSocket), with no net.Conn, no runtime poll
// descriptor and no address objects behind it. That is most of what an
// idle connection would otherwise cost (docs/BENCHMARKS.md, "Memory per
// idle connection"), and a part of what accepting and closing one costs.
//
// The loop reads and writes it with raw system calls. What has to block
// (a writer waiting for a slow peer to read) gets a net.Conn made of a
// duplicate descriptor, once, on the runtime's poller (see blocking);
// after that both descriptors name the same socket, and Close closes both.
//
// It is a net.Conn and a syscall.RawConn, so that the rest of the engine
// and the server treat it as any TCP connection. Reads and writes follow
// net.Conn's contract (Write writes everything or fails); concurrent calls
// are safe as far as the descriptor goes, but, as for any socket, two
// concurrent reads or writes interleave.
type Socket struct {
	fd   int32
	refs atomic.Int32 // system calls in progress on fd, plus socketClosed once closed
	peer netip.AddrPort

	mu       sync.Mutex // guards nc and the deadlines
	nc       net.Conn   // the duplicate for blocking calls, or nil
	rdl, wdl int64      // deadlines (Unix ns, 0: none) set before nc existed
}

// ErrWouldBlock is Accept's answer when no connection is pending.
var ErrWouldBlock = errors.New("msgnet: no connection pending")

// socketClosed is Socket.refs' closed bit; the rest counts users of fd.
const socketClosed = 1 << 30

// SocketsSupported reports whether AcceptSocket works on this platform.
const SocketsSupported = true

// Acceptor accepts connections from a listening socket as Sockets. It
// keeps accept4's scratch space, so that accepting allocates only the
// Socket; one goroutine uses it.
type Acceptor struct {
	rc  syscall.RawConn // the listener's
	sa  unix.RawSockaddrAny
	fd  int
	err error
	fn  func(fd uintptr)
}

// NewAcceptor returns an Acceptor for rc, a *net.TCPListener's RawConn.
func NewAcceptor(rc syscall.RawConn) *Acceptor {
	a := &Acceptor{rc: rc}
	a.fn = func(lfd uintptr) { a.fd, a.err = accept4(int(lfd), &a.sa) }
	return a
}

// Accept accepts a connection if one is pending, and fails with
// ErrWouldBlock if none is: the caller waits for the listener to be
// readable (a poller) and calls again. The socket inherits TCP_NODELAY and
// the keepalive settings from the listener (Linux copies them to accepted
// sockets), so accepting costs no setsockopt; PrepareListener sets them
// there.
func (a *Acceptor) Accept() (*Socket, error) {
	if err := a.rc.Control(a.fn); err != nil {
		return nil, err
	}
	for a.err == unix.ECONNABORTED { // reset before it was accepted: the next one (as net does)
		if err := a.rc.Control(a.fn); err != nil {
			return nil, err
		}
	}
	switch {
	case a.err == unix.EAGAIN:
		return nil, ErrWouldBlock
	case a.err != nil:
		return nil, os.NewSyscallError("accept4", a.err)
	}
	return &Socket{fd: int32(a.fd), peer: addrPort(&a.sa)}, nil
}

// accept4 is unix.Accept4 without its allocation of the address.
func accept4(lfd int, sa *unix.RawSockaddrAny) (int, error) {
	n := uint32(unix.SizeofSockaddrAny)
	for {
		fd, _, e := syscall.Syscall6(syscall.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(sa)),
			uintptr(unsafe.Pointer(&n)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
		switch e {
		case 0:
			return int(fd), nil
		case unix.EINTR:
			continue
		}
		return -1, e
	}
}

func addrPort(sa *unix.RawSockaddrAny) netip.AddrPort {
	switch sa.Addr.Family {
	case unix.AF_INET:
		p := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := uint16(p.Port>>8 | p.Port<<8)
		return netip.AddrPortFrom(netip.AddrFrom4(p.Addr), port)
	case unix.AF_INET6:
		p := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		port := uint16(p.Port>>8 | p.Port<<8)
		return netip.AddrPortFrom(netip.AddrFrom16(p.Addr).Unmap(), port)
	}
	return netip.AddrPort{}
}

// PrepareListener sets on the listening socket what accepted sockets
// inherit: TCP_NODELAY, as Go sets on every accepted connection, and,
// with keepAlive, TCP keepalive with Go's default period (15 s).
func PrepareListener(rc syscall.RawConn, keepAlive bool) error {
	var err error
	cerr := rc.Control(func(fd uintptr) {
		s := int(fd)
		err = unix.SetsockoptInt(s, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		if err != nil || !keepAlive {
			return
		}
		for _, o := range [...][3]int{
			{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
			{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
			{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
		} {
			if err = unix.SetsockoptInt(s, o[0], o[1], o[2]); err != nil {
				return
			}
		}
	})
	if cerr != nil {
		return cerr
	}
	return err
}

// acquire marks a system call on fd in progress, so that a concurrent
// Close does not free the number for another socket meanwhile; it fails
// once the socket is closed.
func (s *Socket) acquire() bool {
	for {
		v := s.refs.Load()
		if v&socketClosed != 0 {
			return false
		}
		if s.refs.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

// release ends what acquire began, closing fd if Close came meanwhile.
func (s *Socket) release() {
	if s.refs.Add(-1) == socketClosed {
		unix.Close(int(s.fd))
	}
}

// Close closes the socket: the descriptor once no system call is using
// it, and the duplicate, if any.
func (s *Socket) Close() error {
	for {
		v := s.refs.Load()
		if v&socketClosed != 0 {
			return net.ErrClosed
		}
		if s.refs.CompareAndSwap(v, v|socketClosed) {
			s.mu.Lock()
			nc := s.nc
			s.mu.Unlock()
			if nc != nil {
				nc.Close()
			}
			if v == 0 {
				unix.Close(int(s.fd))
			}
			return nil
		}
	}
}

// Control implements syscall.RawConn.
func (s *Socket) Control(f func(fd uintptr)) error {
	if !s.acquire() {
		return net.ErrClosed
	}
	defer s.release()
	f(uintptr(s.fd))
	return nil
}

// rawIO is RawConn's Read and Write: f is called with the descriptor
// until it returns true; when it returns false (it would block) the wait
// is on the duplicate's poll descriptor, which is made for that.
func (s *Socket) rawIO(f func(fd uintptr) bool, write bool) error {
	if !s.acquire() {
		return net.ErrClosed
	}
	done := f(uintptr(s.fd))
	s.release()
	if done {
		return nil
	}
	nc, err := s.blocking()
	if err != nil {
		return err
	}
	rc, err := nc.(syscall.Conn).SyscallConn()
	if err != nil {
		return err
	}
	if write {
		return rc.Write(f)
	}
	return rc.Read(f)
}

// SyscallConn returns the socket itself, as the RawConn of its descriptor.
func (s *Socket) SyscallConn() (syscall.RawConn, error) { return (*rawSocket)(s), nil }

// rawSocket is a Socket as a syscall.RawConn: a separate type, since
// Read and Write mean something else on a net.Conn.
type rawSocket Socket

func (r *rawSocket) Control(f func(fd uintptr)) error    { return (*Socket)(r).Control(f) }
func (r *rawSocket) Read(f func(fd uintptr) bool) error  { return (*Socket)(r).rawIO(f, false) }
func (r *rawSocket) Write(f func(fd uintptr) bool) error { return (*Socket)(r).rawIO(f, true) }

// Read reads what the socket has, waiting (on the duplicate) if it has
// nothing yet.
func (s *Socket) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if _, raw := s.path(&s.rdl); raw {
		if !s.acquire() {
			return 0, net.ErrClosed
		}
		n, err := rawRead(int(s.fd), p)
		for err == unix.EINTR {
			n, err = rawRead(int(s.fd), p)
		}
		s.release()
		switch {
		case err == nil && n == 0:
			return 0, io.EOF
		case err == nil:
			return n, nil
		case err != unix.EAGAIN:
			return 0, os.NewSyscallError("read", err)
		}
	}
	nc, err := s.blocking()
	if err != nil {
		return 0, err
	}
	return nc.Read(p)
}

// path says how a read or a write (deadline: &s.rdl or &s.wdl) starts: on
// the descriptor (raw), while there is no duplicate and the deadline has
// not passed, or on the duplicate nc (made on demand when nil).
func (s *Socket) path(deadline *int64) (nc net.Conn, raw bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nc, s.nc == nil && (*deadline == 0 || *deadline > time.Now().UnixNano())
}

// Write writes all of p, waiting (on the duplicate) while the peer does
// not read.
func (s *Socket) Write(p []byte) (int, error) {
	nc, raw := s.path(&s.wdl)
	n := 0
	if raw {
		if !s.acquire() {
			return 0, net.ErrClosed
		}
		for n < len(p) {
			k, err := rawWrite(int(s.fd), p[n:])
			if err == unix.EINTR {
				continue
			}
			if err == unix.EAGAIN {
				break
			}
			if err != nil {
				s.release()
				return n, os.NewSyscallError("write", err)
			}
			n += k
		}
		s.release()
		if n == len(p) {
			return n, nil
		}
	}
	nc, err := s.blocking()
	if err != nil {
		return n, err
	}
	k, err := nc.Write(p[n:])
	return n + k, err
}

// writeBatch writes a writer's batch: with one writev while the socket
// takes it, then, for a slow peer, the rest on the duplicate.
func (s *Socket) writeBatch(w *writer) (int, error) {
	nc, raw := s.path(&s.wdl)
	n := 0
	if raw {
		if !s.acquire() {
			return 0, net.ErrClosed
		}
		var err error
		for {
			n, err = tryWriteResult(w.writeOnce(int(s.fd)))
			if err != unix.EINTR {
				break
			}
		}
		s.release()
		if err != nil {
			return 0, os.NewSyscallError("writev", err)
		}
	}
	total := 0
	w.iov = w.iov[:0]
	for _, ch := range w.batch {
		total += len(ch.b)
		if skip := min(n, len(ch.b)); skip < len(ch.b) {
			w.iov = append(w.iov, ch.b[skip:])
		}
		n -= min(n, len(ch.b))
	}
	if len(w.iov) == 0 {
		return total, nil
	}
	nc, err := s.blocking()
	if err != nil {
		return 0, err
	}
	w.iovTmp = w.iov
	_, err = w.iovTmp.WriteTo(nc)
	return total, err
}

// CloseWrite shuts the sending side.
func (s *Socket) CloseWrite() error {
	if !s.acquire() {
		return net.ErrClosed
	}
	defer s.release()
	return os.NewSyscallError("shutdown", unix.Shutdown(int(s.fd), unix.SHUT_WR))
}

// LocalAddr is the socket's own address.
func (s *Socket) LocalAddr() net.Addr {
	var sa unix.Sockaddr
	err := s.Control(func(fd uintptr) { sa, _ = unix.Getsockname(int(fd)) })
	if err != nil {
		return nil
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
	}
	return nil
}

// RemoteAddr is the peer's address, as accepted.
func (s *Socket) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(s.peer) }

// PeerIP is the peer's address without its port, without allocating.
func (s *Socket) PeerIP() netip.Addr { return s.peer.Addr() }

// SetReadBuffer sets SO_RCVBUF.
func (s *Socket) SetReadBuffer(n int) error { return s.setsockopt(unix.SO_RCVBUF, n) }

// SetWriteBuffer sets SO_SNDBUF.
func (s *Socket) SetWriteBuffer(n int) error { return s.setsockopt(unix.SO_SNDBUF, n) }

func (s *Socket) setsockopt(opt, v int) error {
	var err error
	if cerr := s.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, v) }); cerr != nil {
		return cerr
	}
	return os.NewSyscallError("setsockopt", err)
}

// SetDeadline implements net.Conn.
func (s *Socket) SetDeadline(t time.Time) error {
	if err := s.SetReadDeadline(t); err != nil {
		return err
	}
	return s.SetWriteDeadline(t)
}

// SetReadDeadline implements net.Conn.
func (s *Socket) SetReadDeadline(t time.Time) error { return s.setDeadline(t, &s.rdl, false) }

// SetWriteDeadline implements net.Conn.
func (s *Socket) SetWriteDeadline(t time.Time) error { return s.setDeadline(t, &s.wdl, true) }

func (s *Socket) setDeadline(t time.Time, d *int64, write bool) error {
	s.mu.Lock()
	nc := s.nc
	if nc == nil {
		*d = 0
		if !t.IsZero() {
			*d = t.UnixNano()
		}
	}
	s.mu.Unlock()
	switch {
	case nc == nil:
		return nil
	case write:
		return nc.SetWriteDeadline(t)
	default:
		return nc.SetReadDeadline(t)
	}
}

// detach hands the socket over to a net.Conn of its own (the duplicate)
// and closes this descriptor: for a caller that has only blocking calls
// left to make. The Socket is closed from then on.
func (s *Socket) detach() (net.Conn, error) {
	nc, err := s.blocking()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.nc = nil // Close must not close the duplicate, which is the caller's now
	s.mu.Unlock()
	s.Close()
	return nc, nil
}

// blocking returns the net.Conn for calls that wait, made on first use
// from a duplicate of the descriptor, with the deadlines set so far.
func (s *Socket) blocking() (net.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nc != nil {
		return s.nc, nil
	}
	if !s.acquire() {
		return nil, net.ErrClosed
	}
	dfd, err := unix.FcntlInt(uintptr(s.fd), unix.F_DUPFD_CLOEXEC, 0)
	s.release()
	if err != nil {
		return nil, os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(dfd), "msgnet-socket")
	nc, err := net.FileConn(f) // a descriptor of its own, on the runtime's poller
	f.Close()
	if err != nil {
		return nil, err
	}
	if s.refs.Load()&socketClosed != 0 { // closed meanwhile: Close did not see nc
		nc.Close()
		return nil, net.ErrClosed
	}
	if s.rdl != 0 {
		nc.SetReadDeadline(time.Unix(0, s.rdl))
	}
	if s.wdl != 0 {
		nc.SetWriteDeadline(time.Unix(0, s.wdl))
	}
	s.nc = nc
	return nc, nil
}
