// Package pipeline provides msgnet's payload transforms: compression
// codecs, AEAD encryption for deployments without TLS, challenge-response
// authentication and signing helpers, and a user-extensible filter chain.
//
// The package is self-contained: it knows the frame flag bits
// (frame.FlagCompressed, frame.FlagEncrypted) but not connections or the
// handshake. Connection code negotiates extensions by name, builds the
// primitives from the result and runs DATA payloads through them, either
// stage by stage or with a Pipeline.
//
// # Order of the stages
//
// Sending:   user filters (Chain.Outbound) → compression → encryption.
// Receiving: decryption → decompression → user filters (Chain.Inbound,
// last filter first).
//
// Compression comes before encryption because ciphertext does not
// compress. Note that compressing secrets together with attacker-chosen
// data before encrypting can leak the secrets through the ciphertext
// length (the CRIME/BREACH attacks); leave compression off for such
// traffic.
//
// # Compression
//
// Each Compressor has a name that is its negotiation token: "zstd", "s2",
// "snappy" and "lz4". The client sends its preference list, the server
// picks with Negotiate, and both look the codec up:
//
//	name := pipeline.Negotiate(pipeline.Codecs(), hello.Compression) // server
//	c, ok := pipeline.CompressorByName(name)                         // both
//
//	out, compressed, err := pipeline.MaybeCompress(c, buf[:0], payload, 512)
//	if compressed {
//		flags |= frame.FlagCompressed
//	}
//
//	payload, err = c.Decompress(buf[:0], payload, maxPayload) // on receipt
//
// Decompress enforces a limit on the output, so a decompression bomb fails
// with ErrTooLarge. Allocation is bounded by the limit too: nothing is
// allocated for input that declares a size above it, and at most a small
// multiple of it for input that hides or misstates its size (details at
// the Codec constants).
//
// # Encryption
//
// With a pre-shared key and one random nonce from each side (NewNonce,
// exchanged in hello and welcome), each peer derives a Sealer for what it
// sends and an Opener for what it receives:
//
//	seal, open, err := pipeline.NewSessionKeys(psk, clientNonce, serverNonce,
//		pipeline.SuiteChaCha20Poly1305, pipeline.RoleServer)
//
//	flags |= frame.FlagEncrypted
//	sealed, err := seal.Seal(buf[:0], uint16(flags)<<8|uint16(kind), payload)
//
//	plain, err := open.Open(buf[:0], frameType, sealed)
//
// Nonces are per-direction frame counters that are never sent, so a frame
// that was replayed, reordered, dropped or modified fails to open, and the
// frame type is authenticated. After one failure the Opener refuses
// everything; the connection must be closed.
//
// # Authentication
//
// NewChallenge, AuthResponse and VerifyAuth implement an HMAC-SHA256
// challenge-response; Sign and Verify sign text values in the original
// implementation's "message|base64(HMAC)" format.
//
// # Filters
//
// A Filter transforms payloads in both directions; a Chain runs several.
// Funcs turns functions into a Filter and LogFilter is a ready-made one.
package pipeline
