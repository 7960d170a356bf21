package pipeline

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math"

	"golang.org/x/crypto/chacha20poly1305"
)

// AEAD suite names: the tokens peers exchange in the handshake to agree on
// payload encryption.
const (
	SuiteChaCha20Poly1305 = "chacha20-poly1305" // RFC 8439
	SuiteAES256GCM        = "aes-256-gcm"       // NIST SP 800-38D, 256-bit key
)

// HandshakeNonceSize is the length of the random nonce each peer
// contributes to key derivation (see NewSessionKeys and NewNonce).
const HandshakeNonceSize = 32

// MinPSKSize is the shortest pre-shared key NewSessionKeys accepts. The key
// should be uniformly random; HKDF does not make a guessable password safe.
const MinPSKSize = 16

// Overhead is the number of bytes Seal adds to a payload: the 16-byte
// authentication tag of either suite. The nonce is never sent.
const Overhead = 16

// Errors returned by the AEAD layer.
var (
	// ErrDecrypt: a payload failed to authenticate. It was tampered with,
	// replayed, reordered, preceded by a dropped frame, sealed with another
	// key, or is too short to hold a tag. The Opener is dead afterwards.
	ErrDecrypt = errors.New("pipeline: payload failed to decrypt")
	// ErrCounterExhausted: a direction used all 2^64-1 nonces of its key;
	// the connection must be closed (or re-keyed with a new handshake).
	ErrCounterExhausted = errors.New("pipeline: AEAD frame counter exhausted")
	// ErrUnknownSuite: the suite name is not one of Suites.
	ErrUnknownSuite = errors.New("pipeline: unknown AEAD suite")
	// ErrBadKeyMaterial: the pre-shared key is shorter than MinPSKSize or
	// a handshake nonce is not HandshakeNonceSize bytes.
	ErrBadKeyMaterial = errors.New("pipeline: bad key material")
)

// Role says which end of a connection a Sealer/Opener pair belongs to.
type Role uint8

// The two roles. The client seals with the client-to-server key and opens
// with the server-to-client key; the server does the opposite.
const (
	RoleClient Role = 1
	RoleServer Role = 2
)

// Suites returns the supported AEAD suite names in this package's default
// order of preference. ChaCha20-Poly1305 comes first: it is fast everywhere,
// while AES-GCM is only fast with hardware support (on amd64 and arm64 it
// usually is, and a deployment may prefer it). The slice is freshly
// allocated.
func Suites() []string {
	return []string{SuiteChaCha20Poly1305, SuiteAES256GCM}
}

// NewNonce returns HandshakeNonceSize bytes from crypto/rand, for a peer's
// contribution to NewSessionKeys.
func NewNonce() ([]byte, error) {
	b := make([]byte, HandshakeNonceSize)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return b, nil
}

// HKDF info labels, one per direction; the suite name is appended so that
// keys for different suites are unrelated.
const (
	labelClientToServer = "msgnet v1 payload key client->server "
	labelServerToClient = "msgnet v1 payload key server->client "
)

// NewSessionKeys derives the two directional keys of a connection and
// returns the Sealer for frames this end sends and the Opener for frames
// it receives.
//
// Both peers call it with the same psk, clientNonce and serverNonce (each
// HandshakeNonceSize random bytes, exchanged in the hello/welcome
// handshake) and suite, and with their own role. Each key is
//
//	HKDF-SHA256(secret = psk, salt = clientNonce || serverNonce,
//	            info = "msgnet v1 payload key client->server " + suite)
//
// (or "server->client"), 32 bytes. Fresh nonces make every connection's
// keys unique, so the per-direction frame counters that serve as AEAD
// nonces never repeat under one key.
func NewSessionKeys(psk, clientNonce, serverNonce []byte, suite string, role Role) (*Sealer, *Opener, error) {
	if len(psk) < MinPSKSize || len(clientNonce) != HandshakeNonceSize || len(serverNonce) != HandshakeNonceSize {
		return nil, nil, ErrBadKeyMaterial
	}
	if suite != SuiteChaCha20Poly1305 && suite != SuiteAES256GCM {
		return nil, nil, ErrUnknownSuite
	}
	var outLabel, inLabel string
	switch role {
	case RoleClient:
		outLabel, inLabel = labelClientToServer, labelServerToClient
	case RoleServer:
		outLabel, inLabel = labelServerToClient, labelClientToServer
	default:
		return nil, nil, errors.New("pipeline: invalid role")
	}
	salt := make([]byte, 0, 2*HandshakeNonceSize)
	salt = append(append(salt, clientNonce...), serverNonce...)
	out, err := newAEAD(psk, salt, outLabel+suite, suite)
	if err != nil {
		return nil, nil, err
	}
	in, err := newAEAD(psk, salt, inLabel+suite, suite)
	if err != nil {
		return nil, nil, err
	}
	return &Sealer{aead: out}, &Opener{aead: in}, nil
}

