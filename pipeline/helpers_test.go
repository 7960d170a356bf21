package pipeline

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// recv receives from ch within a generous deadline, or fails the test
// naming what it waited for: a bare receive would turn a stuck goroutine
// into the package's timeout, minutes later and without a clear message.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// allCodecs returns every built-in compressor, looked up by name.
func allCodecs(t testing.TB) []Compressor {
	t.Helper()
	var cs []Compressor
	for _, name := range Codecs() {
		c, ok := CompressorByName(name)
		if !ok {
			t.Fatalf("CompressorByName(%q) not found", name)
		}
		cs = append(cs, c)
	}
	return cs
}

var words = []string{
	"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "message",
	"sent", "received", "channel", "user", "presence", "online", "offline",
	"typing", "hello", "world", "lorem", "ipsum", "dolor", "sit", "amet",
}

// jsonish returns n bytes of deterministic JSON-like text resembling
// application messages: repeated keys, varied values.
func jsonish(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 0x6d73676e6574))
	b := make([]byte, 0, n+256)
	for len(b) < n {
		b = fmt.Appendf(b, `{"id":%d,"user":"%s%d","event":"%s.%s","ts":%d,"tags":["%s","%s"],"body":"`,
			r.IntN(1_000_000), words[r.IntN(len(words))], r.IntN(1000),
			words[r.IntN(len(words))], words[r.IntN(len(words))],
			1_700_000_000+r.IntN(10_000_000),
			words[r.IntN(len(words))], words[r.IntN(len(words))])
		for range 3 + r.IntN(12) {
			b = append(b, words[r.IntN(len(words))]...)
			b = append(b, ' ')
		}
		b = append(b, "\"}\n"...)
	}
	return b[:n]
}

// randomBytes returns n incompressible bytes.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// sizePrefix reads the declared decompressed size that starts a block
// codec's payload: a uvarint for s2 and snappy, 4 bytes big-endian for lz4.
func sizePrefix(codec string, b []byte) (uint64, int) {
	if codec == CodecLZ4 {
		return uint64(binary.BigEndian.Uint32(b)), 4
	}
	return binary.Uvarint(b)
}

// appendSize appends a declared size in the codec's framing.
func appendSize(codec string, b []byte, v uint64) []byte {
	if codec == CodecLZ4 {
		return binary.BigEndian.AppendUint32(b, uint32(v))
	}
	return binary.AppendUvarint(b, v)
}
