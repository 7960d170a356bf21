package frame

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestAppendParseRoundTrip(t *testing.T) {
	for _, k := range []Kind{KindPing, KindPong, KindData, KindControl, KindError, KindHeartbeat, KindDisconnect} {
		payload := []byte("payload of " + k.String())
		b := Append(nil, k, FlagCompressed|FlagReply, payload)
		if len(b) != HeaderLen+len(payload) {
			t.Fatalf("%v: frame is %d bytes, want %d", k, len(b), HeaderLen+len(payload))
		}
		h, err := ParseHeader(b, DefaultMaxPayload)
		if err != nil {
			t.Fatalf("%v: %v", k, err)
		}
		if h.Kind != k || h.Flags != FlagCompressed|FlagReply || h.PayloadLen() != len(payload) {
			t.Fatalf("%v: parsed %+v", k, h)
		}
		if got := Decode(b); got.Kind != k || !bytes.Equal(got.Payload, payload) {
			t.Fatalf("%v: decoded %+v", k, got)
		}
	}
}

func TestHeaderBytesMatchContract(t *testing.T) {
	// The bytes the wire contract prescribes for DATA "hi".
	want := []byte{'M', 'S', 'G', 'I', 0, 0, 0, 12, 0x00, 0x10, 'h', 'i'}
	if got := Append(nil, KindData, 0, []byte("hi")); !bytes.Equal(got, want) {
		t.Fatalf("got % x, want % x", got, want)
	}
	var b [HeaderLen]byte
	PutHeader(b[:], KindDisconnect, FlagEncrypted, 5)
	if !bytes.Equal(b[:], []byte{'M', 'S', 'G', 'I', 0, 0, 0, 15, 0x02, 0x50}) {
		t.Fatalf("PutHeader wrote % x", b)
	}
}

func TestSplitRejectsBadInput(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		max  int
		want error
	}{
		{"bad magic", []byte("GET / HTTP/1.1\r\n"), DefaultMaxPayload, ErrBadMagic},
		{"bad magic early", []byte("MX"), DefaultMaxPayload, ErrBadMagic},
		{"length 9", []byte{'M', 'S', 'G', 'I', 0, 0, 0, 9, 0, 0x10}, DefaultMaxPayload, ErrShortLength},
		{"length 0", []byte{'M', 'S', 'G', 'I', 0, 0, 0, 0, 0, 0x10}, DefaultMaxPayload, ErrShortLength},
		{"over limit", AppendHeader(nil, KindData, 0, 101), 100, ErrTooLarge},
		{"max uint32", []byte{'M', 'S', 'G', 'I', 0xff, 0xff, 0xff, 0xff, 0, 0x10}, MaxPayloadLimit, nil},
	}
	for _, c := range cases {
		_, err := Split(c.in, c.max)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	if n, err := Split([]byte("MSG"), 10); n != 0 || err != nil {
		t.Fatalf("prefix: got %d, %v", n, err)
	}
	if n, err := Split(AppendHeader(nil, KindData, 0, 100), 100); n != 110 || err != nil {
		t.Fatalf("exactly at limit: got %d, %v", n, err)
	}
}

func TestCode(t *testing.T) {
	if Code(ErrBadMagic) != CodeBadFrame || Code(ErrShortLength) != CodeBadFrame ||
		Code(ErrTooLarge) != CodeMessageTooLarge || Code(io.EOF) != "" {
		t.Fatal("codes do not map as the wire contract says")
	}
}

// oneByteReader returns one byte per Read, the worst case for reassembly.
type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) { return o.r.Read(p[:1]) }

func TestReaderReassemblesAndGrows(t *testing.T) {
	var stream []byte
	var want [][]byte
	for i := 0; i < 50; i++ {
		p := bytes.Repeat([]byte{byte(i)}, i*997) // up to ~48 KB: beyond the initial buffer
		want = append(want, p)
		stream = Append(stream, KindData, 0, p)
	}
	for _, name := range []string{"whole", "byte by byte"} {
		var src io.Reader = bytes.NewReader(stream)
		if name != "whole" {
			src = oneByteReader{src}
		}
		r := NewReader(src, 64<<10)
		for i, w := range want {
			f, err := r.ReadFrame()
			if err != nil {
				t.Fatalf("%s: frame %d: %v", name, i, err)
			}
			if f.Kind != KindData || !bytes.Equal(f.Payload, w) {
				t.Fatalf("%s: frame %d: wrong payload (%d bytes)", name, i, len(f.Payload))
			}
		}
		if _, err := r.ReadFrame(); err != io.EOF {
			t.Fatalf("%s: at end got %v, want io.EOF", name, err)
		}
	}
}

