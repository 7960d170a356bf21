package frame

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzReader feeds arbitrary streams to the Reader. It checks that the reader
// never panics, never buffers more than one maximal frame, and that every
// frame it returns re-encodes to exactly the bytes it was parsed from.
func FuzzReader(f *testing.F) {
	f.Add(Append(nil, KindData, 0, []byte("hello")))
	f.Add(append(Append(nil, KindPing, 0, nil), Append(nil, KindControl, 0, []byte(`{"op":"hello"}`))...))
	f.Add([]byte("MSGI\x00\x00\x00\x09\x00\x10"))
	f.Add([]byte("MSGI\xff\xff\xff\xff\x00\x10"))
	f.Add([]byte("hello\r\n"))
	f.Add(AppendHeader(nil, KindData, 0, 300))
	const max = 256
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewReader(bytes.NewReader(in), max)
		var out []byte
		for {
			fr, err := r.ReadFrame()
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF &&
					!errors.Is(err, ErrBadMagic) && !errors.Is(err, ErrShortLength) && !errors.Is(err, ErrTooLarge) {
					t.Fatalf("unexpected error %v", err)
				}
				break
			}
			if len(fr.Payload) > max {
				t.Fatalf("payload of %d bytes over the limit", len(fr.Payload))
			}
			out = Append(out, fr.Kind, fr.Flags, fr.Payload)
		}
		if len(r.buf) > max+HeaderLen && len(r.buf) > minReadBuf {
			t.Fatalf("buffer grew to %d", len(r.buf))
		}
		if !bytes.HasPrefix(in, out) {
			t.Fatalf("frames read do not re-encode to the input prefix")
		}
	})
}

// FuzzSplitLine checks the text splitter against a plain reference.
func FuzzSplitLine(f *testing.F) {
	f.Add([]byte("hello\r\nworld\n"), 5)
	f.Add([]byte("\r\n\n"), 0)
	f.Fuzz(func(t *testing.T, in []byte, max int) {
		if max < 0 || max > 1<<20 {
			return
		}
		line, n, err := SplitLine(in, max)
		i := bytes.IndexByte(in, '\n')
		switch {
		case err != nil:
			ref := in
			if i >= 0 {
				ref = TrimLine(in[:i])
			} else if len(in) > 0 && in[len(in)-1] == '\r' {
				ref = in[:len(in)-1]
			}
			if len(ref) <= max && !(i < 0 && len(in) > max+1) {
				t.Fatalf("ErrTooLarge for a %d-byte line with max %d", len(ref), max)
			}
		case n == 0:
			if i >= 0 {
				t.Fatal("complete line not returned")
			}
		default:
			if n != i+1 || !bytes.Equal(line, TrimLine(in[:i])) {
				t.Fatalf("got %q, %d", line, n)
			}
		}
	})
}

// FuzzSplitPlain holds SplitPlain to its definition: Split's answer when
// that is a complete DATA frame without flags, and 0 otherwise.
func FuzzSplitPlain(f *testing.F) {
	f.Add(Append(nil, KindData, 0, []byte("hello")), 16)
	f.Add(Append(nil, KindData, 0, []byte("hello")), 4)            // too large
	f.Add(Append(nil, KindData, 0, []byte("hello"))[:12], 16)      // incomplete
	f.Add(Append(nil, KindData, FlagRequest, []byte("hello")), 16) // flags
	f.Add(Append(nil, KindPing, 0, nil), 16)                       // another kind
	f.Add([]byte("MSGI\x00\x00\x00\x03\x00\x01"), 16)              // short length
	f.Add([]byte("GET / HTTP/1.1\r\n"), 16)                        // bad magic
	f.Fuzz(func(t *testing.T, in []byte, max int) {
		if max < 0 {
			return
		}
		want := 0
		if total, err := Split(in, max); err == nil && total > 0 && total <= len(in) {
			if fr := Decode(in[:total]); fr.Kind == KindData && fr.Flags == 0 {
				want = total
			}
		}
		if got := SplitPlain(in, max); got != want {
			t.Fatalf("SplitPlain(%q, %d) = %d, want %d", in, max, got, want)
		}
	})
}
