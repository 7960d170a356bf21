package natsbus

import (
	"testing"
	"time"
)

func TestTwoNodesSmoke(t *testing.T) {
	a := startNode(t, "a", embeddedRoutes(), WithHeartbeat(100*time.Millisecond))
	b := startNode(t, "b", embeddedRoutes(a), WithHeartbeat(100*time.Millisecond))
	waitCluster(t, a, b)
	ca, ra := client(t, "alice", a.addr)
	cb, rb := client(t, "bob", b.addr)
	eventually(t, 5*time.Second, func() bool {
		_, ok1 := a.bus.Lookup("bob")
		_, ok2 := b.bus.Lookup("alice")
		return ok1 && ok2
	}, "directory")
	send(t, ca, "B:hello")
	eventually(t, 5*time.Second, func() bool { return rb.has("hello") && ra.has("hello") }, "broadcast")
	send(t, cb, "P:alice:hi alice")
	eventually(t, 5*time.Second, func() bool { return ra.has("hi alice") }, "private")
	t.Log(a.bus.Stats(), b.bus.Stats(), a.bus.Nodes())
}
