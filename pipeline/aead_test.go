package pipeline

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"math"
	"slices"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/msgnet/msgnet/frame"
)

var (
	testPSK         = []byte("0123456789abcdef0123456789abcdef")
	testClientNonce = bytes.Repeat([]byte{0xc1}, HandshakeNonceSize)
	testServerNonce = bytes.Repeat([]byte{0x5e}, HandshakeNonceSize)
)

// dataType is the type field of an encrypted DATA frame.
const dataType = uint16(frame.FlagEncrypted)<<8 | uint16(frame.KindData)

type session struct {
	clientSeal *Sealer
	clientOpen *Opener
	serverSeal *Sealer
	serverOpen *Opener
}

func newSession(t testing.TB, suite string) session {
	t.Helper()
	var s session
	var err error
	s.clientSeal, s.clientOpen, err = NewSessionKeys(testPSK, testClientNonce, testServerNonce, suite, RoleClient)
	if err != nil {
		t.Fatal(err)
	}
	s.serverSeal, s.serverOpen, err = NewSessionKeys(testPSK, testClientNonce, testServerNonce, suite, RoleServer)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func seal(t testing.TB, s *Sealer, typ uint16, p []byte) []byte {
	t.Helper()
	ct, err := s.Seal(nil, typ, p)
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

// mustFail checks that o refuses ct, and then also refuses a payload that
// would otherwise be valid.
func mustFail(t *testing.T, o *Opener, typ uint16, ct []byte, valid []byte) {
	t.Helper()
	if out, err := o.Open(nil, typ, ct); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("Open = %q, %v; want ErrDecrypt", out, err)
	}
	if !o.Dead() {
		t.Fatal("Opener not dead after a failure")
	}
	if valid != nil {
		if _, err := o.Open(nil, dataType, valid); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("dead Opener: Open = %v; want ErrDecrypt", err)
		}
	}
}

func forEachSuite(t *testing.T, f func(t *testing.T, suite string)) {
	for _, suite := range Suites() {
		t.Run(suite, func(t *testing.T) { f(t, suite) })
	}
}

func TestAEADRoundTrip(t *testing.T) {
	forEachSuite(t, func(t *testing.T, suite string) {
		s := newSession(t, suite)
		msgs := [][]byte{{}, []byte("hello"), jsonish(1000, 1), randomBytes(70_000, 2)}
		for i, m := range msgs {
			typ := dataType
			if i%2 == 1 {
				typ |= uint16(frame.FlagRequest) << 8
			}
			// client -> server
			ct := seal(t, s.clientSeal, typ, m)
			if len(ct) != len(m)+Overhead || s.clientSeal.Overhead() != Overhead {
				t.Fatalf("sealed %d bytes into %d", len(m), len(ct))
			}
			if len(m) > 16 && bytes.Contains(ct, m[:16]) {
				t.Fatal("ciphertext contains plaintext")
			}
			prefix := []byte("prefix")
			pt, err := s.serverOpen.Open(slices.Clone(prefix), typ, ct)
			if err != nil || !bytes.Equal(pt, append(slices.Clone(prefix), m...)) {
				t.Fatalf("server Open #%d: %v", i, err)
			}
			// server -> client, in place
			ct = seal(t, s.serverSeal, typ, m)
			pt, err = s.clientOpen.Open(ct[:0], typ, ct)
			if err != nil || !bytes.Equal(pt, m) {
				t.Fatalf("client Open #%d: %v", i, err)
			}
		}
	})
}

func TestAEADSealInPlace(t *testing.T) {
	s := newSession(t, SuiteChaCha20Poly1305)
	m := jsonish(500, 3)
	buf := slices.Grow(slices.Clone(m), Overhead)
	ct, err := s.clientSeal.Seal(buf[:0], dataType, buf)
	if err != nil || len(ct) != len(m)+Overhead || &ct[0] != &buf[:1][0] {
		t.Fatalf("in-place Seal: %d bytes, err %v, in place %v", len(ct), err, &ct[0] == &buf[:1][0])
	}
	pt, err := s.serverOpen.Open(ct[:0], dataType, ct)
	if err != nil || !bytes.Equal(pt, m) || &pt[0] != &ct[0] {
		t.Fatalf("in-place Open: %v", err)
	}
}

func TestAEADTamperedCiphertext(t *testing.T) {
	forEachSuite(t, func(t *testing.T, suite string) {
		m := []byte("transfer 100 coins to bob")
		for _, i := range []int{0, 5, len(m) - 1, len(m), len(m) + Overhead - 1} {
			s := newSession(t, suite)
			ct := seal(t, s.clientSeal, dataType, m)
			next := seal(t, s.clientSeal, dataType, m)
			ct[i] ^= 0x01
			mustFail(t, s.serverOpen, dataType, ct, next)
		}
		// Truncated, extended and empty payloads.
		for _, mod := range []func([]byte) []byte{
			func(b []byte) []byte { return b[:len(b)-1] },
			func(b []byte) []byte { return append(b, 0) },
			func(b []byte) []byte { return b[:Overhead-1] },
			func(b []byte) []byte { return nil },
		} {
			s := newSession(t, suite)
			ct := mod(seal(t, s.clientSeal, dataType, m))
			mustFail(t, s.serverOpen, dataType, ct, seal(t, s.clientSeal, dataType, m))
		}
	})
}

