package flock

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A second open file of the same path cannot take a held lock until the
// first lets go, by Unlock or by closing its file.
func TestTryLockExcludes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	open := func() *os.File {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	a, b := open(), open()
	if err := TryLock(a); err != nil {
		t.Fatal(err)
	}
	if err := TryLock(b); !errors.Is(err, ErrLocked) {
		t.Fatalf("second TryLock: %v, want ErrLocked", err)
	}
	if err := Unlock(a); err != nil {
		t.Fatal(err)
	}
	if err := Lock(b); err != nil {
		t.Fatalf("Lock after Unlock: %v", err)
	}
	b.Close()
	if err := TryLock(a); err != nil {
		t.Fatalf("TryLock after the holder closed its file: %v", err)
	}
}
