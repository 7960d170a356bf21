package pipeline

import (
	"bytes"
	"slices"
	"testing"
)

func TestChallengeResponse(t *testing.T) {
	key := []byte("shared secret for client alice")
	nonce, err := NewChallenge()
	if err != nil || len(nonce) != ChallengeSize {
		t.Fatalf("NewChallenge = %x, %v", nonce, err)
	}
	if again, _ := NewChallenge(); bytes.Equal(again, nonce) {
		t.Fatal("two challenges are equal")
	}
	mac := AuthResponse(key, nonce, "alice")
	if len(mac) != AuthMACSize {
		t.Fatalf("response is %d bytes", len(mac))
	}
	if !VerifyAuth(key, nonce, "alice", mac) {
		t.Fatal("right key refused")
	}

	otherKey := slices.Clone(key)
	otherKey[0] ^= 1
	otherNonce := slices.Clone(nonce)
	otherNonce[0] ^= 1
	badMAC := slices.Clone(mac)
	badMAC[31] ^= 1
	refused := []struct {
		name  string
		key   []byte
		nonce []byte
		id    string
		mac   []byte
	}{
		{"wrong key", otherKey, nonce, "alice", mac},
		{"wrong id", key, nonce, "bob", mac},
		{"id prefix", key, nonce, "alic", mac},
		{"other challenge", key, otherNonce, "alice", mac},
		{"tampered mac", key, nonce, "alice", badMAC},
		{"truncated mac", key, nonce, "alice", mac[:16]},
		{"empty mac", key, nonce, "alice", nil},
		{"empty key", nil, nonce, "alice", AuthResponse(nil, nonce, "alice")},
	}
	for _, r := range refused {
		if VerifyAuth(r.key, r.nonce, r.id, r.mac) {
			t.Errorf("%s: accepted", r.name)
		}
	}
	if !VerifyAuth(otherKey, nonce, "bob", AuthResponse(otherKey, nonce, "bob")) {
		t.Error("a different valid key/id pair refused")
	}
}

// Moving bytes between the nonce and the id changes the MAC input.
func TestAuthResponseUnambiguous(t *testing.T) {
	key := []byte("k")
	pairs := []struct {
		nonce []byte
		id    string
	}{
		{[]byte("ab"), "c"},
		{[]byte("a"), "bc"},
		{[]byte("abc"), ""},
		{[]byte{}, "abc"},
		{[]byte("ab\x00\x00\x00\x00\x00\x00\x00\x01c"), ""},
	}
	seen := map[string]int{}
	for i, p := range pairs {
		mac := string(AuthResponse(key, p.nonce, p.id))
		if j, dup := seen[mac]; dup {
			t.Errorf("pairs %d and %d give the same response", j, i)
		}
		seen[mac] = i
	}
}

func TestSignKnownAnswer(t *testing.T) {
	// RFC 4231 test case 2; its HMAC-SHA256 is 5bdcc146...64ec3843.
	got := Sign([]byte("Jefe"), []byte("what do ya want for nothing?"))
	want := "what do ya want for nothing?|W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM="
	if string(got) != want {
		t.Fatalf("Sign = %q, want %q", got, want)
	}
}

func TestSignVerify(t *testing.T) {
	key := []byte("signing key")
	for _, msg := range []string{"", "hello", "a|b|c", "ends with |", "|", "\x00binary\xff"} {
		signed := Sign(key, []byte(msg))
		got, ok := Verify(key, signed)
		if !ok || string(got) != msg {
			t.Errorf("Verify(Sign(%q)) = %q, %v", msg, got, ok)
		}
	}

	signed := Sign(key, []byte("pay alice 10"))
	tamper := func(f func([]byte) []byte) []byte { return f(slices.Clone(signed)) }
	refused := []struct {
		name   string
		key    []byte
		signed []byte
	}{
		{"wrong key", []byte("signing kez"), signed},
		{"empty key", nil, Sign(nil, []byte("x"))},
		{"message changed", key, tamper(func(b []byte) []byte { b[9] = '9'; return b })},
		{"signature changed", key, tamper(func(b []byte) []byte { b[len(b)-5] ^= 1; return b })},
		{"padding dropped", key, tamper(func(b []byte) []byte { return b[:len(b)-1] })},
		{"extra byte", key, append(slices.Clone(signed), 'A')},
		{"separator moved", key, tamper(func(b []byte) []byte {
			i := bytes.LastIndexByte(b, '|')
			b[i], b[i-1] = b[i-1], b[i]
			return b
		})},
		{"no separator", key, []byte("no separator here")},
		{"empty", key, nil},
		{"signature only", key, signed[bytes.LastIndexByte(signed, '|'):]},
	}
	for _, r := range refused {
		if msg, ok := Verify(r.key, r.signed); ok || msg != nil {
			t.Errorf("%s: Verify = %q, %v", r.name, msg, ok)
		}
	}
}
