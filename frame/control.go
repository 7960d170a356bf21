package frame

import (
	"encoding/json"
	"errors"
)

// Protocol error codes carried in ERROR frames. New codes may be added; a
// peer must accept codes it does not know.
const (
	CodeBadFrame        = "bad_frame"
	CodeMessageTooLarge = "message_too_large"
	CodeUnknownType     = "unknown_type"
	CodeBadControl      = "bad_control"
	CodeServerFull      = "server_full"
)

// Code maps a codec error to its protocol error code, or "" for an error
// that has none.
func Code(err error) string {
	switch {
	case errors.Is(err, ErrBadMagic), errors.Is(err, ErrShortLength):
		return CodeBadFrame
	case errors.Is(err, ErrTooLarge):
		return CodeMessageTooLarge
	}
	return ""
}

// ErrorBody is the JSON payload of an ERROR frame.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// AppendError appends the JSON payload of an ERROR frame.
func AppendError(dst []byte, code, message string) []byte {
	b, _ := json.Marshal(ErrorBody{Code: code, Message: message}) // two strings cannot fail
	return append(dst, b...)
}

// ParseError decodes an ERROR payload. A payload that is not the expected
// JSON yields an ErrorBody whose Message is the raw text, so nothing a peer
// said is lost.
func ParseError(p []byte) ErrorBody {
	var e ErrorBody
	if json.Unmarshal(p, &e) != nil || e.Code == "" {
		return ErrorBody{Code: "unknown", Message: string(p)}
	}
	return e
}

// ControlOp extracts the "op" of a CONTROL payload. It fails with
// ErrBadControl when the payload is not a JSON object with a string "op".
func ControlOp(p []byte) (string, error) {
	var c struct {
		Op *string `json:"op"`
	}
	if err := json.Unmarshal(p, &c); err != nil || c.Op == nil {
		return "", ErrBadControl
	}
	return *c.Op, nil
}

// ErrBadControl: a CONTROL payload is not a JSON object with a string "op".
var ErrBadControl = errors.New("frame: control payload is not a JSON object with a string op")
