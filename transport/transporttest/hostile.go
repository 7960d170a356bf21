package transporttest

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

// hostileCases are input that a careful attacker or an unlucky network
// produces: very long lines, many frames at once, headers and hellos cut
// at every point, a DISCONNECT with more behind it. Run sends each whole
// and trickled; the cases that must control where the server's reads
// fall cut their input themselves with WriteReceived.
var hostileCases = []Case{
	{Name: "long_text_line", Opts: []msgnet.Option{msgnet.WithMessageSizeLimit(LongLine)}, Run: func(t *testing.T, s *Server) {
		// Several times every read buffer there is (64 KiB for parked
		// connections and loops, 16 KiB for a connection's own goroutine,
		// 32 KiB for a WebSocket message chunk), then a second long line
		// and a short one in the same write: each read ends inside a line.
		p := s.Connect(t)
		first, second := CountingLine(LongLine), CountingLine(LongLine/3)
		p.Write([]byte(first + "\n" + second + "\r\nafter\n"))
		expectLine(t, p, first)
		expectLine(t, p, second)
		expectLine(t, p, "after")
	}},
	{Name: "many_frames_in_one_write", Run: func(t *testing.T, s *Server) {
		// Hundreds of frames of every size up to the limit in one write:
		// reads end at arbitrary points in headers and payloads.
		p := s.Connect(t)
		var b []byte
		var want []frame.Frame
		for i := range 400 {
			if i%7 == 3 {
				payload := fmt.Appendf(nil, "ping %d", i)
				b = frame.Append(b, frame.KindPing, 0, payload)
				want = append(want, frame.Frame{Kind: frame.KindPong, Payload: payload})
				continue
			}
			payload := patterned(i, i*131%(MaxPayload+1))
			b = frame.Append(b, frame.KindData, 0, payload)
			want = append(want, frame.Frame{Kind: frame.KindData, Payload: payload})
		}
		p.Write(b)
		for i, w := range want {
			f, err := p.Frame()
			if err != nil {
				t.Fatalf("frame %d of %d: %v", i, len(want), err)
			}
			if f.Kind != w.Kind || string(f.Payload) != string(w.Payload) {
				t.Fatalf("frame %d: got %v of %d bytes, want %v of %d bytes", i, f.Kind, len(f.Payload), w.Kind, len(w.Payload))
			}
		}
	}},
	{Name: "header_split_at_every_offset", Run: func(t *testing.T, s *Server) {
		// A frame cut at each offset of its header (and into its payload),
		// behind a whole frame in the same write, the rest in a read of its
		// own: what the first read leaves over is carried to the next.
		p := s.Connect(t)
		for cut := 1; cut <= frame.HeaderLen+1; cut++ {
			lead := frame.Append(nil, frame.KindData, 0, fmt.Appendf(nil, "lead %d", cut))
			b := frame.Append(nil, frame.KindData, 0, fmt.Appendf(nil, "cut at %d", cut))
			p.WriteReceived(append(lead, b[:cut]...))
			p.WriteReceived(b[cut:])
			p.Expect(frame.KindData, lead[frame.HeaderLen:])
			p.Expect(frame.KindData, b[frame.HeaderLen:])
		}
		p.Ping("after the cuts")
	}},
	{Name: "hello_byte_by_byte", Run: func(t *testing.T, s *Server) {
		// Each byte of the hello in a read of its own, from the first "M"
		// (the mode is undecided until the fourth byte) to the JSON's end.
		p := s.Connect(t)
		for _, c := range frame.Append(nil, frame.KindControl, 0, []byte(`{"op":"hello","client_id":"tt-trickle","features":["request"]}`)) {
			p.WriteReceived([]byte{c})
		}
		expectWelcome(t, p, "request")
		p.Write(frame.Append(nil, frame.KindData, 0, []byte("after hello")))
		p.Expect(frame.KindData, []byte("after hello"))
		p.Write(request(7, "asked"))
		p.ExpectFrame(frame.KindData, frame.FlagReply, reply(7, 0, "asked"))
	}},
	{Name: "request_reply", Run: func(t *testing.T, s *Server) {
		// PROTOCOL.md 6.1: requests and replies interleaved with plain
		// messages in one write, a failing handler, a request too short for
		// its id, a reply nobody waits for; then a core-only peer's request
		// is an unknown flag.
		p := s.Connect(t)
		p.Write(frame.Append(nil, frame.KindControl, 0, []byte(`{"op":"hello","client_id":"tt-rr","features":["request"]}`)))
		expectWelcome(t, p, "request")
		var b []byte
		b = append(b, request(1, "ask")...)
		b = frame.Append(b, frame.KindData, 0, []byte("plain"))
		b = append(b, request(2, FailRequest)...)
		b = frame.Append(b, frame.KindData, frame.FlagRequest, []byte("short"))
		b = frame.Append(b, frame.KindData, frame.FlagReply, reply(99, 0, "nobody asked"))
		b = append(b, request(3, "")...)
		b = frame.Append(b, frame.KindPing, 0, []byte("end"))
		p.Write(b)
		p.ExpectFrame(frame.KindData, frame.FlagReply, reply(1, 0, "ask"))
		p.ExpectFrame(frame.KindData, 0, []byte("plain"))
		p.ExpectFrame(frame.KindData, frame.FlagReply, reply(2, 1, FailRequest))
		p.ExpectError(msgnet.CodeBadRequest)
		p.ExpectFrame(frame.KindData, frame.FlagReply, reply(3, 0, ""))
		p.Expect(frame.KindPong, []byte("end"))

		core := s.Connect(t)
		core.Write(request(1, "ask"))
		core.ExpectError(frame.CodeUnknownType)
		core.Ping("still")
	}},
	{Name: "ping_pong_interleaved_with_data", Run: func(t *testing.T, s *Server) {
		// Every kind a peer may send, empty payloads among them, in one
		// write: PONG, HEARTBEAT and the peer's ERROR are never answered,
		// the rest in order.
		p := s.Connect(t)
		var b []byte
		b = frame.Append(b, frame.KindPing, 0, []byte("p1"))
		b = frame.Append(b, frame.KindData, 0, []byte("d1"))
		b = frame.Append(b, frame.KindPong, 0, []byte("unasked"))
		b = frame.Append(b, frame.KindHeartbeat, 0, []byte("hb"))
		b = frame.Append(b, frame.KindPing, 0, nil)
		b = frame.Append(b, frame.KindData, 0, nil)
		b = frame.Append(b, frame.KindError, 0, frame.AppendError(nil, "peer_trouble", "the peer's own"))
		b = frame.Append(b, frame.KindHeartbeat, 0, nil)
		b = frame.Append(b, frame.KindPing, 0, []byte("p2"))
		b = frame.Append(b, frame.KindData, 0, []byte("d2"))
		p.Write(b)
		p.Expect(frame.KindPong, []byte("p1"))
		p.Expect(frame.KindData, []byte("d1"))
		p.Expect(frame.KindPong, []byte{})
		p.Expect(frame.KindData, []byte{})
		p.Expect(frame.KindPong, []byte("p2"))
		p.Expect(frame.KindData, []byte("d2"))
		p.Ping("after")
	}},
	{Name: "crlf_lines", Run: func(t *testing.T, s *Server) {
		// One trailing "\r" is removed, no other; empty lines are
		// messages; a line of exactly the limit passes with its "\r\n".
		p := s.Connect(t)
		limit := strings.Repeat("L", MaxPayload)
		p.Write([]byte("crlf\r\nbare\n\r\n\ntwo\r\r\nmid\rdle\r\n" + limit + "\r\nend\n"))
		for _, want := range []string{"crlf", "bare", "", "", "two\r", "mid\rdle", limit, "end"} {
			expectLine(t, p, want)
		}
	}},
	{Name: "text_sniff_prefixes", Run: func(t *testing.T, s *Server) {
		// A start that looks like "MSGI" for a while is text as soon as one
		// byte differs, or a newline comes before four bytes have.
		for _, in := range []string{"MS\n", "MSGx\n", "M\r\n"} {
			p := s.Connect(t)
			p.Write([]byte(in + "more\n"))
			expectLine(t, p, strings.TrimSuffix(strings.TrimSuffix(in, "\n"), "\r"))
			expectLine(t, p, "more")
			p.NC.Close()
			Await(t, "the session to end", func() bool { return s.ConnectionCount() == 0 })
		}
	}},
	{Name: "last_line_unterminated_then_close", Run: func(t *testing.T, s *Server) {
		// An unterminated last line at the end of the stream is one
		// message too (one trailing "\r" removed).
		p := s.Connect(t)
		p.Write([]byte("first\nlast\r"))
		expectLine(t, p, "first")
		if p.CloseWrite() {
			expectLine(t, p, "last") // the echo still comes back
			p.ExpectEOF()
		} else {
			p.NC.Close() // WebSocket: no half-close; the server's log tells
		}
		s.ExpectEnded(t, func(err error) bool { return errors.Is(err, msgnet.ErrPeerClosed) }, "ErrPeerClosed")
		if got := s.Received(); !slices.Equal(got, []string{"first", "last"}) {
			t.Fatalf("the handler got %q", got)
		}
	}},
	{Name: "disconnect_mid_write", Run: func(t *testing.T, s *Server) {
		// Frames behind a DISCONNECT in the same write are not
		// dispatched; what came before it is answered.
		p := s.Connect(t)
		var b []byte
		b = frame.Append(b, frame.KindData, 0, []byte("before"))
		b = frame.Append(b, frame.KindPing, 0, []byte("p"))
		b = frame.Append(b, frame.KindDisconnect, 0, []byte("bye"))
		b = frame.Append(b, frame.KindData, 0, []byte("after"))
		b = frame.Append(b, frame.KindPing, 0, []byte("after"))
		p.Write(b)
		p.Expect(frame.KindData, []byte("before"))
		p.Expect(frame.KindPong, []byte("p"))
		if f, err := p.Frame(); errors.Is(err, syscall.ECONNRESET) {
			// Trickled, the frames behind the DISCONNECT may arrive after
			// the server has read it: if it then closes with them unread,
			// the kernel resets the connection, and a reset may destroy
			// the replies before it. After its own last word the server
			// lingers to avoid exactly that (PROTOCOL.md section 2); after
			// the peer's, it does not.
			t.Fatalf("the connection was reset, not closed: the server closed after the peer's DISCONNECT with input unread, without lingering (%v)", err)
		} else if err != io.EOF {
			t.Fatalf("got %v %q, %v; want EOF", f.Kind, f.Payload, err)
		}
		s.ExpectEnded(t, func(err error) bool {
			var de *msgnet.DisconnectError
			return errors.As(err, &de) && de.Remote && de.Reason == "bye"
		}, `DISCONNECT "bye"`)
		if got := s.Received(); !slices.Equal(got, []string{"before"}) {
			t.Fatalf("the handler got %q", got)
		}
	}},
	{Name: "bad_header_split", Run: func(t *testing.T, s *Server) {
		// Headers announcing too much, or too little, arriving in three
		// reads: the server decides as soon as the header is complete,
		// from the header alone.
		for _, h := range []struct {
			length uint32
			code   string
		}{
			{MaxPayload + frame.HeaderLen + 1, frame.CodeMessageTooLarge},
			{1<<32 - 1, frame.CodeMessageTooLarge},
			{1 << 31, frame.CodeMessageTooLarge},
			{frame.HeaderLen - 1, frame.CodeBadFrame},
			{0, frame.CodeBadFrame},
		} {
			p := s.Connect(t)
			b := frame.AppendHeader(nil, frame.KindData, 0, 0)
			binary.BigEndian.PutUint32(b[4:], h.length)
			p.WriteReceived(b[:3])
			p.WriteReceived(b[3:6])
			p.Write(append(b[6:], "and some payload"...))
			p.ExpectError(h.code)
			p.Expect(frame.KindDisconnect, nil)
			p.ExpectEOF()
			// A session that ends before its first whole frame was never
			// established: no disconnect handler runs for it.
			p.NC.Close()
			Await(t, "the session to end", func() bool { return s.ConnectionCount() == 0 })
		}
	}},
	{Name: "bad_magic_at_each_byte", Run: func(t *testing.T, s *Server) {
		// A second frame whose magic is wrong at byte i: refused as soon
		// as that byte is in (the rest comes in a read of its own).
		for i := range 4 {
			p := s.Connect(t)
			good := frame.Append(nil, frame.KindData, 0, []byte("good"))
			bad := frame.Append(nil, frame.KindData, 0, []byte("bad"))
			bad[i] = 'x'
			p.WriteReceived(append(good, bad[:i+1]...))
			p.Expect(frame.KindData, []byte("good"))
			p.ExpectError(frame.CodeBadFrame)
			p.Expect(frame.KindDisconnect, nil)
			p.ExpectEOF()
			p.NC.Close()
			Await(t, "the session to end", func() bool { return s.ConnectionCount() == 0 })
		}
	}},
}

