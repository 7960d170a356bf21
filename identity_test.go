package msgnet_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

// The newest session of a client id wins: the older one is told
// DISCONNECT "replaced" and ended, and messages to the id reach the newer
// one. Before, the second hello silently took the registry's entry, and
// when that second session ended the entry was deleted while the first
// was still connected: nobody was reachable under the id any more.
func TestNewerSessionReplacesOlder(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := echoServer(t, opts...)
		reasons := make(chan error, 4)
		srv.OnDisconnect(func(s *msgnet.Session, reason error) { reasons <- reason })

		first := dialRaw(t, addr)
		first.hello("dup")
		second := dialRaw(t, addr)
		second.hello("dup")

		if got := first.expect(frame.KindDisconnect); string(got) != "replaced" {
			t.Fatalf("older session got DISCONNECT %q, want \"replaced\"", got)
		}
		first.expectEOF()
		select {
		case r := <-reasons:
			if !errors.Is(r, msgnet.ErrReplaced) {
				t.Fatalf("older session ended with %v, want ErrReplaced", r)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the older session's disconnect handler did not run")
		}

		if err := srv.SendTo("dup", []byte("to the newest")); err != nil {
			t.Fatalf("SendTo dup: %v", err)
		}
		if got := second.expect(frame.KindData); string(got) != "to the newest" {
			t.Fatalf("newer session got %q", got)
		}

		// A third claims the id and leaves: the id names nobody, and
		// the second, replaced, is gone too; nothing is left half-indexed.
		third := dialRaw(t, addr)
		third.hello("dup")
		second.expect(frame.KindDisconnect)
		third.nc.Close()
		waitFor(t, "every session of dup to end", func() bool { return srv.ConnectionCount() == 0 })
		if err := srv.SendTo("dup", []byte("x")); !errors.Is(err, msgnet.ErrNoSession) {
			t.Fatalf("SendTo after every session of dup ended: %v, want ErrNoSession", err)
		}
	})
}

// A client whose connection silently died reconnects with its own id: the
// new connection takes over at once instead of being refused while the
// dead one lingers until its idle timeout.
func TestReconnectingClientTakesOverItsID(t *testing.T) {
	srv, addr := echoServer(t)
	stale := dialRaw(t, addr)
	stale.hello("phone") // never closed: a half-open connection
	c := msgnet.NewClient("phone")
	got := make(chan string, 1)
	c.OnMessage(func(msg []byte) { got <- string(msg) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Connect(ctx, addr); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := srv.SendTo("phone", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != "hi" {
			t.Fatalf("got %q", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the reconnected client did not get the message")
	}
}

// A hello's client id must be short and printable: control characters
// would let it forge lines in text-mode output ("Private from <id>: ..."),
// and an unbounded one costs memory in the registry and the cluster.
func TestBadClientIDRefused(t *testing.T) {
	srv, addr := echoServer(t, msgnet.WithMaxClientIDLength(32))
	for _, id := range []string{
		"evil\nPrivate from admin: hi",
		"tab\tid",
		"space id",
		"nul\x00",
		"esc\x1b[31m",
		"bidi\u202eevil",
		strings.Repeat("x", 33),
	} {
		r := dialRaw(t, addr)
		r.send(frame.KindControl, `{"op":"hello","client_id":`+jsonString(id)+`}`)
		r.expectError(msgnet.CodeBadClientID)
		r.expect(frame.KindDisconnect)
		r.expectEOF()
		r.nc.Close()
	}
	ok := dialRaw(t, addr)
	ok.hello(strings.Repeat("y", 32)) // at the limit
	waitFor(t, "the refused sessions to end", func() bool { return srv.ConnectionCount() == 1 })
	ok2 := dialRaw(t, addr)
	ok2.hello("ünïcode-ok")
}

// With a key per holder, a holder of one key cannot claim a client id that
// belongs to another key; it is refused like a wrong key.
func TestAuthKeyBindsClientIDs(t *testing.T) {
	sensors, ops := []byte("sensor-secret-0123456789"), []byte("ops-secret-0123456789abc")
	_, addr := echoServer(t,
		msgnet.WithAuth(
			msgnet.AuthKey{ID: "sensors", Secret: sensors, ClientIDs: []string{"sensor-*"}},
			msgnet.AuthKey{ID: "ops", Secret: ops, ClientIDs: []string{"ops-alice", "ops-bob"}},
		),
		msgnet.WithAuthFailureDelay(10*time.Millisecond))
	connect := func(id, keyID string, key []byte) error {
		c := msgnet.NewClient(id, msgnet.WithAuth(msgnet.AuthKey{ID: keyID, Secret: key}))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := c.Connect(ctx, addr)
		c.Close()
		return err
	}
	for _, tc := range []struct {
		id, keyID string
		key       []byte
		ok        bool
	}{
		{"sensor-17", "sensors", sensors, true},
		{"ops-alice", "ops", ops, true},
		{"ops-alice", "sensors", sensors, false}, // a sensor key claiming an operator's id
		{"sensor-17", "ops", ops, false},         // and the other way round
		{"ops-carol", "ops", ops, false},         // not in the key's list
		{"sensor-17", "sensors", ops, false},     // the wrong secret for the key id
		{"sensor-17", "", sensors, false},        // no key id, and no key without one
		{"sensor-17", "nokey", sensors, false},
	} {
		err := connect(tc.id, tc.keyID, tc.key)
		if tc.ok && err != nil {
			t.Errorf("%s with key %q: %v", tc.id, tc.keyID, err)
		}
		if !tc.ok && !errors.Is(err, &msgnet.ProtocolError{Code: msgnet.CodeAuthFailed}) {
			t.Errorf("%s with key %q: %v, want auth_failed", tc.id, tc.keyID, err)
		}
	}
}

func jsonString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte("0123456789abcdef"[r>>4])
			b.WriteByte("0123456789abcdef"[r&15])
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
