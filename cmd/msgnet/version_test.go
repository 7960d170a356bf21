package main

import (
	"os/exec"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/msgnet/msgnet/internal/testenv"
)

func TestVersionText(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.time", Value: "2026-12-07T00:00:00Z"}, {Key: "vcs.modified", Value: "true"},
	}}
	if got, want := versionText(bi), "msgnet v1.2.3 (0123456789ab+modified, 2026-12-07T00:00:00Z) go1.26.8"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	bi.Settings = nil
	if got := versionText(bi); got != "msgnet v1.2.3 (unknown revision) go1.26.8" {
		t.Fatalf("got %q", got)
	}
}

// A binary built from this checkout names the checkout's revision.
func TestVersionNamesRevision(t *testing.T) {
	git := testenv.Tool(t, "git")
	head, err := exec.Command(git, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	bin := t.TempDir() + "/msgnet"
	if out, err := exec.Command("go", "build", "-buildvcs=true", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), strings.TrimSpace(string(head))[:12]) {
		t.Fatalf("msgnet version says %q; HEAD is %s", out, head)
	}
}
