// Package echoproto is the protocol logic shared by the benchmark's peer
// echo servers: given one complete frame, it appends the reply the msgnet
// wire contract asks of an echo server. The peers differ only in how they
// move bytes (event loops, buffered goroutines, naive goroutines), which is
// what the benchmark compares.
package echoproto

import (
	"encoding/json"
	"strconv"
	"sync/atomic"

	"github.com/msgnet/msgnet/frame"
)

// MaxPayload is the payload limit the peers enforce, msgnet's default.
const MaxPayload = frame.DefaultMaxPayload

// sessions numbers the sessions of the process.
var sessions atomic.Uint64

// Session is the protocol state of one connection.
type Session struct {
	serverID string
	id       string
	frames   uint64 // frames handled so far
}

// NewSession starts the state of a new connection of server serverID.
func NewSession(serverID string) *Session {
	return &Session{serverID: serverID, id: serverID + "-" + strconv.FormatUint(sessions.Add(1), 10)}
}

// Handle appends to out the reply to one complete frame fr (header
// included, as found by frame.Split) and reports whether the connection
// must be closed once out is written:
//
//   - DATA is echoed unchanged, header and payload;
//   - PING is answered with PONG carrying the same payload;
//   - CONTROL hello as the first frame is answered with welcome; any other
//     CONTROL with ERROR bad_control;
//   - HEARTBEAT, PONG and ERROR get no answer; DISCONNECT closes;
//   - an unknown kind or a flag bit gets ERROR unknown_type.
func (s *Session) Handle(out, fr []byte) (_ []byte, closeAfter bool) {
	first := s.frames == 0
	s.frames++
	f := frame.Decode(fr)
	if f.Flags != 0 || !f.Kind.Known() {
		return appendError(out, frame.CodeUnknownType, "unknown frame type"), false
	}
	switch f.Kind {
	case frame.KindData:
		return append(out, fr...), false
	case frame.KindPing:
		return frame.Append(out, frame.KindPong, 0, f.Payload), false
	case frame.KindControl:
		op, err := frame.ControlOp(f.Payload)
		if err != nil {
			return appendError(out, frame.CodeBadControl, "control payload is not a JSON object with op"), false
		}
		if op != "hello" || !first {
			return appendError(out, frame.CodeBadControl, "unexpected control op "+strconv.Quote(op)), false
		}
		w, _ := json.Marshal(struct {
			Op             string `json:"op"`
			SessionID      string `json:"session_id"`
			ServerID       string `json:"server_id"`
			MaxMessageSize int    `json:"max_message_size"`
			IdleTimeoutMS  int    `json:"idle_timeout_ms"`
		}{"welcome", s.id, s.serverID, MaxPayload, 0})
		return frame.Append(out, frame.KindControl, 0, w), false
	case frame.KindDisconnect:
		return out, true
	}
	return out, false // HEARTBEAT, PONG, ERROR
}

// AppendFatal appends the answer to a header that frame.ParseHeader
// rejected: ERROR with the error's code, then DISCONNECT. The connection
// must be closed once it is written.
func AppendFatal(out []byte, err error) []byte {
	code := frame.Code(err)
	if code == "" {
		code = frame.CodeBadFrame
	}
	out = appendError(out, code, err.Error())
	return frame.Append(out, frame.KindDisconnect, 0, []byte(err.Error()))
}

func appendError(out []byte, code, msg string) []byte {
	p := frame.AppendError(nil, code, msg)
	return frame.Append(out, frame.KindError, 0, p)
}
