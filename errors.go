package msgnet

import (
	"errors"
	"fmt"
	"slices"

	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/internal/conn"
)

// Errors returned by msgnet's methods, all in this block. Test for them
// with errors.Is. The engine's (internal/conn) are the same values.
var (
	// ErrServerClosed is returned by Serve after Shutdown or Close.
	ErrServerClosed = errors.New("msgnet: server closed")
	// ErrSessionClosed is returned by a send on a session or client
	// connection that is closing or closed.
	ErrSessionClosed = conn.ErrSessionClosed
	// ErrQueueFull is returned by a send when the session's bounded send
	// queue cannot take the message: the peer reads slower than it is sent
	// to. Nothing was queued.
	ErrQueueFull = conn.ErrQueueFull
	// ErrServerQueueFull is returned by a send when the bound on bytes
	// queued on all of the server's sessions together is spent
	// (WithServerQueueBytes). It matches ErrQueueFull. Nothing was queued.
	ErrServerQueueFull = conn.ErrServerQueueFull
	// ErrMessageTooLarge is returned by a send whose payload exceeds the
	// message size limit. Nothing was written.
	ErrMessageTooLarge = conn.ErrMessageTooLarge
	// ErrNoSession is returned when a session or client id names no open
	// session.
	ErrNoSession = errors.New("msgnet: no such session")
	// ErrNotConnected is returned by a client that has no connection.
	ErrNotConnected = errors.New("msgnet: not connected")
	// ErrHandshake wraps failures of a client's hello/welcome exchange.
	ErrHandshake = errors.New("msgnet: handshake failed")
	// ErrBufferFull is returned by a client's Send while it reconnects,
	// when the reconnect buffer cannot take the message.
	ErrBufferFull = errors.New("msgnet: reconnect buffer full")
	// ErrReconnectFailed is the reason a client closes after its reconnect
	// attempts ran out.
	ErrReconnectFailed = errors.New("msgnet: reconnect attempts exhausted")
	// ErrNotNegotiated is returned by Request when the peer did not
	// negotiate request/reply in the handshake (a core-only peer).
	ErrNotNegotiated = errors.New("msgnet: peer did not negotiate request/reply")
	// ErrConnectionLost is returned by a Request whose connection ended
	// before the reply came. The peer may or may not have handled it.
	ErrConnectionLost = errors.New("msgnet: connection lost before the reply")
	// ErrPublishExpired is reported to OnPublishFailed for a publish that
	// stayed unacknowledged for longer than ReliableOptions.MaxAge.
	ErrPublishExpired = errors.New("msgnet: publish not acknowledged in time")
	// ErrStoreFull refuses a publish that the memory store has no room
	// for (NewMemoryStore): its publisher is told (status 1, store_full).
	ErrStoreFull = &ProtocolError{Code: CodeStoreFull, Message: "the server's stream store is full"}
)

// Reasons a session ends, as passed to disconnect handlers, and words that
// travel on the wire. Test for them with errors.Is. Their text has no
// "msgnet:" prefix because it is what a DISCONNECT frame (or a request's
// error reply) carries, which the protocol spells out.
var (
	// ErrPeerClosed: the stream ended without a DISCONNECT frame.
	ErrPeerClosed = conn.ErrPeerClosed
	// ErrIdleTimeout: nothing was received for longer than the idle timeout.
	ErrIdleTimeout = errors.New("idle timeout")
	// ErrHandshakeTimeout: the session did not complete its handshake (or,
	// without one, send its first message) in time.
	ErrHandshakeTimeout = errors.New("handshake timeout")
	// ErrServerShutdown: the server is stopping gracefully.
	ErrServerShutdown = errors.New("server shutting down")
	// ErrClientClosed: the client was closed by its user.
	ErrClientClosed = errors.New("client closed")
	// ErrReplaced: a newer session claimed the session's client id, on this
	// node or, in a cluster, on another; the newest session of a client id
	// wins.
	ErrReplaced = errors.New("replaced")
	// ErrKicked is ErrReplaced, by the name it had before one policy
	// applied on one node and across a cluster.
	//
	// Deprecated: use ErrReplaced.
	ErrKicked = ErrReplaced
	// ErrSlowConsumer: the session's send queue was full under the
	// SlowConsumerDisconnect policy. It is both the session's end reason and
	// the error the sender got.
	ErrSlowConsumer = conn.ErrSlowConsumer
	// ErrHeartbeatTimeout ends a client's connection whose PONG did not
	// come in time.
	ErrHeartbeatTimeout = errors.New("heartbeat timeout")
	// ErrNoRequestHandler is the error a peer replies with when it has no
	// request handler.
	ErrNoRequestHandler = errors.New("no request handler")
)

