package msgnet

import (
	"fmt"
	"math/rand"
	"slices"
	"testing"
)

// A group's list and index stay in step through any order of joins,
// repeated joins and leaves, leaves of non-members included: every member
// is in the list once, at the index the map says, and no one else is.
func TestGroupMembersListAndIndex(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	pool := make([]*Session, 50)
	for i := range pool {
		pool[i] = new(Session)
	}
	g := &members{at: make(map[*Session]int)}
	want := map[*Session]bool{}
	for step := range 20000 {
		s := pool[rng.Intn(len(pool))]
		if rng.Intn(2) == 0 {
			g.add(s)
			want[s] = true
		} else {
			g.remove(s)
			delete(want, s)
		}
		if len(g.list) != len(want) || len(g.at) != len(want) {
			t.Fatalf("step %d: list %d, index %d, want %d members", step, len(g.list), len(g.at), len(want))
		}
		for i, m := range g.list {
			if !want[m] || g.at[m] != i {
				t.Fatalf("step %d: list[%d] is a member: %v, indexed at %d", step, i, want[m], g.at[m])
			}
		}
		if spare := g.list[len(g.list):cap(g.list)]; slices.ContainsFunc(spare, func(s *Session) bool { return s != nil }) {
			t.Fatalf("step %d: the list's spare capacity still holds a session", step)
		}
	}
}

// A flood of joins and leaves over many group names, leaves of groups
// never joined and sessions ending while members leaves no group behind:
// the server's map of groups is empty once every session is out.
func TestGroupsLeaveNoEmptyGroupBehind(t *testing.T) {
	srv := NewServer("groups")
	ss := make([]*Session, 8)
	for i := range ss {
		ss[i] = new(Session)
	}
	for k := range 1000 {
		s, g := ss[k%len(ss)], fmt.Sprint("g", k%37)
		if err := srv.Join(s, g); err != nil && err != ErrTooManyGroups {
			t.Fatal(err)
		}
		srv.Join(s, g)
		srv.Leave(s, fmt.Sprint("g", (k+5)%37))
		srv.Leave(s, "never")
	}
	for _, s := range ss {
		srv.leaveAll(s)
	}
	if n := len(srv.groups.m); n != 0 {
		t.Fatalf("%d empty groups left in the map", n)
	}
}
