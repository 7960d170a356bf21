package transporttest_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"syscall"

	"github.com/msgnet/msgnet/frame"
)

// checker holds one session's output to what the protocol allows for its
// stream.
type checker struct {
	fs       *fuzzServer
	want     wire
	out      []byte
	readErr  error
	answered bool
}

// check returns "" if the output is what the protocol allows, or what is
// wrong. after is how many bytes the stream has beyond what the server
// dispatches.
func (c *checker) check(after int) string {
	reset := !c.answered && errors.Is(c.readErr, syscall.ECONNRESET)
	if !c.answered && !reset && c.readErr != io.EOF {
		return fmt.Sprintf("reading the output: %v", c.readErr)
	}
	if reset {
		// The server closed a socket with input unread, and the kernel
		// answered the input with RST, which may destroy what the server
		// wrote last. After ERROR it lingers (PROTOCOL.md section 2)
		// unless more than 256 KiB follow; after the peer's DISCONNECT it
		// need not, as the peer promised to send nothing more.
		switch {
		case c.want.end == endDisconnect && after > 0:
			return c.checkPrefixOnly()
		case c.want.end != "" && after > 256<<10:
			return c.checkPrefixOnly()
		}
		return fmt.Sprintf("the connection was reset (%d bytes followed the end at offset %d)", after, c.want.endAt)
	}
	if c.want.mode == frame.ModeText {
		return c.checkText()
	}
	return c.checkBinary()
}

func (c *checker) checkText() string {
	if len(c.out) > 0 && c.out[len(c.out)-1] != '\n' {
		return "the text output ends inside a line"
	}
	got := bytes.SplitAfter(c.out, []byte("\n"))
	got = got[:len(got)-1] // after the last "\n": nothing
	echoes := len(got)
	if !c.answered {
		if c.want.end == "" {
			return "the text session ended though nothing in its input ends it"
		}
		if len(got) == 0 || string(got[len(got)-1]) != "ERROR "+c.want.end+"\n" {
			return fmt.Sprintf("the text session ended without the line %q", "ERROR "+c.want.end)
		}
		echoes--
	} else if c.want.end != "" {
		return fmt.Sprintf("the text session served past %s at offset %d", c.want.end, c.want.endAt)
	}
	if echoes != len(c.want.lines) {
		return fmt.Sprintf("%d lines echoed, want %d", echoes, len(c.want.lines))
	}
	for i, line := range c.want.lines {
		if echo := got[i][:len(got[i])-1]; !bytes.Equal(echo, line) {
			at := 0
			for at < min(len(echo), len(line)) && echo[at] == line[at] {
				at++
			}
			return fmt.Sprintf("line %d echoed as %d bytes, want %d; first different at byte %d", i, len(echo), len(line), at)
		}
	}
	return ""
}

// frames splits the binary output into frames, checking each. cut says
// that the output may end inside a frame.
func (c *checker) frames(cut bool) ([]frame.Frame, string) {
	var fs []frame.Frame
	for b := c.out; len(b) > 0; {
		if len(b) < frame.HeaderLen {
			if cut && bytes.HasPrefix(magic, b[:min(len(b), len(magic))]) {
				return fs, ""
			}
			return fs, fmt.Sprintf("the output ends inside a header: %q", b)
		}
		length := binary.BigEndian.Uint32(b[4:8])
		f := frame.Frame{Flags: frame.Flags(b[8]), Kind: frame.Kind(b[9])}
		switch {
		case !bytes.Equal(b[:4], magic):
			return fs, fmt.Sprintf("frame %d has magic %q", len(fs), b[:4])
		case length < frame.HeaderLen:
			return fs, fmt.Sprintf("frame %d has length %d", len(fs), length)
		case int(length)-frame.HeaderLen > c.fs.limit:
			return fs, fmt.Sprintf("frame %d has a payload of %d bytes, over the limit", len(fs), length-frame.HeaderLen)
		case !f.Kind.Known():
			return fs, fmt.Sprintf("frame %d has kind %v", len(fs), f.Kind)
		case int(length) > len(b) && cut:
			return fs, ""
		case int(length) > len(b):
			return fs, fmt.Sprintf("the output ends inside frame %d (%d of %d bytes)", len(fs), len(b), length)
		}
		f.Payload = b[frame.HeaderLen:length]
		fs = append(fs, f)
		b = b[length:]
	}
	return fs, ""
}

