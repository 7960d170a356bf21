package natsbus

import (
	"testing"
	"time"

	"github.com/msgnet/msgnet"
)

// Two sessions of one client id on the same node of a cluster: the newer
// wins there as it does across nodes and on a server without a bus. Before,
// the older was never told: the server indexed the newer first, and the
// check for an older one then found the newer itself.
func TestDuplicateOnOneNodeReplaced(t *testing.T) {
	a := startNode(t, "a", with(embeddedRoutes())...)
	old, rOld := client(t, "dup", a.addr)
	closed := make(chan error, 1)
	old.OnClosed(func(reason error) { closed <- reason })
	_, rNew := client(t, "dup", a.addr)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the older session of dup on the same node was not replaced")
	}
	if r := rOld.reasonsText(); len(r) != 1 || r[0] != msgnet.ErrReplaced.Error() {
		t.Fatalf("older session ended with %q, want %q", r, msgnet.ErrReplaced)
	}
	other, _ := client(t, "other", a.addr)
	send(t, other, "P:dup:to the newest")
	eventually(t, 5*time.Second, func() bool { return rNew.has("to the newest") }, "private to the newest")
	if n, ok := a.bus.Lookup("dup"); !ok || n != "a" {
		t.Fatalf("the directory names %q (%v) for dup, want a", n, ok)
	}
}
