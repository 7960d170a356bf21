//go:build windows

package testenv

import "syscall"

// SetRcvBuf sets a socket's SO_RCVBUF (for a net.Dialer's Control).
func SetRcvBuf(fd uintptr, n int) error {
	return syscall.SetsockoptInt(syscall.Handle(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
}