func (c *checker) checkBinary() string {
	got, bad := c.frames(false)
	if bad != "" {
		return bad
	}
	// The welcome: only to a hello, only first, only once. It says what
	// the session may use.
	var welcome struct {
		Op          string   `json:"op"`
		Features    []string `json:"features"`
		Compression string   `json:"compression"`
	}
	for i, f := range got {
		if f.Kind != frame.KindControl {
			continue
		}
		if i != 0 || len(c.want.frames) == 0 || c.want.frames[0].Kind != frame.KindControl {
			return fmt.Sprintf("CONTROL %q as frame %d, not as the answer to a hello", f.Payload, i)
		}
		if err := json.Unmarshal(f.Payload, &welcome); err != nil || welcome.Op != "welcome" {
			return fmt.Sprintf("CONTROL %q is not a welcome", f.Payload)
		}
	}
	var dataFlags frame.Flags
	if slices.Contains(welcome.Features, "request") {
		dataFlags |= frame.FlagReply
	}
	if welcome.Compression != "" {
		dataFlags |= frame.FlagCompressed
	}
	for i, f := range got {
		allowed := frame.Flags(0)
		if f.Kind == frame.KindData {
			allowed = dataFlags
		}
		if f.Flags&^allowed != 0 {
			return fmt.Sprintf("frame %d, %v, has flags %#x; the welcome granted %#x", i, f.Kind, f.Flags, allowed)
		}
	}

	// How it ended.
	complete := true // every frame the server dispatched was answered
	switch {
	case c.answered && c.want.end != "":
		return fmt.Sprintf("the session served past %s at offset %d", c.want.end, c.want.endAt)
	case c.answered:
	case len(got) >= 2 && got[len(got)-2].Kind == frame.KindError && got[len(got)-1].Kind == frame.KindDisconnect:
		code := frame.ParseError(got[len(got)-2].Payload).Code
		switch {
		case code == c.want.end:
		case code == frame.CodeMessageTooLarge && welcome.Compression != "":
			// A payload that decompresses beyond the limit: the model
			// cannot tell, and what came after it is not answered.
			complete = false
		default:
			return fmt.Sprintf("the session ended with ERROR %s; the input calls for %q at offset %d", code, c.want.end, c.want.endAt)
		}
	case c.want.end == endDisconnect:
	default:
		return fmt.Sprintf("the session ended without ERROR and DISCONNECT; the input calls for %q at offset %d", c.want.end, c.want.endAt)
	}

	// Every PING was answered, in order (PONG is never transformed), and
	// so was every plain message, unless compression may have changed
	// the echoes.
	var pings, pongs, sent, echoed [][]byte
	for _, f := range c.want.frames {
		switch {
		case f.Flags != 0:
		case f.Kind == frame.KindPing:
			pings = append(pings, f.Payload)
		case f.Kind == frame.KindData:
			sent = append(sent, f.Payload)
		}
	}
	for _, f := range got {
		switch {
		case f.Kind == frame.KindPong:
			pongs = append(pongs, f.Payload)
		case f.Kind == frame.KindData && f.Flags == 0:
			echoed = append(echoed, f.Payload)
		}
	}
	if bad := sameOrPrefix("PONG", pongs, pings, complete); bad != "" {
		return bad
	}
	if welcome.Compression == "" {
		return sameOrPrefix("echoed DATA", echoed, sent, complete)
	}
	return ""
}

// checkPrefixOnly checks an output that a reset may have cut short: what
// came is well formed as far as it goes.
func (c *checker) checkPrefixOnly() string {
	if c.want.mode == frame.ModeText {
		return ""
	}
	_, bad := c.frames(true)
	return bad
}

// sameOrPrefix checks that got is want, or, if !complete, a prefix of it.
func sameOrPrefix(what string, got, want [][]byte, complete bool) string {
	if len(got) > len(want) || complete && len(got) != len(want) {
		return fmt.Sprintf("%d %s frames, want %d", len(got), what, len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			return fmt.Sprintf("%s %d is %s, want %s", what, i, clip(got[i]), clip(want[i]))
		}
	}
	return ""
}
