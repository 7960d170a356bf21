// Package netpoll parks idle connections: it watches many sockets with one
// goroutine and tells their owners when one becomes readable, so an idle
// connection costs no goroutine stack and no read buffer.
//
// Each registration is one-shot: after a readiness report the socket is not
// watched again until Rearm. That gives the owner exclusive use of the socket
// while it reads, without locks on the read path.
//
// On Linux it is an epoll set; elsewhere Supported is false and callers keep a
// goroutine per connection.
package netpoll

import "errors"

// Readable is told, on the poller's goroutine, that its socket has data or
// was closed by the peer; now is a recent clock reading (Unix nanoseconds),
// taken when the poller's wait returned from a park and otherwise every few
// rounds, so that under load it may lag by a fraction of a millisecond;
// hangup is set when the report says the peer closed or the socket failed,
// so that an owner reading edge-triggered reads on to the end. An owner
// that stopped before its socket was drained (to give others their turn)
// returns true and is called again in the next round, with carried set;
// it must not return true again until then, so that it is carried once. It must return quickly (typically by starting a
// goroutine to read).
type Readable interface {
	Readable(now int64, hangup, carried bool) (again bool)
}

// ErrClosed is returned by a Poller that was closed.
var ErrClosed = errors.New("netpoll: poller closed")
