package container

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// Fuzz targets. Each asserts: no panic; every failure is a *DecodeError;
// whatever decodes re-encodes (in its own format and in binary) and
// decodes to an equal container.

func seedContainers() []*Container {
	return []*Container{
		exampleContainer(),
		allTypesContainer(),
		benchContainer(),
		{},
		{Values: []Value{Array("a", Int32("", 1), Nested("", &Container{MessageType: "x"})), String("\xff", "\x00")}},
	}
}

// checkDecodeError fails unless err is a *DecodeError wrapping one of the
// decode sentinels.
func checkDecodeError(t *testing.T, err error) {
	t.Helper()
	var de *DecodeError
	if !errors.As(err, &de) {
		t.Fatalf("error is not a *DecodeError: %T %v", err, err)
	}
	if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrLimit) && !errors.Is(err, ErrTooDeep) && !errors.Is(err, ErrVersion) {
		t.Fatalf("error wraps no decode sentinel: %v", err)
	}
}

// checkBinary asserts that c survives the binary encoding.
func checkBinary(t *testing.T, c *Container) {
	t.Helper()
	enc, err := c.Marshal()
	if err != nil {
		t.Fatalf("Marshal of a decoded container: %v", err)
	}
	back, err := Unmarshal(enc)
	if err != nil {
		t.Fatalf("Unmarshal of Marshal output: %v", err)
	}
	if !back.Equal(c) {
		t.Fatalf("binary round trip changed the container")
	}
}

func FuzzUnmarshalBinary(f *testing.F) {
	for _, c := range seedContainers() {
		enc, err := c.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc)
	}
	f.Add(nestedBinary(DefaultMaxDepth + 1))
	f.Add(hdr(0xff, 0xff, 0xff, 0xff, 0x0f))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Unmarshal(data)
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		// The encoding is canonical: what decodes is exactly what Marshal
		// writes for the result.
		enc, err := c.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a decoded container: %v", err)
		}
		if !bytes.Equal(enc, data) {
			t.Fatalf("re-encoding differs:\nin  % x\nout % x", data, enc)
		}
		checkBinary(t, c)
		if !hasOddNaN(c) {
			js, err := c.MarshalJSON()
			if err != nil {
				t.Fatalf("MarshalJSON: %v", err)
			}
			back, err := ParseJSON(js)
			if err != nil || !back.Equal(c) {
				t.Fatalf("JSON round trip of a decoded container: %v\n%s", err, js)
			}
		}
	})
}

func FuzzParseText(f *testing.F) {
	for _, c := range seedContainers() {
		if enc, err := c.MarshalText(); err == nil {
			f.Add(enc)
		}
	}
	f.Add([]byte(`@data={[l,7,-5];[ul,8,1];[g,12,1];[x,11,a</0x0];};`))
	f.Add([]byte(" @header={[6,v];[3,s];};@data={[f,10,NaN];[b,2,AP8=];}; \n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseText(data)
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		// Whatever the parser accepts, the writer can write.
		txt, err := c.MarshalText()
		if err != nil {
			t.Fatalf("MarshalText of a parsed container: %v", err)
		}
		back, err := ParseText(txt)
		if err != nil {
			t.Fatalf("ParseText of MarshalText output: %v\n%q", err, txt)
		}
		if !back.Equal(c) {
			t.Fatalf("text round trip changed the container\nin  %q\nout %q", data, txt)
		}
		if again, _ := back.MarshalText(); !bytes.Equal(again, txt) {
			t.Fatalf("writer output is not stable:\n%q\n%q", txt, again)
		}
		checkBinary(t, c)
	})
}

func FuzzJSON(f *testing.F) {
	for _, c := range seedContainers() {
		enc, err := c.MarshalJSON()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc)
	}
	f.Add([]byte(`{"values":[{"value":{"values":[{"value":[{"value":"x","type":"string"}],"type":"array"}]},"type":"container","name":"c"}]}`))
	f.Add([]byte(`{"header":{"target_id_b64":"/w=="},"values":[{"name":"\u00e9\ud83d\ude00","type":"float32","value":"-Infinity"},{"name":"n","type":"uint64","value":5}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseJSON(data)
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		js, err := c.MarshalJSON()
		if err != nil {
			t.Fatalf("MarshalJSON of a parsed container: %v", err)
		}
		if !json.Valid(js) {
			t.Fatalf("MarshalJSON wrote invalid JSON: %s", js)
		}
		back, err := ParseJSON(js)
		if err != nil {
			t.Fatalf("ParseJSON of MarshalJSON output: %v\n%s", err, js)
		}
		if !back.Equal(c) {
			t.Fatalf("JSON round trip changed the container\nin  %q\nout %s", data, js)
		}
		if again, _ := back.MarshalJSON(); !bytes.Equal(again, js) {
			t.Fatalf("writer output is not stable:\n%s\n%s", js, again)
		}
		checkBinary(t, c)
	})
}
