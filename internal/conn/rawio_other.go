//go:build !linux

package conn

import "syscall"

// Sessions are only parked on Linux; elsewhere these are never reached.

type iovec struct{}

func rawRead(fd int, p []byte) (int, error)  { return -1, syscall.ENOTSUP }
func rawWrite(fd int, p []byte) (int, error) { return -1, syscall.ENOTSUP }

func (w *writer) writeOnce(fd int) (int, error) { return -1, syscall.ENOTSUP }
