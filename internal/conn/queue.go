package conn

import (
	"sync"

	"github.com/msgnet/msgnet/frame"
)

// chunk is a piece of a send queue. Pooled chunks have chunkSize capacity;
// a frame larger than that gets a chunk of its own.
type chunk struct{ b []byte }

const chunkSize = 32 << 10

var chunkPool = sync.Pool{New: func() any { return &chunk{b: make([]byte, 0, chunkSize)} }}

func putChunk(c *chunk) {
	if cap(c.b) == chunkSize {
		c.b = c.b[:0]
		chunkPool.Put(c)
	}
}

// chunkOf copies b, which the caller keeps using, into a chunk of its own.
func chunkOf(b []byte) *chunk {
	var c *chunk
	if len(b) <= chunkSize {
		c = chunkPool.Get().(*chunk)
	} else {
		c = &chunk{b: make([]byte, 0, len(b))}
	}
	c.b = append(c.b, b...)
	return c
}

// queue is a list of chunks of encoded bytes.
type queue struct {
	chunks []*chunk
	bytes  int
}

// reserve returns the tail of the queue with room for n more bytes;
// commit stores what was appended to it.
func (q *queue) reserve(n int) []byte {
	if k := len(q.chunks); k > 0 {
		c := q.chunks[k-1]
		if cap(c.b)-len(c.b) >= n {
			return c.b
		}
	}
	var c *chunk
	if n <= chunkSize {
		c = chunkPool.Get().(*chunk)
	} else {
		c = &chunk{b: make([]byte, 0, n)}
	}
	q.chunks = append(q.chunks, c)
	return c.b
}

func (q *queue) commit(b []byte) {
	c := q.chunks[len(q.chunks)-1]
	q.bytes += len(b) - len(c.b)
	c.b = b
}

// appendFrame queues one plain frame.
func (q *queue) appendFrame(kind frame.Kind, flags frame.Flags, payload []byte) {
	n := frame.HeaderLen + len(payload)
	if k := len(q.chunks); k > 0 {
		// The common case, a frame that fits the last chunk, written in
		// place: appending the header field by field costs as much as the
		// rest of queueing a small frame.
		c := q.chunks[k-1]
		if at := len(c.b); cap(c.b)-at >= n {
			b := c.b[at : at+n]
			frame.PutHeader(b, kind, flags, len(payload))
			copy(b[frame.HeaderLen:], payload)
			c.b = c.b[:at+n]
			q.bytes += n
			return
		}
	}
	b := q.reserve(n)
	at := len(b)
	b = b[:at+n]
	frame.PutHeader(b[at:], kind, flags, len(payload))
	copy(b[at+frame.HeaderLen:], payload)
	q.commit(b)
}

// take empties the queue and returns its chunks.
func (q *queue) take() []*chunk {
	c := q.chunks
	q.chunks, q.bytes = nil, 0
	return c
}

// pushFront puts chunks back at the head of the queue.
func (q *queue) pushFront(chunks []*chunk, n int) {
	q.chunks = append(chunks, q.chunks...)
	q.bytes += n
}
