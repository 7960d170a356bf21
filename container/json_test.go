package container

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
)

func TestJSONGolden(t *testing.T) {
	cases := []struct {
		name string
		c    *Container
		want string
	}{
		{"example", exampleContainer(),
			`{"header":{"target_id":"srv","target_sub_id":"","source_id":"c1","source_sub_id":"","message_type":"chat","version":"1.0.0.0"},` +
				`"values":[{"name":"count","type":"int32","value":42},{"name":"msg","type":"string","value":"hi there"}]}`},
		{"every type", &Container{Values: []Value{
			Null("n"), Bool("b", true), Bytes("raw", []byte{0, 0xff}), Int16("s16", -32768), Uint16("u16", 65535),
			Int32("i32", -7), Uint32("u32", 4294967295), Float32("f32", 0.1), Float64("f64", 1e21),
			String("s", "a\"\\\n\x01\u2028é"), Int64("i64", math.MinInt64), Uint64("u64", math.MaxUint64),
			Float64("nan", math.NaN()), Float64("inf", math.Inf(1)), Float32("ninf", float32(math.Inf(-1))),
			Nested("sub", &Container{Values: []Value{Bool("x", false)}}),
			Nested("addressed", &Container{MessageType: "m"}),
			Array("arr", Int32("", 1), String("", "two")),
			String("\xff", "\x00\xfe"),
		}},
			`{"header":{"target_id":"","target_sub_id":"","source_id":"","source_sub_id":"","message_type":"","version":""},"values":[` +
				`{"name":"n","type":"null","value":null},` +
				`{"name":"b","type":"bool","value":true},` +
				`{"name":"raw","type":"bytes","value":"AP8="},` +
				`{"name":"s16","type":"int16","value":-32768},` +
				`{"name":"u16","type":"uint16","value":65535},` +
				`{"name":"i32","type":"int32","value":-7},` +
				`{"name":"u32","type":"uint32","value":4294967295},` +
				`{"name":"f32","type":"float32","value":0.1},` +
				`{"name":"f64","type":"float64","value":1e+21},` +
				`{"name":"s","type":"string","value":"a\"\\\n\u0001\u2028é"},` +
				`{"name":"i64","type":"int64","value":"-9223372036854775808"},` +
				`{"name":"u64","type":"uint64","value":"18446744073709551615"},` +
				`{"name":"nan","type":"float64","value":"NaN"},` +
				`{"name":"inf","type":"float64","value":"Infinity"},` +
				`{"name":"ninf","type":"float32","value":"-Infinity"},` +
				`{"name":"sub","type":"container","value":{"values":[{"name":"x","type":"bool","value":false}]}},` +
				`{"name":"addressed","type":"container","value":{"header":{"target_id":"","target_sub_id":"","source_id":"","source_sub_id":"","message_type":"m","version":""},"values":[]}},` +
				`{"name":"arr","type":"array","value":[{"name":"","type":"int32","value":1},{"name":"","type":"string","value":"two"}]},` +
				`{"name_b64":"/w==","type":"string","value_b64":"AP4="}` +
				`]}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.c.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("MarshalJSON:\ngot  %s\nwant %s", got, tc.want)
			}
			if !json.Valid(got) {
				t.Error("output is not valid JSON")
			}
			back, err := ParseJSON([]byte(tc.want))
			if err != nil {
				t.Fatalf("ParseJSON: %v", err)
			}
			if !back.Equal(tc.c) {
				t.Errorf("ParseJSON:\ngot  %#v\nwant %#v", back, tc.c)
			}
		})
	}
}

// What a hand-written or JavaScript-produced document may look like.
func TestJSONParseVariants(t *testing.T) {
	cases := []struct {
		name string
		in   string
		c    *Container
	}{
		{"no header, whitespace, value before type",
			" {\n \"values\" : [ {\"value\": 5, \"type\": \"int64\", \"name\": \"n\"} ] }\n",
			&Container{Values: []Value{Int64("n", 5)}}},
		{"value before type, nested",
			`{"values":[{"value":{"values":[{"value":[{"value":"x","type":"string"}],"type":"array"}]},"type":"container","name":"c"}]}`,
			&Container{Values: []Value{Nested("c", &Container{Values: []Value{Array("", String("", "x"))}})}}},
		{"integers as strings and numbers",
			`{"values":[{"name":"a","type":"int32","value":"-5"},{"name":"b","type":"uint64","value":18446744073709551615}]}`,
			&Container{Values: []Value{Int32("a", -5), Uint64("b", math.MaxUint64)}}},
		{"null needs no value; values null",
			`{"header":{"source_id":"s"},"values":[{"name":"z","type":"null"}]}`,
			&Container{SourceID: "s", Values: []Value{Null("z")}}},
		{"empty object", `{}`, &Container{}},
		{"values null", `{"values":null}`, &Container{}},
		{"escapes and surrogates",
			`{"values":[{"name":"\u00e9\ud83d\ude00","type":"string","value":"\/\b\f\t\ud800x"}]}`,
			&Container{Values: []Value{String("é😀", "/\b\f\t\uFFFDx")}}},
		{"b64 header and name",
			`{"header":{"target_id_b64":"/w=="},"values":[{"name_b64":"AA==","type":"bool","value":false}]}`,
			&Container{TargetID: "\xff", Values: []Value{Bool("\x00", false)}}},
		{"float forms",
			`{"values":[{"name":"a","type":"float64","value":-0},{"name":"b","type":"float64","value":"Infinity"},{"name":"c","type":"float32","value":1.5E+2}]}`,
			&Container{Values: []Value{Float64("a", math.Copysign(0, -1)), Float64("b", math.Inf(1)), Float32("c", 150)}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseJSON([]byte(tc.in))
			if err != nil {
				t.Fatalf("ParseJSON: %v", err)
			}
			if !got.Equal(tc.c) {
				t.Errorf("got  %#v\nwant %#v", got, tc.c)
			}
		})
	}
}

func TestJSONParseErrors(t *testing.T) {
	deepArray := `{"values":[` + strings.Repeat(`{"type":"array","value":[`, 40) + strings.Repeat(`]}`, 40) + `]}`
	deepSkip := `{"values":[{"value":` + strings.Repeat(`[`, 5000) + strings.Repeat(`]`, 5000) + `,"type":"array"}]}`
	cases := []struct {
		in, why string
		err     error
	}{
		{``, "expected '{'", ErrMalformed},
		{`[]`, "expected '{'", ErrMalformed},
		{`{"values":[]} x`, "after the JSON object", ErrMalformed},
		{`{"valeus":[]}`, `unknown container key "valeus"`, ErrMalformed},
		{`{"values":[{"name":"a","type":"int32","vaule":1}]}`, `unknown value key "vaule"`, ErrMalformed},
		{`{"values":[{"name":"a","value":1}]}`, "has no type", ErrMalformed},
		{`{"values":[{"name":"a","type":"int128","value":1}]}`, `unknown type "int128"`, ErrMalformed},
		{`{"values":[{"name":"a","type":"int32"}]}`, "has no value", ErrMalformed},
		{`{"values":[{"name":"a","type":"int16","value":40000}]}`, "not a valid int16", ErrMalformed},
		{`{"values":[{"name":"a","type":"int32","value":1.5}]}`, "not a valid int32", ErrMalformed},
		{`{"values":[{"name":"a","type":"uint32","value":-1}]}`, "not a valid uint32", ErrMalformed},
		{`{"values":[{"name":"a","type":"float64","value":1e999}]}`, "not a valid float64", ErrMalformed},
		{`{"values":[{"name":"a","type":"float64","value":01}]}`, `expected ","`, ErrMalformed},
		{`{"values":[{"name":"a","type":"bytes","value":"!!"}]}`, "not a valid bytes", ErrMalformed},
		{`{"values":[{"name":"a","type":"bool","value":1}]}`, "expected false", ErrMalformed},
		{`{"values":[{"name":"a","type":"int32","value_b64":"AA=="}]}`, "only for strings", ErrMalformed},
		{`{"values":[{"name":"a","name":"b","type":"null"}]}`, "name given twice", ErrMalformed},
		{`{"header":{"version":"1","version_b64":"MQ=="}}`, "given twice", ErrMalformed},
		{`{"header":{"sender":"x"}}`, `unknown header key "sender"`, ErrMalformed},
		{`{"values":[{"name":"a\u0","type":"null"}]}`, `bad \u escape`, ErrMalformed},
		{"{\"values\":[{\"name\":\"a\x01\",\"type\":\"null\"}]}", "control character", ErrMalformed},
		{`{"values":[{"name":"a`, "unterminated string", ErrMalformed},
		{deepArray, "deeper than 32", ErrTooDeep},
		{deepSkip, "nested too deeply", ErrTooDeep},
	}
	for _, tc := range cases {
		_, err := ParseJSON([]byte(tc.in))
		var de *DecodeError
		if !errors.Is(err, tc.err) || !errors.As(err, &de) || de.Format != JSON || !strings.Contains(err.Error(), tc.why) {
			in := tc.in
			if len(in) > 80 {
				in = in[:80] + "..."
			}
			t.Errorf("ParseJSON(%q):\n got %v\nwant %v containing %q", in, err, tc.err, tc.why)
		}
	}
}

func TestJSONLimits(t *testing.T) {
	in := []byte(`{"values":[{"type":"null"},{"type":"array","value":[{"type":"null"},{"type":"null"}]}]}`)
	if _, err := (DecodeOptions{MaxValues: 4}).ParseJSON(in); err != nil {
		t.Errorf("4 values, MaxValues 4: %v", err)
	}
	if _, err := (DecodeOptions{MaxValues: 3}).ParseJSON(in); !errors.Is(err, ErrLimit) {
		t.Errorf("4 values, MaxValues 3: got %v, want ErrLimit", err)
	}
	if _, err := (DecodeOptions{MaxDepth: 1}).ParseJSON(in); err != nil {
		t.Errorf("depth 1, MaxDepth 1: %v", err)
	}
	nested := []byte(`{"values":[{"type":"array","value":[{"type":"container","value":{}}]}]}`)
	if _, err := (DecodeOptions{MaxDepth: 1}).ParseJSON(nested); !errors.Is(err, ErrTooDeep) {
		t.Errorf("depth 2, MaxDepth 1: got %v, want ErrTooDeep", err)
	}
}

// TestJSONWithEncodingJSON: a *Container inside another struct is written
// in the typed form by encoding/json and read back by it.
func TestJSONWithEncodingJSON(t *testing.T) {
	type envelope struct {
		ID  int        `json:"id"`
		Msg *Container `json:"msg"`
	}
	in := envelope{ID: 1, Msg: exampleContainer()}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `{"name":"count","type":"int32","value":42}`) {
		t.Errorf("encoding/json did not use MarshalJSON: %s", b)
	}
	var out envelope
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.ID != 1 || !out.Msg.Equal(in.Msg) {
		t.Errorf("got %+v", out)
	}
	if err := json.Unmarshal([]byte(`{"msg":{"values":[{"type":"int8"}]}}`), &out); !errors.Is(err, ErrMalformed) {
		t.Errorf("bad nested container: got %v, want ErrMalformed", err)
	}
}
