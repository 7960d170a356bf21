package container

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// TestBinaryRoundTrip: every container, of every type and nesting, decodes
// to an equal container, Marshal's size estimate is exact, and the
// encoding is canonical (re-encoding the decoded container gives the same
// bytes).
func TestBinaryRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := genOpts{}.container(0).Draw(t, "c")
		enc, err := c.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		if len(enc) != cap(enc) {
			t.Fatalf("Marshal sized %d bytes for a %d-byte encoding", cap(enc), len(enc))
		}
		prefix := []byte("prefix")
		app, err := c.AppendBinary(prefix)
		if err != nil || !bytes.Equal(app[len(prefix):], enc) || string(app[:len(prefix)]) != "prefix" {
			t.Fatalf("AppendBinary differs from Marshal (err %v)", err)
		}
		got, err := Unmarshal(enc)
		if err != nil {
			t.Fatalf("Unmarshal: %v", err)
		}
		if !got.Equal(c) {
			t.Fatalf("round trip changed the container\nwant %#v\ngot  %#v", c, got)
		}
		again, err := got.Marshal()
		if err != nil || !bytes.Equal(again, enc) {
			t.Fatalf("re-encoding differs (err %v)", err)
		}
		// Decoding into a container with leftover values must not leak them.
		reused := &Container{Values: make([]Value, 3, 20)}
		reused.Values[2] = String("stale", "x")
		if err := reused.UnmarshalBinary(enc); err != nil || !reused.Equal(c) {
			t.Fatalf("UnmarshalBinary into a reused container: err %v, equal %v", err, reused.Equal(c))
		}
	})
}

// TestJSONRoundTrip: JSON keeps every container exactly, except NaNs with a
// non-canonical payload, which it must refuse rather than alter.
func TestJSONRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := genOpts{}.container(0).Draw(t, "c")
		enc, err := c.MarshalJSON()
		if hasOddNaN(c) {
			if !errors.Is(err, ErrNotRepresentable) {
				t.Fatalf("NaN payload: want ErrNotRepresentable, got %v", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("MarshalJSON: %v", err)
		}
		got, err := ParseJSON(enc)
		if err != nil {
			t.Fatalf("ParseJSON: %v\n%s", err, enc)
		}
		if !got.Equal(c) {
			t.Fatalf("round trip changed the container\n%s\nwant %#v\ngot  %#v", enc, c, got)
		}
	})
}

// textRepresentable restates, independently of the writer, what the C++
// text format can carry.
func textRepresentable(c *Container) bool {
	ok := true
	for _, h := range c.header() {
		ok = ok && !strings.Contains(h, "];")
	}
	top := true
	walk(c, func(v *Value) {
		ok = ok && !strings.Contains(v.name, ",") && !strings.Contains(v.name, "];") &&
			v.typ != TypeArray && !oddNaN(v)
		if v.typ == TypeString {
			for _, seq := range []string{"];", "</0x0A;>", "</0x0B;>", "</0x0C;>", "</0x0D;>"} {
				ok = ok && !strings.Contains(v.str, seq)
			}
		}
	}, func(n *Container) {
		if !top {
			ok = ok && n.header() == header{}
		}
		top = false
	})
	return ok
}

// TestTextRoundTrip: the text writer either writes something that parses
// back to an equal container or refuses with ErrNotRepresentable, and it
// refuses exactly when the container holds something the format cannot
// carry.
func TestTextRoundTrip(t *testing.T) {
	wrote := 0
	rapid.Check(t, func(t *rapid.T) {
		c := genOpts{textSafe: rapid.Bool().Draw(t, "text safe")}.container(0).Draw(t, "c")
		enc, err := c.MarshalText()
		if want := textRepresentable(c); want != (err == nil) {
			t.Fatalf("representable %v but MarshalText error %v", want, err)
		}
		if err != nil {
			if !errors.Is(err, ErrNotRepresentable) {
				t.Fatalf("want ErrNotRepresentable, got %v", err)
			}
			return
		}
		wrote++
		got, err := ParseText(enc)
		if err != nil {
			t.Fatalf("ParseText: %v\n%q", err, enc)
		}
		if !got.Equal(c) {
			t.Fatalf("round trip changed the container\n%q\nwant %#v\ngot  %#v", enc, c, got)
		}
	})
	if wrote < 10 {
		t.Fatalf("only %d generated containers were representable; the property barely ran", wrote)
	}
}

// TestConvertRoundTrip: binary -> JSON -> binary through Convert is the
// identity for containers JSON can carry.
func TestConvertRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := genOpts{}.container(0).Draw(t, "c")
		if hasOddNaN(c) {
			return
		}
		bin, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		var js, back bytes.Buffer
		if err := Convert(bytes.NewReader(bin), &js, Binary, JSON); err != nil {
			t.Fatalf("binary->json: %v", err)
		}
		if err := Convert(&js, &back, JSON, Binary); err != nil {
			t.Fatalf("json->binary: %v", err)
		}
		if !bytes.Equal(back.Bytes(), bin) {
			t.Fatalf("binary -> json -> binary changed the bytes")
		}
	})
}
