package msgnet

import (
	"errors"
	"fmt"

	"github.com/msgnet/msgnet/frame"
)

// Errors returned by msgnet's methods. Test for them with errors.Is.
var (
	// ErrServerClosed is returned by Serve after Shutdown or Close.
	ErrServerClosed = errors.New("msgnet: server closed")
	// ErrSessionClosed is returned by a send on a session or client
	// connection that is closing or closed.
	ErrSessionClosed = errors.New("msgnet: session closed")
	// ErrQueueFull is returned by a send when the session's bounded send
	// queue cannot take the message: the peer reads slower than it is sent
	// to. Nothing was queued.
	ErrQueueFull = errors.New("msgnet: send queue full")
	// ErrMessageTooLarge is returned by a send whose payload exceeds the
	// message size limit. Nothing was written.
	ErrMessageTooLarge = errors.New("msgnet: message too large")
	// ErrNotConnected is returned by a client that has no connection.
	ErrNotConnected = errors.New("msgnet: not connected")
)

// Reasons a session ends, as passed to disconnect handlers. Test for them
// with errors.Is; their text is what travels in a DISCONNECT frame.
var (
	// ErrPeerClosed: the stream ended without a DISCONNECT frame.
	ErrPeerClosed = errors.New("connection closed by peer")
	// ErrIdleTimeout: nothing was received for longer than the idle timeout.
	ErrIdleTimeout = errors.New("idle timeout")
	// ErrServerShutdown: the server is stopping gracefully.
	ErrServerShutdown = errors.New("server shutting down")
	// ErrClientClosed: the client was closed by its user.
	ErrClientClosed = errors.New("client closed")
	// ErrSlowConsumer: the session's send queue was full under the
	// SlowConsumerDisconnect policy. It is both the session's end reason and
	// the error the sender got.
	ErrSlowConsumer = errors.New("slow consumer")
)

// ProtocolError is an ERROR frame's content, sent or received. Errors.Is
// matches two ProtocolErrors by Code, so errors.Is(err, ErrServerFull)
// works for any server_full error.
type ProtocolError struct {
	Code    string // lower_snake_case, e.g. "message_too_large"
	Message string // for people
	Remote  bool   // true when the peer sent it
}

func (e *ProtocolError) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return e.Code + ": " + e.Message
}

// Is reports whether target is a *ProtocolError with the same Code.
func (e *ProtocolError) Is(target error) bool {
	t, ok := target.(*ProtocolError)
	return ok && t.Code == e.Code
}

// Protocol errors by code, for use with errors.Is.
var (
	ErrServerFull  = &ProtocolError{Code: frame.CodeServerFull, Message: "server at max connections"}
	ErrBadFrame    = &ProtocolError{Code: frame.CodeBadFrame, Message: "bad frame"}
	ErrTooLarge    = &ProtocolError{Code: frame.CodeMessageTooLarge, Message: "message exceeds the size limit"}
	ErrUnknownType = &ProtocolError{Code: frame.CodeUnknownType, Message: "unknown message type"}
	ErrBadControl  = &ProtocolError{Code: frame.CodeBadControl, Message: "bad control message"}
)

// DisconnectError is a reason given in words: by Session.Disconnect, or by
// the peer in a DISCONNECT frame (Remote true).
type DisconnectError struct {
	Reason string
	Remote bool
}

func (e *DisconnectError) Error() string { return e.Reason }

// HandlerPanicError ends a session whose handler panicked. Only that session
// is closed; the server goes on.
type HandlerPanicError struct {
	Value any
}

func (e *HandlerPanicError) Error() string { return fmt.Sprintf("handler panic: %v", e.Value) }
