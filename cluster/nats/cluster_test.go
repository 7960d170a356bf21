package natsbus

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/balance"
)

// user is a client of the cluster test, placed by a consistent-hash pool.
type user struct {
	id     string
	c      *msgnet.Client
	r      *recorder
	member bool // of "room"
}

// nodeOf reports which node holds the user's session now, or "".
func nodeOf(nodes []*testNode, id string) string {
	for _, n := range nodes {
		if s, ok := n.srv.SessionByClientID(id); ok && s.IsConnected() {
			return n.id
		}
	}
	return ""
}

func TestThreeNodeCluster(t *testing.T) {
	n1 := startNode(t, "node-1", with(embeddedRoutes())...)
	n2 := startNode(t, "node-2", with(embeddedRoutes(n1))...)
	n3 := startNode(t, "node-3", with(embeddedRoutes(n1))...)
	nodes := []*testNode{n1, n2, n3}
	waitCluster(t, nodes...)

	pool, err := balance.New([]string{n1.addr, n2.addr, n3.addr},
		balance.WithStrategy(balance.ConsistentHash), balance.WithHealthCheck(50*time.Millisecond, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	// 45 users spread by their ids; the even ones are members of "room",
	// which they join again after a failover (groups are per session).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var users []*user
	for i := range 45 {
		u := &user{id: fmt.Sprintf("user-%02d", i), member: i%2 == 0}
		u.c, u.r = newClient(t, u.id, msgnet.WithReconnect(10*time.Millisecond, 100*time.Millisecond, 0))
		if u.member {
			c := u.c
			c.OnConnect(func() { c.SendString("J:room") })
		}
		if err := pool.Connect(ctx, u.c, u.id); err != nil {
			t.Fatal(err)
		}
		users = append(users, u)
	}
	byNode := map[string][]*user{}
	for _, u := range users {
		n := nodeOf(nodes, u.id)
		byNode[n] = append(byNode[n], u)
	}
	for _, n := range nodes {
		if len(byNode[n.id]) < 3 {
			t.Fatalf("users not spread: %d on %s", len(byNode[n.id]), n.id)
		}
	}
	// Every directory knows every user where it is.
	waitDirectory := func(nodes []*testNode) {
		t.Helper()
		eventually(t, 10*time.Second, func() bool {
			for _, u := range users {
				where := nodeOf(nodes, u.id)
				if where == "" {
					return false
				}
				for _, n := range nodes {
					if got, ok := n.bus.Lookup(u.id); !ok || got != where {
						return false
					}
				}
			}
			return true
		}, "directories did not converge")
	}
	waitDirectory(nodes)

	// Broadcast from each node reaches every user on every node once.
	broadcastRound := func(nodes []*testNode, round string) {
		t.Helper()
		for _, n := range nodes {
			from := byNode[n.id][0]
			send(t, from.c, "B:"+round+"-"+n.id)
		}
		for _, n := range nodes {
			send(t, byNode[n.id][0].c, "B:"+round+"-end-"+n.id)
		}
		eventually(t, 10*time.Second, func() bool {
			for _, u := range users {
				for _, n := range nodes {
					if !u.r.has(round + "-end-" + n.id) {
						return false
					}
				}
			}
			return true
		}, "%s: broadcasts did not reach everyone", round)
		for _, u := range users {
			for _, n := range nodes {
				if c := u.r.count(round + "-" + n.id); c != 1 {
					t.Fatalf("%s: %s got the broadcast from %s %d times", round, u.id, n.id, c)
				}
			}
		}
	}
	broadcastRound(nodes, "bc1")

	// Private messages by client id between every pair of nodes, and one
	// by session id.
	privateRound := func(nodes []*testNode, round string) {
		t.Helper()
		for _, a := range nodes {
			for _, b := range nodes {
				if a == b {
					continue
				}
				from, to := byNode[a.id][0], byNode[b.id][len(byNode[b.id])-1]
				send(t, from.c, "P:"+to.id+":"+round+" from "+from.id)
			}
		}
		eventually(t, 10*time.Second, func() bool {
			for _, a := range nodes {
				for _, b := range nodes {
					if a != b && !byNode[b.id][len(byNode[b.id])-1].r.has(round+" from "+byNode[a.id][0].id) {
						return false
					}
				}
			}
			return true
		}, "%s: private messages lost", round)
	}
	privateRound(nodes, "p1")
	to := byNode[n3.id][1]
	send(t, byNode[n1.id][0].c, "P:"+to.c.SessionID()+":by session id")
	eventually(t, 10*time.Second, func() bool { return to.r.has("by session id") }, "private message by session id")

	// A group spanning the nodes.
	groupRound := func(nodes []*testNode, round string) {
		t.Helper()
		with := 0
		for _, n := range nodes {
			if len(n.srv.GroupMembers("room")) > 0 {
				with++
			}
		}
		waitInterest(t, "msgnet.g.room", with, nodes...)
		var sender *user
		for _, u := range byNode[nodes[0].id] {
			if u.member {
				sender = u
				break
			}
		}
		send(t, sender.c, "G:room:"+round)
		send(t, sender.c, "G:room:"+round+"-end")
		eventually(t, 10*time.Second, func() bool {
			for _, u := range users {
				if u.member && u != sender && !u.r.has(round+"-end") {
					return false
				}
			}
			return true
		}, "%s: group message did not reach every member", round)
		for _, u := range users {
			want := 1
			if !u.member || u == sender {
				want = 0
			}
			if c := u.r.count(round); c != want {
				t.Fatalf("%s: %s (member %v) got the group message %d times", round, u.id, u.member, c)
			}
		}
	}
	eventually(t, 10*time.Second, func() bool {
		for _, u := range users {
			if u.member && !u.r.has("joined:room") {
				return false
			}
		}
		return true
	}, "joins")
	groupRound(nodes, "g1")

	// Kill node 3: its NATS server first, so no goodbye reaches the
	// others (they must expire it), then its sessions.
	victims := byNode[n3.id]
	next := map[string]string{} // user -> address of the node after node-3 on its ring
	for _, u := range victims {
		order := pool.Order(u.id)
		if order[0] != n3.addr {
			t.Fatalf("%s is on node-3 but its order is %v", u.id, order)
		}
		next[u.id] = order[1]
	}
	n3.bus.ns.Shutdown()
	n3.srv.Close()
	live := []*testNode{n1, n2}
	eventually(t, 10*time.Second, func() bool {
		return n1.bus.Stats().Nodes == 2 && n2.bus.Stats().Nodes == 2
	}, "node-3 did not expire")
	// Its users fail over along the ring to the live nodes.
	eventually(t, 10*time.Second, func() bool {
		for _, u := range victims {
			if nodeOf(live, u.id) == "" || (u.member && u.r.count("joined:room") < 2) {
				return false
			}
		}
		return true
	}, "users of the dead node did not fail over")
	for _, u := range victims {
		where := nodeOf(live, u.id)
		if addr := map[string]string{n1.id: n1.addr, n2.id: n2.addr}[where]; addr != next[u.id] {
			t.Fatalf("%s failed over to %s, not to the next node on its ring", u.id, where)
		}
	}
	byNode = map[string][]*user{}
	for _, u := range users {
		n := nodeOf(live, u.id)
		byNode[n] = append(byNode[n], u)
	}
	waitDirectory(live)
	broadcastRound(live, "bc2")
	privateRound(live, "p2")
	for _, u := range victims { // each moved user is reachable from both live nodes
		for _, n := range live {
			send(t, byNode[n.id][0].c, "P:"+u.id+":moved from "+n.id)
		}
	}
	eventually(t, 10*time.Second, func() bool {
		for _, u := range victims {
			for _, n := range live {
				if !u.r.has("moved from " + n.id) {
					return false
				}
			}
		}
		return true
	}, "private messages to moved users")
	groupRound(live, "g2")
	if st := n1.bus.Stats(); st.Errors != 0 {
		t.Logf("node-1 bus errors: %d (messages to node-3 in flight when it died)", st.Errors)
	}
}
