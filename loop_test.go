package msgnet_test

import (
	"bytes"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

// A peer that writes a great deal before it reads anything: the replies
// outgrow the socket buffers, so the event loop's one non-blocking write
// leaves a rest that a writer goroutine must finish, while the loop keeps
// reading. Every reply arrives, whole and in order; a reader that waited
// on its own writes would deadlock here, both sides' buffers being full.
func TestRepliesLargerThanSocketBuffers(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		// Mostly small messages, so that a burst's replies span several
		// chunks (one writev), with a large one in every 50 to fill the
		// socket buffers: about 11 MB each way, far past loopback's.
		const n = 10000
		size := func(i int) int {
			if i%50 == 0 {
				return 60 << 10
			}
			return 100
		}
		opts = append(opts, msgnet.WithSendQueueBytes(64<<20), msgnet.WithMessageSizeLimit(1<<20))
		_, addr := echoServer(t, opts...)
		r := dialRaw(t, addr)
		r.hello("bulk")

		var wg sync.WaitGroup
		wg.Add(1)
		writeErr := make(chan error, 1)
		go func() { // writes everything without reading
			defer wg.Done()
			var buf []byte
			for i := range n {
				payload := make([]byte, size(i))
				binary.BigEndian.PutUint64(payload, uint64(i))
				buf = frame.Append(buf, frame.KindData, 0, payload)
				if len(buf) < 32<<10 && i < n-1 {
					continue
				}
				_, err := r.nc.Write(buf)
				buf = buf[:0]
				if err != nil {
					writeErr <- err
					return
				}
			}
		}()
		time.Sleep(200 * time.Millisecond) // let both directions fill up
		for i := range n {
			p := r.expect(frame.KindData)
			if len(p) != size(i) || binary.BigEndian.Uint64(p) != uint64(i) || !bytes.Equal(p[8:], make([]byte, size(i)-8)) {
				t.Fatalf("reply %d: %d bytes, sequence %d", i, len(p), binary.BigEndian.Uint64(p))
			}
		}
		wg.Wait()
		select {
		case err := <-writeErr:
			t.Fatal(err)
		default:
		}
	})
}
