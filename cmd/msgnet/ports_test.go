package main

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"testing"
)

// Free ports for servers the tests start as processes or with flags. A
// port bind(0) handed out and the test closed can be taken again, before
// the server binds it, by any connection's local port or any other
// bind(0) on the machine: both draw from the kernel's ephemeral range.
// These are drawn below it, where only deliberate binds go.

// listenFree listens on a free loopback port below the ephemeral range
// (on one the OS chooses, if the range is unknown or starts too low).
func listenFree(t *testing.T) net.Listener {
	t.Helper()
	if lo := ephemeralLow(); lo > 4096 {
		for range 100 {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", 2048+rand.IntN(lo-2048)))
			if err == nil {
				return l
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// ephemeralLow is the first port of the kernel's ephemeral range, or 0.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	var lo, hi int
	if n, _ := fmt.Sscan(string(b), &lo, &hi); n != 2 {
		return 0
	}
	return lo
}

// freeAddr returns a free loopback address (see listenFree).
func freeAddr(t *testing.T) string {
	t.Helper()
	l := listenFree(t)
	defer l.Close()
	return l.Addr().String()
}

// freePorts returns n distinct free loopback addresses: all held open
// until the last is chosen.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		l := listenFree(t)
		defer l.Close()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs
}
