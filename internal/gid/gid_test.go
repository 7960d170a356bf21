package gid

import (
	"sync"
	"testing"
)

func TestCurrentTellsGoroutinesApart(t *testing.T) {
	if !Supported {
		if Current() != 0 {
			t.Fatal("unsupported, but Current is not 0")
		}
		t.Skip("not supported on this architecture")
	}
	me := Current()
	if me == 0 || me != Current() {
		t.Fatalf("Current is %#x, then %#x, on one goroutine", me, Current())
	}
	const n = 100
	ids := make([]uintptr, n)
	var ready, done sync.WaitGroup
	release := make(chan struct{})
	for i := range n {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			ids[i] = Current()
			ready.Done()
			// Closed below once every goroutine is up, so this cannot block
			// for good; all alive together, so no descriptor is reused.
			<-release
			if ids[i] != Current() {
				t.Errorf("goroutine %d: Current changed", i)
			}
		}()
	}
	ready.Wait()
	close(release)
	done.Wait()
	seen := map[uintptr]bool{me: true}
	for i, id := range ids {
		if seen[id] {
			t.Fatalf("goroutine %d shares its value %#x", i, id)
		}
		seen[id] = true
	}
}