func TestReaderTruncatedFrame(t *testing.T) {
	b := Append(nil, KindData, 0, []byte("hello"))
	r := NewReader(bytes.NewReader(b[:len(b)-2]), 100)
	if _, err := r.ReadFrame(); err != io.ErrUnexpectedEOF {
		t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
	}
}

// countingReader records how many bytes were asked for and delivered.
type countingReader struct {
	r    io.Reader
	read int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read += n
	return n, err
}

func TestReaderRejectsOversizeBeforeBuffering(t *testing.T) {
	// A header announcing 1 GiB followed by a little data: the reader must
	// fail from the header without growing its buffer to the announced size.
	hdr := AppendHeader(nil, KindData, 0, 1<<30)
	src := &countingReader{r: io.MultiReader(bytes.NewReader(hdr), bytes.NewReader(make([]byte, 1<<20)))}
	r := NewReader(src, 1<<20)
	_, err := r.ReadFrame()
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	if len(r.buf) > minReadBuf {
		t.Fatalf("buffer grew to %d bytes for a rejected frame", len(r.buf))
	}
}

func TestSniff(t *testing.T) {
	cases := map[string]Mode{
		"":         ModeUnknown,
		"M":        ModeUnknown,
		"MSG":      ModeUnknown,
		"MSGI":     ModeBinary,
		"MSGI\x00": ModeBinary,
		"hello":    ModeText,
		"h":        ModeText,
		"\n":       ModeText,
		"MS\n":     ModeText,
		"MSGX":     ModeText,
	}
	for in, want := range cases {
		if got := Sniff([]byte(in)); got != want {
			t.Errorf("Sniff(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestSplitLine(t *testing.T) {
	line, n, err := SplitLine([]byte("hello\r\nrest"), 5)
	if string(line) != "hello" || n != 7 || err != nil {
		t.Fatalf("got %q %d %v", line, n, err)
	}
	if _, n, err := SplitLine([]byte("abc"), 5); n != 0 || err != nil {
		t.Fatalf("incomplete: %d %v", n, err)
	}
	// 5 bytes plus a possible '\r' may still be a valid line...
	if _, n, err := SplitLine([]byte("abcde\r"), 5); n != 0 || err != nil {
		t.Fatalf("at limit: %d %v", n, err)
	}
	// ...but a seventh byte without a newline cannot be.
	if _, _, err := SplitLine([]byte("abcdefg"), 5); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over limit unterminated: %v", err)
	}
	if _, _, err := SplitLine([]byte("abcdef\n"), 5); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over limit terminated: %v", err)
	}
	if line, n, _ := SplitLine([]byte("\n"), 5); len(line) != 0 || n != 1 {
		t.Fatalf("empty line: %q %d", line, n)
	}
	if string(TrimLine([]byte("x\r"))) != "x" {
		t.Fatal("TrimLine")
	}
}

func TestControlOp(t *testing.T) {
	if op, err := ControlOp([]byte(`{"op":"hello","client_id":"c"}`)); op != "hello" || err != nil {
		t.Fatalf("got %q %v", op, err)
	}
	for _, bad := range []string{``, `[]`, `{"op":5}`, `{"x":"y"}`, `null`, `"hello"`, `{"op":"a"`} {
		if _, err := ControlOp([]byte(bad)); !errors.Is(err, ErrBadControl) {
			t.Errorf("ControlOp(%q) = %v, want ErrBadControl", bad, err)
		}
	}
}

func TestErrorBody(t *testing.T) {
	e := ParseError(AppendError(nil, CodeServerFull, `too "many"`))
	if e.Code != CodeServerFull || e.Message != `too "many"` {
		t.Fatalf("got %+v", e)
	}
	if e := ParseError([]byte("plain text")); e.Message != "plain text" {
		t.Fatalf("got %+v", e)
	}
}
