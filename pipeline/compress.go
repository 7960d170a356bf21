package pipeline

import (
	"errors"
	"fmt"
	"slices"

	"github.com/msgnet/msgnet/frame"
)

// Codec names: the tokens peers exchange in the handshake to agree on a
// compressor, and the values Compressor.Name returns.
//
// How Decompress bounds memory, per codec:
//
//   - s2, snappy, lz4: every block starts with its decompressed length,
//     which is checked against the limit before anything is allocated;
//     then exactly that length is allocated. snappy and lz4 also refuse,
//     as corrupt, a length beyond what the input could possibly expand to
//     (22 and 256 times its size), so a short forged input cannot make
//     them allocate the whole limit.
//   - zstd: the frame and block headers are walked first. Input whose
//     headers show it exceeds the limit (declared content sizes, RLE and
//     raw block sizes) is refused without allocating; frames that declare
//     their content size, as Compress and every one-shot zstd API write,
//     get exactly that much. Input without declared sizes gets a
//     limit-sized buffer, and can make the decoder grow it once more by
//     about 1.3 times before it stops: about 2.3 × limit in all, at worst.
const (
	CodecZstd   = "zstd"   // Zstandard frames (RFC 8878); Compress writes one, with its size
	CodecS2     = "s2"     // S2 block format, a Snappy extension
	CodecSnappy = "snappy" // standard Snappy block format
	CodecLZ4    = "lz4"    // decompressed length (4 bytes, big-endian), then one LZ4 block
)

// ErrTooLarge reports that a payload would decompress to more than the
// caller's limit. It is returned before the output is allocated whenever the
// format declares its size up front.
//
// ErrTooLarge wraps frame.ErrTooLarge, so errors.Is(err, frame.ErrTooLarge)
// also holds and connection code can answer it with the same protocol error
// as an oversized frame.
var ErrTooLarge = fmt.Errorf("pipeline: decompressed payload exceeds the limit: %w", frame.ErrTooLarge)

// ErrCorrupt reports compressed input that is truncated, malformed or
// inconsistent with its declared size. Errors from the underlying codec
// are wrapped so that errors.Is(err, ErrCorrupt) holds.
var ErrCorrupt = errors.New("pipeline: corrupt compressed payload")

// ErrInputTooLarge reports input too large for a codec to compress
// (several GiB; never the case for a framed payload).
var ErrInputTooLarge = errors.New("pipeline: input too large to compress")

// A Compressor is a payload compression codec. Implementations in this
// package are safe for concurrent use and keep no state between calls.
//
// Compress and Decompress append their output to dst and return the
// extended slice, like the append built-in; dst must not overlap src. On
// error the returned slice holds exactly dst's contents (possibly in a
// grown array).
type Compressor interface {
	// Name returns the negotiation token, one of the Codec constants for
	// the built-in codecs.
	Name() string
	// Compress appends the compressed form of src to dst.
	Compress(dst, src []byte) ([]byte, error)
	// Decompress appends the decompressed form of src to dst. If the
	// output would exceed limit bytes it fails with ErrTooLarge, having
	// allocated not much more than limit bytes (nothing at all when the
	// format declares the size up front); malformed input fails with an
	// error wrapping ErrCorrupt. A limit below zero is treated as zero.
	Decompress(dst, src []byte, limit int) ([]byte, error)
}

var builtin = [...]Compressor{zstdCodec{}, s2Codec{}, lz4Codec{}, snappyCodec{}}

// CompressorByName returns the built-in compressor whose Name is name.
func CompressorByName(name string) (Compressor, bool) {
	for _, c := range builtin {
		if c.Name() == name {
			return c, true
		}
	}
	return nil, false
}

// Codecs returns the names of the built-in compressors in this package's
// default order of preference: zstd (best ratio), s2, lz4, snappy (fastest
// and most widely implemented). A client can send it as is, or a reordered
// subset, as its preference list. The slice is freshly allocated.
func Codecs() []string {
	names := make([]string, len(builtin))
	for i, c := range builtin {
		names[i] = c.Name()
	}
	return names
}

// Negotiate picks an extension for a connection. It is called by the
// server: ours lists the names the server supports (order does not matter)
// and theirs is the client's list in the client's order of preference.
// Negotiate returns the first name in theirs that also appears in ours, or
// "" if there is none, meaning the extension is not used. It works for any
// list of names: codecs (Codecs) as well as AEAD suites (Suites).
//
// A client should check that the name the server answers is one it offered.
func Negotiate(ours, theirs []string) string {
	for _, name := range theirs {
		if name != "" && slices.Contains(ours, name) {
			return name
		}
	}
	return ""
}

// MaybeCompress applies the threshold rule for compressing a payload: it
// compresses src with c only when len(src) >= threshold, and reports
// compressed = true only when the compressed form is strictly shorter than
// src. Either way out is dst with the payload to send appended: the
// compressed form when compressed is true, otherwise a copy of src. A
// threshold of zero or less means every payload is tried.
//
// The caller sets frame.FlagCompressed on the frame exactly when compressed
// is true.
func MaybeCompress(c Compressor, dst, src []byte, threshold int) (out []byte, compressed bool, err error) {
	out, compressed, err = compressIfSmaller(c, dst, src, threshold)
	if err != nil || compressed {
		return out, compressed, err
	}
	return append(out, src...), false, nil
}

// compressIfSmaller is MaybeCompress without the copy: when it does not
// compress it returns dst unchanged.
func compressIfSmaller(c Compressor, dst, src []byte, threshold int) ([]byte, bool, error) {
	if len(src) < threshold || len(src) == 0 {
		return dst, false, nil
	}
	n := len(dst)
	out, err := c.Compress(dst, src)
	if err != nil {
		return dst[:n], false, err
	}
	if len(out)-n >= len(src) {
		// Did not shrink; keep whatever buffer growth happened for reuse.
		return out[:n], false, nil
	}
	return out, true, nil
}

// corrupt wraps a codec error so that errors.Is(err, ErrCorrupt) holds.
func corrupt(codec string, err error) error {
	if err == nil {
		return fmt.Errorf("%w (%s)", ErrCorrupt, codec)
	}
	return fmt.Errorf("%w (%s): %w", ErrCorrupt, codec, err)
}

// grow returns dst with at least n bytes of spare capacity. Unlike
// slices.Grow it never allocates more than len(dst)+n bytes, or twice the
// old capacity when that is larger, so that limits on output size also
// bound allocation.
func grow(dst []byte, n int) []byte {
	if cap(dst)-len(dst) >= n {
		return dst
	}
	b := make([]byte, len(dst), max(len(dst)+n, 2*cap(dst)))
	copy(b, dst)
	return b
}
