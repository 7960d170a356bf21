package container

import (
	"fmt"
	"io"
	"strings"
)

// Format selects one of the three encodings.
type Format uint8

// The encodings. Binary is the zero value because it is the wire default.
const (
	// Binary is the compact, exact, versioned encoding (Marshal, Unmarshal).
	Binary Format = iota
	// Text is the C++ value_container text format (AppendText, ParseText).
	Text
	// JSON is for logs, debugging and web clients (AppendJSON, ParseJSON).
	JSON
)

// String returns "binary", "text" or "json", the names ParseFormat accepts.
func (f Format) String() string {
	switch f {
	case Binary:
		return "binary"
	case Text:
		return "text"
	case JSON:
		return "json"
	}
	return fmt.Sprintf("format(%d)", uint8(f))
}

// ParseFormat returns the Format named s ("binary", "text" or "json",
// case-insensitive), for command-line flags.
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(s) {
	case "binary":
		return Binary, nil
	case "text":
		return Text, nil
	case "json":
		return JSON, nil
	}
	return 0, fmt.Errorf("container: unknown format %q (want binary, text or json)", s)
}

// Limits applied by decoders. They bound the work and memory an untrusted
// input can cause; every count and length is also checked against the
// bytes that remain before anything is allocated for it.
const (
	// DefaultMaxDepth is how deeply containers and arrays may nest when
	// decoding unless DecodeOptions.MaxDepth says otherwise. The top-level
	// container is depth 0.
	DefaultMaxDepth = 32
	// MaxDepthLimit caps DecodeOptions.MaxDepth and is the nesting limit of
	// the encoders, which also stops a container that contains itself.
	MaxDepthLimit = 256
	// DefaultMaxValues is the default limit on the total number of values
	// (at every depth, array elements included) in one decoded container.
	// A Value takes about 100 bytes, so this bounds the value slots of one
	// message to about 25 MiB whatever the input claims.
	DefaultMaxValues = 1 << 18
	// DefaultMaxSize is the default limit on input size in bytes.
	DefaultMaxSize = 16 << 20
)

// DecodeOptions sets the limits of a decoder. The zero value means the
// defaults; a zero field means that field's default.
type DecodeOptions struct {
	MaxDepth  int // nesting limit; 0 means DefaultMaxDepth; capped at MaxDepthLimit
	MaxValues int // total values limit; 0 means DefaultMaxValues
	MaxSize   int // input size limit in bytes; 0 means DefaultMaxSize
}

// norm fills in defaults.
func (o DecodeOptions) norm() DecodeOptions {
	if o.MaxDepth <= 0 {
		o.MaxDepth = DefaultMaxDepth
	}
	if o.MaxDepth > MaxDepthLimit {
		o.MaxDepth = MaxDepthLimit
	}
	if o.MaxValues <= 0 {
		o.MaxValues = DefaultMaxValues
	}
	if o.MaxSize <= 0 {
		o.MaxSize = DefaultMaxSize
	}
	return o
}

// Decode decodes data in format f with o's limits.
func (o DecodeOptions) Decode(data []byte, f Format) (*Container, error) {
	switch f {
	case Binary:
		return o.Unmarshal(data)
	case Text:
		return o.ParseText(data)
	case JSON:
		return o.ParseJSON(data)
	}
	return nil, fmt.Errorf("container: unknown format %d", uint8(f))
}

// Decode decodes data in format f with the default limits.
func Decode(data []byte, f Format) (*Container, error) { return DecodeOptions{}.Decode(data, f) }

// AppendFormat appends c encoded in format f to dst.
func (c *Container) AppendFormat(dst []byte, f Format) ([]byte, error) {
	switch f {
	case Binary:
		return c.AppendBinary(dst)
	case Text:
		return c.AppendText(dst)
	case JSON:
		return c.AppendJSON(dst)
	}
	return dst, fmt.Errorf("container: unknown format %d", uint8(f))
}

// Encode returns c encoded in format f.
func (c *Container) Encode(f Format) ([]byte, error) {
	if f == Binary {
		return c.Marshal() // sizes the buffer exactly
	}
	return c.AppendFormat(nil, f)
}

// Convert reads one container in format from from r (all of r, up to the
// size limit), and writes it to w in format to. It writes nothing if the
// input cannot be decoded or the output format cannot carry the container;
// the error then says why (a *DecodeError for bad input, ErrNotRepresentable
// for output). Nothing is added to the encoding (no trailing newline); the
// text and JSON parsers accept surrounding whitespace.
func (o DecodeOptions) Convert(r io.Reader, w io.Writer, from, to Format) error {
	o = o.norm()
	data, err := io.ReadAll(io.LimitReader(r, int64(o.MaxSize)+1))
	if err != nil {
		return fmt.Errorf("container: read input: %w", err)
	}
	c, err := o.Decode(data, from)
	if err != nil {
		return err
	}
	out, err := c.Encode(to)
	if err != nil {
		return err
	}
	if _, err := w.Write(out); err != nil {
		return fmt.Errorf("container: write output: %w", err)
	}
	return nil
}

// Convert is DecodeOptions.Convert with the default limits.
func Convert(r io.Reader, w io.Writer, from, to Format) error {
	return DecodeOptions{}.Convert(r, w, from, to)
}

// checkSize is shared by the decoders.
func (o DecodeOptions) checkSize(data []byte, f Format) error {
	if len(data) > o.MaxSize {
		return &DecodeError{Format: f, Offset: o.MaxSize, Reason: fmt.Sprintf("input larger than %d bytes", o.MaxSize), Err: ErrLimit}
	}
	return nil
}