// Reasons a message was dropped, as counted in Stats.Dropped.
const (
	DropQueueFull       = conn.DropQueueFull       // the session's queue bound (the send failed with ErrQueueFull)
	DropServerQueueFull = conn.DropServerQueueFull // the server-wide queue budget (ErrServerQueueFull)
	DropSlowConsumer    = conn.DropSlowConsumer    // the queue bound under SlowConsumerDisconnect: the session was closed
	DropRateLimited     = conn.DropRateLimited     // a message from the peer over its rate limit
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
	ErrServerBusy  = &ProtocolError{Code: CodeServerBusy, Message: "the server's send queues are full"}
	// ErrBadClientID refuses a hello's client id: too long (see
	// WithMaxClientIDLength), or with control, format or white-space
	// characters.
	ErrBadClientID = &ProtocolError{Code: CodeBadClientID, Message: "bad client id"}
	// ErrTooManyGroups is returned by Join past WithMaxGroupsPerSession.
	ErrTooManyGroups = &ProtocolError{Code: CodeTooManyGroups, Message: "too many groups for one session"}
	// ErrBadGroup is returned by Join for a name that is empty, too long
	// (WithMaxGroupNameLength) or has control, format or white-space
	// characters other than the space.
	ErrBadGroup = &ProtocolError{Code: CodeBadGroup, Message: "bad group name"}
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

// ERROR codes msgnet sends, with what each means (docs/PROTOCOL.md, sections
// 2 and 6). The core protocol's codes are also in package frame. A peer
// must accept codes it does not know.
const (
	CodeBadFrame        = frame.CodeBadFrame        // bad magic or a length below 10
	CodeMessageTooLarge = frame.CodeMessageTooLarge // a payload over the size limit
	CodeUnknownType     = frame.CodeUnknownType     // an unknown kind, or a flag not negotiated
	CodeBadControl      = frame.CodeBadControl      // a CONTROL frame that is not a known op
	CodeServerFull      = frame.CodeServerFull      // at max connections

	CodeBadRequest         = "bad_request"         // a request or reply too short for its header
	CodeBadContainer       = "bad_container"       // a payload the container handlers cannot decode or route
	CodeAuthFailed         = "auth_failed"         // authentication failed
	CodeAuthRequired       = "auth_required"       // the server requires authentication and the peer skipped it
	CodeEncryptionRequired = "encryption_required" // the server requires encryption the client did not ask for
	CodeDecryptFailed      = "decrypt_failed"      // a sealed payload that does not open
	CodeBadCompression     = "bad_compression"     // a compressed payload that does not decompress
	CodeFilterFailed       = "filter_failed"       // a user filter refused a payload
	CodeRateLimited        = "rate_limited"        // over the per-session message rate
	CodePerIPLimit         = "per_ip_limit"        // too many connections from one address
	CodeHandshakeTimeout   = "handshake_timeout"   // reserved: a late handshake ends with DISCONNECT "handshake timeout", no ERROR
	CodeBadClientID        = "bad_client_id"       // a client id too long, with control characters, or not the key's to claim
	CodeTooManyGroups      = "too_many_groups"     // a join past the groups-per-session limit
	CodeBadGroup           = "bad_group"           // a group name too long, empty or with control characters
	CodeServerBusy         = "server_busy"         // the server-wide queue budget is spent
	CodeBadStream          = "bad_stream"          // a stream name that is not group:<group> or client:<own id>, or a malformed stream frame
	CodeContinuityLost     = "continuity_lost"     // a subscription's position left retention, or its stream's epoch changed
	CodeStoreUnavailable   = "store_unavailable"   // the stream store failed; the session ends, and the client reconnects and resends
	CodeStoreFull          = "store_full"          // a publish refused: the memory store has no room for it
)

// ErrorCodes lists every ERROR code msgnet sends, for monitors that want a
// fixed set of labels.
var ErrorCodes = []string{
	CodeBadFrame, CodeMessageTooLarge, CodeUnknownType, CodeBadControl, CodeServerFull,
	CodeBadRequest, CodeBadContainer, CodeAuthFailed, CodeAuthRequired, CodeEncryptionRequired,
	CodeDecryptFailed, CodeBadCompression, CodeFilterFailed, CodeRateLimited, CodePerIPLimit,
	CodeHandshakeTimeout, CodeBadClientID, CodeTooManyGroups, CodeBadGroup, CodeServerBusy,
	CodeBadStream, CodeContinuityLost, CodeStoreUnavailable, CodeStoreFull,
}

// knownCode folds a code a peer sent into msgnet's set, so that a peer
// cannot make the error counters grow without bound.
func knownCode(code string) string {
	if slices.Contains(ErrorCodes, code) {
		return code
	}
	return "other"
}
