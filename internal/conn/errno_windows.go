//go:build windows

package conn

import "syscall"

// System errors the engine tells apart, by platform. Windows never makes
// the raw calls that would return the first two (sessions are not parked
// there); a peer's reset or abort comes as a WSA error.
var (
	errAgain     error = syscall.EAGAIN
	errIntr      error = syscall.EINTR
	errConnReset error = syscall.WSAECONNRESET
	errPipe      error = syscall.WSAECONNABORTED
)
