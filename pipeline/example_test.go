package pipeline_test

import (
	"bytes"
	"fmt"
	"log"

	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/pipeline"
)

// A server and a client agree on extensions in the handshake, then carry a
// DATA payload through their Pipelines.
func Example() {
	psk := []byte("a 32-byte pre-shared key, random")

	// hello: the client's preferences and nonce.
	clientCodecs := []string{"lz4", "zstd"}
	clientSuites := pipeline.Suites()
	clientNonce, _ := pipeline.NewNonce()

	// welcome: the server's choices and nonce.
	codec := pipeline.Negotiate(pipeline.Codecs(), clientCodecs)
	suite := pipeline.Negotiate(pipeline.Suites(), clientSuites)
	serverNonce, _ := pipeline.NewNonce()
	fmt.Println("negotiated:", codec, suite)

	// Both sides build their Pipeline from the result.
	build := func(role pipeline.Role) *pipeline.Pipeline {
		c, _ := pipeline.CompressorByName(codec)
		seal, open, err := pipeline.NewSessionKeys(psk, clientNonce, serverNonce, suite, role)
		if err != nil {
			log.Fatal(err)
		}
		return &pipeline.Pipeline{Compressor: c, Threshold: 256, Sealer: seal, Opener: open}
	}
	client, server := build(pipeline.RoleClient), build(pipeline.RoleServer)

	msg := bytes.Repeat([]byte(`{"event":"typing","user":"alice"}`), 20)
	payload, flags, err := client.Outbound(nil, frame.KindData, 0, msg)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("compressed:", flags&frame.FlagCompressed != 0, "encrypted:", flags&frame.FlagEncrypted != 0)
	wire := frame.Append(nil, frame.KindData, flags, payload)

	f := frame.Decode(wire)
	got, err := server.Inbound(nil, f.Kind, f.Flags, f.Payload)
	fmt.Println(bytes.Equal(got, msg), err)
	// Output:
	// negotiated: lz4 chacha20-poly1305
	// compressed: true encrypted: true
	// true <nil>
}

func ExampleNegotiate() {
	server := []string{"zstd", "s2"}
	fmt.Printf("%q\n", pipeline.Negotiate(server, []string{"lz4", "s2", "zstd"}))
	fmt.Printf("%q\n", pipeline.Negotiate(server, []string{"snappy"}))
	// Output:
	// "s2"
	// ""
}

func ExampleMaybeCompress() {
	c, _ := pipeline.CompressorByName(pipeline.CodecZstd)
	payload := bytes.Repeat([]byte("hello "), 200)

	out, compressed, err := pipeline.MaybeCompress(c, nil, payload, 512)
	fmt.Println(compressed, len(out) < len(payload), err)

	out, compressed, _ = pipeline.MaybeCompress(c, nil, payload[:100], 512)
	fmt.Println(compressed, len(out)) // below the threshold: sent as is

	back, err := c.Decompress(nil, mustCompress(c, payload), frame.DefaultMaxPayload)
	fmt.Println(bytes.Equal(back, payload), err)
	// Output:
	// true true <nil>
	// false 100
	// true <nil>
}

func mustCompress(c pipeline.Compressor, p []byte) []byte {
	out, err := c.Compress(nil, p)
	if err != nil {
		log.Fatal(err)
	}
	return out
}

func ExampleNewSessionKeys() {
	psk := []byte("a 32-byte pre-shared key, random")
	cn, _ := pipeline.NewNonce()
	sn, _ := pipeline.NewNonce()
	clientSeal, _, _ := pipeline.NewSessionKeys(psk, cn, sn, pipeline.SuiteAES256GCM, pipeline.RoleClient)
	_, serverOpen, _ := pipeline.NewSessionKeys(psk, cn, sn, pipeline.SuiteAES256GCM, pipeline.RoleServer)

	typ := uint16(frame.FlagEncrypted)<<8 | uint16(frame.KindData)
	first, _ := clientSeal.Seal(nil, typ, []byte("first"))
	second, _ := clientSeal.Seal(nil, typ, []byte("second"))

	pt, err := serverOpen.Open(nil, typ, first)
	fmt.Printf("%s %v\n", pt, err)
	_, err = serverOpen.Open(nil, typ, first) // replayed
	fmt.Println(err)
	_, err = serverOpen.Open(nil, typ, second) // the Opener is dead now
	fmt.Println(err)
	// Output:
	// first <nil>
	// pipeline: payload failed to decrypt
	// pipeline: payload failed to decrypt
}

func ExampleVerifyAuth() {
	key := []byte("per-client secret")
	nonce, _ := pipeline.NewChallenge()               // server -> client
	mac := pipeline.AuthResponse(key, nonce, "alice") // client -> server
	fmt.Println(pipeline.VerifyAuth(key, nonce, "alice", mac))
	fmt.Println(pipeline.VerifyAuth(key, nonce, "mallory", mac))
	// Output:
	// true
	// false
}

func ExampleSign() {
	signed := pipeline.Sign([]byte("Jefe"), []byte("what do ya want for nothing?"))
	fmt.Printf("%s\n", signed)
	msg, ok := pipeline.Verify([]byte("Jefe"), signed)
	fmt.Printf("%s %v\n", msg, ok)
	// Output:
	// what do ya want for nothing?|W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=
	// what do ya want for nothing? true
}

func ExampleChain() {
	upper := pipeline.Funcs(
		func(dst, p []byte) ([]byte, error) { return append(dst, bytes.ToUpper(p)...), nil },
		nil, // nothing to undo on the way in
	)
	exclaim := pipeline.Funcs(
		func(dst, p []byte) ([]byte, error) { return append(append(dst, p...), '!'), nil },
		func(dst, p []byte) ([]byte, error) { return append(dst, bytes.TrimSuffix(p, []byte("!"))...), nil },
	)
	chain := pipeline.Chain{upper, exclaim} // out: upper, then exclaim
	out, _ := chain.Outbound(nil, []byte("hello"))
	fmt.Printf("%s\n", out)
	in, _ := chain.Inbound(nil, out) // in: exclaim, then upper
	fmt.Printf("%s\n", in)
	// Output:
	// HELLO!
	// HELLO
}
