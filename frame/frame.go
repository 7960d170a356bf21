// Package frame is msgnet's wire codec: it reads and writes the framed binary
// protocol and splits the text protocol into lines, with the message size
// limit enforced from the header before any payload is buffered.
//
// It knows nothing of sockets or sessions. Like x/net/http2's Framer, it is a
// codec that connection code drives. The contract it implements is
// docs/PROTOCOL.md.
//
// A frame on the wire:
//
//	offset  size  field
//	0       4     magic   0x4D534749 ("MSGI")
//	4       4     length  total frame length, header included (>= 10)
//	8       2     type    low byte: Kind; high byte: Flags (0 in core)
//	10      n     payload (length - 10 bytes)
//
// All integers are big-endian.
package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Magic is the first four bytes of every frame, "MSGI".
const Magic uint32 = 0x4D534749

// HeaderLen is the size of a frame header in bytes.
const HeaderLen = 10

// DefaultMaxPayload is the default message size limit: the largest payload
// (frame length minus the header) a peer accepts, 1 MiB.
const DefaultMaxPayload = 1 << 20

// MaxPayloadLimit is the largest limit the codec accepts: the length field is
// 32 bits and includes the header.
const MaxPayloadLimit = 1<<32 - 1 - HeaderLen

// Kind is the message kind, the low byte of the frame type.
type Kind uint8

// The message kinds of the core protocol.
const (
	KindPing       Kind = 0x01 // replied to with PONG carrying the same payload
	KindPong       Kind = 0x02 // answer to PING
	KindData       Kind = 0x10 // application bytes for the message handler
	KindControl    Kind = 0x20 // JSON object with a string "op"
	KindError      Kind = 0x30 // JSON {"code": ..., "message": ...}; never answered
	KindHeartbeat  Kind = 0x40 // counts as activity, nothing else
	KindDisconnect Kind = 0x50 // UTF-8 reason; the sender closes after it
)

// Known reports whether k is one of the core kinds.
func (k Kind) Known() bool {
	switch k {
	case KindPing, KindPong, KindData, KindControl, KindError, KindHeartbeat, KindDisconnect:
		return true
	}
	return false
}

// String returns the kind's protocol name, or "KIND(0xNN)" for an unknown one.
func (k Kind) String() string {
	switch k {
	case KindPing:
		return "PING"
	case KindPong:
		return "PONG"
	case KindData:
		return "DATA"
	case KindControl:
		return "CONTROL"
	case KindError:
		return "ERROR"
	case KindHeartbeat:
		return "HEARTBEAT"
	case KindDisconnect:
		return "DISCONNECT"
	}
	return fmt.Sprintf("KIND(0x%02X)", uint8(k))
}

// Flags is the high byte of the frame type. The core protocol sends 0; each
// bit belongs to an extension that both peers negotiated in the handshake
// (docs/PROTOCOL.md), and a peer that did not agree to a bit answers a frame
// carrying it with ERROR unknown_type.
type Flags uint8

// Extension flag bits. Each is only ever sent to a peer that negotiated it.
const (
	FlagCompressed Flags = 1 << 0 // payload is compressed with the negotiated codec
	FlagEncrypted  Flags = 1 << 1 // payload is sealed with the negotiated AEAD
	FlagRequest    Flags = 1 << 2 // DATA payload starts with an 8-byte request id
	FlagReply      Flags = 1 << 3 // DATA payload starts with the 8-byte id it answers
	FlagStream     Flags = 1 << 4 // DATA: a stream's message with its offset (server to client)
	FlagAck        Flags = 1 << 5 // DATA: an acknowledgement (of a stream's messages, or of publishes)
	FlagPublish    Flags = 1 << 6 // DATA: a publish to a stream with the publisher's sequence number
)

// Header is a parsed frame header.
type Header struct {
	Length uint32 // total frame length, header included
	Kind   Kind
	Flags  Flags
}

// PayloadLen is the number of payload bytes that follow the header.
func (h Header) PayloadLen() int { return int(h.Length) - HeaderLen }

// Type is the 16-bit type field: flags in the high byte, kind in the low.
func (h Header) Type() uint16 { return uint16(h.Flags)<<8 | uint16(h.Kind) }

