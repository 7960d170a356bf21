package container

import (
	"bytes"
	"fmt"
	"math"
)

// Type identifies the kind of data a Value holds.
//
// The numeric values are the type codes of the C++ value_container text
// format, so one number means the same thing in the text format, the binary
// encoding and this API. Codes 7 and 8 (the C++ "long" and "ulong", whose
// width depends on the platform) have no Type of their own: the text parser
// reads them as TypeInt64 and TypeUint64. TypeArray has no C++ code; 15 is
// ours.
type Type uint8

// The value types.
const (
	TypeNull      Type = 0  // no payload
	TypeBool      Type = 1  // true or false
	TypeBytes     Type = 2  // arbitrary bytes
	TypeInt16     Type = 3  // C++ short
	TypeUint16    Type = 4  // C++ unsigned short
	TypeInt32     Type = 5  // C++ int
	TypeUint32    Type = 6  // C++ unsigned int
	TypeFloat32   Type = 9  // C++ float
	TypeFloat64   Type = 10 // C++ double
	TypeString    Type = 11 // arbitrary bytes meant as text; not required to be UTF-8
	TypeContainer Type = 12 // a nested *Container
	TypeInt64     Type = 13 // C++ long long
	TypeUint64    Type = 14 // C++ unsigned long long
	TypeArray     Type = 15 // an ordered list of Values
)

// typeNames is indexed by Type; the names are also the "type" strings of the
// JSON encoding, so they are part of the wire contract.
var typeNames = [...]string{
	TypeNull:      "null",
	TypeBool:      "bool",
	TypeBytes:     "bytes",
	TypeInt16:     "int16",
	TypeUint16:    "uint16",
	TypeInt32:     "int32",
	TypeUint32:    "uint32",
	TypeFloat32:   "float32",
	TypeFloat64:   "float64",
	TypeString:    "string",
	TypeContainer: "container",
	TypeInt64:     "int64",
	TypeUint64:    "uint64",
	TypeArray:     "array",
}

