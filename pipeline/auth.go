package pipeline

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
)

// ChallengeSize is the length of the nonce NewChallenge returns.
const ChallengeSize = 32

// AuthMACSize is the length of an AuthResponse: an HMAC-SHA256 tag.
const AuthMACSize = sha256.Size

// NewChallenge returns ChallengeSize random bytes from crypto/rand, which
// the server sends to a client and later passes to VerifyAuth. A challenge
// must be used for one authentication attempt only.
func NewChallenge() ([]byte, error) {
	b := make([]byte, ChallengeSize)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return b, nil
}

// authLabel separates challenge-response MACs from other uses of HMAC.
const authLabel = "msgnet v1 auth\x00"

// AuthResponse is the client's answer to a challenge: HMAC-SHA256 under
// key of
//
//	"msgnet v1 auth\x00" || u64(len(nonce)) || nonce || u64(len(clientID)) || clientID
//
// with big-endian lengths. Prefixing both lengths makes the encoding
// injective: no two (nonce, clientID) pairs give the same MAC input.
//
// Use a key for authentication that is not also used with Sign: Sign MACs
// arbitrary messages, and a signed message could be crafted to equal an
// authentication MAC input.
func AuthResponse(key, nonce []byte, clientID string) []byte {
	m := hmac.New(sha256.New, key)
	var n [8]byte
	m.Write([]byte(authLabel))
	binary.BigEndian.PutUint64(n[:], uint64(len(nonce)))
	m.Write(n[:])
	m.Write(nonce)
	binary.BigEndian.PutUint64(n[:], uint64(len(clientID)))
	m.Write(n[:])
	m.Write([]byte(clientID))
	return m.Sum(nil)
}

// VerifyAuth reports whether mac is AuthResponse(key, nonce, clientID),
// comparing in constant time. It refuses an empty key, with which anyone
// could compute the response.
func VerifyAuth(key, nonce []byte, clientID string, mac []byte) bool {
	if len(key) == 0 {
		return false
	}
	return hmac.Equal(AuthResponse(key, nonce, clientID), mac)
}

// signSep separates a signed message from its signature.
const signSep = '|'

// signedLen is the length of the padded base64 signature Sign appends.
const signedLen = (sha256.Size + 2) / 3 * 4

// Sign returns message followed by "|" and the standard (padded) base64
// encoding of HMAC-SHA256(key, message): the text format the original C++
// implementation used, so values it signed verify here and vice versa.
// The message may itself contain "|". Verify refuses values signed with
// an empty key.
func Sign(key, message []byte) []byte {
	out := make([]byte, 0, len(message)+1+signedLen)
	out = append(out, message...)
	out = append(out, signSep)
	return base64.StdEncoding.AppendEncode(out, macOf(key, message))
}

// Verify checks a value produced by Sign. It returns the message (a
// subslice of signed) and true when the signature matches key, comparing
// in constant time; otherwise nil and false. Unlike the original, which
// compared with ==, Verify leaks nothing through timing. Only the exact
// encoding Sign produces is accepted. It refuses an empty key.
func Verify(key, signed []byte) (message []byte, ok bool) {
	i := bytes.LastIndexByte(signed, signSep)
	if i < 0 || len(key) == 0 {
		return nil, false
	}
	message, sig := signed[:i], signed[i+1:]
	var want [signedLen]byte
	base64.StdEncoding.Encode(want[:], macOf(key, message))
	if !hmac.Equal(want[:], sig) {
		return nil, false
	}
	return message, true
}

func macOf(key, message []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(message)
	return m.Sum(nil)
}
