package pipeline

import (
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/snappy"
)

// s2Codec is the "s2" codec: one S2 block, which starts with the uvarint
// decompressed length. Blocks carry no checksum.
type s2Codec struct{}

func (s2Codec) Name() string { return CodecS2 }

func (s2Codec) Compress(dst, src []byte) ([]byte, error) {
	return blockCompress(dst, src, s2.Encode)
}

func (s2Codec) Decompress(dst, src []byte, limit int) ([]byte, error) {
	return blockDecompress(CodecS2, dst, src, limit, 0, s2.Decode)
}

// snappyCodec is the "snappy" codec: one standard Snappy block, as written
// and read by every Snappy implementation. It compresses with S2's
// Snappy-compatible encoder and decodes strictly, refusing S2 extensions.
type snappyCodec struct{}

// snappyMaxRatio bounds the output of a Snappy block per input byte: the
// most productive element is a 3-byte copy of 64 bytes.
const snappyMaxRatio = 22

func (snappyCodec) Name() string { return CodecSnappy }

func (snappyCodec) Compress(dst, src []byte) ([]byte, error) {
	return blockCompress(dst, src, s2.EncodeSnappy)
}

func (snappyCodec) Decompress(dst, src []byte, limit int) ([]byte, error) {
	return blockDecompress(CodecSnappy, dst, src, limit, snappyMaxRatio, snappy.DecodeStrict)
}

// blockCompress runs an s2-style encoder, which writes from the start of
// the slice it is given, so that its output is appended to dst.
func blockCompress(dst, src []byte, encode func(dst, src []byte) []byte) ([]byte, error) {
	bound := s2.MaxEncodedLen(len(src))
	if bound < 0 {
		return dst, ErrInputTooLarge
	}
	n := len(dst)
	dst = grow(dst, bound)
	out := encode(dst[n:n+bound], src)
	return dst[:n+len(out)], nil
}

// blockDecompress reads the uvarint decompressed length that starts every
// S2 and Snappy block and checks it against limit (and, when maxRatio > 0,
// against what the input could possibly expand to) before allocating.
func blockDecompress(name string, dst, src []byte, limit, maxRatio int,
	decode func(dst, src []byte) ([]byte, error)) ([]byte, error) {
	size, err := s2.DecodedLen(src)
	if err != nil {
		return dst, corrupt(name, err)
	}
	if size > max(limit, 0) {
		return dst, ErrTooLarge
	}
	if maxRatio > 0 && size > maxRatio*len(src) {
		return dst, corrupt(name, nil)
	}
	n := len(dst)
	dst = grow(dst, size)
	out, err := decode(dst[n:n+size], src)
	if err != nil {
		return dst[:n], corrupt(name, err)
	}
	if len(out) != size {
		return dst[:n], corrupt(name, nil)
	}
	return dst[:n+size], nil
}
