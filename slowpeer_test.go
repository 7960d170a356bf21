package msgnet_test

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

// Several slow readers on the same loops, each sent replies far larger
// than its socket takes at once: the loop's one write is partial, its rest
// goes to a writer goroutine, and the loop goes on with other sessions.
// Every client must get exactly its own replies, whole and in order: a
// rest that shared memory with the loop's scratch would be overwritten by
// the next session's turn.
func TestLoopPartialWritesKeepEachSessionsBytes(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		_, addr := echoServer(t, append(opts, msgnet.WithSendQueueBytes(64<<20))...)
		const clients, requests, size = 6, 96, 48 << 10
		var wg sync.WaitGroup
		for c := range clients {
			r := dialRaw(t, addr)
			r.hello(fmt.Sprint("slow-", c))
			wg.Add(1)
			go func() {
				defer wg.Done()
				want := bytes.Repeat([]byte{byte('a' + c)}, size)
				var batch []byte
				for i := range requests {
					p := append([]byte(nil), want...)
					p[0], p[1] = byte(i), byte(c)
					batch = frame.Append(batch, frame.KindData, 0, p)
				}
				if _, err := r.nc.Write(batch); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(100 * time.Millisecond) // let the replies pile up
				for i := range requests {
					k, got, err := r.next()
					if err != nil {
						t.Errorf("client %d reply %d: %v", c, i, err)
						return
					}
					if k != frame.KindData || len(got) != size || got[0] != byte(i) || got[1] != byte(c) ||
						!bytes.Equal(got[2:], want[2:]) {
						t.Errorf("client %d reply %d: kind %v, %d bytes, starts %q", c, i, k, len(got), got[:min(8, len(got))])
						return
					}
				}
			}()
		}
		wg.Wait()
	})
}
