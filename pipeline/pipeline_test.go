package pipeline

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/msgnet/msgnet/frame"
)

// pipelines returns a client and a server Pipeline configured alike.
func pipelines(t testing.TB, filters Chain, codec string, suite string) (client, server *Pipeline) {
	t.Helper()
	client, server = &Pipeline{Filters: filters, Threshold: 64}, &Pipeline{Filters: filters, Threshold: 64}
	if codec != "" {
		c, ok := CompressorByName(codec)
		if !ok {
			t.Fatal(codec)
		}
		client.Compressor, server.Compressor = c, c
	}
	if suite != "" {
		s := newSession(t, suite)
		client.Sealer, client.Opener = s.clientSeal, s.clientOpen
		server.Sealer, server.Opener = s.serverSeal, s.serverOpen
	}
	return client, server
}

func TestPipelineRoundTrip(t *testing.T) {
	msgs := [][]byte{{}, []byte("tiny"), jsonish(5000, 1), randomBytes(3000, 2), jsonish(200_000, 3)}
	for _, filters := range []Chain{nil, {xorFilter(0x55)}, {xorFilter(1), markFilter2('m')}} {
		for _, codec := range append([]string{""}, Codecs()...) {
			for _, suite := range append([]string{""}, Suites()...) {
				name := fmt.Sprintf("filters=%d/codec=%q/suite=%q", len(filters), codec, suite)
				t.Run(name, func(t *testing.T) {
					client, server := pipelines(t, filters, codec, suite)
					for i, m := range msgs {
						flags := frame.Flags(0)
						if i%2 == 1 {
							flags = frame.FlagRequest
						}
						wire, fl, err := client.Outbound([]byte("hdr"), frame.KindData, flags, m)
						if err != nil {
							t.Fatalf("msg %d: Outbound: %v", i, err)
						}
						if !bytes.HasPrefix(wire, []byte("hdr")) {
							t.Fatalf("msg %d: Outbound did not append", i)
						}
						wire = wire[3:]
						if fl&frame.FlagRequest != flags&frame.FlagRequest {
							t.Fatalf("msg %d: caller's flag lost: %v", i, fl)
						}
						if got := fl&frame.FlagEncrypted != 0; got != (suite != "") {
							t.Fatalf("msg %d: encrypted flag %v with suite %q", i, got, suite)
						}
						compressed := fl&frame.FlagCompressed != 0
						if compressed && codec == "" {
							t.Fatalf("msg %d: compressed without a codec", i)
						}
						// JSON text above the threshold must compress; random
						// bytes and payloads below it must not.
						isText := i == 2 || i == 4
						if codec != "" && compressed != isText {
							t.Fatalf("msg %d: compressed = %v", i, compressed)
						}
						if suite == "" && !compressed && len(filters) == 0 && !bytes.Equal(wire, m) {
							t.Fatalf("msg %d: untransformed payload changed", i)
						}
						back, err := server.Inbound([]byte("in"), frame.KindData, fl, wire)
						if err != nil || !bytes.Equal(back, append([]byte("in"), m...)) {
							t.Fatalf("msg %d: Inbound: %v (got %d bytes, want %d)", i, err, len(back)-2, len(m))
						}
						// And the other direction.
						wire, fl, err = server.Outbound(nil, frame.KindData, flags, m)
						if err != nil {
							t.Fatal(err)
						}
						if back, err = client.Inbound(nil, frame.KindData, fl, wire); err != nil || !bytes.Equal(back, m) {
							t.Fatalf("msg %d: client Inbound: %v", i, err)
						}
					}
				})
			}
		}
	}
}

func TestPipelineIgnoresCallerExtensionFlags(t *testing.T) {
	p := &Pipeline{}
	out, fl, err := p.Outbound(nil, frame.KindData, frame.FlagCompressed|frame.FlagEncrypted|frame.FlagReply, []byte("x"))
	if err != nil || string(out) != "x" || fl != frame.FlagReply {
		t.Fatalf("Outbound = %q, %v, %v", out, fl, err)
	}
}

