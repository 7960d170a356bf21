//go:build unix

package conn

import "golang.org/x/sys/unix"

// System errors the engine tells apart, by platform.
var (
	errAgain     error = unix.EAGAIN
	errIntr      error = unix.EINTR
	errConnReset error = unix.ECONNRESET
	errPipe      error = unix.EPIPE
)
