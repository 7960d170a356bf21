package container

import (
	"errors"
	"math"
	"strings"
	"testing"
)

// The example from the brief: it must parse to exactly this and write back
// byte for byte.
const exampleText = `@header={[1,srv];[2,];[3,c1];[4,];[5,chat];[6,1.0.0.0];};@data={[count,5,42];[msg,11,hi</0x0C;>there];};`

func exampleContainer() *Container {
	return &Container{
		TargetID: "srv", SourceID: "c1", MessageType: "chat", Version: "1.0.0.0",
		Values: []Value{Int32("count", 42), String("msg", "hi there")},
	}
}

// Every type the text format has, with the escapes, extreme integers and a
// nested container holding a nested container followed by a top-level item
// (which checks that child counts end a nested container where they should).
const allTypesText = `@header={[1,t];[2,ts];[3,s];[4,ss];[5,all];[6,2];};@data={` +
	`[n,0,];[b,1,true];[raw,2,AP8=];[s16,3,-32768];[u16,4,65535];[i32,5,-7];[u32,6,4294967295];` +
	`[f32,9,0.1];[f64,10,1e+21];[txt,11,a</0x0A;>b</0x0B;>c</0x0C;>d</0x0D;>e];` +
	`[grp,12,2];[x,13,-9223372036854775808];[inner,12,1];[y,14,18446744073709551615];` +
	`[after,1,false];[empty,11,];[odd,11,</0x0Z;>a]];};`

func allTypesContainer() *Container {
	return &Container{
		TargetID: "t", TargetSubID: "ts", SourceID: "s", SourceSubID: "ss", MessageType: "all", Version: "2",
		Values: []Value{
			Null("n"), Bool("b", true), Bytes("raw", []byte{0x00, 0xff}),
			Int16("s16", math.MinInt16), Uint16("u16", math.MaxUint16), Int32("i32", -7), Uint32("u32", math.MaxUint32),
			Float32("f32", 0.1), Float64("f64", 1e21), String("txt", "a\rb\nc d\te"),
			Nested("grp", &Container{Values: []Value{
				Int64("x", math.MinInt64),
				Nested("inner", &Container{Values: []Value{Uint64("y", math.MaxUint64)}}),
			}}),
			Bool("after", false), String("empty", ""), String("odd", "</0x0Z;>a]"),
		},
	}
}

func TestTextGolden(t *testing.T) {
	cases := []struct {
		name string
		text string
		c    *Container
	}{
		{"example", exampleText, exampleContainer()},
		{"all types", allTypesText, allTypesContainer()},
		{"empty", `@header={[1,];[2,];[3,];[4,];[5,];[6,];};@data={};`, &Container{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseText([]byte(tc.text))
			if err != nil {
				t.Fatalf("ParseText: %v", err)
			}
			if !got.Equal(tc.c) {
				t.Errorf("parse:\ngot  %#v\nwant %#v", got, tc.c)
			}
			out, err := tc.c.MarshalText()
			if err != nil {
				t.Fatalf("MarshalText: %v", err)
			}
			if string(out) != tc.text {
				t.Errorf("write:\ngot  %s\nwant %s", out, tc.text)
			}
		})
	}
}

// Inputs the writer would not produce but the parser accepts, and what
// they mean.
func TestTextParseVariants(t *testing.T) {
	cases := []struct {
		name string
		text string
		c    *Container
	}{
		{"long and ulong codes read as 64-bit",
			`@data={[l,7,-5];[ul,8,18446744073709551615];};`,
			&Container{Values: []Value{Int64("l", -5), Uint64("ul", math.MaxUint64)}}},
		{"header fields in any order, some missing, whitespace around",
			" \n@header={[6,1.0];[3,me];};@data={[k,11,v];};\r\n",
			&Container{SourceID: "me", Version: "1.0", Values: []Value{String("k", "v")}}},
		{"values may hold commas, brackets and an unterminated escape",
			`@data={[k,11,a,b[c]</0x0];};`,
			&Container{Values: []Value{String("k", "a,b[c]</0x0")}}},
		{"raw bytes and NUL pass through",
			"@data={[\x00n\xff,11,\x00\xfe];};",
			&Container{Values: []Value{String("\x00n\xff", "\x00\xfe")}}},
		{"empty nested container", `@data={[g,12,0];[h,1,true];};`,
			&Container{Values: []Value{Nested("g", &Container{}), Bool("h", true)}}},
		{"special floats", `@data={[a,10,NaN];[b,10,+Inf];[c,9,-Inf];[d,10,-0];};`,
			&Container{Values: []Value{Float64("a", math.NaN()), Float64("b", math.Inf(1)),
				Float32("c", float32(math.Inf(-1))), Float64("d", math.Copysign(0, -1))}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseText([]byte(tc.text))
			if err != nil {
				t.Fatalf("ParseText: %v", err)
			}
			if !got.Equal(tc.c) {
				t.Errorf("got  %#v\nwant %#v", got, tc.c)
			}
		})
	}
}

func TestTextWriteCanonical(t *testing.T) {
	c := &Container{Values: []Value{Int64("l", -5), Uint64("ul", 7), Float64("nan", math.NaN()),
		Float64("inf", math.Inf(-1)), Nested("nil", nil)}}
	out, err := c.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	want := `@header={[1,];[2,];[3,];[4,];[5,];[6,];};@data={[l,13,-5];[ul,14,7];[nan,10,NaN];[inf,10,-Inf];[nil,12,0];};`
	if string(out) != want {
		t.Errorf("got  %s\nwant %s", out, want)
	}
}

