//go:build unix

package main

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/msgnet/msgnet/internal/testenv"
)

// A subscriber away for longer than its stream keeps messages is told so:
// `msgnet sub` says "continuity lost" on stderr and goes on from the
// oldest message retained, never silently skipping.
func TestPubSubRetentionOverflow(t *testing.T) {
	addr := freeAddr(t)
	serve := serveProc(t, addr, "--retention-messages", "100")
	proxy := testenv.NewCutProxy(t, addr)
	sub := startProc(t, "sub", "sub", "--addr", proxy.Addr(), "--group", "room", "--reliable", "--id", "sub-1")
	sub.waitStderr(t, `listening on group "room"`, 20*time.Second)
	pub := func(id string, n int, text string) {
		p := startProc(t, "pub "+id, "pub", "--addr", addr, "--group", "room", "--reliable", "--id", id, "--count", fmt.Sprint(n), text)
		if err := p.wait(t, 60*time.Second); err != nil {
			t.Fatalf("pub: %v\n%s", err, p.stderr.String())
		}
	}
	pub("pub-1", 10, "m-{n}")
	expectSequence(t, sub, "m-", 10, 20*time.Second)

	// Away: stopped, and its connection gone, while 1,000 messages pass
	// through a stream that keeps 100.
	sub.cmd.Process.Signal(syscall.SIGSTOP)
	proxy.Cut()
	pub("pub-2", 1000, "x-{n}")
	sub.cmd.Process.Signal(syscall.SIGCONT)

	sub.waitStderr(t, "continuity lost", 20*time.Second)
	for i := 901; i <= 1000; i++ {
		select {
		case line := <-sub.lines:
			if want := fmt.Sprint("x-", i); line != want {
				t.Fatalf("after the loss, line %q, want %q (the oldest retained on)", line, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("after the loss, the subscriber printed up to x-%d of x-1000", i-1)
		}
	}
	if !strings.Contains(sub.stderr.String(), "missed from 11") {
		t.Errorf("the loss does not say where it began:\n%s", sub.stderr.String())
	}
	sub.stop(t)
	serve.stop(t)
}
