//go:build amd64 || arm64

package gid

// Supported reports whether Current tells goroutines apart here.
const Supported = true

// Current identifies the calling goroutine.
func Current() uintptr
