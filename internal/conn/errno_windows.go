//go:build windows

package conn

import "syscall"

// System errors the engine tells apart, by platform. Windows never makes
// the raw calls that would return the first two (sessions are not parked
// there); a peer's reset or abort comes as a WSA error.
const (
	errAgain     = syscall.EAGAIN
	errIntr      = syscall.EINTR
	errConnReset = syscall.WSAECONNRESET
	errPipe      = syscall.WSAECONNABORTED // EPIPE's role: writing to a connection the peer is gone from
)
