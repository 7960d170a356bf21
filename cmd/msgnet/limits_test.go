package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/msgnet/msgnet"
)

// The limit flags reach the server: a session past --max-groups-per-session
// is told too_many_groups, and a bad --slow-consumer is refused.
func TestServeLimitFlags(t *testing.T) {
	addr := startServe(t, "--max-groups-per-session", "1", "--max-group-name-length", "5")
	c, got := managedClient(t, addr, "joiner")
	c.OnError(func(err *msgnet.ProtocolError) { got <- "ERROR " + err.Code })
	c.SendString("JOIN:one")
	expectMsg(t, got, "Joined one")
	c.SendString("JOIN:two")
	expectMsg(t, got, "ERROR too_many_groups")
	c.SendString("LEAVE:one")
	expectMsg(t, got, "Left one")
	c.SendString("JOIN:toolong")
	expectMsg(t, got, "ERROR bad_group")

	var errOut bytes.Buffer
	if code := run(context.Background(), []string{"serve", "--slow-consumer", "sometimes"}, nil, &errOut, &errOut); code != 2 {
		t.Fatalf("exit %d for a bad --slow-consumer: %s", code, errOut.String())
	}
}

// --auth-keys-file binds client ids to keys: a holder of the sensors' key
// gets in as a sensor and is refused as an operator.
func TestServeAuthKeysFile(t *testing.T) {
	dir := t.TempDir()
	ring := filepath.Join(dir, "keys")
	os.WriteFile(ring, []byte("# id secret patterns\n"+
		"sensors sensor-secret-0123456789 sensor-*\n"+
		"ops     ops-secret-0123456789abc ops-alice,ops-bob\n"), 0o600)
	sensorKey := filepath.Join(dir, "sensor.key")
	os.WriteFile(sensorKey, []byte("sensor-secret-0123456789\n"), 0o600)
	addr := startServe(t, "--auth-keys-file", ring)
	send := func(id string) (int, string) {
		var out, errOut bytes.Buffer
		code := run(context.Background(), []string{"send", "--addr", addr, "--id", id,
			"--auth-key-file", sensorKey, "--auth-key-id", "sensors", "--timeout", "3s", "hi"}, nil, &out, &errOut)
		return code, out.String() + errOut.String()
	}
	if code, out := send("sensor-7"); code != 0 || out != "Echo: hi\n" {
		t.Fatalf("a sensor with its key: exit %d, %q", code, out)
	}
	if code, out := send("ops-alice"); code == 0 || !strings.Contains(out, "auth_failed") {
		t.Fatalf("a sensor key claiming an operator's id: exit %d, %q", code, out)
	}

	for name, content := range map[string]string{
		"short secret": "k short\n",
		"empty":        "# nothing\n",
		"duplicate":    "k 0123456789abcdef\nk 0123456789abcdef\n",
		"extra field":  "k 0123456789abcdef a b\n",
	} {
		bad := filepath.Join(dir, "bad")
		os.WriteFile(bad, []byte(content), 0o600)
		var errOut bytes.Buffer
		if code := run(context.Background(), []string{"serve", "--auth-keys-file", bad}, nil, &errOut, &errOut); code != 2 {
			t.Errorf("%s: exit %d: %s", name, code, errOut.String())
		}
	}
}
