package container

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// BinaryVersion is the first byte of every binary encoding. A decoder
// rejects any other value with ErrVersion, so the layout can change later
// without old readers misreading new data.
const BinaryVersion byte = 1

// Smallest encodings, used to reject impossible counts before allocating:
// a value is at least a name length (1) and a type byte (1); a text item is
// at least "[,0,];".
const (
	minBinaryValue = 2
	minTextItem    = 6
)

// Marshal returns the binary encoding of c (see docs/CONTAINER.md). It
// sizes the buffer first, so it makes exactly one allocation. The only
// error is ErrTooDeep, for nesting beyond MaxDepthLimit.
func (c *Container) Marshal() ([]byte, error) {
	n, err := binarySize(c, 0)
	if err != nil {
		return nil, err
	}
	return c.AppendBinary(make([]byte, 0, n))
}

// MarshalBinary is Marshal, for encoding.BinaryMarshaler.
func (c *Container) MarshalBinary() ([]byte, error) { return c.Marshal() }

// AppendBinary appends the binary encoding of c to dst and returns the
// extended buffer; appending into a reused buffer with enough capacity does
// not allocate. On error dst is returned unextended.
func (c *Container) AppendBinary(dst []byte) ([]byte, error) {
	start := len(dst)
	dst = append(dst, BinaryVersion)
	dst, err := appendBinaryBody(dst, c, 0)
	if err != nil {
		return dst[:start], err
	}
	return dst, nil
}

