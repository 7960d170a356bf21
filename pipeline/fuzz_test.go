package pipeline

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

// fuzzMaxLimit caps the limit FuzzDecompress uses, so that each input is
// cheap to run.
const fuzzMaxLimit = 256 << 10

// FuzzDecompress feeds arbitrary input to every codec's Decompress with an
// arbitrary limit. It must never panic; it must fail only with ErrTooLarge
// or ErrCorrupt, leaving dst as it was; and when it succeeds the output
// must be within the limit and survive a compression round trip.
func FuzzDecompress(f *testing.F) {
	payloads := [][]byte{nil, []byte("a"), jsonish(300, 1), jsonish(5000, 2), randomBytes(200, 3), make([]byte, 70_000)}
	for _, c := range allCodecs(f) {
		for _, p := range payloads {
			comp, err := c.Compress(nil, p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(comp, uint32(len(p)))
			f.Add(comp, uint32(len(p)/2))
		}
	}
	f.Add([]byte{}, uint32(100))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38, 0x01, 0x00, 0x01, 'z'}, uint32(1000)) // zstd RLE block, no size
	f.Add([]byte{0x50, 0x2a, 0x4d, 0x18, 0x02, 0x00, 0x00, 0x00, 'h', 'i'}, uint32(1000))  // zstd skippable frame
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0x00}, uint32(1000))                        // huge uvarint size

	prefix := []byte("prefix")
	f.Fuzz(func(t *testing.T, data []byte, limit uint32) {
		lim := int(limit % (fuzzMaxLimit + 1))
		for _, c := range allCodecs(t) {
			out, err := c.Decompress(slices.Clone(prefix), data, lim)
			if err != nil {
				if !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%s: undocumented error %v", c.Name(), err)
				}
				if !bytes.Equal(out, prefix) {
					t.Fatalf("%s: on error dst became %q", c.Name(), out[:min(len(out), 20)])
				}
				continue
			}
			if !bytes.HasPrefix(out, prefix) {
				t.Fatalf("%s: dst prefix overwritten", c.Name())
			}
			got := out[len(prefix):]
			if len(got) > lim {
				t.Fatalf("%s: %d bytes out for limit %d", c.Name(), len(got), lim)
			}
			comp, err := c.Compress(nil, got)
			if err != nil {
				t.Fatalf("%s: Compress: %v", c.Name(), err)
			}
			back, err := c.Decompress(nil, comp, len(got))
			if err != nil || !bytes.Equal(back, got) {
				t.Fatalf("%s: round trip of decoded output failed: %v", c.Name(), err)
			}
		}
	})
}

// FuzzOpen feeds arbitrary payloads and frame types to a fresh Opener. A
// payload may open only if it is exactly what the peer's first Seal
// produces for that type and plaintext; anything else must fail with
// ErrDecrypt and leave the Opener dead.
func FuzzOpen(f *testing.F) {
	for _, aes := range []bool{false, true} {
		s := newSession(f, suiteFor(aes))
		for i, p := range [][]byte{nil, []byte("hello"), jsonish(200, 1)} {
			typ := dataType + uint16(i)<<8
			ct, _ := s.clientSeal.Seal(nil, typ, p)
			f.Add(aes, typ, ct)
			f.Add(aes, typ^0x0100, ct)
			f.Add(aes, typ, ct[:len(ct)-1])
		}
	}
	f.Add(false, uint16(0), []byte{})

	f.Fuzz(func(t *testing.T, aes bool, typ uint16, ct []byte) {
		suite := suiteFor(aes)
		_, open, err := NewSessionKeys(testPSK, testClientNonce, testServerNonce, suite, RoleServer)
		if err != nil {
			t.Fatal(err)
		}
		seal, _, err := NewSessionKeys(testPSK, testClientNonce, testServerNonce, suite, RoleClient)
		if err != nil {
			t.Fatal(err)
		}
		pt, err := open.Open([]byte("d"), typ, ct)
		if err == nil {
			pt = pt[1:]
			want, _ := seal.Seal(nil, typ, pt)
			if !bytes.Equal(want, ct) {
				t.Fatalf("opened a payload that is not the genuine first frame")
			}
			return
		}
		if !errors.Is(err, ErrDecrypt) || !open.Dead() || string(pt) != "d" {
			t.Fatalf("failed Open: err %v, dead %v, dst %q", err, open.Dead(), pt)
		}
		genuine, _ := seal.Seal(nil, dataType, []byte("after"))
		if _, err := open.Open(nil, dataType, genuine); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("dead Opener opened a frame: %v", err)
		}
	})
}

func suiteFor(aes bool) string {
	if aes {
		return SuiteAES256GCM
	}
	return SuiteChaCha20Poly1305
}
