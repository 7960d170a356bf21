package frame

import "bytes"

// Mode is how a connection speaks: frames or lines.
type Mode uint8

// Connection modes. A server decides a connection's mode from its first bytes
// (Sniff).
const (
	ModeUnknown Mode = iota // nothing decisive received yet
	ModeBinary              // the framed protocol
	ModeText                // one message per line
)

// String returns "unknown", "binary" or "text".
func (m Mode) String() string {
	switch m {
	case ModeBinary:
		return "binary"
	case ModeText:
		return "text"
	}
	return "unknown"
}

// Sniff decides a connection's mode from the first bytes it sent. A stream
// whose first four bytes are "MSGI" speaks frames; any other start, or a
// newline before four bytes have arrived, means text. While b is a strict
// prefix of "MSGI" without a newline, it returns ModeUnknown: wait for more.
func Sniff(b []byte) Mode {
	for i := 0; i < len(b) && i < 4; i++ {
		if b[i] != magicBytes[i] {
			return ModeText
		}
	}
	if len(b) >= 4 {
		return ModeBinary
	}
	return ModeUnknown
}

// SplitLine looks for one text-mode line at the start of b. It returns the
// line without its "\n" and without one trailing "\r", and the number of
// bytes it used. It returns n == 0 when no complete line is there yet. When
// the line is, or must become, longer than maxLen bytes it returns
// ErrTooLarge without waiting for the rest of it.
func SplitLine(b []byte, maxLen int) (line []byte, n int, err error) {
	return SplitLineFrom(b, 0, maxLen)
}

// SplitLineFrom is SplitLine for a b whose first scanned bytes are known to
// hold no newline (an earlier call found none there): it looks only past
// them, so that a long line arriving in many pieces is scanned once, not
// once per piece.
func SplitLineFrom(b []byte, scanned, maxLen int) (line []byte, n int, err error) {
	i := -1
	if scanned < len(b) {
		if i = bytes.IndexByte(b[scanned:], '\n'); i >= 0 {
			i += scanned
		}
	}
	if i < 0 {
		// maxLen content bytes plus a possible '\r' may still be complete.
		if len(b) > maxLen+1 {
			return nil, 0, ErrTooLarge
		}
		return nil, 0, nil
	}
	line = b[:i]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	if len(line) > maxLen {
		return nil, 0, ErrTooLarge
	}
	return line, i + 1, nil
}

// TrimLine returns an unterminated last line as text mode delivers it at the
// end of the stream: with one trailing "\r" removed.
func TrimLine(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] == '\r' {
		return b[:len(b)-1]
	}
	return b
}

// AppendEscaped appends msg with its control characters written as
// escapes: C0 controls other than tab, and DEL, as "\n", "\r" or "\x" and
// two hex digits; C1 controls (U+0080 to U+009F, encoded in UTF-8) as
// "\u" and four hex digits. An application that relays one peer's words to
// text-mode peers uses it, so that the words stay on the line the
// application wrote them into: a newline in them cannot start a line that
// reads as if someone else had written it, and escape sequences (ESC [ or
// the one-character CSI, U+009B) cannot drive the reader's terminal.
func AppendEscaped(dst, msg []byte) []byte {
	const hex = "0123456789abcdef"
	for len(msg) > 0 {
		i := 0
		for i < len(msg) && escapeLen(msg[i:]) == 0 {
			i++
		}
		dst = append(dst, msg[:i]...)
		if i == len(msg) {
			break
		}
		n := escapeLen(msg[i:])
		switch c := msg[i]; {
		case n == 2: // a C1 control: 0xc2, then 0x80 to 0x9f
			c = msg[i+1]
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		case c == '\n':
			dst = append(dst, `\n`...)
		case c == '\r':
			dst = append(dst, `\r`...)
		default:
			dst = append(dst, '\\', 'x', hex[c>>4], hex[c&15])
		}
		msg = msg[i+n:]
	}
	return dst
}

// escapeLen is how many bytes at the start of b make one character that
// AppendEscaped escapes: 1 for a C0 control or DEL, 2 for a C1 control in
// UTF-8, 0 for none.
func escapeLen(b []byte) int {
	switch c := b[0]; {
	case c < 0x20 && c != '\t' || c == 0x7f:
		return 1
	case c == 0xc2 && len(b) > 1 && b[1] >= 0x80 && b[1] <= 0x9f:
		return 2
	}
	return 0
}
