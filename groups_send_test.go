package msgnet_test

import (
	"bytes"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

// sessionsByID connects n raw clients named prefix-i and returns their
// connections and server-side sessions.
func sessionsByID(t *testing.T, srv *msgnet.Server, addr, prefix string, n, rcvbuf int, sessions chan *msgnet.Session) ([]*raw, []*msgnet.Session) {
	t.Helper()
	var rs []*raw
	byID := map[string]*msgnet.Session{}
	for i := range n {
		nc, err := dialAttacker(addr, rcvbuf)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		r := &raw{t: t, nc: nc, r: frame.NewReader(nc, 16<<20)}
		r.hello(fmt.Sprint(prefix, i))
		rs = append(rs, r)
	}
	for len(byID) < n {
		s := recv(t, sessions, "a session")
		byID[s.ClientID()] = s
	}
	ss := make([]*msgnet.Session, n)
	for i := range n {
		ss[i] = byID[fmt.Sprint(prefix, i)]
	}
	return rs, ss
}

// Join/leave churn on one group, double joins, leaves of a group never
// joined and members ending mid-send, all while the group is sent to: the
// stable members get every message once and in order, and the group ends
// up holding exactly them.
func TestGroupChurnDuringSends(t *testing.T) {
	srv, addr := startServer(t)
	sessions := make(chan *msgnet.Session, 64)
	srv.OnConnect(func(s *msgnet.Session) { sessions <- s })
	stableRaw, stable := sessionsByID(t, srv, addr, "stable-", 4, 0, sessions)
	churnRaw, churn := sessionsByID(t, srv, addr, "churn-", 16, 0, sessions)
	for _, s := range stable {
		if err := srv.Join(s, "room"); err != nil {
			t.Fatal(err)
		}
	}
	// Churners read nothing that matters: drain them so queues never fill.
	for _, r := range churnRaw {
		go func() {
			for {
				if _, _, err := r.next(); err != nil {
					return
				}
			}
		}()
	}
	const n = 3000
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, s := range churn {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				srv.Join(s, "room")
				srv.Join(s, "room") // twice is once
				srv.Leave(s, "room")
				srv.Leave(s, "room")         // not a member any more
				srv.Leave(s, "never-joined") // never was
				if i%4 == 0 && k == 50 {
					srv.Join(s, "room")
					churnRaw[i].nc.Close() // ends while a member
					return
				}
			}
		}()
	}
	for i := range n {
		d := srv.SendGroup("room", seqMsg(i))
		for _, f := range d.Failed {
			if slices.Contains(stable, f.Session) {
				t.Fatalf("send %d failed for a stable member: %v", i, f.Err)
			}
		}
		if d.Queued < len(stable) {
			t.Fatalf("send %d queued on %d, want at least the %d stable members", i, d.Queued, len(stable))
		}
	}
	close(stop)
	wg.Wait()
	for k, r := range stableRaw {
		for i := range n {
			kind, p, err := r.next()
			if err != nil || kind != frame.KindData || !bytes.Equal(p, seqMsg(i)) {
				t.Fatalf("stable-%d message %d: %v %x %v", k, i, kind, p, err)
			}
		}
	}
	waitFor(t, "the ended churners out of the group", func() bool {
		m := srv.GroupMembers("room")
		return len(m) == len(stable) && !slices.ContainsFunc(m, func(s *msgnet.Session) bool { return !slices.Contains(stable, s) })
	})
}

// Under the server-wide queue budget, the members a group send refuses
// are not always the same ones: over many sends, each member gets some.
func TestGroupSendFairUnderServerQueue(t *testing.T) {
	const members, size, rounds = 8, 200 << 10, 40
	srv, addr := startServer(t, msgnet.WithServerQueueBytes(3*size+size/2), msgnet.WithSocketBuffers(0, 4096))
	sessions := make(chan *msgnet.Session, members)
	srv.OnConnect(func(s *msgnet.Session) { sessions <- s })
	rs, ss := sessionsByID(t, srv, addr, "m-", members, 4096, sessions)
	for _, s := range ss {
		srv.Join(s, "room")
	}
	got := make([]int, members)
	msg := bytes.Repeat([]byte("x"), size)
	for range rounds {
		d := srv.SendGroup("room", msg)
		if d.Queued == 0 || len(d.Failed) == 0 {
			t.Fatalf("queued %d, failed %d: the budget does not bind", d.Queued, len(d.Failed))
		}
		for i, s := range ss {
			if slices.ContainsFunc(d.Failed, func(f msgnet.Failure) bool { return f.Session == s }) {
				continue
			}
			got[i]++
			if k, _, err := rs[i].next(); err != nil || k != frame.KindData {
				t.Fatalf("m-%d: %v %v", i, k, err)
			}
		}
		waitFor(t, "the queues drained", func() bool { return srv.Stats().QueueCharged == 0 })
	}
	t.Logf("messages per member over %d sends: %v", rounds, got)
	for i, n := range got {
		if n == 0 {
			t.Errorf("m-%d got none of %d group messages: the same members are refused every time", i, rounds)
		}
	}
}
