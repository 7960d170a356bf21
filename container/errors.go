package container

import (
	"errors"
	"fmt"
)

// Errors reported by the getters. They are wrapped with the value's name;
// test with errors.Is.
var (
	// ErrNotFound: the container has no value with the requested name.
	ErrNotFound = errors.New("container: value not found")
	// ErrTypeMismatch: the value exists but has another type than asked for.
	ErrTypeMismatch = errors.New("container: type mismatch")
)

// Errors reported by the encoders and decoders. Decoders wrap them in a
// *DecodeError carrying the format and position; test with errors.Is.
var (
	// ErrMalformed: the input is not a valid encoding (bad syntax, a length
	// or count larger than the rest of the input, an unknown type, ...).
	ErrMalformed = errors.New("container: malformed input")
	// ErrLimit: the input is well formed so far but exceeds a DecodeOptions
	// limit (size or total number of values).
	ErrLimit = errors.New("container: decode limit exceeded")
	// ErrTooDeep: containers and arrays are nested deeper than allowed:
	// DecodeOptions.MaxDepth when decoding, MaxDepthLimit when encoding
	// (which is also how a container that contains itself is caught).
	ErrTooDeep = errors.New("container: nesting too deep")
	// ErrVersion: the binary input starts with a version byte this package
	// does not know.
	ErrVersion = errors.New("container: unsupported binary version")
	// ErrNotRepresentable: the chosen format cannot carry the container
	// exactly (for example an array in the C++ text format, or "];" inside
	// a text value), so the encoder refuses rather than write something
	// that would read back differently.
	ErrNotRepresentable = errors.New("container: not representable in this format")
)

// DecodeError describes why an input could not be decoded and where.
type DecodeError struct {
	Format Format // the format being decoded
	Offset int    // byte offset in the input where the problem was found
	Reason string // what was wrong, for people
	Err    error  // ErrMalformed, ErrLimit, ErrTooDeep or ErrVersion
}

// Error returns a one-line message with the format, offset and reason.
func (e *DecodeError) Error() string {
	return fmt.Sprintf("container: cannot decode %s at byte %d: %s", e.Format, e.Offset, e.Reason)
}

// Unwrap returns the sentinel error, so errors.Is(err, ErrMalformed) works.
func (e *DecodeError) Unwrap() error { return e.Err }

// notRepresentable builds an ErrNotRepresentable error naming the value.
func notRepresentable(f Format, name, format string, args ...any) error {
	return fmt.Errorf("%w: %s: value %q: %s", ErrNotRepresentable, f, name, fmt.Sprintf(format, args...))
}
