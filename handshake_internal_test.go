package msgnet

import (
	"bytes"
	"encoding/json"
	"testing"
)

// The hand-written welcome must be byte for byte what encoding/json
// writes, for any server id, session id, features and codec names.
func FuzzWelcomeJSON(f *testing.F) {
	f.Add("s1", "main_server", 1<<20, int64(30000), "request", "s2", "", []byte(nil))
	f.Add("s2", "<&>\"\\\x00\u2028é\xff", -1, int64(0), "", "", "aes-256-gcm", []byte{1, 2, 3})
	f.Add("", "", 0, int64(-5), "a,b", "zstd", "chacha20", []byte{})
	f.Fuzz(func(t *testing.T, sid, srvID string, maxMsg int, idle int64, feat, comp, suite string, nonce []byte) {
		w := welcome{Op: "welcome", SessionID: sid, ServerID: srvID, MaxMessageSize: maxMsg,
			IdleTimeoutMS: idle, Compression: comp}
		if feat != "" {
			w.Features = []string{feat, sid}
		}
		if suite != "" {
			w.Encryption = &welcomeSeal{Suite: suite, Nonce: nonce}
		}
		want, err := json.Marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		if got := w.appendJSON(nil); !bytes.Equal(got, want) {
			t.Fatalf("appendJSON:\n got %s\nwant %s", got, want)
		}
	})
}
