// Slow peers on the event loops: a loop's write that the socket takes
// only in part, whose rest a writer goroutine finishes while the loop goes
// on with other sessions; and stopping right after starting.

package msgnet_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

// Two slow peers on one event loop: each turn's one write leaves a rest
// that a writer goroutine must finish. Every peer gets back exactly its own
// messages, in order. endTurn's fast path builds that rest in the loop's
// scratch writer's batch array (append(w.batch[:0], ...)) and hands the
// array to the session's queue, so the next slow session on the loop
// overwrites the first one's queued chunk.
func TestLoopSlowPeersOnOneLoop(t *testing.T) {
	for _, blocking := range []bool{false, true} {
		t.Run(map[bool]string{false: "park", true: "block"}[blocking], func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // one loop for both
			opts := loopOpts(msgnet.WithSendQueueBytes(256<<20), msgnet.WithMessageSizeLimit(1<<20))
			if blocking {
				opts = append(opts, msgnet.WithEngine(msgnet.EngineLoopBlocking))
			}
			_, addr := echoServer(t, opts...)
			const n, size = 3000, 4 << 10
			var wg sync.WaitGroup
			for c := byte(0); c < 3; c++ {
				r := dialRaw(t, addr)
				r.hello(string('a' + c))
				wg.Add(1)
				go func() {
					defer wg.Done()
					go func() {
						var buf []byte
						for i := range n {
							p := make([]byte, size)
							p[0] = c
							binary.BigEndian.PutUint64(p[1:], uint64(i))
							buf = frame.Append(buf, frame.KindData, 0, p)
							if len(buf) >= 64<<10 || i == n-1 {
								r.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
								if _, err := r.nc.Write(buf); err != nil {
									return
								}
								buf = buf[:0]
							}
						}
					}()
					time.Sleep(300 * time.Millisecond) // let the replies back up
					for i := range n {
						k, p, err := r.next()
						if err != nil {
							t.Errorf("peer %d: reply %d: %v", c, i, err)
							return
						}
						if k != frame.KindData || len(p) != size || p[0] != c || binary.BigEndian.Uint64(p[1:]) != uint64(i) {
							t.Errorf("peer %d: reply %d: kind %v, %d bytes, from peer %d, seq %d", c, i, k, len(p), p[0], binary.BigEndian.Uint64(p[1:]))
							return
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}

// A server stopped right after Start: serve's goroutine may reach
// acceptGate only after Shutdown has closed the listener and finishStop has
// taken the (still empty) list of pollers; acceptGate then starts pollers
// that nobody closes, and Shutdown waits for them for ever.
func TestShutdownRightAfterStartBlockingLoops(t *testing.T) {
	for i := range 200 {
		srv := msgnet.NewServer("t", loopOpts(msgnet.WithEngine(msgnet.EngineLoopBlocking))...)
		if err := srv.Start("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			done <- srv.Shutdown(ctx)
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("iteration %d: Shutdown: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("iteration %d: Shutdown hangs (its ctx had 3 s)", i)
		}
	}
}

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
