//go:build !amd64 && !arm64

package gid

// Supported reports whether Current tells goroutines apart here.
const Supported = false

// Current returns 0: goroutines cannot be told apart on this architecture.
func Current() uintptr { return 0 }
