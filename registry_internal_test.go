package msgnet

import "testing"

// Two sessions of one client id finish their hellos in either order on
// their own goroutines: the one the server accepted later keeps the id
// whichever claims it first, and the other is the one that loses it.
func TestSetClientNewestAcceptedWins(t *testing.T) {
	older := &Session{id: "p-9"}
	newer := &Session{id: "p-10"} // a longer count is a later one
	for _, order := range [][2]*Session{{older, newer}, {newer, older}} {
		r := newRegistry()
		if lost := r.setClient(order[0], "c"); lost != nil {
			t.Fatalf("first claim lost %v", lost.id)
		}
		lost := r.setClient(order[1], "c")
		if lost != older {
			t.Fatalf("claims %s then %s: %s lost the id, want the older", order[0].id, order[1].id, idOf(lost))
		}
		if got := r.getClient("c"); got != newer {
			t.Fatalf("claims %s then %s: the id names %s, want the newer", order[0].id, order[1].id, got.id)
		}
	}
	r := newRegistry()
	r.setClient(newer, "c")
	if lost := r.setClient(newer, "c"); lost != nil {
		t.Fatalf("a claim again by the holder lost %v", lost.id)
	}
}

func idOf(s *Session) string {
	if s == nil {
		return "none"
	}
	return s.id
}
