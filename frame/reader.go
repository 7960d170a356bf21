package frame

import (
	"errors"
	"io"
)

// Reader reads frames from a stream with a bounded buffer. The buffer grows
// only to hold the largest frame the limit allows, and only once a header
// announcing such a frame has been read and checked: an oversized frame is
// rejected before any of its payload is read.
//
// In steady state ReadFrame allocates nothing: the returned payload aliases
// the Reader's buffer and is valid until the next call.
type Reader struct {
	r          io.Reader
	buf        []byte
	start, end int // unread bytes are buf[start:end]
	maxPayload int
}

// minReadBuf is the initial buffer: big enough that a read syscall carries
// many small frames.
const minReadBuf = 16 << 10

// NewReader returns a Reader that enforces maxPayload on every frame.
func NewReader(r io.Reader, maxPayload int) *Reader {
	return &Reader{r: r, buf: make([]byte, minReadBuf), maxPayload: maxPayload}
}

// Buffered returns the bytes read from the stream but not yet returned as
// frames; a caller switching protocols can take them over.
func (r *Reader) Buffered() []byte { return r.buf[r.start:r.end] }

// ReadFrame returns the next frame. At a clean end of stream between frames it
// returns io.EOF; inside a frame, io.ErrUnexpectedEOF. Protocol violations are
// ErrBadMagic, ErrShortLength and ErrTooLarge; after one of them the stream
// is out of step and must not be read further.
func (r *Reader) ReadFrame() (Frame, error) {
	for {
		avail := r.buf[r.start:r.end]
		total, err := Split(avail, r.maxPayload)
		if err != nil {
			return Frame{}, err
		}
		if total > 0 && total <= len(avail) {
			r.start += total
			return Decode(avail[:total]), nil
		}
		need := HeaderLen
		if total > 0 {
			need = total
		}
		if err := r.fill(need); err != nil {
			if errors.Is(err, io.EOF) && len(r.buf[r.start:r.end]) > 0 {
				return Frame{}, io.ErrUnexpectedEOF
			}
			return Frame{}, err
		}
	}
}

// fill reads until at least need unread bytes are buffered, compacting or
// growing the buffer first when need does not fit after start.
func (r *Reader) fill(need int) error {
	if r.start+need > len(r.buf) {
		n := copy(r.buf, r.buf[r.start:r.end])
		r.start, r.end = 0, n
		if need > len(r.buf) {
			nb := make([]byte, need)
			copy(nb, r.buf[:n])
			r.buf = nb
		}
	}
	for r.end-r.start < need {
		n, err := r.r.Read(r.buf[r.end:])
		r.end += n
		if err != nil {
			if r.end-r.start >= need {
				return nil
			}
			return err
		}
	}
	return nil
}

// WriteFrame writes one frame to w with a single Write call. It is a
// convenience for tools and tests; connection code batches frames instead.
func WriteFrame(w io.Writer, kind Kind, flags Flags, payload []byte) error {
	_, err := w.Write(Append(make([]byte, 0, HeaderLen+len(payload)), kind, flags, payload))
	return err
}