func newAEAD(psk, salt []byte, info, suite string) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, psk, salt, info, 32)
	if err != nil {
		return nil, err
	}
	if suite == SuiteChaCha20Poly1305 {
		return chacha20poly1305.New(key)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// counterNonce holds the 12-byte AEAD nonce: four zero bytes, then the
// frame counter big-endian. Keys differ per direction, so the directions
// need no nonce prefix of their own.
type counterNonce struct {
	next uint64
	buf  [12]byte
	aad  [2]byte // scratch for the frame type, kept here to avoid allocating
}

// advance sets buf and aad for the next frame of type typ and moves the
// counter on. The last counter value is never used, so exhaustion is
// detected without wrapping.
func (c *counterNonce) advance(typ uint16) bool {
	if c.next == math.MaxUint64 {
		return false
	}
	binary.BigEndian.PutUint64(c.buf[4:], c.next)
	binary.BigEndian.PutUint16(c.aad[:], typ)
	c.next++
	return true
}

// A Sealer encrypts the payloads one end sends, in order. It is not safe
// for concurrent use, and payloads must be written to the connection in
// the order they were sealed: the receiver counts frames to know each
// nonce.
type Sealer struct {
	aead cipher.AEAD
	n    counterNonce
}

// Seal appends the encryption of plaintext to dst (len(plaintext)+Overhead
// bytes) and returns the extended slice. typ is the frame's 16-bit type
// field exactly as it is sent, flags (including frame.FlagEncrypted) in the
// high byte and kind in the low byte; it is authenticated, so neither can
// be changed in transit. Seal allocates nothing when dst has room. To seal
// in place, pass plaintext[:0] as dst. After 2^64-1 frames Seal returns
// ErrCounterExhausted.
func (s *Sealer) Seal(dst []byte, typ uint16, plaintext []byte) ([]byte, error) {
	if !s.n.advance(typ) {
		return dst, ErrCounterExhausted
	}
	return s.aead.Seal(dst, s.n.buf[:], plaintext, s.n.aad[:]), nil
}

// Overhead returns the number of bytes Seal adds, Overhead.
func (s *Sealer) Overhead() int { return s.aead.Overhead() }

// An Opener decrypts the payloads one end receives, in the order they
// arrive. It is not safe for concurrent use.
//
// The first payload that fails to open kills the Opener: the stream can no
// longer be trusted (and the counters are out of step), so every later
// Open returns ErrDecrypt too, and the connection should be closed.
type Opener struct {
	aead cipher.AEAD
	n    counterNonce
	dead bool
}

// Open authenticates and decrypts ciphertext, a payload produced by the
// peer's Seal, appends the plaintext to dst and returns the extended slice.
// typ is the frame's type field as received. Open fails with ErrDecrypt
// unless ciphertext is the next payload the peer sealed, unmodified, with
// the same typ. It allocates nothing when dst has room; to open in place
// pass ciphertext[:0] as dst.
func (o *Opener) Open(dst []byte, typ uint16, ciphertext []byte) ([]byte, error) {
	if o.dead {
		return dst, ErrDecrypt
	}
	if !o.n.advance(typ) {
		o.dead = true
		return dst, ErrCounterExhausted
	}
	out, err := o.aead.Open(dst, o.n.buf[:], ciphertext, o.n.aad[:])
	if err != nil {
		o.dead = true
		return dst, ErrDecrypt
	}
	return out, nil
}

// Dead reports whether an Open has failed, after which every Open fails.
func (o *Opener) Dead() bool { return o.dead }
