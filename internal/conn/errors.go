package conn

import (
	"errors"
	"fmt"
)

// The engine's errors and end reasons. Package msgnet exports each under the
// same name, with its documentation; their text is part of the API (end
// reasons travel in DISCONNECT frames).
var (
	ErrSessionClosed   = errors.New("msgnet: session closed")
	ErrQueueFull       = errors.New("msgnet: send queue full")
	ErrServerQueueFull = fmt.Errorf("%w: server-wide queue budget spent", ErrQueueFull)
	ErrMessageTooLarge = errors.New("msgnet: message too large")
	ErrSlowConsumer    = errors.New("slow consumer")
	ErrPeerClosed      = errors.New("connection closed by peer")
)

// Reasons a message was dropped, as counted in Shared.Dropped.
const (
	DropQueueFull       = "queue_full"        // the connection's queue bound: the send failed with ErrQueueFull
	DropServerQueueFull = "server_queue_full" // the shared budget: ErrServerQueueFull
	DropSlowConsumer    = "slow_consumer"     // the queue bound with SlowDisconnect: the connection was closed
	DropRateLimited     = "rate_limited"      // a message from the peer over a rate limit (counted by the Handler)
)
