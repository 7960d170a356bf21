//go:build unix

package conn

import "golang.org/x/sys/unix"

// System errors the engine tells apart, by platform.
const (
	errAgain     = unix.EAGAIN
	errIntr      = unix.EINTR
	errConnReset = unix.ECONNRESET
	errPipe      = unix.EPIPE
)
