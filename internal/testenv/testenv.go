// Package testenv finds the programs that tests drive as real peers (nc,
// openssl, curl, node, chromium), and says what a missing one means.
//
// The README's test command (scripts/test.sh) installs them or stops
// before any test runs, naming what to install, and sets
// MSGNET_REQUIRE_TOOLS=1: under it, and in CI (CI set), a missing program
// fails the test, so no test passes by skipping. A plain `go test` on a
// machine without one skips the test that needs it, saying so.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Required reports whether a missing program must fail the test.
func Required() bool {
	return os.Getenv("MSGNET_REQUIRE_TOOLS") == "1" || os.Getenv("CI") != ""
}

// Tool returns the path of the program name, or ends the test: a failure
// when Required, a skip otherwise.
func Tool(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "%s is not installed (%v); scripts/test.sh installs it", name, err)
	}
	return path
}

// Missing ends a test whose real peer is not available: a failure when
// Required, a skip otherwise.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		t.Fatalf("%s (MSGNET_REQUIRE_TOOLS or CI is set: no test may pass by skipping)", msg)
	}
	t.Skip(msg)
}