// LongLine is the length of long_text_line's line, and its size limit.
const LongLine = 300_000

// CountingLine returns an n-byte line that says where each of its parts
// is ("0000000 0000008 ..."): a part lost, doubled or moved shows.
func CountingLine(n int) string {
	var b []byte
	for i := 0; len(b) < n; i += 8 {
		b = fmt.Appendf(b, "%07d ", i)
	}
	return string(b[:n])
}

// patterned returns n bytes that differ from message to message.
func patterned(i, n int) []byte {
	b := make([]byte, n)
	for j := range b {
		b[j] = byte(i + j*7)
	}
	return b
}

// expectLine reads a line and checks it, reporting where a long one
// differs instead of quoting it whole.
func expectLine(t *testing.T, p *Peer, want string) {
	t.Helper()
	got := p.Line()
	if got == want {
		return
	}
	at, _ := firstDiff([]byte(got), []byte(want))
	t.Fatalf("got a %d-byte line, want %d bytes; first different at byte %d:\n got:  %s\n want: %s",
		len(got), len(want), at, around([]byte(got), at), around([]byte(want), at))
}

// expectWelcome reads the welcome and checks the features it grants.
func expectWelcome(t *testing.T, p *Peer, features ...string) {
	t.Helper()
	f := p.ExpectFrame(frame.KindControl, 0, nil)
	var w struct {
		Op        string   `json:"op"`
		SessionID string   `json:"session_id"`
		Features  []string `json:"features"`
	}
	if err := json.Unmarshal(f.Payload, &w); err != nil || w.Op != "welcome" || w.SessionID == "" || !slices.Equal(w.Features, features) {
		t.Fatalf("welcome %s (%v), want features %q", f.Payload, err, features)
	}
}

// request is a request frame (PROTOCOL.md 6.1): id, then body.
func request(id uint64, body string) []byte {
	return frame.Append(nil, frame.KindData, frame.FlagRequest, append(binary.BigEndian.AppendUint64(nil, id), body...))
}

// reply is a reply's payload: id, status, body.
func reply(id uint64, status byte, body string) []byte {
	return append(append(binary.BigEndian.AppendUint64(nil, id), status), body...)
}
