//go:build unix

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
)

// End to end: serve started from a config file (TLS, authentication,
// limits) serves a client, and a SIGHUP after the file changed applies
// the new limit to the running server.
func TestServeConfigAndSIGHUP(t *testing.T) {
	dir := t.TempDir()
	files := tlsTestFiles(t, dir)
	keyFile := filepath.Join(dir, "auth.key")
	os.WriteFile(keyFile, []byte("a-long-enough-shared-key\n"), 0o600)
	cfg := fmt.Sprintf("mode = \"echo\"\nmax-connections = 100\n[tls]\ncert = %q\nkey = %q\n[auth]\nkey-file = %q\n",
		files.ServerCert, files.ServerKey, keyFile)
	path := filepath.Join(dir, "serve.toml")
	os.WriteFile(path, []byte(cfg), 0o600)
	addr := startServe(t, "--config", path)
	send := func() (int, string) {
		var out, errOut bytes.Buffer
		code := run(context.Background(), []string{"send", "--addr", addr, "--tls-ca", files.CA,
			"--auth-key-file", keyFile, "--timeout", "3s", "over TLS"}, nil, &out, &errOut)
		return code, out.String() + errOut.String()
	}
	if code, out := send(); code != 0 || out != "over TLS\n" {
		t.Fatalf("exit %d: %q", code, out)
	}
	os.WriteFile(path, []byte(strings.Replace(cfg, "max-connections = 100", "max-connections = 0\nmax-client-id-length = 3", 1)), 0o600)
	if err := syscallKillSelf(); err != nil {
		t.Fatal(err)
	}
	// The new limit refuses send's client id, "msgnet-cli", longer than 3.
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, out := send()
		if code != 0 && strings.Contains(out, msgnet.CodeBadClientID) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reloaded limit never applied: exit %d, %q", code, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// syscallKillSelf sends this process SIGHUP, as an operator would.
func syscallKillSelf() error { return syscall.Kill(os.Getpid(), syscall.SIGHUP) }
