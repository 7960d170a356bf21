package pipeline

import (
	"encoding/binary"
	"sync"

	"github.com/pierrec/lz4/v4"
)

// lz4Codec is the "lz4" codec: the decompressed length as 4 bytes,
// big-endian, followed by one LZ4 block (the raw block format, not the LZ4
// frame format), as C and C++ peers commonly frame it. The length prefix
// lets Decompress check the limit before allocating.
type lz4Codec struct{}

// lz4MaxRatio bounds the output of an LZ4 block per input byte: each
// match-length continuation byte adds at most 255 output bytes.
const lz4MaxRatio = 256

// lz4Pool holds block compressors, each of which owns a hash table and
// must not be shared between goroutines.
var lz4Pool = sync.Pool{New: func() any { return new(lz4.Compressor) }}

func (lz4Codec) Name() string { return CodecLZ4 }

func (lz4Codec) Compress(dst, src []byte) ([]byte, error) {
	if uint64(len(src)) > 0x7E000000 { // lz4.CompressBlockBound's domain
		return dst, ErrInputTooLarge
	}
	n := len(dst)
	bound := lz4.CompressBlockBound(len(src))
	dst = grow(dst, 4+bound)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(src)))
	m := len(dst)
	c := lz4Pool.Get().(*lz4.Compressor)
	k, err := c.CompressBlock(src, dst[m:m+bound])
	lz4Pool.Put(c)
	if err != nil {
		return dst[:n], err
	}
	// With a CompressBlockBound-sized destination the block always fits;
	// k is 0 only for empty input, whose block is the empty string.
	return dst[:m+k], nil
}

func (lz4Codec) Decompress(dst, src []byte, limit int) ([]byte, error) {
	if len(src) < 4 {
		return dst, corrupt(CodecLZ4, nil)
	}
	v := binary.BigEndian.Uint32(src)
	if uint64(v) > uint64(max(limit, 0)) {
		return dst, ErrTooLarge
	}
	size, block := int(v), src[4:]
	if size > lz4MaxRatio*len(block)+16 {
		return dst, corrupt(CodecLZ4, nil)
	}
	if size == 0 {
		// The decoder must not see a nil destination, which its assembly
		// writes through: the empty message decodes into a byte of
		// scratch, and must produce nothing.
		var scratch [1]byte
		if got, err := lz4.UncompressBlock(block, scratch[:]); err != nil || got != 0 {
			return dst, corrupt(CodecLZ4, err)
		}
		return dst, nil
	}
	n := len(dst)
	dst = grow(dst, size)
	got, err := lz4.UncompressBlock(block, dst[n:n+size])
	if err != nil {
		return dst[:n], corrupt(CodecLZ4, err)
	}
	if got != size {
		return dst[:n], corrupt(CodecLZ4, nil)
	}
	return dst[:n+size], nil
}