func TestAEADTamperedType(t *testing.T) {
	forEachSuite(t, func(t *testing.T, suite string) {
		// Flip the kind, the compressed flag, or another flag.
		for _, typ := range []uint16{
			uint16(frame.FlagEncrypted)<<8 | uint16(frame.KindControl),
			dataType | uint16(frame.FlagCompressed)<<8,
			dataType | uint16(frame.FlagReply)<<8,
		} {
			s := newSession(t, suite)
			ct := seal(t, s.clientSeal, dataType, []byte("payload"))
			mustFail(t, s.serverOpen, typ, ct, seal(t, s.clientSeal, dataType, []byte("x")))
		}
	})
}

func TestAEADReplay(t *testing.T) {
	forEachSuite(t, func(t *testing.T, suite string) {
		s := newSession(t, suite)
		ct := seal(t, s.clientSeal, dataType, []byte("pay once"))
		if _, err := s.serverOpen.Open(nil, dataType, ct); err != nil {
			t.Fatal(err)
		}
		mustFail(t, s.serverOpen, dataType, ct, seal(t, s.clientSeal, dataType, []byte("x")))
	})
}

func TestAEADReordered(t *testing.T) {
	forEachSuite(t, func(t *testing.T, suite string) {
		s := newSession(t, suite)
		first := seal(t, s.clientSeal, dataType, []byte("first"))
		second := seal(t, s.clientSeal, dataType, []byte("second"))
		mustFail(t, s.serverOpen, dataType, second, first)
	})
}

func TestAEADDropped(t *testing.T) {
	forEachSuite(t, func(t *testing.T, suite string) {
		s := newSession(t, suite)
		f0 := seal(t, s.clientSeal, dataType, []byte("zero"))
		seal(t, s.clientSeal, dataType, []byte("one")) // lost
		f2 := seal(t, s.clientSeal, dataType, []byte("two"))
		if _, err := s.serverOpen.Open(nil, dataType, f0); err != nil {
			t.Fatal(err)
		}
		mustFail(t, s.serverOpen, dataType, f2, nil)
	})
}

func TestAEADWrongKeys(t *testing.T) {
	forEachSuite(t, func(t *testing.T, suite string) {
		s := newSession(t, suite)
		m := []byte("secret")
		ct := seal(t, s.clientSeal, dataType, m)

		otherPSK := slices.Clone(testPSK)
		otherPSK[0] ^= 1
		otherNonce := slices.Clone(testServerNonce)
		otherNonce[31] ^= 1
		otherSuite := SuiteAES256GCM
		if suite == otherSuite {
			otherSuite = SuiteChaCha20Poly1305
		}
		cases := []struct {
			name                string
			psk, cNonce, sNonce []byte
			suite               string
			role                Role
		}{
			{"wrong PSK", otherPSK, testClientNonce, testServerNonce, suite, RoleServer},
			{"wrong server nonce", testPSK, testClientNonce, otherNonce, suite, RoleServer},
			{"nonces swapped", testPSK, testServerNonce, testClientNonce, suite, RoleServer},
			{"other suite", testPSK, testClientNonce, testServerNonce, otherSuite, RoleServer},
			// A frame reflected back to its sender: the client opens
			// with the server-to-client key.
			{"reflected", testPSK, testClientNonce, testServerNonce, suite, RoleClient},
		}
		for _, c := range cases {
			_, open, err := NewSessionKeys(c.psk, c.cNonce, c.sNonce, c.suite, c.role)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := open.Open(nil, dataType, ct); !errors.Is(err, ErrDecrypt) {
				t.Errorf("%s: Open err = %v, want ErrDecrypt", c.name, err)
			}
		}
		// The right keys still open it.
		if pt, err := s.serverOpen.Open(nil, dataType, ct); err != nil || !bytes.Equal(pt, m) {
			t.Fatalf("right keys: %v", err)
		}
	})
}

