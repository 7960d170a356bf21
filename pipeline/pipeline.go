package pipeline

import (
	"errors"

	"github.com/msgnet/msgnet/frame"
)

// Errors returned by Pipeline.Inbound for frames whose flags do not match
// what was negotiated.
var (
	// ErrNotNegotiated: the frame carries frame.FlagCompressed or
	// frame.FlagEncrypted but that extension is not in use on this
	// connection. The protocol answers it with ERROR unknown_type.
	ErrNotNegotiated = errors.New("pipeline: frame flag for an extension that was not negotiated")
	// ErrNotEncrypted: encryption is in use but the frame is not
	// encrypted. Accepting it would let an attacker inject plaintext.
	ErrNotEncrypted = errors.New("pipeline: unencrypted frame on an encrypted connection")
)

// Pipeline applies one connection's payload stages in the protocol's
// fixed order. Outbound: user Filters, then compression, then encryption.
// Inbound: decryption, then decompression, then the Filters in reverse.
// The connection calls it for DATA frames, whose payloads are the ones
// extensions transform.
//
// Set the fields after the handshake, from what was negotiated, and do not
// change them afterwards. The zero Pipeline passes payloads through.
// Outbound and Inbound may run at the same time (a writer and a reader
// goroutine), but each must be called by one goroutine at a time and in
// wire order, because the Sealer and Opener count frames.
type Pipeline struct {
	// Filters is the user filter chain; nil for none.
	Filters Chain
	// Compressor is the negotiated codec; nil when compression is off.
	Compressor Compressor
	// Threshold is the smallest payload Outbound tries to compress (see
	// MaybeCompress).
	Threshold int
	// MaxPayload limits the size of a decompressed inbound payload. Zero
	// means frame.DefaultMaxPayload.
	MaxPayload int
	// Sealer and Opener are the session's AEAD halves from
	// NewSessionKeys; both nil when encryption is off, both set when on.
	Sealer *Sealer
	Opener *Opener
}

// Outbound transforms a payload to be sent in a frame of the given kind
// and appends the result to dst. It returns the flags to put in the frame
// header: the given flags with frame.FlagCompressed set if the payload was
// compressed and frame.FlagEncrypted set if it was sealed (any of these
// two bits in flags are ignored). The encrypted payload is bound to that
// final kind and flags. dst must not overlap payload.
//
// The result is Overhead bytes longer than the compressed payload when
// encryption is on; the caller keeps payloads within the peer's limit.
func (p *Pipeline) Outbound(dst []byte, kind frame.Kind, flags frame.Flags, payload []byte) ([]byte, frame.Flags, error) {
	flags &^= frame.FlagCompressed | frame.FlagEncrypted
	if len(p.Filters) == 0 && p.Compressor == nil && p.Sealer == nil {
		return append(dst, payload...), flags, nil
	}
	bufs := scratchPool.Get().(*[2][]byte)
	defer putScratch(bufs)
	cur := payload
	if len(p.Filters) > 0 {
		out, err := p.Filters.Outbound(bufs[0][:0], cur)
		if err != nil {
			return dst, flags, err
		}
		bufs[0], cur = out, out
	}
	if p.Compressor != nil {
		into := dst // compress straight into dst unless sealing follows
		if p.Sealer != nil {
			into = bufs[1][:0]
		}
		out, ok, err := compressIfSmaller(p.Compressor, into, cur, p.Threshold)
		if err != nil {
			return dst, flags, err
		}
		switch {
		case ok && p.Sealer == nil:
			return out, flags | frame.FlagCompressed, nil
		case ok:
			flags |= frame.FlagCompressed
			bufs[1], cur = out, out
		case p.Sealer == nil:
			return append(out, cur...), flags, nil
		default:
			bufs[1] = out
		}
	}
	if p.Sealer != nil {
		flags |= frame.FlagEncrypted
		out, err := p.Sealer.Seal(dst, typeOf(kind, flags), cur)
		return out, flags, err
	}
	return append(dst, cur...), flags, nil
}

// Inbound undoes Outbound for a received frame's payload and appends the
// original payload to dst. kind and flags are the frame's, as received.
// It fails with ErrNotNegotiated or ErrNotEncrypted when the flags do not
// match the negotiated extensions, ErrDecrypt (the Opener is then dead),
// ErrTooLarge or ErrCorrupt from decompression, or a filter's error.
// dst must not overlap payload.
func (p *Pipeline) Inbound(dst []byte, kind frame.Kind, flags frame.Flags, payload []byte) ([]byte, error) {
	enc := flags&frame.FlagEncrypted != 0
	comp := flags&frame.FlagCompressed != 0
	switch {
	case enc && p.Opener == nil, comp && p.Compressor == nil:
		return dst, ErrNotNegotiated
	case !enc && p.Opener != nil:
		return dst, ErrNotEncrypted
	}
	filters := len(p.Filters) > 0
	if !enc && !comp && !filters {
		return append(dst, payload...), nil
	}
	bufs := scratchPool.Get().(*[2][]byte)
	defer putScratch(bufs)
	cur := payload
	if enc {
		into := dst
		if comp || filters {
			into = bufs[0][:0]
		}
		out, err := p.Opener.Open(into, typeOf(kind, flags), cur)
		if err != nil {
			return dst, err
		}
		if !comp && !filters {
			return out, nil
		}
		bufs[0], cur = out, out
	}
	if comp {
		into := dst
		if filters {
			into = bufs[1][:0]
		}
		limit := p.MaxPayload
		if limit == 0 {
			limit = frame.DefaultMaxPayload
		}
		out, err := p.Compressor.Decompress(into, cur, limit)
		if err != nil {
			return dst, err
		}
		if !filters {
			return out, nil
		}
		bufs[1], cur = out, out
	}
	return p.Filters.Inbound(dst, cur)
}

// typeOf is the frame type field: flags in the high byte, kind in the low.
func typeOf(kind frame.Kind, flags frame.Flags) uint16 {
	return uint16(flags)<<8 | uint16(kind)
}

func putScratch(bufs *[2][]byte) {
	for i := range bufs {
		if cap(bufs[i]) > maxPooledScratch {
			bufs[i] = nil
		}
	}
	scratchPool.Put(bufs)
}