func uvarintLen(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendBinaryBody(dst []byte, c *Container, depth int) ([]byte, error) {
	if c == nil {
		// An absent nested container is written as an empty one: six empty
		// header strings and a zero count.
		return append(dst, 0, 0, 0, 0, 0, 0, 0), nil
	}
	dst = appendString(dst, c.TargetID)
	dst = appendString(dst, c.TargetSubID)
	dst = appendString(dst, c.SourceID)
	dst = appendString(dst, c.SourceSubID)
	dst = appendString(dst, c.MessageType)
	dst = appendString(dst, c.Version)
	dst = binary.AppendUvarint(dst, uint64(len(c.Values)))
	var err error
	for i := range c.Values {
		if dst, err = appendBinaryValue(dst, &c.Values[i], depth); err != nil {
			return dst, err
		}
	}
	return dst, nil
}

func appendBinaryValue(dst []byte, v *Value, depth int) ([]byte, error) {
	dst = appendString(dst, v.name)
	dst = append(dst, byte(v.typ))
	switch v.typ {
	case TypeNull:
	case TypeBool:
		dst = append(dst, byte(v.num))
	case TypeInt16, TypeUint16:
		dst = binary.LittleEndian.AppendUint16(dst, uint16(v.num))
	case TypeInt32, TypeUint32, TypeFloat32:
		dst = binary.LittleEndian.AppendUint32(dst, uint32(v.num))
	case TypeInt64, TypeUint64, TypeFloat64:
		dst = binary.LittleEndian.AppendUint64(dst, v.num)
	case TypeBytes:
		dst = binary.AppendUvarint(dst, uint64(len(v.bin)))
		dst = append(dst, v.bin...)
	case TypeString:
		dst = appendString(dst, v.str)
	case TypeContainer:
		if depth >= MaxDepthLimit {
			return dst, encodeTooDeep(v.name)
		}
		return appendBinaryBody(dst, v.obj, depth+1)
	case TypeArray:
		if depth >= MaxDepthLimit {
			return dst, encodeTooDeep(v.name)
		}
		dst = binary.AppendUvarint(dst, uint64(len(v.arr)))
		var err error
		for i := range v.arr {
			if dst, err = appendBinaryValue(dst, &v.arr[i], depth+1); err != nil {
				return dst, err
			}
		}
	default:
		// Unreachable: a Type outside the set can only come from this
		// package, and none is made.
		return dst, fmt.Errorf("container: value %q has invalid type %d", v.name, v.typ)
	}
	return dst, nil
}

func encodeTooDeep(name string) error {
	return fmt.Errorf("%w: value %q is nested deeper than %d", ErrTooDeep, name, MaxDepthLimit)
}

func stringSize(n int) int { return uvarintLen(uint64(n)) + n }

// binarySize computes the exact length appendBinaryBody will produce, so
// that Marshal allocates once.
func binarySize(c *Container, depth int) (int, error) {
	if c == nil {
		return 1 + 7, nil // only reached at the top: valueSize handles nested nil
	}
	n := 0
	if depth == 0 {
		n = 1 // the version byte
	}
	n += stringSize(len(c.TargetID)) + stringSize(len(c.TargetSubID)) +
		stringSize(len(c.SourceID)) + stringSize(len(c.SourceSubID)) +
		stringSize(len(c.MessageType)) + stringSize(len(c.Version)) +
		uvarintLen(uint64(len(c.Values)))
	for i := range c.Values {
		m, err := valueSize(&c.Values[i], depth)
		if err != nil {
			return 0, err
		}
		n += m
	}
	return n, nil
}

func valueSize(v *Value, depth int) (int, error) {
	n := stringSize(len(v.name)) + 1
	switch v.typ {
	case TypeBool:
		n++
	case TypeInt16, TypeUint16:
		n += 2
	case TypeInt32, TypeUint32, TypeFloat32:
		n += 4
	case TypeInt64, TypeUint64, TypeFloat64:
		n += 8
	case TypeBytes:
		n += stringSize(len(v.bin))
	case TypeString:
		n += stringSize(len(v.str))
	case TypeContainer:
		if depth >= MaxDepthLimit {
			return 0, encodeTooDeep(v.name)
		}
		if v.obj == nil {
			return n + 7, nil
		}
		m, err := binarySize(v.obj, depth+1)
		if err != nil {
			return 0, err
		}
		n += m
	case TypeArray:
		if depth >= MaxDepthLimit {
			return 0, encodeTooDeep(v.name)
		}
		n += uvarintLen(uint64(len(v.arr)))
		for i := range v.arr {
			m, err := valueSize(&v.arr[i], depth+1)
			if err != nil {
				return 0, err
			}
			n += m
		}
	}
	return n, nil
}

// Unmarshal decodes a binary encoding with the default limits.
func Unmarshal(data []byte) (*Container, error) { return DecodeOptions{}.Unmarshal(data) }

// Unmarshal decodes a binary encoding with o's limits. The input must be
// exactly one container: trailing bytes are an error. The result does not
// alias data (data may be reused), but its strings share one copy of the
// input, so keeping any string of the result keeps that copy alive.
//
// Every failure is a *DecodeError.
func (o DecodeOptions) Unmarshal(data []byte) (*Container, error) {
	c := new(Container)
	if err := o.unmarshalInto(c, data); err != nil {
		return nil, err
	}
	return c, nil
}

// UnmarshalBinary decodes a binary encoding into c with the default limits,
// for encoding.BinaryUnmarshaler. It reuses the capacity of c.Values for the
// top-level values, so decoding many messages into one Container saves an
// allocation each; previous contents are overwritten. On error c is left
// empty.
func (c *Container) UnmarshalBinary(data []byte) error {
	return DecodeOptions{}.unmarshalInto(c, data)
}

func (o DecodeOptions) unmarshalInto(c *Container, data []byte) error {
	d := binDecoder{data: data, opt: o.norm()}
	err := d.opt.checkSize(data, Binary)
	if err == nil {
		err = d.top(c)
	}
	if err != nil {
		clear(c.Values)
		*c = Container{Values: c.Values[:0]}
		return err
	}
	return nil
}

// binDecoder reads one binary encoding. Every length and count is checked
// against the bytes left before it is used, and counts also against the
// value budget, so allocation is bounded by the input size and limits, not
// by what the input claims.
type binDecoder struct {
	data   []byte
	pos    int
	opt    DecodeOptions
	values int // values decoded or reserved so far, against MaxValues

	// Lazily made copies of data that strings and bytes payloads are cut
	// from: one allocation each per message instead of one per value.
	str    string
	hasStr bool
	own    []byte
}

func (d *binDecoder) fail(sentinel error, format string, args ...any) error {
	return &DecodeError{Format: Binary, Offset: d.pos, Reason: fmt.Sprintf(format, args...), Err: sentinel}
}

func (d *binDecoder) top(c *Container) error {
	if len(d.data) == 0 {
		return d.fail(ErrMalformed, "empty input")
	}
	if d.data[0] != BinaryVersion {
		return d.fail(ErrVersion, "version byte is %d, want %d", d.data[0], BinaryVersion)
	}
	d.pos = 1
	if err := d.body(c, 0); err != nil {
		return err
	}
	if d.pos != len(d.data) {
		return d.fail(ErrMalformed, "%d trailing bytes after the container", len(d.data)-d.pos)
	}
	return nil
}

func (d *binDecoder) uvarint() (uint64, error) {
	if d.pos < len(d.data) && d.data[d.pos] < 0x80 {
		x := uint64(d.data[d.pos])
		d.pos++
		return x, nil
	}
	x, n := binary.Uvarint(d.data[d.pos:])
	if n == 0 {
		return 0, d.fail(ErrMalformed, "truncated varint")
	}
	if n < 0 {
		return 0, d.fail(ErrMalformed, "varint overflows 64 bits")
	}
	if n != uvarintLen(x) {
		// Only the shortest form is valid, so every container has exactly
		// one encoding.
		return 0, d.fail(ErrMalformed, "varint not in shortest form")
	}
	d.pos += n
	return x, nil
}

// length reads a byte length and checks it against what remains.
func (d *binDecoder) length() (int, error) {
	n, err := d.uvarint()
	if err != nil {
		return 0, err
	}
	if left := len(d.data) - d.pos; n > uint64(left) {
		return 0, d.fail(ErrMalformed, "length %d exceeds the %d bytes left", n, left)
	}
	return int(n), nil
}

func (d *binDecoder) string() (string, error) {
	n, err := d.length()
	if err != nil || n == 0 {
		return "", err
	}
	if !d.hasStr {
		d.str, d.hasStr = string(d.data), true
	}
	s := d.str[d.pos : d.pos+n]
	d.pos += n
	return s, nil
}

func (d *binDecoder) bytes() ([]byte, error) {
	n, err := d.length()
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return []byte{}, nil
	}
	if d.own == nil {
		d.own = append([]byte(nil), d.data...)
	}
	b := d.own[d.pos : d.pos+n : d.pos+n] // capped: appending to it cannot overwrite a neighbour
	d.pos += n
	return b, nil
}