func TestNewSessionKeysErrors(t *testing.T) {
	short := make([]byte, HandshakeNonceSize-1)
	cases := []struct {
		name                string
		psk, cNonce, sNonce []byte
		suite               string
		role                Role
		want                error
	}{
		{"short psk", testPSK[:MinPSKSize-1], testClientNonce, testServerNonce, SuiteAES256GCM, RoleClient, ErrBadKeyMaterial},
		{"short client nonce", testPSK, short, testServerNonce, SuiteAES256GCM, RoleClient, ErrBadKeyMaterial},
		{"long server nonce", testPSK, testClientNonce, append(slices.Clone(testServerNonce), 0), SuiteAES256GCM, RoleClient, ErrBadKeyMaterial},
		{"unknown suite", testPSK, testClientNonce, testServerNonce, "aes-128-gcm", RoleClient, ErrUnknownSuite},
		{"no role", testPSK, testClientNonce, testServerNonce, SuiteAES256GCM, 0, nil},
	}
	for _, c := range cases {
		s, o, err := NewSessionKeys(c.psk, c.cNonce, c.sNonce, c.suite, c.role)
		if err == nil || s != nil || o != nil || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("%s: NewSessionKeys = %v, %v, %v; want error %v", c.name, s, o, err, c.want)
		}
	}
	if _, _, err := NewSessionKeys(testPSK[:MinPSKSize], testClientNonce, testServerNonce, SuiteAES256GCM, RoleServer); err != nil {
		t.Errorf("MinPSKSize psk refused: %v", err)
	}
}

// hkdfOneBlock is RFC 5869 HKDF-SHA256 for a 32-byte output, written out
// independently of the code under test.
func hkdfOneBlock(secret, salt []byte, info string) []byte {
	ext := hmac.New(sha256.New, salt)
	ext.Write(secret)
	prk := ext.Sum(nil)
	exp := hmac.New(sha256.New, prk)
	exp.Write([]byte(info))
	exp.Write([]byte{1})
	return exp.Sum(nil)
}

// The key schedule and nonce layout are the documented ones, so another
// implementation can interoperate.
func TestAEADKnownConstruction(t *testing.T) {
	salt := append(slices.Clone(testClientNonce), testServerNonce...)
	for _, tc := range []struct {
		suite string
		aead  func(key []byte) cipher.AEAD
	}{
		{SuiteChaCha20Poly1305, func(k []byte) cipher.AEAD { a, _ := chacha20poly1305.New(k); return a }},
		{SuiteAES256GCM, func(k []byte) cipher.AEAD { b, _ := aes.NewCipher(k); a, _ := cipher.NewGCM(b); return a }},
	} {
		s := newSession(t, tc.suite)
		c2s := tc.aead(hkdfOneBlock(testPSK, salt, "msgnet v1 payload key client->server "+tc.suite))
		s2c := tc.aead(hkdfOneBlock(testPSK, salt, "msgnet v1 payload key server->client "+tc.suite))
		aad := []byte{byte(frame.FlagEncrypted), byte(frame.KindData)}
		for counter := range byte(3) {
			nonce := []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, counter}
			m := []byte{'m', counter}
			if got, want := seal(t, s.clientSeal, dataType, m), c2s.Seal(nil, nonce, m, aad); !bytes.Equal(got, want) {
				t.Fatalf("%s client frame %d: got %x, want %x", tc.suite, counter, got, want)
			}
			if got, want := seal(t, s.serverSeal, dataType, m), s2c.Seal(nil, nonce, m, aad); !bytes.Equal(got, want) {
				t.Fatalf("%s server frame %d: got %x, want %x", tc.suite, counter, got, want)
			}
		}
	}
}

func TestAEADCounterExhausted(t *testing.T) {
	forEachSuite(t, func(t *testing.T, suite string) {
		s := newSession(t, suite)
		s.clientSeal.n.next = math.MaxUint64 - 1
		s.serverOpen.n.next = math.MaxUint64 - 1
		ct := seal(t, s.clientSeal, dataType, []byte("last"))
		if pt, err := s.serverOpen.Open(nil, dataType, ct); err != nil || string(pt) != "last" {
			t.Fatalf("last frame: %q, %v", pt, err)
		}
		for range 2 {
			if out, err := s.clientSeal.Seal([]byte("dst"), dataType, []byte("more")); !errors.Is(err, ErrCounterExhausted) || string(out) != "dst" {
				t.Fatalf("Seal after exhaustion = %q, %v", out, err)
			}
		}
		if _, err := s.serverOpen.Open(nil, dataType, ct); !errors.Is(err, ErrCounterExhausted) {
			t.Fatalf("Open after exhaustion: %v", err)
		}
		if _, err := s.serverOpen.Open(nil, dataType, ct); err == nil {
			t.Fatal("Open succeeded after exhaustion")
		}
	})
}

func TestAEADNoAllocs(t *testing.T) {
	forEachSuite(t, func(t *testing.T, suite string) {
		s := newSession(t, suite)
		m := jsonish(1024, 4)
		ctBuf := make([]byte, 0, len(m)+Overhead)
		ptBuf := make([]byte, 0, len(m))
		allocs := testing.AllocsPerRun(100, func() {
			ct, err := s.clientSeal.Seal(ctBuf, dataType, m)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.serverOpen.Open(ptBuf, dataType, ct); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("Seal+Open allocated %.1f times per frame", allocs)
		}
	})
}

func TestNewNonce(t *testing.T) {
	a, err := NewNonce()
	if err != nil || len(a) != HandshakeNonceSize {
		t.Fatalf("NewNonce = %x, %v", a, err)
	}
	b, _ := NewNonce()
	if bytes.Equal(a, b) {
		t.Fatal("two nonces are equal")
	}
}
