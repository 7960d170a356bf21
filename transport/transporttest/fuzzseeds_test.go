package transporttest_test

import (
	"bytes"
	"encoding/binary"

	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/pipeline"
)

// fuzzSeed is one entry of the seed corpus.
type fuzzSeed struct {
	in, cuts []byte
	engine   uint8
}

// fuzzSeeds are valid and nearly valid sessions: handshakes, requests,
// compression, text lines, and each kind of bad framing, whole and cut.
func fuzzSeeds() []fuzzSeed {
	data := func(p string) []byte { return frame.Append(nil, frame.KindData, 0, []byte(p)) }
	ctl := func(p string) []byte { return frame.Append(nil, frame.KindControl, 0, []byte(p)) }
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	byteByByte := bytes.Repeat([]byte{0x80}, 64) // 1-byte pieces, 500 µs apart
	req := func(id uint64, body string) []byte {
		return frame.Append(nil, frame.KindData, frame.FlagRequest, append(binary.BigEndian.AppendUint64(nil, id), body...))
	}
	compressed := func(codec string, p []byte) []byte {
		c, _ := pipeline.CompressorByName(codec)
		z, _ := c.Compress(nil, p)
		return frame.Append(nil, frame.KindData, frame.FlagCompressed, z)
	}
	hello := ctl(`{"op":"hello","client_id":"fuzz"}`)
	oversized := frame.AppendHeader(nil, frame.KindData, 0, 0)
	binary.BigEndian.PutUint32(oversized[4:], 1<<32-1)
	short := data("hi")
	short[7] = 9
	badMagic := data("hi")
	badMagic[2] = 'X'
	seeds := []fuzzSeed{
		{in: nil},
		{in: hello},
		{in: hello, cuts: byteByByte, engine: 1},
		{in: cat(ctl(`{"op":"hello","client_id":"fuzz","features":["request"]}`), req(1, "ask"), data("plain"),
			frame.Append(nil, frame.KindData, frame.FlagReply, []byte("12345678\x00late")), req(2, "")), engine: 2},
		{in: cat(ctl(`{"op":"hello","client_id":"z","compression":["zstd"]}`), compressed("zstd", bytes.Repeat([]byte("z"), 600))), engine: 3},
		{in: cat(ctl(`{"op":"hello","client_id":"z","compression":["zstd"]}`), compressed("zstd", make([]byte, 8<<10))), engine: 0},
		{in: cat(ctl(`{"op":"hello","client_id":"s","compression":["s2"]}`), compressed("s2", bytes.Repeat([]byte("s2"), 400)), data("after")), engine: 5},
		{in: cat(ctl(`{"op":"hello","client_id":"l","compression":["lz4"]}`), frame.Append(nil, frame.KindData, frame.FlagCompressed, []byte("not lz4"))), engine: 6},
		{in: cat(ctl(`{"op":"nope"}`), hello, ctl(`[1,2]`)), engine: 7},
		{in: cat(frame.Append(nil, frame.KindPing, 0, []byte("p")), data("d"), frame.Append(nil, frame.KindHeartbeat, 0, nil),
			frame.Append(nil, 0x77, 0, nil), frame.Append(nil, frame.KindData, 0x10, nil)), cuts: []byte{3, 0x85, 1, 0x20}},
		{in: cat(data("before"), frame.Append(nil, frame.KindDisconnect, 0, []byte("bye")), data("after")), engine: 1},
		{in: []byte("hello\r\nworld\n"), cuts: byteByByte, engine: 2},
		{in: []byte("partial line"), engine: 3},
		{in: []byte("MS\nMSGI\n"), engine: 4},
		{in: []byte("MS")},
		{in: []byte("MSGI\x00\x00")},
		{in: []byte("MSGI\x00\x01\x00"), engine: 5},
		{in: cat(data("x"), oversized), cuts: []byte{0x8b, 0x82, 0x83}},
		{in: cat(data("x"), short), engine: 6},
		{in: cat(data("x"), badMagic), engine: 7},
		{in: bytes.Repeat([]byte("y"), smallLimit+2)},
		{in: cat(bytes.Repeat([]byte("y"), smallLimit), []byte("\r\nok\n")), cuts: []byte{0xbf, 0x81, 0x3f}, engine: 1},
		// Headers alone: their payloads are completed in pieces.
		{in: frame.AppendHeader(nil, frame.KindData, 0, 100<<10), cuts: []byte{0xbf, 0xff, 0xc1}, engine: 4},
		{in: frame.AppendHeader(nil, frame.KindPing, 0, 70<<10), cuts: []byte{0x3f, 0x3f, 0x3f}, engine: 6},
		// A line of exactly the limit whose "\r" and "\n" arrive apart.
		{in: cat(bytes.Repeat([]byte("y"), smallLimit), []byte("\r\nok\n")), cuts: []byte{0xa7, 0x80}, engine: 2},
		// Floods of small frames, each answered or refused.
		{in: bytes.Repeat(ctl("x"), 100), engine: 0},
		{in: bytes.Repeat(ctl(`{"op":"hello","client_id":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","features":["request","x","y"]}`), 100), engine: 1},
		{in: bytes.Repeat(frame.Append(nil, 0x77, 0, nil), 100), engine: 2},
		{in: cat(ctl(`{"op":"hello","client_id":"r","features":["request"]}`), bytes.Repeat(frame.Append(nil, frame.KindData, frame.FlagRequest, []byte("x")), 100)), engine: 3},
		{in: cat(ctl(`{"op":"hello","client_id":"r","features":["request"]}`), bytes.Repeat(frame.Append(nil, frame.KindData, frame.FlagRequest, []byte("12345678")), 100)), engine: 3},
		{in: cat(ctl(`{"op":"hello","client_id":"r","compression":["zstd"]}`), bytes.Repeat(frame.Append(nil, frame.KindData, frame.FlagCompressed, []byte("x")), 100)), engine: 3},
		{in: cat(ctl(`{"op":"hello","client_id":"r","compression":["lz4"]}`), bytes.Repeat(frame.Append(nil, frame.KindData, frame.FlagCompressed, []byte("xxxxxxxxxxxx")), 100)), engine: 1},
		{in: bytes.Repeat([]byte("\n"), 200), engine: 0},
		{in: bytes.Repeat(frame.Append(nil, frame.KindPing, 0, nil), 100), engine: 0},
		{in: bytes.Repeat(frame.Append(nil, frame.KindData, 0, nil), 100), engine: 1},
		// A 128 KiB frame in 16 pieces, each a burst of its own.
		{in: frame.AppendHeader(nil, frame.KindData, 0, 128<<10), cuts: bytes.Repeat([]byte{0xff}, 15), engine: 4},
	}
	return seeds
}
