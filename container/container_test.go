package container

import (
	"bytes"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
)

func TestGetters(t *testing.T) {
	sub := &Container{Values: []Value{Int32("x", 1)}}
	c := &Container{}
	c.Add(Null("n"), Bool("b", true), Int16("i16", -3), Uint16("u16", 3), Int32("i32", -4), Uint32("u32", 4),
		Int64("i64", -5), Uint64("u64", 5), Float32("f32", 1.5), Float64("f64", 2.5), Bytes("by", []byte("xy")),
		String("s", "str"), Nested("c", sub), Array("a", Bool("", false)))

	if v, err := c.GetBool("b"); err != nil || !v {
		t.Errorf("GetBool: %v %v", v, err)
	}
	if v, err := c.GetInt16("i16"); err != nil || v != -3 {
		t.Errorf("GetInt16: %v %v", v, err)
	}
	if v, err := c.GetUint16("u16"); err != nil || v != 3 {
		t.Errorf("GetUint16: %v %v", v, err)
	}
	if v, err := c.GetInt32("i32"); err != nil || v != -4 {
		t.Errorf("GetInt32: %v %v", v, err)
	}
	if v, err := c.GetUint32("u32"); err != nil || v != 4 {
		t.Errorf("GetUint32: %v %v", v, err)
	}
	if v, err := c.GetInt64("i64"); err != nil || v != -5 {
		t.Errorf("GetInt64: %v %v", v, err)
	}
	if v, err := c.GetUint64("u64"); err != nil || v != 5 {
		t.Errorf("GetUint64: %v %v", v, err)
	}
	if v, err := c.GetFloat32("f32"); err != nil || v != 1.5 {
		t.Errorf("GetFloat32: %v %v", v, err)
	}
	if v, err := c.GetFloat64("f64"); err != nil || v != 2.5 {
		t.Errorf("GetFloat64: %v %v", v, err)
	}
	if v, err := c.GetBytes("by"); err != nil || string(v) != "xy" {
		t.Errorf("GetBytes: %v %v", v, err)
	}
	if v, err := c.GetString("s"); err != nil || v != "str" {
		t.Errorf("GetString: %v %v", v, err)
	}
	if v, err := c.GetContainer("c"); err != nil || v != sub {
		t.Errorf("GetContainer: %v %v", v, err)
	}
	if v, err := c.GetArray("a"); err != nil || len(v) != 1 || v[0].Type() != TypeBool {
		t.Errorf("GetArray: %v %v", v, err)
	}
	if v, _ := c.Get("n"); !v.IsNull() || v.Name() != "n" {
		t.Errorf("Get null: %#v", v)
	}

	// Every getter reports a wrong type and a missing name distinctly.
	getters := map[string]func(string) error{
		"GetBool":      func(n string) error { _, err := c.GetBool(n); return err },
		"GetInt16":     func(n string) error { _, err := c.GetInt16(n); return err },
		"GetUint16":    func(n string) error { _, err := c.GetUint16(n); return err },
		"GetInt32":     func(n string) error { _, err := c.GetInt32(n); return err },
		"GetUint32":    func(n string) error { _, err := c.GetUint32(n); return err },
		"GetInt64":     func(n string) error { _, err := c.GetInt64(n); return err },
		"GetUint64":    func(n string) error { _, err := c.GetUint64(n); return err },
		"GetFloat32":   func(n string) error { _, err := c.GetFloat32(n); return err },
		"GetFloat64":   func(n string) error { _, err := c.GetFloat64(n); return err },
		"GetBytes":     func(n string) error { _, err := c.GetBytes(n); return err },
		"GetString":    func(n string) error { _, err := c.GetString(n); return err },
		"GetContainer": func(n string) error { _, err := c.GetContainer(n); return err },
		"GetArray":     func(n string) error { _, err := c.GetArray(n); return err },
	}
	for name, get := range getters {
		if err := get("n"); !errors.Is(err, ErrTypeMismatch) || errors.Is(err, ErrNotFound) {
			t.Errorf("%s on a null: got %v, want ErrTypeMismatch", name, err)
		}
		if err := get("missing"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"missing"`) {
			t.Errorf("%s on a missing name: got %v, want ErrNotFound naming it", name, err)
		}
	}
	_, err := c.GetInt64("i32") // no widening
	if !errors.Is(err, ErrTypeMismatch) || !strings.Contains(err.Error(), `"i32" is int32, not int64`) {
		t.Errorf("GetInt64 on an int32: %v", err)
	}
	var nilC *Container
	if _, err := nilC.GetString("x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("getter on a nil container: %v", err)
	}
	if got, err := Nested("x", nil).AsContainer(); err != nil || got == nil || len(got.Values) != 0 {
		t.Errorf("AsContainer of a nil nested container: %v %v", got, err)
	}
}

func TestAddGetAllSetRemove(t *testing.T) {
	c := &Container{}
	c.Add(String("tag", "a"), Int32("n", 1), String("tag", "b"), String("tag", "c"))
	if v, ok := c.Get("tag"); !ok || v.str != "a" {
		t.Errorf("Get returns the first match: %#v", v)
	}
	all := c.GetAll("tag")
	if len(all) != 3 || all[0].str != "a" || all[1].str != "b" || all[2].str != "c" {
		t.Errorf("GetAll: %#v", all)
	}
	if c.GetAll("none") != nil {
		t.Error("GetAll of a missing name is not nil")
	}
	c.Set(String("tag", "z"))
	if want := []Value{String("tag", "z"), Int32("n", 1)}; !valuesEqual(c.Values, want) {
		t.Errorf("Set replaces the first and drops the rest: %#v", c.Values)
	}
	c.Set(Bool("new", true))
	if len(c.Values) != 3 || !c.Values[2].Equal(Bool("new", true)) {
		t.Errorf("Set appends a new name: %#v", c.Values)
	}
	c.Add(String("tag", "again"))
	if n := c.Remove("tag"); n != 2 {
		t.Errorf("Remove: removed %d, want 2", n)
	}
	if want := []Value{Int32("n", 1), Bool("new", true)}; !valuesEqual(c.Values, want) {
		t.Errorf("after Remove: %#v", c.Values)
	}
	if n := c.Remove("tag"); n != 0 {
		t.Errorf("Remove of a missing name: %d", n)
	}
}

func TestReplyAndSwap(t *testing.T) {
	req := &Container{SourceID: "client", SourceSubID: "c7", TargetID: "server", TargetSubID: "main",
		MessageType: "login", Version: "1.0.0.0", Values: []Value{String("user", "ada")}}
	resp := req.Reply("response")
	want := &Container{SourceID: "server", SourceSubID: "main", TargetID: "client", TargetSubID: "c7",
		MessageType: "response", Version: "1.0.0.0"}
	if !resp.Equal(want) {
		t.Errorf("Reply: %#v", resp)
	}
	if req.SourceID != "client" || len(req.Values) != 1 {
		t.Error("Reply modified the request")
	}
	req.Swap()
	if req.SourceID != "server" || req.SourceSubID != "main" || req.TargetID != "client" || req.TargetSubID != "c7" {
		t.Errorf("Swap: %#v", req)
	}
}

func TestCloneIsDeep(t *testing.T) {
	blob := []byte{1, 2, 3}
	orig := &Container{MessageType: "m", Values: []Value{
		Bytes("b", blob),
		Nested("c", &Container{Values: []Value{Bytes("inner", []byte{4})}}),
		Array("a", Bytes("", []byte{5})),
	}}
	cp := orig.Clone()
	if !cp.Equal(orig) {
		t.Fatal("clone differs")
	}
	b, _ := cp.GetBytes("b")
	b[0] = 99
	sub, _ := cp.GetContainer("c")
	sub.Values[0].bin[0] = 99
	sub.Values = append(sub.Values, Null("x"))
	arr, _ := cp.GetArray("a")
	arr[0].bin[0] = 99
	want := &Container{MessageType: "m", Values: []Value{
		Bytes("b", []byte{1, 2, 3}),
		Nested("c", &Container{Values: []Value{Bytes("inner", []byte{4})}}),
		Array("a", Bytes("", []byte{5})),
	}}
	if !orig.Equal(want) {
		t.Errorf("modifying the clone changed the original: %#v", orig)
	}
	if (*Container)(nil).Clone() != nil {
		t.Error("Clone of nil is not nil")
	}
}

func TestEqual(t *testing.T) {
	a := func() *Container { return &Container{Values: []Value{Float64("f", math.NaN()), Bytes("b", nil)}} }
	if !a().Equal(a()) {
		t.Error("NaN value is not equal to itself")
	}
	if !a().Equal(&Container{Values: []Value{Float64("f", math.NaN()), Bytes("b", []byte{})}}) {
		t.Error("nil and empty bytes differ")
	}
	differ := []*Container{
		{Values: []Value{Float64("f", math.NaN())}},
		{Values: []Value{Float64("f", 0), Bytes("b", nil)}},
		{Values: []Value{Float64("g", math.NaN()), Bytes("b", nil)}},
		{Values: []Value{Float32("f", float32(math.NaN())), Bytes("b", nil)}},
		{Version: "1", Values: []Value{Float64("f", math.NaN()), Bytes("b", nil)}},
		{Values: []Value{Float64("f", math.NaN()), Bytes("b", []byte{0})}},
	}
	for i, d := range differ {
		if a().Equal(d) {
			t.Errorf("case %d compares equal", i)
		}
	}
	if Float64("z", 0).Equal(Float64("z", math.Copysign(0, -1))) {
		t.Error("0 and -0 compare equal; they encode differently")
	}
	if !Nested("n", nil).Equal(Nested("n", &Container{})) {
		t.Error("nil and empty nested containers differ")
	}
	if Array("a", Int32("", 1)).Equal(Array("a", Int32("", 2))) {
		t.Error("arrays with different elements compare equal")
	}
}

func TestTypeString(t *testing.T) {
	for name, typ := range map[string]Type{"null": TypeNull, "int64": TypeInt64, "array": TypeArray, "container": TypeContainer} {
		if typ.String() != name {
			t.Errorf("%d: got %q, want %q", typ, typ.String(), name)
		}
	}
	if s := Type(7).String(); s != "type(7)" {
		t.Errorf("Type(7): %q", s)
	}
}

func TestParseFormat(t *testing.T) {
	for _, f := range []Format{Binary, Text, JSON} {
		got, err := ParseFormat(strings.ToUpper(f.String()))
		if err != nil || got != f {
			t.Errorf("ParseFormat(%q) = %v, %v", f, got, err)
		}
	}
	if _, err := ParseFormat("xml"); err == nil || !strings.Contains(err.Error(), "xml") {
		t.Errorf("ParseFormat(xml): %v", err)
	}
}

func TestConvert(t *testing.T) {
	c := allTypesContainer()
	encodings := map[Format][]byte{}
	for _, f := range []Format{Binary, Text, JSON} {
		enc, err := c.Encode(f)
		if err != nil {
			t.Fatal(err)
		}
		encodings[f] = enc
	}
	for from, in := range encodings {
		for to, want := range encodings {
			var out bytes.Buffer
			if err := Convert(bytes.NewReader(in), &out, from, to); err != nil {
				t.Errorf("%s -> %s: %v", from, to, err)
				continue
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("%s -> %s:\ngot  %q\nwant %q", from, to, out.Bytes(), want)
			}
		}
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestConvertErrors(t *testing.T) {
	var out bytes.Buffer
	err := Convert(strings.NewReader(`@data={[a,5,x];};`), &out, Text, JSON)
	var de *DecodeError
	if !errors.As(err, &de) || de.Format != Text || !strings.Contains(err.Error(), `bad value "x"`) || out.Len() != 0 {
		t.Errorf("bad text: got %v, wrote %q", err, out.Bytes())
	}
	err = Convert(strings.NewReader(exampleText), &out, Binary, JSON)
	if !errors.Is(err, ErrVersion) || out.Len() != 0 {
		t.Errorf("text read as binary: got %v", err)
	}
	arr, _ := (&Container{Values: []Value{Array("a")}}).Marshal()
	err = Convert(bytes.NewReader(arr), &out, Binary, Text)
	if !errors.Is(err, ErrNotRepresentable) || out.Len() != 0 {
		t.Errorf("array to text: got %v", err)
	}
	err = DecodeOptions{MaxSize: 8}.Convert(strings.NewReader(exampleText), &out, Text, JSON)
	if !errors.Is(err, ErrLimit) {
		t.Errorf("oversized input: got %v, want ErrLimit", err)
	}
	err = Convert(io.MultiReader(strings.NewReader("@da"), iotest{}), &out, Text, JSON)
	if err == nil || !strings.Contains(err.Error(), "read input") {
		t.Errorf("read error: got %v", err)
	}
	err = Convert(strings.NewReader(exampleText), failingWriter{}, Text, JSON)
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("write error: got %v", err)
	}
	if _, err := Decode(nil, Format(9)); err == nil {
		t.Error("Decode with an unknown format succeeded")
	}
	if _, err := exampleContainer().Encode(Format(9)); err == nil {
		t.Error("Encode with an unknown format succeeded")
	}
}

type iotest struct{}

func (iotest) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

// TestNilContainerEncodes: a nil *Container encodes like an empty one in
// every format instead of panicking.
func TestNilContainerEncodes(t *testing.T) {
	var c *Container
	for _, f := range []Format{Binary, Text, JSON} {
		got, err := c.Encode(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		want, _ := (&Container{}).Encode(f)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: got %q, want %q", f, got, want)
		}
	}
}
