package pipeline

import (
	"errors"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// zstdSlack is spare capacity given to the zstd decoder beyond the declared
// size: its block decoder wants a little room past the output and would
// otherwise reallocate the whole buffer.
const zstdSlack = 64

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
		// Never write past the capacity Decompress provides: the output
		// buffer is sized from the limit, so this is what bounds memory.
		zstd.WithDecodeAllCapLimit(true),
	)
	if err != nil {
		panic("pipeline: zstd decoder options: " + err.Error())
	}
	return enc, dec
})

func (zstdCodec) Name() string { return CodecZstd }

func (zstdCodec) Compress(dst, src []byte) ([]byte, error) {
	enc, _ := zstdCoders()
	return enc.EncodeAll(src, dst), nil
}

// Decompress reads the first frame header. A frame that declares its
// content size (Compress always does) is refused at once when that exceeds
// limit, and otherwise decoded into exactly that much new capacity. For
// input without a declared size (a skippable frame, a foreign encoder's
// streaming output) or holding several frames, the decoder gets limit bytes
// of capacity and fails once the output would not fit.
func (zstdCodec) Decompress(dst, src []byte, limit int) ([]byte, error) {
	limit = max(limit, 0)
	var h zstd.Header
	if err := h.Decode(src); err != nil {
		return dst, corrupt(CodecZstd, err)
	}
	budget := limit
	if h.HasFCS {
		if h.FrameContentSize > uint64(limit) {
			return dst, ErrTooLarge
		}
		budget = int(h.FrameContentSize)
	}
	_, dec := zstdCoders()
	n := len(dst)
	for {
		// With limitToCap, DecodeAll writes no further than the capacity
		// it is given and allocates nothing when that suffices.
		buf := grow(dst, budget+zstdSlack)
		out, err := dec.DecodeAll(src, buf[:n])
		switch {
		case err == nil:
			if len(out)-n > limit { // only possible within zstdSlack
				return buf[:n], ErrTooLarge
			}
			return out, nil
		case errors.Is(err, zstd.ErrDecoderSizeExceeded):
			if budget < limit {
				// The first frame fitted its declared size but more
				// frames follow: retry with the whole limit.
				budget = limit
				dst = buf[:n]
				continue
			}
			return buf[:n], ErrTooLarge
		default:
			return buf[:n], corrupt(CodecZstd, err)
		}
	}
}
