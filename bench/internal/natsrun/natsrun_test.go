package natsrun

import (
	"net"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

func TestSplitAddr(t *testing.T) {
	if h, p, err := SplitAddr("127.0.0.1:4222"); err != nil || h != "127.0.0.1" || p != 4222 {
		t.Errorf("SplitAddr = %q, %d, %v", h, p, err)
	}
	for _, bad := range []string{"127.0.0.1", "127.0.0.1:x", "127.0.0.1:0", "127.0.0.1:-1", "127.0.0.1:70000"} {
		if _, _, err := SplitAddr(bad); err == nil {
			t.Errorf("SplitAddr(%q) accepted", bad)
		}
	}
}

func TestStartListens(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	ns, err := Start(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	c, err := net.Dial("tcp", ns.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}
