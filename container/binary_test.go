package container

import (
	"bytes"
	"errors"
	"math"
	"runtime"
	"strings"
	"testing"
)

// The byte-by-byte example of docs/CONTAINER.md.
var exampleBinary = []byte{
	0x01,                // version
	0x03, 's', 'r', 'v', // target_id
	0x00,           // target_sub_id
	0x02, 'c', '1', // source_id
	0x00,                     // source_sub_id
	0x04, 'c', 'h', 'a', 't', // message_type
	0x07, '1', '.', '0', '.', '0', '.', '0', // version
	0x02,                                // two values
	0x05, 'c', 'o', 'u', 'n', 't', 0x05, // name "count", type int32
	0x2a, 0x00, 0x00, 0x00, // 42 little-endian
	0x03, 'm', 's', 'g', 0x0b, // name "msg", type string
	0x08, 'h', 'i', ' ', 't', 'h', 'e', 'r', 'e',
}

func TestBinaryGolden(t *testing.T) {
	enc, err := exampleContainer().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(enc, exampleBinary) {
		t.Errorf("Marshal:\ngot  % x\nwant % x", enc, exampleBinary)
	}
	got, err := Unmarshal(exampleBinary)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(exampleContainer()) {
		t.Errorf("Unmarshal: got %#v", got)
	}
}