// Frame is one decoded frame. Payload aliases the buffer it was parsed from
// and is valid only until that buffer is reused.
type Frame struct {
	Kind    Kind
	Flags   Flags
	Payload []byte
}

// Errors returned for bad input. They are distinct so that a server can
// answer each with its protocol error code (see Code).
var (
	// ErrBadMagic: the first four bytes of a frame are not "MSGI".
	ErrBadMagic = errors.New("frame: bad magic")
	// ErrShortLength: the length field is below the header size.
	ErrShortLength = errors.New("frame: length below header size")
	// ErrTooLarge: the payload exceeds the message size limit.
	ErrTooLarge = errors.New("frame: message too large")
)

// ParseHeader decodes the header at the start of b, which must hold at least
// HeaderLen bytes, and checks it against maxPayload. The returned Header is
// valid even when an error about its length is returned, so a caller can
// report what was announced.
func ParseHeader(b []byte, maxPayload int) (Header, error) {
	_ = b[HeaderLen-1]
	h := Header{
		Length: binary.BigEndian.Uint32(b[4:8]),
		Kind:   Kind(b[9]),
		Flags:  Flags(b[8]),
	}
	if binary.BigEndian.Uint32(b[0:4]) != Magic {
		return h, ErrBadMagic
	}
	if h.Length < HeaderLen {
		return h, ErrShortLength
	}
	if uint64(h.Length)-HeaderLen > uint64(maxPayload) {
		return h, ErrTooLarge
	}
	return h, nil
}

// Split looks at the start of b for one frame. It returns the total length of
// that frame once its header is complete and valid; total may exceed len(b),
// meaning the frame is not complete yet. It returns 0, nil when b holds less
// than a header. Nothing is copied or allocated.
func Split(b []byte, maxPayload int) (total int, err error) {
	if len(b) < HeaderLen {
		// Reject a bad magic as soon as its bytes are here: a peer speaking
		// another protocol is told at once, not after ten bytes.
		for i := 0; i < len(b) && i < 4; i++ {
			if b[i] != magicBytes[i] {
				return 0, ErrBadMagic
			}
		}
		return 0, nil
	}
	h, err := ParseHeader(b, maxPayload)
	if err != nil {
		return 0, err
	}
	return int(h.Length), nil
}

// SplitPlain is Split's fast path for the most common frame: it returns the
// total length of a complete, valid DATA frame without flags at the start of
// b, and 0 for anything else (not complete yet, invalid, another kind, or
// flags), which the caller then hands to Split.
func SplitPlain(b []byte, maxPayload int) int {
	if len(b) < HeaderLen || binary.BigEndian.Uint32(b) != Magic || b[8] != 0 || b[9] != byte(KindData) {
		return 0
	}
	n := binary.BigEndian.Uint32(b[4:8])
	if n < HeaderLen || uint64(n)-HeaderLen > uint64(maxPayload) || uint64(n) > uint64(len(b)) {
		return 0
	}
	return int(n)
}

// Decode returns the frame that occupies exactly b, as found by Split.
func Decode(b []byte) Frame {
	return Frame{Kind: Kind(b[9]), Flags: Flags(b[8]), Payload: b[HeaderLen:]}
}

var magicBytes = [4]byte{'M', 'S', 'G', 'I'}

// AppendHeader appends a header for a frame with payloadLen payload bytes.
func AppendHeader(dst []byte, kind Kind, flags Flags, payloadLen int) []byte {
	return binary.BigEndian.AppendUint16(
		binary.BigEndian.AppendUint32(
			binary.BigEndian.AppendUint32(dst, Magic), uint32(payloadLen+HeaderLen)),
		uint16(flags)<<8|uint16(kind))
}

// Append appends a whole frame to dst.
func Append(dst []byte, kind Kind, flags Flags, payload []byte) []byte {
	return append(AppendHeader(dst, kind, flags, len(payload)), payload...)
}

// PutHeader writes a header into b[:HeaderLen].
func PutHeader(b []byte, kind Kind, flags Flags, payloadLen int) {
	_ = b[HeaderLen-1]
	binary.BigEndian.PutUint32(b[0:4], Magic)
	binary.BigEndian.PutUint32(b[4:8], uint32(payloadLen+HeaderLen))
	b[8] = byte(flags)
	b[9] = byte(kind)
}
