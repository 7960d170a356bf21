package conn

import (
	"bytes"
	"testing"

	"github.com/msgnet/msgnet/frame"
)

// Frames appended to a queue come out whole and in order whatever their
// sizes: small ones share chunks, one larger than a chunk gets its own,
// and what is pushed back goes first.
func TestQueueKeepsFramesInOrder(t *testing.T) {
	var q queue
	var want []byte
	sizes := []int{0, 1, 100, chunkSize - frame.HeaderLen, chunkSize, 3 * chunkSize, 7}
	for i, n := range sizes {
		p := bytes.Repeat([]byte{byte('a' + i)}, n)
		q.appendFrame(frame.KindData, 0, p)
		want = frame.Append(want, frame.KindData, 0, p)
	}
	if q.bytes != len(want) {
		t.Fatalf("queue counts %d bytes, holds %d", q.bytes, len(want))
	}
	for _, c := range q.chunks {
		if len(c.b) > chunkSize && cap(c.b) != len(c.b) {
			t.Fatalf("a large frame's chunk has spare room: len %d cap %d", len(c.b), cap(c.b))
		}
	}
	front := frame.Append(nil, frame.KindPing, 0, []byte("first"))
	q.pushFront([]*chunk{chunkOf(front)}, len(front))
	var got []byte
	for _, c := range q.take() {
		got = append(got, c.b...)
		putChunk(c)
	}
	if !bytes.Equal(got, append(front, want...)) {
		t.Fatal("the queue's bytes differ from the frames appended")
	}
	if q.bytes != 0 || len(q.chunks) != 0 {
		t.Fatal("take left the queue non-empty")
	}
}

// A frame that fits the last chunk is written in place; one that does not
// starts a new chunk: the queue holds no more chunks than it must.
func TestQueueFillsChunks(t *testing.T) {
	var q queue
	for range 100 {
		q.appendFrame(frame.KindData, 0, make([]byte, 300-frame.HeaderLen))
	}
	if want := (100*300 + chunkSize - 1) / chunkSize; len(q.chunks) != want {
		t.Fatalf("%d chunks for 30,000 bytes, want %d", len(q.chunks), want)
	}
}
