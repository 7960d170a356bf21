//go:build !linux

package loadgen

import (
	"context"
	"sync"
)

// fanoutPolled takes no receivers on this platform: each gets a goroutine.
func (r *runner) fanoutPolled(ctx context.Context, wg *sync.WaitGroup, sink *fanoutSink) []int {
	all := make([]int, len(sink.workers))
	for i := range all {
		all[i] = i
	}
	return all
}
