package msgnet_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/pipeline"
	"github.com/pierrec/lz4/v4"
)

// Hostile compressed payloads (docs/PROTOCOL.md, section 6.2), against
// msgnet serve's default of offering every codec.

// bomb is a compressed payload whose output exceeds the 1 MiB limit.
func bomb(t *testing.T, codec string) []byte {
	t.Helper()
	if codec == pipeline.CodecZstd {
		// Streamed: the frame does not declare its size, so the decoder
		// can only stop when its buffer is full.
		var b bytes.Buffer
		w, err := zstd.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		zeros := make([]byte, 1<<20)
		for range 64 {
			w.Write(zeros)
		}
		w.Close()
		return b.Bytes()
	}
	c, _ := pipeline.CompressorByName(codec)
	n := 64 << 20
	if codec == pipeline.CodecSnappy {
		n = 16 << 20 // Snappy's ratio is about 21: 64 MiB would not fit a frame
	}
	p, err := c.Compress(nil, make([]byte, n))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// compressedSession says hello asking for codec and checks it is granted.
func compressedSession(t *testing.T, addr, id, codec string) (net.Conn, *frame.Reader) {
	t.Helper()
	nc := dialRaw(t, addr).nc
	rd, w, err := handshakeWelcome(nc, id, `,"compression":["`+codec+`"]`)
	if err != nil {
		t.Fatal(err)
	}
	if w["compression"] != codec {
		t.Fatalf("welcome %v, want compression %s", w, codec)
	}
	return nc, rd
}

// Decompression bombs in every codec are refused with ERROR
// message_too_large and DISCONNECT, and cost the server at most about
// 2.3 times the limit each (the documented worst case, a zstd frame that
// does not declare its size); payloads that do not decompress, or whose
// declared size lies, are bad_compression and the session goes on; a
// compressed message within the limit is echoed. The honest client stays
// within its bound while bombs go off beside it.
func TestHostileCompressionBombs(t *testing.T) {
	forServeTargets(t, func(t *testing.T, tg target) {
		_, addr := tg.start(t)
		h := newHonest(t, tg, addr)
		codecs := []string{pipeline.CodecZstd, pipeline.CodecS2, pipeline.CodecSnappy, pipeline.CodecLZ4}
		bombs := map[string][]byte{}
		for _, c := range codecs {
			bombs[c] = bomb(t, c)
		}
		explode := func(codec string) error {
			nc, rd := compressedSession(t, addr, "bomber-"+codec, codec)
			defer nc.Close()
			if err := writeAll(nc, frame.Append(nil, frame.KindData, frame.FlagCompressed, bombs[codec]), 5*time.Second); err != nil {
				return err
			}
			if err := expectFrames(nc, rd, isError(frame.CodeMessageTooLarge), isKind(frame.KindDisconnect)); err != nil {
				return fmt.Errorf("%s bomb: %w", codec, err)
			}
			return nil
		}
		// What the bombs cost, with nothing else running (the honest
		// client's traffic would allocate too).
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		for _, c := range codecs {
			if err := explode(c); err != nil {
				t.Error(err)
			}
		}
		runtime.ReadMemStats(&m1)
		alloc := int64(m1.TotalAlloc - m0.TotalAlloc)
		t.Logf("%d bombs allocated %d KiB", len(codecs), alloc>>10)
		if limit := int64(len(codecs))*(23<<20)/10 + 4<<20; alloc > limit {
			t.Errorf("%d bombs allocated %d KiB; bound %d KiB", len(codecs), alloc>>10, limit>>10)
		}
		// Bombs, garbage and liars beside the honest client.
		a := newAttack(t)
		done := make(chan struct{})
		a.goDo(func(stop <-chan struct{}) {
			defer close(done)
			for round := 0; round < 3 && !stopped(stop); round++ {
				for _, c := range codecs {
					if err := explode(c); err != nil {
						t.Error(err)
					}
				}
			}
		})
		h.during(20, 30*time.Second, func() bool { return stopped(done) })
		a.end()

		for _, codec := range codecs {
			nc, rd := compressedSession(t, addr, "liar-"+codec, codec)
			comp, _ := pipeline.CompressorByName(codec)
			var bad [][]byte
			if codec == pipeline.CodecZstd {
				bad = append(bad, []byte("\xff\xfe\xfd garbage that no codec accepts"))
			} else { // a small declared size, then garbage
				bad = append(bad, append(appendSize(codec, nil, 0x20), "\xff\xfe\xfd garbage that no codec accepts"...))
			}
			if codec != pipeline.CodecZstd {
				// A declared size that the block does not have: half the
				// true size, and none.
				p, _ := comp.Compress(nil, bytes.Repeat([]byte("lie"), 1000))
				n, k := sizePrefix(codec, p)
				bad = append(bad, append(appendSize(codec, nil, n/2), p[k:]...))
				bad = append(bad, append(appendSize(codec, nil, 0), p[k:]...))
			}
			var in []byte
			var want []func(frame.Frame) error
			for _, p := range bad {
				in = frame.Append(in, frame.KindData, frame.FlagCompressed, p)
				want = append(want, isError(msgnet.CodeBadCompression))
			}
			msg := strings.Repeat("compressible ", 100)
			ok, _ := comp.Compress(nil, []byte(msg))
			in = frame.Append(in, frame.KindData, frame.FlagCompressed, ok)
			nc.Write(in)
			if err := expectFrames(nc, rd, want...); err != nil {
				t.Errorf("%s: %v", codec, err)
				continue
			}
			nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			f, err := rd.ReadFrame()
			if err != nil {
				t.Errorf("%s: %v", codec, err)
				continue
			}
			got := f.Payload
			if f.Flags&frame.FlagCompressed != 0 {
				got, err = comp.Decompress(nil, f.Payload, 1<<20)
			}
			if err != nil || string(got) != tg.reply(msg) {
				t.Errorf("%s: the echo of a compressed message: %v %.60q", codec, err, got)
			}
		}
		h.trip(20)
	})
}

// The lz4 codec as docs/PROTOCOL.md (section 6.2) describes it: "a 4-byte
// big-endian uncompressed length, then an LZ4 block". A client written
// from the document sends that; its message must be echoed.
func TestHostileLZ4AsDocumented(t *testing.T) {
	tg := serveTargets()[1]
	_, addr := tg.start(t)
	h := newHonest(t, tg, addr)
	nc, rd := compressedSession(t, addr, "by-the-book", pipeline.CodecLZ4)
	msg := []byte(strings.Repeat("by the book ", 100))
	block := make([]byte, lz4.CompressBlockBound(len(msg)))
	n, err := lz4.CompressBlock(msg, block, nil)
	if err != nil || n == 0 {
		t.Fatal(n, err)
	}
	p := binary.BigEndian.AppendUint32(nil, uint32(len(msg)))
	nc.Write(frame.Append(nil, frame.KindData, frame.FlagCompressed, append(p, block[:n]...)))
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := rd.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	got := f.Payload
	if f.Flags&frame.FlagCompressed != 0 {
		// Decoded as the document says, too.
		if len(got) < 4 {
			t.Fatalf("a compressed reply of %d bytes", len(got))
		}
		out := make([]byte, binary.BigEndian.Uint32(got))
		k, err := lz4.UncompressBlock(got[4:], out)
		if err != nil {
			t.Fatalf("the reply is not lz4 as documented: %v (%q)", err, got)
		}
		got = out[:k]
	}
	if f.Kind != frame.KindData || string(got) != string(msg) {
		t.Errorf("an lz4 message framed as documented (4-byte length) came back as %v %#x %.80q, want it echoed",
			f.Kind, f.Flags, got)
	}
	h.trip(20)
}

// An lz4 payload that declares an empty message but carries a block is a
// payload that does not decompress: bad_compression, and the session goes
// on. (A nil destination handed to the LZ4 decoder is written through by
// its assembly: a nil dereference, reported as a handler panic.)
func TestHostileLZ4DeclaredEmpty(t *testing.T) {
	forServeTargets(t, func(t *testing.T, tg target) {
		_, addr := tg.start(t)
		h := newHonest(t, tg, addr)
		nc, rd := compressedSession(t, addr, "empty-but-not", pipeline.CodecLZ4)
		comp, _ := pipeline.CompressorByName(pipeline.CodecLZ4)
		// A first literal shorter than 15 bytes, then a match: the common
		// shape of a block.
		p, _ := comp.Compress(nil, []byte(strings.Repeat("not empty ", 20)))
		nc.Write(frame.Append(nil, frame.KindData, frame.FlagCompressed, append([]byte{0, 0, 0, 0}, p[4:]...)))
		if err := expectFrames(nc, rd, isError(msgnet.CodeBadCompression)); err != nil {
			t.Errorf("an lz4 block declared empty: %v", err)
		} else if err := echoes(tg, nc, rd); err != nil {
			t.Errorf("after an lz4 block declared empty: %v", err)
		}
		h.trip(20)
	})
}

// sizePrefix reads the declared size that starts a block codec's payload:
// a uvarint for s2 and snappy, 4 bytes big-endian for lz4 (PROTOCOL.md 6.2).
func sizePrefix(codec string, p []byte) (uint64, int) {
	if codec == pipeline.CodecLZ4 {
		return uint64(binary.BigEndian.Uint32(p)), 4
	}
	return binary.Uvarint(p)
}

// appendSize appends a declared size in the codec's framing.
func appendSize(codec string, b []byte, v uint64) []byte {
	if codec == pipeline.CodecLZ4 {
		return binary.BigEndian.AppendUint32(b, uint32(v))
	}
	return binary.AppendUvarint(b, v)
}