func TestPipelineFlagMismatch(t *testing.T) {
	plain := &Pipeline{}
	zstdOnly, _ := pipelines(t, nil, CodecZstd, "")
	_, encrypted := pipelines(t, nil, "", SuiteChaCha20Poly1305)
	tests := []struct {
		name  string
		p     *Pipeline
		flags frame.Flags
		want  error
	}{
		{"compressed without codec", plain, frame.FlagCompressed, ErrNotNegotiated},
		{"encrypted without keys", plain, frame.FlagEncrypted, ErrNotNegotiated},
		{"encrypted without keys, codec on", zstdOnly, frame.FlagEncrypted | frame.FlagCompressed, ErrNotNegotiated},
		{"plaintext on encrypted connection", encrypted, 0, ErrNotEncrypted},
		{"compressed plaintext on encrypted connection", encrypted, frame.FlagCompressed, ErrNotNegotiated},
	}
	for _, tt := range tests {
		out, err := tt.p.Inbound([]byte("d"), frame.KindData, tt.flags, []byte("payload"))
		if !errors.Is(err, tt.want) || string(out) != "d" {
			t.Errorf("%s: Inbound = %q, %v; want %v", tt.name, out, err, tt.want)
		}
	}
}

// The AEAD binds the final flags: clearing the compressed bit of an
// encrypted frame in transit is detected, and the connection is dead.
func TestPipelineFlagsAuthenticated(t *testing.T) {
	client, server := pipelines(t, nil, CodecS2, SuiteAES256GCM)
	m := jsonish(4000, 5)
	wire, fl, err := client.Outbound(nil, frame.KindData, 0, m)
	if err != nil || fl != frame.FlagCompressed|frame.FlagEncrypted {
		t.Fatalf("Outbound flags %v, %v", fl, err)
	}
	for _, bad := range []struct {
		kind  frame.Kind
		flags frame.Flags
	}{{frame.KindData, fl | frame.FlagReply}, {frame.KindControl, fl}} {
		_, server := pipelines(t, nil, CodecS2, SuiteAES256GCM)
		if _, err := server.Inbound(nil, bad.kind, bad.flags, wire); !errors.Is(err, ErrDecrypt) {
			t.Errorf("kind %v flags %v: err = %v, want ErrDecrypt", bad.kind, bad.flags, err)
		}
	}
	if _, err := server.Inbound(nil, frame.KindData, fl, wire); err != nil {
		t.Fatal(err)
	}
}

func TestPipelineDecompressLimit(t *testing.T) {
	client, server := pipelines(t, nil, CodecLZ4, SuiteChaCha20Poly1305)
	m := bytes.Repeat([]byte("a"), 10_000)
	wire, fl, err := client.Outbound(nil, frame.KindData, 0, m)
	if err != nil || fl&frame.FlagCompressed == 0 {
		t.Fatal(err, fl)
	}
	server.MaxPayload = 9_999
	if _, err := server.Inbound(nil, frame.KindData, fl, wire); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}

	// The zero MaxPayload means frame.DefaultMaxPayload.
	p := &Pipeline{Compressor: client.Compressor}
	big, _ := client.Compressor.Compress(nil, make([]byte, frame.DefaultMaxPayload+1))
	if _, err := p.Inbound(nil, frame.KindData, frame.FlagCompressed, big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("default limit: err = %v, want ErrTooLarge", err)
	}
	ok, _ := client.Compressor.Compress(nil, make([]byte, frame.DefaultMaxPayload))
	if out, err := p.Inbound(nil, frame.KindData, frame.FlagCompressed, ok); err != nil || len(out) != frame.DefaultMaxPayload {
		t.Fatalf("default limit, exactly at it: %v", err)
	}
}

func TestPipelineFilterError(t *testing.T) {
	boom := errors.New("boom")
	fail := Funcs(nil, func(dst, p []byte) ([]byte, error) { return dst, boom })
	client, server := pipelines(t, Chain{fail}, CodecZstd, SuiteChaCha20Poly1305)
	wire, fl, err := client.Outbound(nil, frame.KindData, 0, jsonish(1000, 1))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := server.Inbound([]byte("d"), frame.KindData, fl, wire); !errors.Is(err, boom) || string(out) != "d" {
		t.Fatalf("Inbound = %q, %v", out, err)
	}
}

func TestPipelineSteadyStateNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	client, server := pipelines(t, Chain{xorFilter(3)}, CodecS2, SuiteChaCha20Poly1305)
	m := jsonish(16<<10, 6)
	wireBuf := make([]byte, 0, 32<<10)
	outBuf := make([]byte, 0, 32<<10)
	allocs := testing.AllocsPerRun(100, func() {
		wire, fl, err := client.Outbound(wireBuf, frame.KindData, 0, m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := server.Inbound(outBuf, frame.KindData, fl, wire); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Outbound+Inbound allocated %.1f times per message", allocs)
	}
}