// String returns the type's name as used in the JSON encoding ("int32",
// "string", ...), or "type(N)" for a number that is not a Type.
func (t Type) String() string {
	if t.valid() {
		return typeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// valid reports whether t is one of the declared types; 7 and 8 are not.
func (t Type) valid() bool {
	return int(t) < len(typeNames) && typeNames[t] != ""
}

// typeByName maps a JSON type name back to its Type.
func typeByName(s string) (Type, bool) {
	for i, n := range typeNames {
		if n != "" && n == s {
			return Type(i), true
		}
	}
	return 0, false
}

// Value is one named, typed item of a Container.
//
// It is a plain struct with a type tag rather than an interface so that a
// container's values live in one []Value allocation instead of one heap
// object each. Scalars (bool, integers, floats) are kept in a single uint64:
// signed integers sign-extended, floats as their IEEE-754 bits, which is
// also what makes comparison and encoding exact.
//
// The zero Value is a null with an empty name. Values are built with the
// constructors (String, Int64, ...) and read with the As methods, which fail
// with ErrTypeMismatch instead of returning a zero value, so that a sender
// using the wrong type is noticed.
type Value struct {
	name string
	str  string     // TypeString
	bin  []byte     // TypeBytes
	arr  []Value    // TypeArray
	obj  *Container // TypeContainer
	num  uint64     // TypeBool (0 or 1), integers, float bits
	typ  Type
}

// Null returns a value with no payload, the C++ null_value.
func Null(name string) Value { return Value{name: name, typ: TypeNull} }

// Bool returns a bool value.
func Bool(name string, v bool) Value {
	var n uint64
	if v {
		n = 1
	}
	return Value{name: name, typ: TypeBool, num: n}
}

// Int16 returns an int16 value (C++ short).
func Int16(name string, v int16) Value {
	return Value{name: name, typ: TypeInt16, num: uint64(int64(v))}
}

// Uint16 returns a uint16 value (C++ unsigned short).
func Uint16(name string, v uint16) Value { return Value{name: name, typ: TypeUint16, num: uint64(v)} }

// Int32 returns an int32 value (C++ int).
func Int32(name string, v int32) Value {
	return Value{name: name, typ: TypeInt32, num: uint64(int64(v))}
}

// Uint32 returns a uint32 value (C++ unsigned int).
func Uint32(name string, v uint32) Value { return Value{name: name, typ: TypeUint32, num: uint64(v)} }

// Int64 returns an int64 value (C++ long long).
func Int64(name string, v int64) Value { return Value{name: name, typ: TypeInt64, num: uint64(v)} }

// Uint64 returns a uint64 value (C++ unsigned long long).
func Uint64(name string, v uint64) Value { return Value{name: name, typ: TypeUint64, num: v} }

// Float32 returns a float32 value. Every bit pattern, NaN payloads
// included, survives the binary encoding.
func Float32(name string, v float32) Value {
	return Value{name: name, typ: TypeFloat32, num: uint64(math.Float32bits(v))}
}

// Float64 returns a float64 value. Every bit pattern, NaN payloads
// included, survives the binary encoding.
func Float64(name string, v float64) Value {
	return Value{name: name, typ: TypeFloat64, num: math.Float64bits(v)}
}

// Bytes returns a bytes value. It does not copy v, to keep building a
// message cheap: the caller must not modify v while the value is in use.
func Bytes(name string, v []byte) Value { return Value{name: name, typ: TypeBytes, bin: v} }

// String returns a string value. The string may hold any bytes; it need not
// be UTF-8.
func String(name, v string) Value { return Value{name: name, typ: TypeString, str: v} }

// Nested returns a value holding a nested container. A nil c is treated as
// an empty container. c is not copied.
func Nested(name string, c *Container) Value { return Value{name: name, typ: TypeContainer, obj: c} }

// Array returns a value holding an ordered list of values. Elements keep
// their own names (usually empty) and types, which may differ. elems is not
// copied. The C++ text format cannot carry arrays.
func Array(name string, elems ...Value) Value { return Value{name: name, typ: TypeArray, arr: elems} }

// Name returns the value's name.
func (v Value) Name() string { return v.name }

// Type returns the value's type.
func (v Value) Type() Type { return v.typ }

// IsNull reports whether v is a null value.
func (v Value) IsNull() bool { return v.typ == TypeNull }

// mismatch builds the error returned by an As method called on the wrong
// type; it names the value and both types so a log line is enough to debug.
func (v Value) mismatch(want Type) error {
	return fmt.Errorf("%w: value %q is %s, not %s", ErrTypeMismatch, v.name, v.typ, want)
}

// AsBool returns the payload of a bool value, or an error wrapping
// ErrTypeMismatch for any other type.
func (v Value) AsBool() (bool, error) {
	if v.typ != TypeBool {
		return false, v.mismatch(TypeBool)
	}
	return v.num != 0, nil
}

// AsInt16 returns the payload of an int16 value, or an error wrapping
// ErrTypeMismatch. Types are not converted, not even widened: a peer that
// sends another type than agreed is reported rather than guessed at.
func (v Value) AsInt16() (int16, error) {
	if v.typ != TypeInt16 {
		return 0, v.mismatch(TypeInt16)
	}
	return int16(v.num), nil
}

// AsUint16 returns the payload of a uint16 value, or an error wrapping
// ErrTypeMismatch.
func (v Value) AsUint16() (uint16, error) {
	if v.typ != TypeUint16 {
		return 0, v.mismatch(TypeUint16)
	}
	return uint16(v.num), nil
}

// AsInt32 returns the payload of an int32 value, or an error wrapping
// ErrTypeMismatch.
func (v Value) AsInt32() (int32, error) {
	if v.typ != TypeInt32 {
		return 0, v.mismatch(TypeInt32)
	}
	return int32(v.num), nil
}

// AsUint32 returns the payload of a uint32 value, or an error wrapping
// ErrTypeMismatch.
func (v Value) AsUint32() (uint32, error) {
	if v.typ != TypeUint32 {
		return 0, v.mismatch(TypeUint32)
	}
	return uint32(v.num), nil
}

// AsInt64 returns the payload of an int64 value, or an error wrapping
// ErrTypeMismatch.
func (v Value) AsInt64() (int64, error) {
	if v.typ != TypeInt64 {
		return 0, v.mismatch(TypeInt64)
	}
	return int64(v.num), nil
}

// AsUint64 returns the payload of a uint64 value, or an error wrapping
// ErrTypeMismatch.
func (v Value) AsUint64() (uint64, error) {
	if v.typ != TypeUint64 {
		return 0, v.mismatch(TypeUint64)
	}
	return v.num, nil
}

// AsFloat32 returns the payload of a float32 value, or an error wrapping
// ErrTypeMismatch.
func (v Value) AsFloat32() (float32, error) {
	if v.typ != TypeFloat32 {
		return 0, v.mismatch(TypeFloat32)
	}
	return math.Float32frombits(uint32(v.num)), nil
}

// AsFloat64 returns the payload of a float64 value, or an error wrapping
// ErrTypeMismatch.
func (v Value) AsFloat64() (float64, error) {
	if v.typ != TypeFloat64 {
		return 0, v.mismatch(TypeFloat64)
	}
	return math.Float64frombits(v.num), nil
}

// AsBytes returns the payload of a bytes value, or an error wrapping
// ErrTypeMismatch. The slice is not copied; do not modify it.
func (v Value) AsBytes() ([]byte, error) {
	if v.typ != TypeBytes {
		return nil, v.mismatch(TypeBytes)
	}
	return v.bin, nil
}

// AsString returns the payload of a string value, or an error wrapping
// ErrTypeMismatch. It is not named String so that Value does not look like
// a fmt.Stringer that renders any value as text.
func (v Value) AsString() (string, error) {
	if v.typ != TypeString {
		return "", v.mismatch(TypeString)
	}
	return v.str, nil
}

// AsContainer returns the payload of a nested-container value (never nil),
// or an error wrapping ErrTypeMismatch. The container is shared, not copied.
func (v Value) AsContainer() (*Container, error) {
	if v.typ != TypeContainer {
		return nil, v.mismatch(TypeContainer)
	}
	if v.obj == nil {
		return &Container{}, nil
	}
	return v.obj, nil
}

// AsArray returns the elements of an array value, or an error wrapping
// ErrTypeMismatch. The slice is shared, not copied.
func (v Value) AsArray() ([]Value, error) {
	if v.typ != TypeArray {
		return nil, v.mismatch(TypeArray)
	}
	return v.arr, nil
}

// Equal reports whether v and w have the same name, type and payload.
// Floats compare by bit pattern, so a NaN equals itself and 0 differs from
// -0: Equal answers "would these encode identically", which is what
// round-trip checks need. A nil bytes payload equals an empty one, and a
// nil nested container equals an empty one.
func (v Value) Equal(w Value) bool {
	if v.name != w.name || v.typ != w.typ {
		return false
	}
	switch v.typ {
	case TypeString:
		return v.str == w.str
	case TypeBytes:
		return bytes.Equal(v.bin, w.bin)
	case TypeContainer:
		return v.obj.Equal(w.obj)
	case TypeArray:
		return valuesEqual(v.arr, w.arr)
	default:
		return v.num == w.num
	}
}

func valuesEqual(a, b []Value) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

// clone returns a deep copy of v, sharing no memory with it.
func (v Value) clone() Value {
	switch v.typ {
	case TypeBytes:
		if v.bin != nil {
			v.bin = append([]byte{}, v.bin...)
		}
	case TypeContainer:
		if v.obj != nil {
			v.obj = v.obj.Clone()
		}
	case TypeArray:
		if v.arr != nil {
			arr := make([]Value, len(v.arr))
			for i := range v.arr {
				arr[i] = v.arr[i].clone()
			}
			v.arr = arr
		}
	}
	return v
}
