package echoproto

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/msgnet/msgnet/frame"
)

// frames decodes every frame in b.
func frames(t *testing.T, b []byte) []frame.Frame {
	t.Helper()
	var out []frame.Frame
	for len(b) > 0 {
		n, err := frame.Split(b, MaxPayload)
		if err != nil || n == 0 || n > len(b) {
			t.Fatalf("bad reply bytes %q: %v", b, err)
		}
		out = append(out, frame.Decode(b[:n]))
		b = b[n:]
	}
	return out
}

func TestHandle(t *testing.T) {
	s := NewSession("peer")
	hello := frame.Append(nil, frame.KindControl, 0, []byte(`{"op":"hello","client_id":"c1"}`))
	out, closeAfter := s.Handle(nil, hello)
	fs := frames(t, out)
	if closeAfter || len(fs) != 1 || fs[0].Kind != frame.KindControl {
		t.Fatalf("hello answered with %v", fs)
	}
	var w map[string]any
	if err := json.Unmarshal(fs[0].Payload, &w); err != nil || w["op"] != "welcome" || w["session_id"] == "" || w["server_id"] != "peer" {
		t.Errorf("welcome %s", fs[0].Payload)
	}

	data := frame.Append(nil, frame.KindData, 0, []byte("payload"))
	if out, _ := s.Handle(nil, data); !bytes.Equal(out, data) {
		t.Errorf("DATA echoed as %q, want it unchanged", out)
	}
	ping := frame.Append(nil, frame.KindPing, 0, []byte("p"))
	if fs := frames(t, first(s.Handle(nil, ping))); len(fs) != 1 || fs[0].Kind != frame.KindPong || string(fs[0].Payload) != "p" {
		t.Errorf("PING answered with %v", fs)
	}
	// A second hello, a CONTROL without op, an unknown kind, a flag bit:
	// each gets an ERROR with its code and the session goes on.
	for in, code := range map[string]string{
		string(hello): frame.CodeBadControl,
		string(frame.Append(nil, frame.KindControl, 0, []byte(`[1]`))):       frame.CodeBadControl,
		string(frame.Append(nil, frame.Kind(0x77), 0, nil)):                  frame.CodeUnknownType,
		string(frame.Append(nil, frame.KindData, frame.FlagCompressed, nil)): frame.CodeUnknownType,
	} {
		out, closeAfter := s.Handle(nil, []byte(in))
		fs := frames(t, out)
		if closeAfter || len(fs) != 1 || fs[0].Kind != frame.KindError || frame.ParseError(fs[0].Payload).Code != code {
			t.Errorf("%q answered with %v (close %v), want ERROR %s", in, fs, closeAfter, code)
		}
	}
	for _, k := range []frame.Kind{frame.KindHeartbeat, frame.KindPong, frame.KindError} {
		if out, closeAfter := s.Handle(nil, frame.Append(nil, k, 0, nil)); len(out) != 0 || closeAfter {
			t.Errorf("%v answered with %q", k, out)
		}
	}
	if out, closeAfter := s.Handle(nil, frame.Append(nil, frame.KindDisconnect, 0, []byte("bye"))); len(out) != 0 || !closeAfter {
		t.Errorf("DISCONNECT: %q, close %v", out, closeAfter)
	}
}

func TestAppendFatal(t *testing.T) {
	fs := frames(t, AppendFatal(nil, frame.ErrTooLarge))
	if len(fs) != 2 || fs[0].Kind != frame.KindError || frame.ParseError(fs[0].Payload).Code != frame.CodeMessageTooLarge || fs[1].Kind != frame.KindDisconnect {
		t.Errorf("fatal answer %v", fs)
	}
}

func first(b []byte, _ bool) []byte { return b }
