//go:build !linux

package conn

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
)

// Socket is a descriptor owned without a net.Conn; only on Linux (see
// socket_linux.go). Elsewhere it is never made.
type Socket struct{ net.Conn }

// SocketsSupported reports whether AcceptSocket works on this platform.
const SocketsSupported = false

// Acceptor is not supported here.
type Acceptor struct{}

// NewAcceptor is not supported here.
func NewAcceptor(syscall.RawConn) *Acceptor { return nil }

// Accept is not supported here.
func (a *Acceptor) Accept() (*Socket, error) { return nil, errors.ErrUnsupported }

// ErrWouldBlock is Accept's answer when no connection is pending.
var ErrWouldBlock = errors.New("msgnet: no connection pending")

// PrepareListener is not needed here.
func PrepareListener(syscall.RawConn, bool) error { return nil }

// PeerIP is never called here.
func (s *Socket) PeerIP() netip.Addr { return netip.Addr{} }

func (s *Socket) writeBatch(w *writer) (int, error) { return 0, errors.ErrUnsupported }

// CloseWrite is never called here.
func (s *Socket) CloseWrite() error { return errors.ErrUnsupported }

// SyscallConn is never called here.
func (s *Socket) SyscallConn() (syscall.RawConn, error) { return nil, errors.ErrUnsupported }

// detach is never called here: no Socket is ever made.
func (s *Socket) detach() (net.Conn, error) { return nil, errors.ErrUnsupported }