// count reads a number of values and reserves it against the budget; the
// check against the bytes left is what stops "4 billion values" in a
// 10-byte input before make is called.
func (d *binDecoder) count() (int, error) {
	at := d.pos
	n, err := d.uvarint()
	if err != nil {
		return 0, err
	}
	if left := len(d.data) - d.pos; n > uint64(left/minBinaryValue) {
		d.pos = at
		return 0, d.fail(ErrMalformed, "count %d cannot fit in the %d bytes left", n, left)
	}
	if uint64(d.opt.MaxValues-d.values) < n {
		d.pos = at
		return 0, d.fail(ErrLimit, "more than %d values", d.opt.MaxValues)
	}
	d.values += int(n)
	return int(n), nil
}

func (d *binDecoder) fixed(n int) ([]byte, error) {
	if len(d.data)-d.pos < n {
		return nil, d.fail(ErrMalformed, "truncated: need %d bytes, %d left", n, len(d.data)-d.pos)
	}
	b := d.data[d.pos : d.pos+n]
	d.pos += n
	return b, nil
}

// body decodes header and values into c, reusing c.Values' capacity.
func (d *binDecoder) body(c *Container, depth int) error {
	var h header
	var err error
	for i := range h {
		if h[i], err = d.string(); err != nil {
			return err
		}
	}
	n, err := d.count()
	if err != nil {
		return err
	}
	vals := c.Values
	if cap(vals) >= n {
		clear(vals[n:cap(vals)])
		vals = vals[:n]
	} else {
		vals = make([]Value, n)
	}
	c.Values = vals
	for i := range vals {
		if err := d.value(&vals[i], depth); err != nil {
			return err
		}
	}
	c.setHeader(h)
	return nil
}

func (d *binDecoder) value(v *Value, depth int) error {
	name, err := d.string()
	if err != nil {
		return err
	}
	tb, err := d.fixed(1)
	if err != nil {
		return err
	}
	t := Type(tb[0])
	*v = Value{name: name, typ: t}
	switch t {
	case TypeNull:
	case TypeBool:
		b, err := d.fixed(1)
		if err != nil {
			return err
		}
		if b[0] > 1 {
			d.pos--
			return d.fail(ErrMalformed, "bool byte is %d, want 0 or 1", b[0])
		}
		v.num = uint64(b[0])
	case TypeInt16, TypeUint16:
		b, err := d.fixed(2)
		if err != nil {
			return err
		}
		x := binary.LittleEndian.Uint16(b)
		if t == TypeInt16 {
			v.num = uint64(int64(int16(x)))
		} else {
			v.num = uint64(x)
		}
	case TypeInt32, TypeUint32, TypeFloat32:
		b, err := d.fixed(4)
		if err != nil {
			return err
		}
		x := binary.LittleEndian.Uint32(b)
		if t == TypeInt32 {
			v.num = uint64(int64(int32(x)))
		} else {
			v.num = uint64(x)
		}
	case TypeInt64, TypeUint64, TypeFloat64:
		b, err := d.fixed(8)
		if err != nil {
			return err
		}
		v.num = binary.LittleEndian.Uint64(b)
	case TypeBytes:
		if v.bin, err = d.bytes(); err != nil {
			return err
		}
	case TypeString:
		if v.str, err = d.string(); err != nil {
			return err
		}
	case TypeContainer:
		if depth >= d.opt.MaxDepth {
			return d.fail(ErrTooDeep, "value %q nests deeper than %d", name, d.opt.MaxDepth)
		}
		v.obj = new(Container)
		return d.body(v.obj, depth+1)
	case TypeArray:
		if depth >= d.opt.MaxDepth {
			return d.fail(ErrTooDeep, "value %q nests deeper than %d", name, d.opt.MaxDepth)
		}
		n, err := d.count()
		if err != nil {
			return err
		}
		v.arr = make([]Value, n)
		for i := range v.arr {
			if err := d.value(&v.arr[i], depth+1); err != nil {
				return err
			}
		}
	default:
		d.pos--
		return d.fail(ErrMalformed, "unknown type code %d for value %q", tb[0], name)
	}
	return nil
}
