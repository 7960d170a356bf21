package pipeline

import (
	"fmt"
	"testing"

	"github.com/msgnet/msgnet/frame"
)

// Benchmark payloads: JSON-like application messages.
var benchSizes = []struct {
	name string
	n    int
}{{"1KiB", 1 << 10}, {"64KiB", 64 << 10}}

// BenchmarkCopy is the baseline: a plain copy of the payload.
func BenchmarkCopy(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			src := jsonish(sz.n, 1)
			dst := make([]byte, 0, sz.n)
			b.SetBytes(int64(sz.n))
			b.ReportAllocs()
			for b.Loop() {
				dst = append(dst[:0], src...)
			}
		})
	}
}

func BenchmarkCompress(b *testing.B) {
	for _, c := range allCodecs(b) {
		for _, sz := range benchSizes {
			b.Run(fmt.Sprintf("%s/%s", c.Name(), sz.name), func(b *testing.B) {
				src := jsonish(sz.n, 1)
				dst, _ := c.Compress(nil, src)
				b.SetBytes(int64(sz.n))
				b.ReportAllocs()
				for b.Loop() {
					dst, _ = c.Compress(dst[:0], src)
				}
				// Compressed size over original size (after the loop,
				// which resets reported metrics).
				b.ReportMetric(float64(len(dst))/float64(len(src)), "ratio")
			})
		}
	}
}

func BenchmarkDecompress(b *testing.B) {
	for _, c := range allCodecs(b) {
		for _, sz := range benchSizes {
			b.Run(fmt.Sprintf("%s/%s", c.Name(), sz.name), func(b *testing.B) {
				src := jsonish(sz.n, 1)
				comp, _ := c.Compress(nil, src)
				dst := make([]byte, 0, sz.n)
				b.SetBytes(int64(sz.n))
				b.ReportAllocs()
				for b.Loop() {
					var err error
					if dst, err = c.Decompress(dst[:0], comp, frame.DefaultMaxPayload); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkSeal(b *testing.B) {
	for _, suite := range Suites() {
		for _, sz := range benchSizes {
			b.Run(fmt.Sprintf("%s/%s", suite, sz.name), func(b *testing.B) {
				s := newSession(b, suite)
				src := jsonish(sz.n, 1)
				dst := make([]byte, 0, sz.n+Overhead)
				b.SetBytes(int64(sz.n))
				b.ReportAllocs()
				for b.Loop() {
					dst, _ = s.clientSeal.Seal(dst[:0], dataType, src)
				}
			})
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	for _, suite := range Suites() {
		for _, sz := range benchSizes {
			b.Run(fmt.Sprintf("%s/%s", suite, sz.name), func(b *testing.B) {
				s := newSession(b, suite)
				ct := seal(b, s.clientSeal, dataType, jsonish(sz.n, 1))
				dst := make([]byte, 0, sz.n)
				b.SetBytes(int64(sz.n))
				b.ReportAllocs()
				for b.Loop() {
					s.serverOpen.n.next = 0 // reopen the same (first) frame
					var err error
					if dst, err = s.serverOpen.Open(dst[:0], dataType, ct); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkPipeline runs a payload out through one Pipeline and back in
// through its peer: user filter (none or one), compression, encryption.
func BenchmarkPipeline(b *testing.B) {
	configs := []struct {
		name         string
		codec, suite string
	}{
		{"plain", "", ""},
		{"s2", CodecS2, ""},
		{"chacha20", "", SuiteChaCha20Poly1305},
		{"s2+chacha20", CodecS2, SuiteChaCha20Poly1305},
		{"zstd+aes-gcm", CodecZstd, SuiteAES256GCM},
	}
	for _, cfg := range configs {
		for _, sz := range benchSizes {
			b.Run(fmt.Sprintf("%s/%s", cfg.name, sz.name), func(b *testing.B) {
				client, server := pipelines(b, nil, cfg.codec, cfg.suite)
				src := jsonish(sz.n, 1)
				wire := make([]byte, 0, sz.n+1024)
				out := make([]byte, 0, sz.n)
				b.SetBytes(int64(sz.n))
				b.ReportAllocs()
				for b.Loop() {
					w, fl, err := client.Outbound(wire[:0], frame.KindData, 0, src)
					if err != nil {
						b.Fatal(err)
					}
					if out, err = server.Inbound(out[:0], frame.KindData, fl, w); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkVerifyAuth(b *testing.B) {
	key := []byte("0123456789abcdef0123456789abcdef")
	nonce, _ := NewChallenge()
	mac := AuthResponse(key, nonce, "client-42")
	b.ReportAllocs()
	for b.Loop() {
		if !VerifyAuth(key, nonce, "client-42", mac) {
			b.Fatal("refused")
		}
	}
}
