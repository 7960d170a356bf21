//go:build !linux

package conn

import "syscall"

// Sessions are only parked on Linux; elsewhere these are never reached.

func rawRead(fd int, p []byte) (int, error)              { return -1, syscall.ENOTSUP }
func rawWrite(fd int, p []byte) (int, error)             { return -1, syscall.ENOTSUP }
func rawWritev(fd int, iov []syscall.Iovec) (int, error) { return -1, syscall.ENOTSUP }
