package container

import (
	"encoding/base64"
	"fmt"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// The JSON form keeps every type exactly:
//
//	{"header":{"target_id":"srv","target_sub_id":"","source_id":"c1","source_sub_id":"",
//	           "message_type":"chat","version":"1.0.0.0"},
//	 "values":[{"name":"count","type":"int32","value":42},
//	           {"name":"id","type":"int64","value":"9007199254740993"}]}
//
// See docs/CONTAINER.md for the full rules; in short: int64 and uint64 are
// JSON strings (a JavaScript number cannot hold them), other integers are
// numbers; floats are numbers in strconv's shortest exact form, with NaN,
// Infinity and -Infinity as strings; bytes are standard base64; any name,
// string value or header field that is not valid UTF-8 is written under the
// key with "_b64" appended, as base64 of its raw bytes.

var jsonHeaderKeys = [6]string{"target_id", "target_sub_id", "source_id", "source_sub_id", "message_type", "version"}

// AppendJSON appends c as JSON to dst. It fails, leaving dst unextended,
// only for a NaN with a non-canonical payload (ErrNotRepresentable: JSON
// has one NaN) or nesting beyond MaxDepthLimit (ErrTooDeep).
func (c *Container) AppendJSON(dst []byte) ([]byte, error) {
	start := len(dst)
	dst, err := appendJSONContainer(dst, c, 0, true)
	if err != nil {
		return dst[:start], err
	}
	return dst, nil
}

// MarshalJSON returns c as JSON, for json.Marshaler, so a *Container inside
// another struct is logged in the typed form rather than as a Go struct.
func (c *Container) MarshalJSON() ([]byte, error) { return c.AppendJSON(nil) }

// UnmarshalJSON parses the JSON form into c with the default limits, for
// json.Unmarshaler. On error c is unchanged.
func (c *Container) UnmarshalJSON(data []byte) error {
	d, err := ParseJSON(data)
	if err != nil {
		return err
	}
	*c = *d
	return nil
}

func appendJSONContainer(dst []byte, c *Container, depth int, top bool) ([]byte, error) {
	if c == nil {
		c = &Container{}
	}
	dst = append(dst, '{')
	if h := c.header(); top || h != (header{}) {
		// Nested containers rarely have a header, so theirs is left out
		// when empty; the top-level one is always written so clients can
		// rely on it.
		dst = append(dst, `"header":{`...)
		for i, s := range h {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONField(dst, jsonHeaderKeys[i], s)
		}
		dst = append(dst, "},"...)
	}
	dst = append(dst, `"values":[`...)
	var err error
	for i := range c.Values {
		if i > 0 {
			dst = append(dst, ',')
		}
		if dst, err = appendJSONValue(dst, &c.Values[i], depth); err != nil {
			return dst, err
		}
	}
	return append(dst, "]}"...), nil
}

func appendJSONValue(dst []byte, v *Value, depth int) ([]byte, error) {
	dst = append(dst, '{')
	dst = appendJSONField(dst, "name", v.name)
	dst = append(dst, `,"type":"`...)
	dst = append(dst, v.typ.String()...)
	dst = append(dst, '"', ',')
	if v.typ == TypeString {
		// The one payload that may need the "_b64" key.
		dst = appendJSONField(dst, "value", v.str)
		return append(dst, '}'), nil
	}
	dst = append(dst, `"value":`...)
	switch v.typ {
	case TypeNull:
		dst = append(dst, "null"...)
	case TypeBool:
		dst = strconv.AppendBool(dst, v.num != 0)
	case TypeInt16, TypeInt32:
		dst = strconv.AppendInt(dst, int64(v.num), 10)
	case TypeUint16, TypeUint32:
		dst = strconv.AppendUint(dst, v.num, 10)
	case TypeInt64:
		dst = append(dst, '"')
		dst = strconv.AppendInt(dst, int64(v.num), 10)
		dst = append(dst, '"')
	case TypeUint64:
		dst = append(dst, '"')
		dst = strconv.AppendUint(dst, v.num, 10)
		dst = append(dst, '"')
	case TypeFloat32:
		f := math.Float32frombits(uint32(v.num))
		if f != f && uint32(v.num) != canonNaN32 {
			return dst, notRepresentable(JSON, v.name, "NaN with payload %#08x", v.num)
		}
		dst = appendJSONFloat(dst, float64(f), 32)
	case TypeFloat64:
		f := math.Float64frombits(v.num)
		if f != f && v.num != canonNaN64 {
			return dst, notRepresentable(JSON, v.name, "NaN with payload %#016x", v.num)
		}
		dst = appendJSONFloat(dst, f, 64)
	case TypeBytes:
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, v.bin)
		dst = append(dst, '"')
	case TypeContainer:
		if depth >= MaxDepthLimit {
			return dst, encodeTooDeep(v.name)
		}
		var err error
		if dst, err = appendJSONContainer(dst, v.obj, depth+1, false); err != nil {
			return dst, err
		}
	case TypeArray:
		if depth >= MaxDepthLimit {
			return dst, encodeTooDeep(v.name)
		}
		dst = append(dst, '[')
		var err error
		for i := range v.arr {
			if i > 0 {
				dst = append(dst, ',')
			}
			if dst, err = appendJSONValue(dst, &v.arr[i], depth+1); err != nil {
				return dst, err
			}
		}
		dst = append(dst, ']')
	default:
		return dst, fmt.Errorf("container: value %q has invalid type %d", v.name, v.typ)
	}
	return append(dst, '}'), nil
}

