package pipeline

import (
	"errors"
	"math"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// zstdSlack is spare capacity given to the zstd decoder beyond the output
// bound: with it the decoder can use its fast paths, which copy in 16- and
// 32-byte chunks, instead of its bounds-exact ones.
const zstdSlack = 64

// zstdMaxBlock is the largest output of one zstd block (RFC 8878 3.1.1.2.3).
const zstdMaxBlock = 128 << 10

// zstdCodec is the "zstd" codec. One shared Encoder and Decoder serve every
// call: EncodeAll and DecodeAll are safe for concurrent use.
type zstdCodec struct{}

var zstdCoders = sync.OnceValues(func() (*zstd.Encoder, *zstd.Decoder) {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		// An empty payload still becomes one well-formed frame.
		zstd.WithZeroFrames(true),
		// Messages are small; do not reserve memory for large windows.
		zstd.WithLowerEncoderMem(true),
	)
	if err != nil {
		panic("pipeline: zstd encoder options: " + err.Error())
	}
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0), // GOMAXPROCS concurrent DecodeAll calls
		// Never decode past the capacity Decompress provides: the output
		// buffer is sized from the limit, which is what bounds memory.
		zstd.WithDecodeAllCapLimit(true),
	)
	if err != nil {
		panic("pipeline: zstd decoder options: " + err.Error())
	}
	return enc, dec
})

func (zstdCodec) Name() string { return CodecZstd }

// Compress writes one frame that declares its content size.
func (zstdCodec) Compress(dst, src []byte) ([]byte, error) {
	enc, _ := zstdCoders()
	return enc.EncodeAll(src, dst), nil
}

// Decompress accepts one or more zstd frames (RFC 8878), including
// skippable frames and frames that do not declare their content size, but
// no dictionaries.
//
// Before decoding it walks the frame and block headers, which yields
// bounds on the output: exact when every frame declares its content size
// (as Compress and every one-shot zstd API do), otherwise from the block
// sizes. Input that must exceed limit fails with ErrTooLarge without
// allocating; otherwise the decoder gets min(upper bound, limit) bytes of
// capacity and may not write beyond it. Only input that does not declare
// its size, or declares it falsely, can make the decoder grow its buffer,
// once, before it stops: at worst about 2.3 × limit in all (a buffer of
// limit bytes, then one of about 1.3 × limit).
func (zstdCodec) Decompress(dst, src []byte, limit int) ([]byte, error) {
	limit = max(limit, 0)
	lo, hi, err := zstdBounds(src)
	if err != nil {
		return dst, corrupt(CodecZstd, err)
	}
	if lo > uint64(limit) {
		return dst, ErrTooLarge
	}
	budget := int(min(hi, uint64(limit)))
	_, dec := zstdCoders()
	n := len(dst)
	buf := grow(dst, budget+zstdSlack)[:n]
	out, err := dec.DecodeAll(src, buf)
	switch {
	case err == nil && len(out)-n <= limit:
		return out, nil
	case err == nil, errors.Is(err, zstd.ErrDecoderSizeExceeded):
		if hi > uint64(limit) {
			return buf, ErrTooLarge
		}
		// The blocks produced more than the headers allow.
		return buf, corrupt(CodecZstd, err)
	case hi > uint64(limit) && len(out)-n+zstdMaxBlock > budget:
		// The decoder reports running out of capacity as a generic
		// error; near the limit with no declared size, that is what
		// happened (or the input is corrupt there too).
		return buf, ErrTooLarge
	default:
		return buf, corrupt(CodecZstd, err)
	}
}

var errZstdTruncated = errors.New("truncated frame")

// zstdBounds walks the frames in src, reading frame and block headers only,
// and returns lower and upper bounds on the decompressed size. A frame that
// declares its content size contributes exactly that (after checking it
// against its blocks); one that does not contributes its raw and RLE block
// sizes to lo and adds the maximum block size per compressed block to hi.
func zstdBounds(src []byte) (lo, hi uint64, err error) {
	if len(src) == 0 {
		return 0, 0, errZstdTruncated
	}
	for len(src) > 0 {
		var h zstd.Header
		rest, err := h.DecodeAndStrip(src)
		if err != nil {
			return 0, 0, err
		}
		if h.Skippable {
			if uint64(len(rest)) < uint64(h.SkippableSize) {
				return 0, 0, errZstdTruncated
			}
			src = rest[h.SkippableSize:]
			continue
		}
		window := h.WindowSize
		if h.SingleSegment {
			window = h.FrameContentSize
		}
		blockMax := min(window, zstdMaxBlock)
		var exact, compressed uint64 // raw+RLE output; compressed blocks
		for last := false; !last; {
			if len(rest) < 3 {
				return 0, 0, errZstdTruncated
			}
			bh := uint32(rest[0]) | uint32(rest[1])<<8 | uint32(rest[2])<<16
			rest = rest[3:]
			last = bh&1 != 0
			size := int(bh >> 3)
			if uint64(size) > blockMax {
				return 0, 0, errors.New("block larger than the maximum block size")
			}
			skip := size
			switch (bh >> 1) & 3 {
			case 0: // raw
				exact += uint64(size)
			case 1: // RLE: one byte repeated size times
				exact += uint64(size)
				skip = 1
			case 2: // compressed: size is the compressed size
				compressed++
			default:
				return 0, 0, errors.New("reserved block type")
			}
			if len(rest) < skip {
				return 0, 0, errZstdTruncated
			}
			rest = rest[skip:]
		}
		if h.HasCheckSum {
			if len(rest) < 4 {
				return 0, 0, errZstdTruncated
			}
			rest = rest[4:]
		}
		src = rest
		flo, fhi := exact, exact+compressed*blockMax
		if h.HasFCS {
			if h.FrameContentSize < flo || h.FrameContentSize > fhi {
				return 0, 0, errors.New("content size does not match the blocks")
			}
			flo, fhi = h.FrameContentSize, h.FrameContentSize
		}
		// Saturate rather than overflow; any sum near the limit fails.
		lo = min(lo+flo, math.MaxInt64)
		hi = min(hi+fhi, math.MaxInt64)
	}
	return lo, hi, nil
}
