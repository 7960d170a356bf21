// Package flock takes exclusive locks on open files, held until the file
// is closed or the process ends (kill -9 included): on Unix with flock(2),
// on Windows with LockFileEx.
package flock

import (
	"errors"
	"os"
)

// ErrLocked is TryLock's answer when another process holds the lock.
var ErrLocked = errors.New("flock: locked by another process")

// TryLock takes an exclusive lock on f without waiting: ErrLocked if
// another holds it.
func TryLock(f *os.File) error { return lock(f, false) }

// Lock takes an exclusive lock on f, waiting for another holder to let go.
func Lock(f *os.File) error { return lock(f, true) }

// Unlock lets go of a lock taken on f (closing f does too).
func Unlock(f *os.File) error { return unlock(f) }
