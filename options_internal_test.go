//go:build linux

package msgnet

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"
)

// WithSocketBuffers reaches the kernel, on a server's accepted sockets and
// a client's dialled one (Linux reports twice the size asked for: it adds
// room for its own bookkeeping).
func TestSocketBuffers(t *testing.T) {
	srv := NewServer("buf", WithSocketBuffers(64<<10, 32<<10))
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	c := NewClient("c", WithSocketBuffers(48<<10, 24<<10))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Connect(ctx, srv.Addr().String()); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for len(srv.Sessions()) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cs, err := c.current()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		who         string
		nc          net.Conn
		read, write int
	}{
		{"server", srv.Sessions()[0].c.NetConn(), 64 << 10, 32 << 10},
		{"client", cs.c.NetConn(), 48 << 10, 24 << 10},
	} {
		rc, err := tc.nc.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var rcv, snd int
		rc.Control(func(fd uintptr) {
			rcv, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
			snd, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
		})
		if rcv != 2*tc.read || snd != 2*tc.write {
			t.Errorf("%s: SO_RCVBUF %d, SO_SNDBUF %d; want %d and %d", tc.who, rcv, snd, 2*tc.read, 2*tc.write)
		}
	}
}