func TestTextParseErrors(t *testing.T) {
	cases := []struct {
		text   string
		err    error
		reason string
	}{
		{``, ErrMalformed, `expected "@data={"`},
		{`@data={[a,11,x];`, ErrMalformed, `expected "[" to start an item`},
		{`@data={[a,11,x]};`, ErrMalformed, `no closing "];"`},
		{`@data={[a,99,x];};`, ErrMalformed, "unknown type code 99"},
		{`@data={[a,7x,1];};`, ErrMalformed, "bad type code"},
		{`@data={[a,3,40000];};`, ErrMalformed, "bad value"},
		{`@data={[a,6,-1];};`, ErrMalformed, "bad value"},
		{`@data={[a,1,yes];};`, ErrMalformed, "want true or false"},
		{`@data={[a,0,x];};`, ErrMalformed, "null takes no value"},
		{`@data={[a,2,!!];};`, ErrMalformed, "bad value"},
		{`@data={[a,9,1e39];};`, ErrMalformed, "bad value"},
		{`@data={[a,12,2];[b,1,true];};`, ErrMalformed, `expected "[" to start an item`},
		{`@data={[a,12,99999999999];};`, ErrMalformed, "cannot fit"},
		{`@data={[a];b,11,x];};`, ErrMalformed, `item name contains "];"`},
		{`@header={[7,x];};@data={};`, ErrMalformed, "header field"},
		{`@header={[1,x];[1,y];};@data={};`, ErrMalformed, "repeated"},
		{`@data={};junk`, ErrMalformed, "after the data section"},
		{`@data={[a,12,1];` + strings.Repeat(`[a,12,1];`, 40) + `[z,0,];};`, ErrTooDeep, "deeper than 32"},
	}
	for _, tc := range cases {
		_, err := ParseText([]byte(tc.text))
		var de *DecodeError
		if !errors.Is(err, tc.err) || !errors.As(err, &de) || de.Format != Text || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("ParseText(%q):\n got %v\nwant %v containing %q", tc.text, err, tc.err, tc.reason)
		}
	}
}

func TestTextParseLimits(t *testing.T) {
	in := []byte(`@data={[a,1,true];[b,1,true];[c,1,true];};`)
	if _, err := (DecodeOptions{MaxValues: 2}).ParseText(in); !errors.Is(err, ErrLimit) {
		t.Errorf("MaxValues 2 with 3 values: got %v, want ErrLimit", err)
	}
	if _, err := (DecodeOptions{MaxValues: 3}).ParseText(in); err != nil {
		t.Errorf("MaxValues 3 with 3 values: %v", err)
	}
	nested := []byte(`@data={[a,12,3];[b,1,true];[c,1,true];[d,1,true];};`)
	if _, err := (DecodeOptions{MaxValues: 3}).ParseText(nested); !errors.Is(err, ErrLimit) {
		t.Errorf("MaxValues 3 with 4 values (nested): got %v, want ErrLimit", err)
	}
	if _, err := (DecodeOptions{MaxSize: 10}).ParseText(in); !errors.Is(err, ErrLimit) {
		t.Errorf("MaxSize 10: got %v, want ErrLimit", err)
	}
	deep := []byte(`@data={[a,12,1];[b,12,1];[c,0,];};`)
	if _, err := (DecodeOptions{MaxDepth: 1}).ParseText(deep); !errors.Is(err, ErrTooDeep) {
		t.Errorf("MaxDepth 1 with depth 2: got %v, want ErrTooDeep", err)
	}
	if _, err := (DecodeOptions{MaxDepth: 2}).ParseText(deep); err != nil {
		t.Errorf("MaxDepth 2 with depth 2: %v", err)
	}
}

func TestTextWriteErrors(t *testing.T) {
	cases := []struct {
		name string
		c    *Container
	}{
		{"array", &Container{Values: []Value{Array("a", Int32("", 1))}}},
		{"nested header", &Container{Values: []Value{Nested("n", &Container{MessageType: "x"})}}},
		{"]; in string", &Container{Values: []Value{String("s", "a];b")}}},
		{"]; in nested string", &Container{Values: []Value{Nested("n", &Container{Values: []Value{String("s", "];")}})}}},
		{"comma in name", &Container{Values: []Value{Int32("a,b", 1)}}},
		{"]; in name", &Container{Values: []Value{Int32("a];", 1)}}},
		{"]; in header", &Container{SourceID: "x];"}},
		{"escape in string", &Container{Values: []Value{String("s", "x</0x0D;>")}}},
		{"NaN payload 64", &Container{Values: []Value{Float64("f", math.Float64frombits(0x7ff0000000000123))}}},
		{"NaN payload 32", &Container{Values: []Value{Float32("f", math.Float32frombits(0xffc00001))}}},
	}
	for _, tc := range cases {
		dst := []byte("keep")
		out, err := tc.c.AppendText(dst)
		if !errors.Is(err, ErrNotRepresentable) {
			t.Errorf("%s: got %v, want ErrNotRepresentable", tc.name, err)
		}
		if string(out) != "keep" {
			t.Errorf("%s: dst changed to %q on error", tc.name, out)
		}
	}
}