// appendJSONFloat writes the shortest decimal that reads back to the same
// bits; JSON has no NaN or infinities, so those are the strings that
// JavaScript's Number() understands.
func appendJSONFloat(dst []byte, f float64, bitSize int) []byte {
	switch {
	case f != f:
		return append(dst, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(dst, `"Infinity"`...)
	case math.IsInf(f, -1):
		return append(dst, `"-Infinity"`...)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, bitSize)
}

// appendJSONField writes "key":"s", or "key_b64":"base64(s)" when s is not
// valid UTF-8 and so has no exact JSON string form.
func appendJSONField(dst []byte, key, s string) []byte {
	dst = append(dst, '"')
	dst = append(dst, key...)
	if utf8.ValidString(s) {
		dst = append(dst, `":`...)
		return appendJSONString(dst, s)
	}
	dst = append(dst, `_b64":"`...)
	dst = base64.StdEncoding.AppendEncode(dst, []byte(s))
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes valid UTF-8 s. Besides what JSON requires it
// escapes U+2028 and U+2029, which older JavaScript parsers reject in
// string literals.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b >= 0x20 && b != '"' && b != '\\' && b != 0xE2 {
			i++
			continue
		}
		if b == 0xE2 {
			if i+2 < len(s) && s[i+1] == 0x80 && (s[i+2] == 0xA8 || s[i+2] == 0xA9) {
				dst = append(dst, s[start:i]...)
				dst = append(dst, `\u202`...)
				dst = append(dst, hexDigits[s[i+2]&0xF])
				i += 3
				start = i
				continue
			}
			i++
			continue
		}
		dst = append(dst, s[start:i]...)
		switch b {
		case '"':
			dst = append(dst, `\"`...)
		case '\\':
			dst = append(dst, `\\`...)
		case '\n':
			dst = append(dst, `\n`...)
		case '\r':
			dst = append(dst, `\r`...)
		case '\t':
			dst = append(dst, `\t`...)
		default:
			dst = append(dst, `\u00`...)
			dst = append(dst, hexDigits[b>>4], hexDigits[b&0xF])
		}
		i++
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// ParseJSON parses the JSON form with the default limits.
func ParseJSON(data []byte) (*Container, error) { return DecodeOptions{}.ParseJSON(data) }

// ParseJSON parses the JSON form with o's limits. Keys may come in any
// order; unknown or repeated keys are errors, so a misspelt key is not
// silently dropped. "header" and "values" may be absent. Integers are
// accepted as JSON numbers or as strings; floats as numbers or as strings
// that strconv.ParseFloat accepts ("NaN", "Infinity", ...). A \u escape of
// a lone UTF-16 surrogate becomes U+FFFD, as in encoding/json; raw bytes
// that are not UTF-8 are kept as they are. Every failure is a *DecodeError.
func (o DecodeOptions) ParseJSON(data []byte) (*Container, error) {
	o = o.norm()
	if err := o.checkSize(data, JSON); err != nil {
		return nil, err
	}
	p := jsonParser{s: string(data), opt: o}
	c := new(Container)
	p.ws()
	if err := p.container(c, 0); err != nil {
		return nil, err
	}
	p.ws()
	if p.pos != len(p.s) {
		return nil, p.fail(ErrMalformed, "unexpected text after the JSON object")
	}
	return c, nil
}

// jsonParser is a small JSON reader for exactly this schema. Unlike
// encoding/json it never copies a nested value to decode it later (its
// memory use stays proportional to the input at any depth), enforces the
// depth and value limits as it goes, and keeps number literals as text so
// that 64-bit integers are parsed exactly.
type jsonParser struct {
	s      string
	pos    int
	opt    DecodeOptions
	values int
}

func (p *jsonParser) fail(sentinel error, format string, args ...any) error {
	return &DecodeError{Format: JSON, Offset: p.pos, Reason: fmt.Sprintf(format, args...), Err: sentinel}
}

func (p *jsonParser) ws() {
	for p.pos < len(p.s) {
		switch p.s[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *jsonParser) peek() byte {
	if p.pos < len(p.s) {
		return p.s[p.pos]
	}
	return 0
}

func (p *jsonParser) expect(b byte) error {
	p.ws()
	if p.peek() != b {
		if p.pos >= len(p.s) {
			return p.fail(ErrMalformed, "unexpected end of input, expected %q", b)
		}
		return p.fail(ErrMalformed, "expected %q, found %q", b, p.s[p.pos])
	}
	p.pos++
	return nil
}

func (p *jsonParser) literal(lit string) error {
	if len(p.s)-p.pos < len(lit) || p.s[p.pos:p.pos+len(lit)] != lit {
		return p.fail(ErrMalformed, "expected %s", lit)
	}
	p.pos += len(lit)
	return nil
}

// object calls fn for each key of an object, with the parser positioned at
// the key's value; fn must consume the value.
func (p *jsonParser) object(fn func(key string) error) error {
	if err := p.expect('{'); err != nil {
		return err
	}
	p.ws()
	if p.peek() == '}' {
		p.pos++
		return nil
	}
	for {
		p.ws()
		key, err := p.str()
		if err != nil {
			return err
		}
		if err := p.expect(':'); err != nil {
			return err
		}
		p.ws()
		if err := fn(key); err != nil {
			return err
		}
		p.ws()
		switch p.peek() {
		case ',':
			p.pos++
		case '}':
			p.pos++
			return nil
		default:
			return p.fail(ErrMalformed, `expected "," or "}" in object`)
		}
	}
}

// array calls fn for each element, positioned at the element.
func (p *jsonParser) array(fn func() error) error {
	if err := p.expect('['); err != nil {
		return err
	}
	p.ws()
	if p.peek() == ']' {
		p.pos++
		return nil
	}
	for {
		p.ws()
		if err := fn(); err != nil {
			return err
		}
		p.ws()
		switch p.peek() {
		case ',':
			p.pos++
		case ']':
			p.pos++
			return nil
		default:
			return p.fail(ErrMalformed, `expected "," or "]" in array`)
		}
	}
}

// str reads a JSON string. Without escapes it is a substring of the input
// (no allocation).
func (p *jsonParser) str() (string, error) {
	if p.peek() != '"' {
		return "", p.fail(ErrMalformed, "expected a string")
	}
	p.pos++
	start := p.pos
	for i := start; i < len(p.s); i++ {
		switch c := p.s[i]; {
		case c == '"':
			p.pos = i + 1
			return p.s[start:i], nil
		case c == '\\':
			return p.strSlow(start, i)
		case c < 0x20:
			p.pos = i
			return "", p.fail(ErrMalformed, "control character %#02x in string", c)
		}
	}
	return "", p.fail(ErrMalformed, "unterminated string")
}

func (p *jsonParser) strSlow(start, i int) (string, error) {
	b := make([]byte, 0, i-start+16)
	b = append(b, p.s[start:i]...)
	for i < len(p.s) {
		c := p.s[i]
		switch {
		case c == '"':
			p.pos = i + 1
			return string(b), nil
		case c < 0x20:
			p.pos = i
			return "", p.fail(ErrMalformed, "control character %#02x in string", c)
		case c != '\\':
			b = append(b, c)
			i++
			continue
		}
		if i+1 >= len(p.s) {
			break
		}
		e := p.s[i+1]
		i += 2
		switch e {
		case '"', '\\', '/':
			b = append(b, e)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r, ok := hex4(p.s, i)
			if !ok {
				p.pos = i - 2
				return "", p.fail(ErrMalformed, `bad \u escape`)
			}
			i += 4
			if utf16.IsSurrogate(r) {
				r2, ok := rune(-1), false
				if i+6 <= len(p.s) && p.s[i] == '\\' && p.s[i+1] == 'u' {
					r2, ok = hex4(p.s, i+2)
				}
				if dec := utf16.DecodeRune(r, r2); ok && dec != utf8.RuneError {
					r = dec
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
			b = utf8.AppendRune(b, r)
		default:
			p.pos = i - 2
			return "", p.fail(ErrMalformed, "bad escape \\%c", e)
		}
	}
	p.pos = len(p.s)
	return "", p.fail(ErrMalformed, "unterminated string")
}

func hex4(s string, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range []byte(s[i : i+4]) {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// number reads a JSON number literal and returns its text.
func (p *jsonParser) number() (string, error) {
	start := p.pos
	digits := func() int {
		n := 0
		for p.pos < len(p.s) && '0' <= p.s[p.pos] && p.s[p.pos] <= '9' {
			p.pos++
			n++
		}
		return n
	}
	if p.peek() == '-' {
		p.pos++
	}
	if p.peek() == '0' {
		p.pos++
	} else if digits() == 0 {
		return "", p.fail(ErrMalformed, "expected a number")
	}
	if p.peek() == '.' {
		p.pos++
		if digits() == 0 {
			return "", p.fail(ErrMalformed, "expected digits after the decimal point")
		}
	}
	if c := p.peek(); c == 'e' || c == 'E' {
		p.pos++
		if c := p.peek(); c == '+' || c == '-' {
			p.pos++
		}
		if digits() == 0 {
			return "", p.fail(ErrMalformed, "expected digits in the exponent")
		}
	}
	return p.s[start:p.pos], nil
}

// scalarText returns the text of a number literal or the contents of a
// string: the two ways an integer or float may be given.
func (p *jsonParser) scalarText() (string, error) {
	if p.peek() == '"' {
		return p.str()
	}
	return p.number()
}

// skip validates and passes over any JSON value, for a "value" that comes
// before its "type". nest bounds the recursion.
func (p *jsonParser) skip(nest int) error {
	if nest > 4*p.opt.MaxDepth+8 {
		return p.fail(ErrTooDeep, "JSON nested too deeply")
	}
	switch c := p.peek(); {
	case c == '"':
		_, err := p.str()
		return err
	case c == '{':
		return p.object(func(string) error { return p.skip(nest + 1) })
	case c == '[':
		return p.array(func() error { return p.skip(nest + 1) })
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	default:
		_, err := p.number()
		return err
	}
}

func (p *jsonParser) b64(what string) (string, error) {
	s, err := p.str()
	if err != nil {
		return "", err
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return "", p.fail(ErrMalformed, "%s: bad base64: %v", what, err)
	}
	return string(b), nil
}

func (p *jsonParser) container(c *Container, depth int) error {
	var seenHeader, seenValues bool
	return p.object(func(key string) error {
		switch key {
		case "header":
			if seenHeader {
				return p.fail(ErrMalformed, `repeated key "header"`)
			}
			seenHeader = true
			return p.header(c)
		case "values":
			if seenValues {
				return p.fail(ErrMalformed, `repeated key "values"`)
			}
			seenValues = true
			if p.peek() == 'n' {
				return p.literal("null")
			}
			vals, err := p.valueList(depth)
			c.Values = vals
			return err
		}
		return p.fail(ErrMalformed, "unknown container key %q", key)
	})
}

func (p *jsonParser) header(c *Container) error {
	var h header
	var seen [6]bool
	err := p.object(func(key string) error {
		for i, k := range jsonHeaderKeys {
			var err error
			switch key {
			case k:
				h[i], err = p.str()
			case k + "_b64":
				h[i], err = p.b64(key)
			default:
				continue
			}
			if err == nil && seen[i] {
				err = p.fail(ErrMalformed, "header field %q given twice", k)
			}
			seen[i] = true
			return err
		}
		return p.fail(ErrMalformed, "unknown header key %q", key)
	})
	c.setHeader(h)
	return err
}

func (p *jsonParser) valueList(depth int) ([]Value, error) {
	var vals []Value
	err := p.array(func() error {
		if p.values >= p.opt.MaxValues {
			return p.fail(ErrLimit, "more than %d values", p.opt.MaxValues)
		}
		p.values++
		vals = append(vals, Value{})
		return p.valueObject(&vals[len(vals)-1], depth)
	})
	return vals, err
}

func (p *jsonParser) valueObject(v *Value, depth int) error {
	var haveName, haveType, haveValue, haveB64 bool
	deferred := -1 // offset of a "value" read before "type"
	err := p.object(func(key string) error {
		var err error
		switch key {
		case "name", "name_b64":
			if haveName {
				return p.fail(ErrMalformed, "name given twice")
			}
			haveName = true
			if key == "name" {
				v.name, err = p.str()
			} else {
				v.name, err = p.b64(key)
			}
			return err
		case "type":
			if haveType {
				return p.fail(ErrMalformed, "type given twice")
			}
			haveType = true
			s, err := p.str()
			if err != nil {
				return err
			}
			t, ok := typeByName(s)
			if !ok {
				return p.fail(ErrMalformed, "unknown type %q", s)
			}
			v.typ = t
			return nil
		case "value", "value_b64":
			if haveValue || haveB64 {
				return p.fail(ErrMalformed, "value given twice")
			}
			if key == "value_b64" {
				haveB64 = true
				v.str, err = p.b64(key)
				return err
			}
			haveValue = true
			if !haveType {
				deferred = p.pos
				return p.skip(0)
			}
			return p.typedValue(v, depth)
		}
		return p.fail(ErrMalformed, "unknown value key %q", key)
	})
	if err != nil {
		return err
	}
	switch {
	case !haveType:
		return p.fail(ErrMalformed, "value %q has no type", v.name)
	case haveB64 && v.typ != TypeString:
		return p.fail(ErrMalformed, "value %q: value_b64 is only for strings", v.name)
	case !haveValue && !haveB64 && v.typ != TypeNull:
		return p.fail(ErrMalformed, "value %q of type %s has no value", v.name, v.typ)
	case deferred >= 0:
		end := p.pos
		p.pos = deferred
		if err := p.typedValue(v, depth); err != nil {
			return err
		}
		p.pos = end
	}
	return nil
}

// typedValue reads the JSON value at the current position as v.typ.
func (p *jsonParser) typedValue(v *Value, depth int) error {
	at := p.pos
	bad := func(text string, err error) error {
		p.pos = at
		return p.fail(ErrMalformed, "value %q: %q is not a valid %s: %v", v.name, text, v.typ, err)
	}
	switch v.typ {
	case TypeNull:
		return p.literal("null")
	case TypeBool:
		if p.peek() == 't' {
			v.num = 1
			return p.literal("true")
		}
		return p.literal("false")
	case TypeInt16, TypeInt32, TypeInt64:
		s, err := p.scalarText()
		if err != nil {
			return err
		}
		x, err := strconv.ParseInt(s, 10, intBits(v.typ))
		if err != nil {
			return bad(s, err)
		}
		v.num = uint64(x)
	case TypeUint16, TypeUint32, TypeUint64:
		s, err := p.scalarText()
		if err != nil {
			return err
		}
		if v.num, err = strconv.ParseUint(s, 10, intBits(v.typ)); err != nil {
			return bad(s, err)
		}
	case TypeFloat32, TypeFloat64:
		bits := 64
		if v.typ == TypeFloat32 {
			bits = 32
		}
		s, err := p.scalarText()
		if err != nil {
			return err
		}
		f, err := strconv.ParseFloat(s, bits)
		if err != nil {
			return bad(s, err)
		}
		if bits == 32 {
			v.num = uint64(math.Float32bits(float32(f)))
		} else {
			v.num = math.Float64bits(f)
		}
	case TypeBytes:
		s, err := p.str()
		if err != nil {
			return err
		}
		if v.bin, err = base64.StdEncoding.DecodeString(s); err != nil {
			return bad(s, err)
		}
	case TypeString:
		var err error
		v.str, err = p.str()
		return err
	case TypeContainer:
		if depth >= p.opt.MaxDepth {
			return p.fail(ErrTooDeep, "value %q nests deeper than %d", v.name, p.opt.MaxDepth)
		}
		v.obj = new(Container)
		return p.container(v.obj, depth+1)
	case TypeArray:
		if depth >= p.opt.MaxDepth {
			return p.fail(ErrTooDeep, "value %q nests deeper than %d", v.name, p.opt.MaxDepth)
		}
		var err error
		v.arr, err = p.valueList(depth + 1)
		return err
	}
	return nil
}
