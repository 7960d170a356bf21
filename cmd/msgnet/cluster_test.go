package main

import (
	"bytes"
	"context"
	"testing"
)

// Two `msgnet serve` nodes joined by routes between their embedded NATS
// servers: a PRIVATE message crosses from one node to the other, both ways.
func TestServeClusterPrivateCrossesNodes(t *testing.T) {
	route := freeAddr(t)
	a := startServe(t, "--id", "node-a", "--quiet", "--cluster-listen", route, "--cluster-heartbeat", "100ms")
	b := startServe(t, "--id", "node-b", "--quiet", "--cluster-listen", "127.0.0.1:0",
		"--cluster-routes", "nats-route://"+route, "--cluster-heartbeat", "100ms")
	alice, ag := managedClient(t, a, "alice")
	bob, bg := managedClient(t, b, "bob")
	privateCrosses(t, alice, ag, "bob", bg)
	privateCrosses(t, bob, bg, "alice", ag)
}

func TestServeClusterFlagErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--cluster", "nats://127.0.0.1:1", "--cluster-listen", "127.0.0.1:0"}, "excludes"},
		{[]string{"--cluster", "nats://127.0.0.1:1", "--cluster-in-process"}, "excludes"}, // embedded only
		{[]string{"--cluster", "nats://127.0.0.1:1", "--cluster-client-listen", "127.0.0.1:0"}, "excludes"},
		{[]string{"--cluster-routes", "nats-route://127.0.0.1:1"}, "needs --cluster-listen"},
		{[]string{"--cluster", "nats://127.0.0.1:1"}, "msgnet serve:"}, // nothing listens there
	} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), append([]string{"serve", "--addr", "127.0.0.1:0", "--quiet"}, c.args...), nil, &out, &errOut)
		if code != 2 || !bytes.Contains(errOut.Bytes(), []byte("msgnet serve:")) || !bytes.Contains(errOut.Bytes(), []byte(c.want)) {
			t.Fatalf("serve %v: exit %d, %q; want exit 2 saying %q", c.args, code, errOut.String(), c.want)
		}
	}
}