// Each scalar's payload layout, checked against hand-written bytes.
func TestBinaryScalarLayout(t *testing.T) {
	cases := []struct {
		v    Value
		want []byte // after the 1-byte empty name
	}{
		{Null(""), []byte{0}},
		{Bool("", true), []byte{1, 1}},
		{Bytes("", []byte{0, 0xff}), []byte{2, 2, 0, 0xff}},
		{Int16("", -2), []byte{3, 0xfe, 0xff}},
		{Uint16("", 0x1234), []byte{4, 0x34, 0x12}},
		{Int32("", -2), []byte{5, 0xfe, 0xff, 0xff, 0xff}},
		{Uint32("", 0x01020304), []byte{6, 4, 3, 2, 1}},
		{Float32("", 1), []byte{9, 0, 0, 0x80, 0x3f}},
		{Float64("", 1), []byte{10, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f}},
		{String("", "\x00"), []byte{11, 1, 0}},
		{Nested("", nil), []byte{12, 0, 0, 0, 0, 0, 0, 0}},
		{Int64("", -1), []byte{13, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{Uint64("", 1<<56), []byte{14, 0, 0, 0, 0, 0, 0, 0, 1}},
		{Array("", Null("")), []byte{15, 1, 0, 0}},
	}
	for _, tc := range cases {
		c := &Container{Values: []Value{tc.v}}
		enc, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		want := append([]byte{1, 0, 0, 0, 0, 0, 0, 1, 0}, tc.want...)
		if !bytes.Equal(enc, want) {
			t.Errorf("%s: got % x, want % x", tc.v.Type(), enc, want)
		}
	}
}

func TestBinaryLongString(t *testing.T) {
	s := strings.Repeat("x", 300) // length needs a two-byte varint: 0xac 0x02
	enc, err := (&Container{MessageType: s}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if enc[5] != 0xac || enc[6] != 0x02 {
		t.Errorf("length varint: got % x", enc[5:7])
	}
	got, err := Unmarshal(enc)
	if err != nil || got.MessageType != s {
		t.Errorf("round trip: %v", err)
	}
}

// hdr is a valid empty header followed by whatever the test appends.
func hdr(rest ...byte) []byte { return append([]byte{1, 0, 0, 0, 0, 0, 0}, rest...) }

func TestBinaryDecodeErrors(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		err  error
		why  string
	}{
		{"empty", nil, ErrMalformed, "empty input"},
		{"version", []byte{2, 0, 0, 0, 0, 0, 0, 0}, ErrVersion, "version byte is 2"},
		{"text given as binary", []byte(exampleText), ErrVersion, "version byte is 64"},
		{"truncated header", []byte{1, 0, 0}, ErrMalformed, "truncated varint"},
		{"string longer than input", []byte{1, 0x7f, 'a'}, ErrMalformed, "length 127 exceeds the 1 bytes left"},
		{"huge string length", []byte{1, 0xff, 0xff, 0xff, 0xff, 0x0f}, ErrMalformed, "exceeds"},
		{"varint overflow", []byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, ErrMalformed, "overflows"},
		{"non-minimal varint", []byte{1, 0x80, 0x00, 0, 0, 0, 0, 0, 0}, ErrMalformed, "shortest form"},
		{"huge count", hdr(0xff, 0xff, 0xff, 0xff, 0x0f), ErrMalformed, "count 4294967295 cannot fit"},
		{"count larger than input", hdr(3, 0, 0, 0, 0), ErrMalformed, "cannot fit"},
		{"unknown type", hdr(1, 0, 7), ErrMalformed, "unknown type code 7"},
		{"bad bool", hdr(1, 0, 1, 2), ErrMalformed, "bool byte is 2"},
		{"truncated int64", hdr(1, 0, 13, 1, 2, 3), ErrMalformed, "truncated"},
		{"huge bytes length", hdr(1, 0, 2, 0xff, 0xff, 0xff, 0xff, 0x0f), ErrMalformed, "exceeds"},
		{"huge array count", hdr(1, 0, 15, 0xff, 0xff, 0xff, 0xff, 0x0f), ErrMalformed, "cannot fit"},
		{"trailing bytes", hdr(0, 0xaa), ErrMalformed, "1 trailing bytes"},
	}
	for _, tc := range cases {
		c, err := Unmarshal(tc.in)
		var de *DecodeError
		if c != nil || !errors.Is(err, tc.err) || !errors.As(err, &de) || de.Format != Binary || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("%s: got (%v, %v), want %v containing %q", tc.name, c, err, tc.err, tc.why)
		}
	}
}

// nestedBinary is n containers, each the only value of its parent.
func nestedBinary(n int) []byte {
	b := hdr(1)
	for i := 0; i < n; i++ {
		b = append(b, 0, byte(TypeContainer), 0, 0, 0, 0, 0, 0, 1)
	}
	b = append(b, 0, byte(TypeNull))
	return b
}

func TestBinaryDepthLimit(t *testing.T) {
	// nestedBinary(n) has n nested containers plus a null at depth n.
	if _, err := Unmarshal(nestedBinary(DefaultMaxDepth)); err != nil {
		t.Errorf("depth %d: %v", DefaultMaxDepth, err)
	}
	if _, err := Unmarshal(nestedBinary(DefaultMaxDepth + 1)); !errors.Is(err, ErrTooDeep) {
		t.Errorf("depth %d: got %v, want ErrTooDeep", DefaultMaxDepth+1, err)
	}
	if _, err := (DecodeOptions{MaxDepth: 40}).Unmarshal(nestedBinary(40)); err != nil {
		t.Errorf("MaxDepth 40, depth 40: %v", err)
	}
	if _, err := (DecodeOptions{MaxDepth: 2}).Unmarshal(nestedBinary(3)); !errors.Is(err, ErrTooDeep) {
		t.Errorf("MaxDepth 2, depth 3: got %v", err)
	}
	// Arrays count as nesting too.
	arr := hdr(1, 0, 15, 1, 0, 15, 1, 0, 0)
	if _, err := (DecodeOptions{MaxDepth: 1}).Unmarshal(arr); !errors.Is(err, ErrTooDeep) {
		t.Errorf("array depth 2 with MaxDepth 1: got %v", err)
	}
}

func TestBinaryValueLimit(t *testing.T) {
	in := hdr(2, 0, 0, 0, 15, 2, 0, 0, 0, 0) // null, array of two nulls: 4 values
	if _, err := (DecodeOptions{MaxValues: 4}).Unmarshal(in); err != nil {
		t.Errorf("4 values, MaxValues 4: %v", err)
	}
	if _, err := (DecodeOptions{MaxValues: 3}).Unmarshal(in); !errors.Is(err, ErrLimit) {
		t.Errorf("4 values, MaxValues 3: got %v, want ErrLimit", err)
	}
	if _, err := (DecodeOptions{MaxSize: len(in) - 1}).Unmarshal(in); !errors.Is(err, ErrLimit) {
		t.Errorf("MaxSize below input: got %v, want ErrLimit", err)
	}
}

// allocatedBytes returns how many heap bytes f allocates per call on
// average over runs calls.
func allocatedBytes(runs int, f func()) uint64 {
	f() // warm up
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < runs; i++ {
		f()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(runs)
}

// TestHostileInputsFailFast: tiny inputs that claim billions of values or
// bytes are rejected with a handful of small allocations (the error
// itself), never by allocating what they claim.
func TestHostileInputsFailFast(t *testing.T) {
	// 0xc0 0x84 0x3d is a varint of 1,000,000: as values that would be
	// about 100 MB, as bytes 1 MB. Claims of 2^32-1 are also tried.
	inputs := map[string][]byte{
		"count":             hdr(0xc0, 0x84, 0x3d),
		"max count":         hdr(0xff, 0xff, 0xff, 0xff, 0x0f),
		"string length":     {1, 0xc0, 0x84, 0x3d},
		"max string length": {1, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"bytes length":      hdr(1, 0, 2, 0xc0, 0x84, 0x3d),
		"array count":       hdr(1, 0, 15, 0xc0, 0x84, 0x3d),
		"nested count":      hdr(1, 0, 12, 0, 0, 0, 0, 0, 0, 0xc0, 0x84, 0x3d),
	}
	// The value budget alone must also stop counts that do fit the input.
	inputs["value budget"] = append(hdr(0xa0, 0x8d, 0x06), make([]byte, 2*100000)...)
	for name, in := range inputs {
		for _, opts := range []DecodeOptions{{}, {MaxValues: 1000}, {MaxValues: 1 << 30}} {
			if name == "value budget" && opts.MaxValues != 1000 {
				continue
			}
			if _, err := opts.Unmarshal(in); err == nil {
				t.Fatalf("%s %+v: decoded without error", name, opts)
			}
			allocs := testing.AllocsPerRun(20, func() { _, _ = opts.Unmarshal(in) })
			if allocs > 8 {
				t.Errorf("%s %+v: %v allocations to reject", name, opts, allocs)
			}
			if n := allocatedBytes(20, func() { _, _ = opts.Unmarshal(in) }); n > 4096 {
				t.Errorf("%s %+v: %d bytes allocated to reject a %d-byte input", name, opts, n, len(in))
			}
		}
	}
	for _, in := range []string{`@data={[a,12,1000000];};`, `@data={[a,12,4294967295];};`} {
		b := []byte(in)
		opts := DecodeOptions{MaxValues: 1 << 30}
		if _, err := opts.ParseText(b); err == nil {
			t.Fatalf("%s: parsed without error", in)
		}
		if n := allocatedBytes(20, func() { _, _ = opts.ParseText(b) }); n > 4096 {
			t.Errorf("%s: %d bytes allocated to reject", in, n)
		}
	}
}

// TestEncodeAllocs: appending into a buffer with room does not allocate,
// and Marshal allocates once.
func TestEncodeAllocs(t *testing.T) {
	c := benchContainer()
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() { buf, _ = c.AppendBinary(buf[:0]) }); n != 0 {
		t.Errorf("AppendBinary into a reused buffer: %v allocs, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = c.Marshal() }); n != 1 {
		t.Errorf("Marshal: %v allocs, want 1", n)
	}
	enc, _ := c.Marshal()
	var into Container
	if n := testing.AllocsPerRun(100, func() { _ = into.UnmarshalBinary(enc) }); n > 2 {
		t.Errorf("UnmarshalBinary into a reused container: %v allocs, want <= 2", n)
	}
}

func TestEncodeDepthLimit(t *testing.T) {
	deep := &Container{}
	cur := deep
	for i := 0; i < MaxDepthLimit+1; i++ {
		next := &Container{}
		cur.Values = []Value{Nested("n", next)}
		cur = next
	}
	if _, err := deep.Marshal(); !errors.Is(err, ErrTooDeep) {
		t.Errorf("Marshal: got %v, want ErrTooDeep", err)
	}
	if _, err := deep.AppendBinary(nil); !errors.Is(err, ErrTooDeep) {
		t.Errorf("AppendBinary: got %v, want ErrTooDeep", err)
	}
	if _, err := deep.MarshalJSON(); !errors.Is(err, ErrTooDeep) {
		t.Errorf("MarshalJSON: got %v, want ErrTooDeep", err)
	}
	if _, err := deep.MarshalText(); !errors.Is(err, ErrTooDeep) {
		t.Errorf("MarshalText: got %v, want ErrTooDeep", err)
	}
	// A container that contains itself is caught the same way.
	loop := &Container{}
	loop.Values = []Value{Nested("self", loop)}
	if _, err := loop.Marshal(); !errors.Is(err, ErrTooDeep) {
		t.Errorf("cycle: got %v, want ErrTooDeep", err)
	}
	viaArray := &Container{}
	viaArray.Values = []Value{Array("a", Nested("c", viaArray))}
	if _, err := viaArray.MarshalJSON(); !errors.Is(err, ErrTooDeep) {
		t.Errorf("cycle through an array, JSON: got %v, want ErrTooDeep", err)
	}
	if _, err := viaArray.Marshal(); !errors.Is(err, ErrTooDeep) {
		t.Errorf("cycle through an array, binary: got %v, want ErrTooDeep", err)
	}
}

// TestUnmarshalDoesNotAlias: the decoded container must stay intact when
// the caller reuses the input buffer, and bytes payloads must not share
// capacity with each other.
func TestUnmarshalDoesNotAlias(t *testing.T) {
	c := &Container{SourceID: "src", Values: []Value{Bytes("a", []byte{1, 2}), Bytes("b", []byte{3, 4}), String("s", "str")}}
	enc, _ := c.Marshal()
	got, err := Unmarshal(enc)
	if err != nil {
		t.Fatal(err)
	}
	for i := range enc {
		enc[i] = 0xee
	}
	if !got.Equal(c) {
		t.Fatalf("decoded container changed when the input was overwritten: %#v", got)
	}
	a, _ := got.GetBytes("a")
	_ = append(a, 9) // must not overwrite b
	if b, _ := got.GetBytes("b"); !bytes.Equal(b, []byte{3, 4}) {
		t.Errorf("appending to one bytes payload changed another: %v", b)
	}
}

func TestUnmarshalBinaryErrorLeavesEmpty(t *testing.T) {
	c := exampleContainer()
	if err := c.UnmarshalBinary([]byte{1, 0}); err == nil {
		t.Fatal("want error")
	}
	if !c.Equal(&Container{}) {
		t.Errorf("after a failed UnmarshalBinary the container is %#v, want empty", c)
	}
}

func TestFloatBitsExact(t *testing.T) {
	payload := math.Float64frombits(0x7ff0000000000123) // NaN with a payload
	c := &Container{Values: []Value{Float64("nan", payload), Float64("negzero", math.Copysign(0, -1)),
		Float32("nan32", math.Float32frombits(0xffc00001))}}
	enc, _ := c.Marshal()
	got, err := Unmarshal(enc)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := got.Get("nan")
	if v.num != 0x7ff0000000000123 {
		t.Errorf("NaN payload: got %#x", v.num)
	}
	f, _ := got.GetFloat64("negzero")
	if !math.Signbit(f) {
		t.Error("-0 lost its sign")
	}
	f32, _ := got.GetFloat32("nan32")
	if math.Float32bits(f32) != 0xffc00001 {
		t.Errorf("float32 NaN payload: got %#x", math.Float32bits(f32))
	}
}
