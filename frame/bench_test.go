package frame

import (
	"bytes"
	"testing"
)

// loopReader serves the same stream forever without allocating.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.data[l.off:])
	l.off = (l.off + n) % len(l.data)
	return n, nil
}

func benchmarkReader(b *testing.B, size int) {
	payload := bytes.Repeat([]byte{'x'}, size)
	var stream []byte
	for len(stream) < 256<<10 {
		stream = Append(stream, KindData, 0, payload)
	}
	r := NewReader(&loopReader{data: stream}, DefaultMaxPayload)
	b.SetBytes(int64(HeaderLen + size))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, err := r.ReadFrame()
		if err != nil || len(f.Payload) != size {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadFrame64(b *testing.B)   { benchmarkReader(b, 64) }
func BenchmarkReadFrame1KiB(b *testing.B) { benchmarkReader(b, 1024) }

func BenchmarkSplit(b *testing.B) {
	buf := Append(nil, KindData, 0, make([]byte, 64))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if n, err := Split(buf, DefaultMaxPayload); n != len(buf) || err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppend64(b *testing.B) {
	payload := make([]byte, 64)
	dst := make([]byte, 0, 1024)
	b.SetBytes(HeaderLen + 64)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		dst = Append(dst[:0], KindData, 0, payload)
	}
}
