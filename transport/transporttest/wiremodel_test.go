package transporttest_test

import (
	"bytes"
	"encoding/binary"

	"github.com/msgnet/msgnet/frame"
)

// wire is what a server must make of a byte stream at the level of
// framing (docs/PROTOCOL.md sections 1, 2 and 4): the mode it speaks, the
// frames or lines it dispatches, and whether and why it stops reading. It
// is written from the protocol text, apart from the frame package, so
// that FuzzSession holds the live session to the protocol rather than to
// the codec it uses. What it does not know (what a hello negotiates, what
// a compressed payload holds) the fuzz target learns from the output.
type wire struct {
	mode   frame.Mode
	frames []frame.Frame // binary: dispatched, in order; payloads alias the stream
	lines  [][]byte      // text: dispatched, without terminator
	// end is why the server stops reading: "" (it does not), an ERROR
	// code it must send first (bad_frame, message_too_large), or
	// endDisconnect (the peer's DISCONNECT).
	end   string
	endAt int // where what is not dispatched starts: a bad frame or line, what follows a DISCONNECT, the rest
	// rest is an incomplete frame or line at the end of the stream; need
	// is the incomplete frame's total length once its length is known.
	rest []byte
	need int
}

// endDisconnect marks a session ended by the peer's DISCONNECT frame.
const endDisconnect = "DISCONNECT"

var magic = []byte("MSGI")

// model reads b as the server must, with the message size limit limit.
func model(b []byte, limit int) wire {
	var w wire
	switch {
	case len(b) == 0:
		return w
	case len(b) < len(magic) && bytes.Equal(b, magic[:len(b)]):
		w.mode, w.rest = frame.ModeUnknown, b // a strict prefix of "MSGI": undecided
		return w
	case bytes.HasPrefix(b, magic):
		w.mode = frame.ModeBinary
	default:
		w.mode = frame.ModeText // a byte differs, or a newline came first
	}
	if w.mode == frame.ModeText {
		w.text(b, limit)
	} else {
		w.binary(b, limit)
	}
	return w
}

func (w *wire) text(b []byte, limit int) {
	for len(b) > w.endAt {
		r := b[w.endAt:]
		i := bytes.IndexByte(r, '\n')
		if i < 0 {
			// The server gives up as soon as no line of the limit (and a
			// "\r") can come of it.
			if len(r) > limit+1 {
				w.end = frame.CodeMessageTooLarge
				return
			}
			w.rest = r
			return
		}
		line := bytes.TrimSuffix(r[:i], []byte("\r"))
		if len(line) > limit {
			w.end = frame.CodeMessageTooLarge
			return
		}
		w.lines = append(w.lines, line)
		w.endAt += i + 1
	}
}

func (w *wire) binary(stream []byte, limit int) {
	for len(stream) > w.endAt {
		b := stream[w.endAt:]
		n := min(len(b), len(magic))
		if !bytes.Equal(b[:n], magic[:n]) {
			w.end = frame.CodeBadFrame // decided as soon as a byte differs
			return
		}
		if len(b) < frame.HeaderLen {
			w.rest = b
			return
		}
		length := binary.BigEndian.Uint32(b[4:8])
		switch {
		case length < frame.HeaderLen:
			w.end = frame.CodeBadFrame
			return
		case uint64(length)-frame.HeaderLen > uint64(limit):
			w.end = frame.CodeMessageTooLarge
			return
		case int(length) > len(b):
			w.rest, w.need = b, int(length)
			return
		}
		f := frame.Frame{Flags: frame.Flags(b[8]), Kind: frame.Kind(b[9]), Payload: b[frame.HeaderLen:length]}
		w.frames = append(w.frames, f)
		w.endAt += int(length)
		// A DISCONNECT with flags is an unknown type, dropped.
		if f.Kind == frame.KindDisconnect && f.Flags == 0 {
			w.end = endDisconnect
			return
		}
	}
}

// completion returns the bytes that finish w's incomplete frame or line,
// so that what is written after them starts afresh: the rest of the
// magic, of a header (a length as small as the bytes already sent allow,
// the kind HEARTBEAT, which is never answered) and zeros for the payload;
// or a newline. It may complete a header that announces too much or too
// little for limit: then the session must end there, and nothing follows.
func (w wire) completion(limit int) []byte {
	if w.end != "" || len(w.rest) == 0 {
		return nil
	}
	if w.mode == frame.ModeText {
		return []byte("\n")
	}
	if w.need > 0 {
		return make([]byte, w.need-len(w.rest))
	}
	h := frame.AppendHeader(nil, frame.KindHeartbeat, 0, 0)
	copy(h, w.rest)
	if len(w.rest) < 8 {
		// Our bytes of the length: zeros, the last one as small as makes
		// the length at least a header's.
		for i := max(len(w.rest), 4); i < 8; i++ {
			h[i] = 0
		}
		if binary.BigEndian.Uint32(h[4:8]) < frame.HeaderLen {
			h[7] = frame.HeaderLen
		}
	}
	b := h[len(w.rest):]
	length := uint64(binary.BigEndian.Uint32(h[4:8]))
	if length > frame.HeaderLen && length-frame.HeaderLen <= uint64(limit) {
		b = append(b, make([]byte, length-frame.HeaderLen)...)
	}
	return b
}
