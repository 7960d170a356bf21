package main

import (
	"bytes"
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
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

// privateCrosses sends PRIVATE:<to>:... from c until it arrives: until the
// sender's node has heard of the target, the answer is that it is not found.
func privateCrosses(t *testing.T, c *msgnet.Client, own chan string, to string, got chan string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for try := 0; time.Now().Before(deadline); try++ {
		text := "hello #" + strconv.Itoa(try)
		if err := c.SendString("PRIVATE:" + to + ":" + text); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if want := "Private from " + c.ID() + ": " + text; m != want {
				t.Fatalf("%s got %q, want %q", to, m, want)
			}
			return
		case m := <-own:
			if m != "ERROR: Session "+to+" not found" {
				t.Fatalf("%s got %q", c.ID(), m)
			}
			time.Sleep(20 * time.Millisecond)
		case <-time.After(5 * time.Second):
			t.Fatal("neither the message nor an error arrived")
		}
	}
	t.Fatalf("the private message from %s never reached %s on the other node", c.ID(), to)
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
