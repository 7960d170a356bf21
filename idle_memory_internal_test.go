package msgnet

import (
	"testing"
	"unsafe"
)

// An idle session costs its Session (the engine's Conn included), its
// conn.Socket and a few index entries (docs/BENCHMARKS.md, "Memory per
// idle connection", under 1 KiB in all). A field added to either must be
// paid for: the Session must stay within the 384-byte allocation class.
func TestSessionFitsItsAllocationClass(t *testing.T) {
	if n := unsafe.Sizeof(Session{}); n > 384 {
		t.Fatalf("Session is %d bytes: past the 384-byte size class, each idle connection costs %d more bytes", n, 416-384)
	}
}
