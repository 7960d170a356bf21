package container

import (
	"testing"
)

// benchContainer is a typical 10-value message that all three formats can
// carry: mixed scalars, short strings (one with spaces, which the text
// format escapes) and a 32-byte blob.
func benchContainer() *Container {
	return &Container{
		SourceID: "client", SourceSubID: "7f3a", TargetID: "server", TargetSubID: "main",
		MessageType: "chat_message", Version: "1.0.0.0",
		Values: []Value{
			String("username", "ada"),
			String("message", "hello there, how are you today?"),
			Int64("timestamp", 1754500000123),
			Int32("room", 42),
			Bool("urgent", false),
			Float64("score", 0.875),
			Uint16("retries", 3),
			Bytes("nonce", []byte("0123456789abcdef0123456789abcdef")),
			Uint64("seq", 1<<40+17),
			Float32("ratio", 1.5),
		},
	}
}

func benchEncode(b *testing.B, f Format) {
	c := benchContainer()
	enc, err := c.Encode(f)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, 2*len(enc))
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		buf, err = c.AppendFormat(buf[:0], f)
		if err != nil {
			b.Fatal(err)
		}
	}
}

func benchDecode(b *testing.B, f Format) {
	enc, err := benchContainer().Encode(f)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := Decode(enc, f); err != nil {
			b.Fatal(err)
		}
	}
}

// Encoding into a reused buffer.
func BenchmarkEncodeBinary(b *testing.B) { benchEncode(b, Binary) }
func BenchmarkEncodeText(b *testing.B)   { benchEncode(b, Text) }
func BenchmarkEncodeJSON(b *testing.B)   { benchEncode(b, JSON) }

// Decoding into a new container.
func BenchmarkDecodeBinary(b *testing.B) { benchDecode(b, Binary) }
func BenchmarkDecodeText(b *testing.B)   { benchDecode(b, Text) }
func BenchmarkDecodeJSON(b *testing.B)   { benchDecode(b, JSON) }

// BenchmarkMarshal is Marshal, which allocates the exact-size result.
func BenchmarkMarshal(b *testing.B) {
	c := benchContainer()
	enc, _ := c.Marshal()
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Marshal(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUnmarshalBinaryReuse decodes into one Container again and again,
// the pattern of a connection's read loop.
func BenchmarkUnmarshalBinaryReuse(b *testing.B) {
	enc, _ := benchContainer().Marshal()
	var c Container
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if err := c.UnmarshalBinary(enc); err != nil {
			b.Fatal(err)
		}
	}
}
