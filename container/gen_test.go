package container

import (
	"math"

	"pgregory.net/rapid"
)

// Generators for property tests. Containers nest at most genMaxDepth deep
// and strings cover valid UTF-8, arbitrary bytes (NUL, invalid UTF-8) and
// the sequences the text format treats specially.

const genMaxDepth = 3

var specialStrings = []string{
	"", " ", "\r\n\t ", "];", "a];b", "]", "};", ",", "[", "@data={",
	"</0x0A;>", "</0x0C;>", "</0x0", "</0x0Z;>", "\x00", "\xff\xfe", "\u2028",
	`"\`, "héllo wörld", "\x00];\xff",
}

func genString() *rapid.Generator[string] {
	return rapid.OneOf(
		rapid.String(),
		rapid.Map(rapid.SliceOfN(rapid.Byte(), 0, 24), func(b []byte) string { return string(b) }),
		rapid.SampledFrom(specialStrings),
	)
}

func genFloat64() *rapid.Generator[float64] {
	return rapid.OneOf(
		rapid.Float64(),
		rapid.Map(rapid.Uint64(), math.Float64frombits),
		rapid.SampledFrom([]float64{0, math.Copysign(0, -1), math.Inf(1), math.Inf(-1), math.NaN(),
			math.MaxFloat64, math.SmallestNonzeroFloat64, 0.1, 1e21, 1e-7}),
	)
}

func genFloat32() *rapid.Generator[float32] {
	return rapid.OneOf(
		rapid.Float32(),
		rapid.Map(rapid.Uint32(), math.Float32frombits),
		rapid.SampledFrom([]float32{0, float32(math.Copysign(0, -1)), float32(math.Inf(1)),
			float32(math.NaN()), math.MaxFloat32, math.SmallestNonzeroFloat32, 0.1}),
	)
}

// genOpts controls what the generators produce.
type genOpts struct {
	textSafe bool // no arrays and no headers on nested containers (text format limits)
}

func (o genOpts) value(depth int) *rapid.Generator[Value] {
	return rapid.Custom(func(t *rapid.T) Value {
		name := genString().Draw(t, "name")
		kinds := 14 // every type
		if depth >= genMaxDepth {
			kinds = 12 // no container or array
		} else if o.textSafe {
			kinds = 13 // no array
		}
		switch rapid.IntRange(0, kinds-1).Draw(t, "kind") {
		case 0:
			return Null(name)
		case 1:
			return Bool(name, rapid.Bool().Draw(t, "v"))
		case 2:
			return Int16(name, rapid.Int16().Draw(t, "v"))
		case 3:
			return Uint16(name, rapid.Uint16().Draw(t, "v"))
		case 4:
			return Int32(name, rapid.Int32().Draw(t, "v"))
		case 5:
			return Uint32(name, rapid.Uint32().Draw(t, "v"))
		case 6:
			return Int64(name, rapid.Int64().Draw(t, "v"))
		case 7:
			return Uint64(name, rapid.Uint64().Draw(t, "v"))
		case 8:
			return Float32(name, genFloat32().Draw(t, "v"))
		case 9:
			return Float64(name, genFloat64().Draw(t, "v"))
		case 10:
			return Bytes(name, rapid.SliceOfN(rapid.Byte(), 0, 40).Draw(t, "v"))
		case 11:
			return String(name, genString().Draw(t, "v"))
		case 12:
			return Nested(name, o.container(depth+1).Draw(t, "v"))
		default:
			return Array(name, rapid.SliceOfN(o.value(depth+1), 0, 4).Draw(t, "v")...)
		}
	})
}

func (o genOpts) container(depth int) *rapid.Generator[*Container] {
	return rapid.Custom(func(t *rapid.T) *Container {
		c := &Container{}
		if depth == 0 || !o.textSafe {
			if rapid.Bool().Draw(t, "has header") {
				c.TargetID = genString().Draw(t, "target")
				c.TargetSubID = genString().Draw(t, "target sub")
				c.SourceID = genString().Draw(t, "source")
				c.SourceSubID = genString().Draw(t, "source sub")
				c.MessageType = genString().Draw(t, "type")
				c.Version = genString().Draw(t, "version")
			}
		}
		c.Values = rapid.SliceOfN(o.value(depth), 0, 6).Draw(t, "values")
		return c
	})
}

// walk calls fn for every value at every depth, and for every container.
func walk(c *Container, fv func(*Value), fc func(*Container)) {
	if c == nil {
		return
	}
	fc(c)
	for i := range c.Values {
		walkValue(&c.Values[i], fv, fc)
	}
}

func walkValue(v *Value, fv func(*Value), fc func(*Container)) {
	fv(v)
	switch v.typ {
	case TypeContainer:
		walk(v.obj, fv, fc)
	case TypeArray:
		for i := range v.arr {
			walkValue(&v.arr[i], fv, fc)
		}
	}
}

// oddNaN reports whether v is a float NaN other than the one a parser
// produces from "NaN": text and JSON cannot carry its payload.
func oddNaN(v *Value) bool {
	switch v.typ {
	case TypeFloat32:
		f := math.Float32frombits(uint32(v.num))
		return f != f && uint32(v.num) != canonNaN32
	case TypeFloat64:
		f := math.Float64frombits(v.num)
		return f != f && v.num != canonNaN64
	}
	return false
}

func hasOddNaN(c *Container) bool {
	found := false
	walk(c, func(v *Value) { found = found || oddNaN(v) }, func(*Container) {})
	return found
}
