package container

import (
	"encoding/base64"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// The C++ value_container text format:
//
//	@header={[1,target_id];[2,target_sub_id];[3,source_id];[4,source_sub_id];[5,message_type];[6,version];};@data={[name,code,value];...};
//
// A field or item runs from "[" to the first "];", so nothing written may
// contain "];". Names end at the first ",". String values escape four
// characters with the original's (shifted) mapping below; nothing else is
// escaped. A nested container (code 12) has its child count as value and
// its children follow as the next items.

// The escapes of the C++ original, in its order: CR, LF, space, TAB. The
// numbers do not match the characters' codes (CR is 0x0D); that is how the
// original writes them, so it is how we must.
var textEscapes = [4]struct {
	raw byte
	esc string
}{
	{'\r', "</0x0A;>"},
	{'\n', "</0x0B;>"},
	{' ', "</0x0C;>"},
	{'\t', "</0x0D;>"},
}

// escapePrefix starts every escape; text without it needs no unescaping.
const escapePrefix = "</0x0"

// containsEscape reports whether s holds one of the four escape sequences
// literally. Such a string cannot be written: the reader would turn the
// sequence into whitespace. Anything else, including partial sequences like
// "</0x0Z", reads back exactly, because a sequence cannot arise from a raw
// character next to an escape the writer made (its only "<" is its first
// byte and it holds no whitespace).
func containsEscape(s string) bool {
	if !strings.Contains(s, escapePrefix) {
		return false
	}
	for _, e := range textEscapes {
		if strings.Contains(s, e.esc) {
			return true
		}
	}
	return false
}

// Canonical NaN bit patterns: what strconv.ParseFloat gives for "NaN" at
// each precision. Any other NaN would come back different from the text,
// so the text and JSON writers refuse it.
var (
	canonNaN64 = math.Float64bits(mustParseFloat("NaN", 64))
	canonNaN32 = math.Float32bits(float32(mustParseFloat("NaN", 32)))
)

func mustParseFloat(s string, bits int) float64 {
	f, err := strconv.ParseFloat(s, bits)
	if err != nil {
		panic(err)
	}
	return f
}

// AppendText appends c in the C++ text format to dst. It fails with an
// error wrapping ErrNotRepresentable, leaving dst unextended, when the
// format cannot carry c exactly: an array value, a nested container with a
// non-empty header, "];" in a header field, name or string, "," in a name,
// a string containing one of the escape sequences such as "</0x0A;>"
// literally, or a NaN with a payload
// other than the canonical one. int64 and uint64 are written with the
// long long codes 13 and 14; floats with strconv's shortest form that reads
// back to the same bits ('g', -1).
func (c *Container) AppendText(dst []byte) ([]byte, error) {
	if c == nil {
		c = &Container{}
	}
	start := len(dst)
	dst = append(dst, "@header={"...)
	for i, s := range c.header() {
		if strings.Contains(s, "];") {
			return dst[:start], fmt.Errorf("%w: text: header field %d (%q) contains \"];\"", ErrNotRepresentable, i+1, s)
		}
		dst = append(dst, '[', byte('1'+i), ',')
		dst = append(dst, s...)
		dst = append(dst, "];"...)
	}
	dst = append(dst, "};@data={"...)
	var err error
	for i := range c.Values {
		if dst, err = appendTextValue(dst, &c.Values[i], 0); err != nil {
			return dst[:start], err
		}
	}
	return append(dst, "};"...), nil
}

// MarshalText returns c in the C++ text format, for encoding.TextMarshaler.
func (c *Container) MarshalText() ([]byte, error) { return c.AppendText(nil) }

// UnmarshalText parses the C++ text format into c with the default limits,
// for encoding.TextUnmarshaler. On error c is unchanged.
func (c *Container) UnmarshalText(data []byte) error {
	d, err := ParseText(data)
	if err != nil {
		return err
	}
	*c = *d
	return nil
}

func appendTextValue(dst []byte, v *Value, depth int) ([]byte, error) {
	if strings.Contains(v.name, ",") || strings.Contains(v.name, "];") {
		return dst, notRepresentable(Text, v.name, `name contains "," or "];"`)
	}
	code := v.typ
	if code == TypeArray {
		return dst, notRepresentable(Text, v.name, "the text format has no array type")
	}
	dst = append(dst, '[')
	dst = append(dst, v.name...)
	dst = append(dst, ',')
	dst = strconv.AppendUint(dst, uint64(code), 10)
	dst = append(dst, ',')
	switch v.typ {
	case TypeNull:
	case TypeBool:
		dst = strconv.AppendBool(dst, v.num != 0)
	case TypeInt16, TypeInt32, TypeInt64:
		dst = strconv.AppendInt(dst, int64(v.num), 10)
	case TypeUint16, TypeUint32, TypeUint64:
		dst = strconv.AppendUint(dst, v.num, 10)
	case TypeFloat32:
		f := math.Float32frombits(uint32(v.num))
		if f != f && uint32(v.num) != canonNaN32 {
			return dst, notRepresentable(Text, v.name, "NaN with payload %#08x", v.num)
		}
		dst = strconv.AppendFloat(dst, float64(f), 'g', -1, 32)
	case TypeFloat64:
		f := math.Float64frombits(v.num)
		if f != f && v.num != canonNaN64 {
			return dst, notRepresentable(Text, v.name, "NaN with payload %#016x", v.num)
		}
		dst = strconv.AppendFloat(dst, f, 'g', -1, 64)
	case TypeBytes:
		dst = base64.StdEncoding.AppendEncode(dst, v.bin)
	case TypeString:
		if strings.Contains(v.str, "];") {
			return dst, notRepresentable(Text, v.name, `string contains "];"`)
		}
		if containsEscape(v.str) {
			return dst, notRepresentable(Text, v.name, "string contains an escape sequence such as %q literally", textEscapes[0].esc)
		}
		dst = appendEscaped(dst, v.str)
	case TypeContainer:
		if depth >= MaxDepthLimit {
			return dst, encodeTooDeep(v.name)
		}
		if v.obj == nil {
			dst = append(dst, "0];"...)
			return dst, nil
		}
		if v.obj.header() != (header{}) {
			return dst, notRepresentable(Text, v.name, "nested container has a header")
		}
		dst = strconv.AppendUint(dst, uint64(len(v.obj.Values)), 10)
		dst = append(dst, "];"...)
		var err error
		for i := range v.obj.Values {
			if dst, err = appendTextValue(dst, &v.obj.Values[i], depth+1); err != nil {
				return dst, err
			}
		}
		return dst, nil
	default:
		return dst, fmt.Errorf("container: value %q has invalid type %d", v.name, v.typ)
	}
	return append(dst, "];"...), nil
}

func appendEscaped(dst []byte, s string) []byte {
	if !strings.ContainsAny(s, "\r\n \t") {
		return append(dst, s...)
	}
	for i := 0; i < len(s); i++ {
		switch b := s[i]; b {
		case '\r':
			dst = append(dst, textEscapes[0].esc...)
		case '\n':
			dst = append(dst, textEscapes[1].esc...)
		case ' ':
			dst = append(dst, textEscapes[2].esc...)
		case '\t':
			dst = append(dst, textEscapes[3].esc...)
		default:
			dst = append(dst, b)
		}
	}
	return dst
}

// unescape reverses appendEscaped. Text that merely looks like the start of
// an escape is kept as is.
func unescape(s string) string {
	if !strings.Contains(s, escapePrefix) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		if s[i] == '<' {
			matched := false
			for _, e := range textEscapes {
				if strings.HasPrefix(s[i:], e.esc) {
					b.WriteByte(e.raw)
					i += len(e.esc)
					matched = true
					break
				}
			}
			if matched {
				continue
			}
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String()
}

// ParseText parses the C++ text format with the default limits.
func ParseText(data []byte) (*Container, error) { return DecodeOptions{}.ParseText(data) }

// ParseText parses the C++ text format with o's limits. Whitespace before
// and after the document is ignored, none is allowed inside its structure.
// The "@header={...};" section may be absent; header fields may come in any
// order, each at most once. Codes 7 and 13 both read as int64, 8 and 14 as
// uint64. Every failure is a *DecodeError.
func (o DecodeOptions) ParseText(data []byte) (*Container, error) {
	o = o.norm()
	if err := o.checkSize(data, Text); err != nil {
		return nil, err
	}
	p := textParser{s: string(data), opt: o}
	c, err := p.document()
	if err != nil {
		return nil, err
	}
	return c, nil
}

// textIntType maps the integer codes to types; 7 and 8 (C++ long and
// ulong, 64 bits on the platforms the original targets) read as 64-bit.
var textIntType = [15]Type{3: TypeInt16, 4: TypeUint16, 5: TypeInt32, 6: TypeUint32, 7: TypeInt64, 8: TypeUint64, 13: TypeInt64, 14: TypeUint64}

func intBits(t Type) int {
	switch t {
	case TypeInt16, TypeUint16:
		return 16
	case TypeInt32, TypeUint32:
		return 32
	}
	return 64
}

type textParser struct {
	s      string
	pos    int
	opt    DecodeOptions
	values int
}

func (p *textParser) fail(sentinel error, at int, format string, args ...any) error {
	return &DecodeError{Format: Text, Offset: at, Reason: fmt.Sprintf(format, args...), Err: sentinel}
}

func (p *textParser) skipSpace() {
	for p.pos < len(p.s) {
		switch p.s[p.pos] {
		case ' ', '\t', '\r', '\n':
			p.pos++
		default:
			return
		}
	}
}

func (p *textParser) consume(tok string) bool {
	if strings.HasPrefix(p.s[p.pos:], tok) {
		p.pos += len(tok)
		return true
	}
	return false
}

func (p *textParser) expect(tok string) error {
	if !p.consume(tok) {
		return p.fail(ErrMalformed, p.pos, "expected %q", tok)
	}
	return nil
}

// upTo returns the text before the next occurrence of tok and moves past tok.
func (p *textParser) upTo(tok, what string) (string, error) {
	i := strings.Index(p.s[p.pos:], tok)
	if i < 0 {
		return "", p.fail(ErrMalformed, p.pos, "%s: no closing %q", what, tok)
	}
	s := p.s[p.pos : p.pos+i]
	p.pos += i + len(tok)
	return s, nil
}

func (p *textParser) document() (*Container, error) {
	c := new(Container)
	p.skipSpace()
	if p.consume("@header={") {
		var h header
		var seen [6]bool
		for !p.consume("};") {
			at := p.pos
			if !p.consume("[") || p.pos+2 > len(p.s) || p.s[p.pos] < '1' || p.s[p.pos] > '6' || p.s[p.pos+1] != ',' {
				return nil, p.fail(ErrMalformed, at, `expected a header field "[n," with n in 1..6, or "};"`)
			}
			id := p.s[p.pos] - '1'
			p.pos += 2
			if seen[id] {
				return nil, p.fail(ErrMalformed, at, "header field %d repeated", id+1)
			}
			seen[id] = true
			var err error
			if h[id], err = p.upTo("];", "header field"); err != nil {
				return nil, err
			}
		}
		c.setHeader(h)
	}
	if err := p.expect("@data={"); err != nil {
		return nil, err
	}
	// Every item, at any depth, ends with the only "];" it contains, so
	// this count bounds the top-level items and sizes the slice once. It
	// is real content, not a claim, and is capped by the value budget.
	if n := min(strings.Count(p.s[p.pos:], "];"), p.opt.MaxValues); n > 0 {
		c.Values = make([]Value, 0, n)
	}
	for !p.consume("};") {
		if p.values >= p.opt.MaxValues {
			return nil, p.fail(ErrLimit, p.pos, "more than %d values", p.opt.MaxValues)
		}
		p.values++
		var v Value
		if err := p.item(&v, 0); err != nil {
			return nil, err
		}
		c.Values = append(c.Values, v)
	}
	p.skipSpace()
	if p.pos != len(p.s) {
		return nil, p.fail(ErrMalformed, p.pos, "unexpected text after the data section")
	}
	return c, nil
}

func (p *textParser) item(v *Value, depth int) error {
	at := p.pos
	if !p.consume("[") {
		return p.fail(ErrMalformed, at, `expected "[" to start an item`)
	}
	name, err := p.upTo(",", "item name")
	if err != nil {
		return err
	}
	if strings.Contains(name, "];") {
		return p.fail(ErrMalformed, at, `item name contains "];" (missing fields?)`)
	}
	codeText, err := p.upTo(",", "item type code")
	if err != nil {
		return err
	}
	code, err := strconv.ParseUint(codeText, 10, 8)
	if err != nil || len(codeText) > 2 {
		return p.fail(ErrMalformed, at, "item %q: bad type code %q", name, codeText)
	}
	raw, err := p.upTo("];", "item value")
	if err != nil {
		return err
	}
	*v = Value{name: name}
	bad := func(e error) error {
		return p.fail(ErrMalformed, at, "item %q: bad value %q for code %d: %v", name, raw, code, e)
	}
	switch code {
	case 0:
		v.typ = TypeNull
		if raw != "" {
			return bad(fmt.Errorf("null takes no value"))
		}
	case 1:
		v.typ = TypeBool
		switch raw {
		case "true":
			v.num = 1
		case "false":
		default:
			return bad(fmt.Errorf("want true or false"))
		}
	case 2:
		v.typ = TypeBytes
		if v.bin, err = base64.StdEncoding.DecodeString(raw); err != nil {
			return bad(err)
		}
	case 3, 5, 7, 13:
		v.typ = textIntType[code]
		x, err := strconv.ParseInt(raw, 10, intBits(v.typ))
		if err != nil {
			return bad(err)
		}
		v.num = uint64(x)
	case 4, 6, 8, 14:
		v.typ = textIntType[code]
		if v.num, err = strconv.ParseUint(raw, 10, intBits(v.typ)); err != nil {
			return bad(err)
		}
	case 9:
		v.typ = TypeFloat32
		f, err := strconv.ParseFloat(raw, 32)
		if err != nil {
			return bad(err)
		}
		v.num = uint64(math.Float32bits(float32(f)))
	case 10:
		v.typ = TypeFloat64
		f, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return bad(err)
		}
		v.num = math.Float64bits(f)
	case 11:
		v.typ = TypeString
		v.str = unescape(raw)
	case 12:
		v.typ = TypeContainer
		n, err := strconv.ParseUint(raw, 10, 64)
		if err != nil {
			return bad(err)
		}
		if depth >= p.opt.MaxDepth {
			return p.fail(ErrTooDeep, at, "item %q nests deeper than %d", name, p.opt.MaxDepth)
		}
		if left := len(p.s) - p.pos; n > uint64(left/minTextItem) {
			return p.fail(ErrMalformed, at, "item %q: %d children cannot fit in the %d bytes left", name, n, left)
		}
		if uint64(p.opt.MaxValues-p.values) < n {
			return p.fail(ErrLimit, at, "more than %d values", p.opt.MaxValues)
		}
		p.values += int(n)
		v.obj = &Container{Values: make([]Value, n)}
		for i := range v.obj.Values {
			if err := p.item(&v.obj.Values[i], depth+1); err != nil {
				return err
			}
		}
	default:
		return p.fail(ErrMalformed, at, "item %q: unknown type code %d", name, code)
	}
	return nil
}
