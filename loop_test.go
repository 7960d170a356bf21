package msgnet_test

import (
	"bytes"
	"encoding/binary"
	"sync"
	"sync/atomic"
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

// A session closed by another goroutine while its handlers run: every
// reply a handler's Send accepted reaches the peer, in order, before the
// DISCONNECT, and nothing comes after it. On an event loop those replies
// are staged when the close is asked for; the close waits for them.
func TestCloseDuringDispatchKeepsAcceptedReplies(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, opts...)
		var accepted atomic.Int64
		got := make(chan *msgnet.Session, 1)
		asked := make(chan struct{})
		srv.OnMessage(func(s *msgnet.Session, msg []byte) {
			if binary.BigEndian.Uint64(msg) == 100 {
				// Hold this handler until the close has been asked for,
				// so that the close lands while handlers run.
				got <- s
				<-asked
			}
			if s.Send(msg) == nil {
				accepted.Add(1)
			}
		})
		r := dialRaw(t, addr)
		r.hello("closing")
		const n = 20000
		go func() { // pipelines everything; the server closes midway
			var buf []byte
			for i := range n {
				buf = frame.Append(buf, frame.KindData, 0, seqMsg(i))
				if len(buf) > 16<<10 || i == n-1 {
					if _, err := r.nc.Write(buf); err != nil {
						return
					}
					buf = buf[:0]
				}
			}
		}()
		s := <-got
		s.Disconnect("enough")
		close(asked)
		next := 0
		for {
			k, p, err := r.next()
			if err != nil {
				t.Fatalf("after %d replies: %v, want DISCONNECT", next, err)
			}
			if k == frame.KindDisconnect {
				break
			}
			if k != frame.KindData || binary.BigEndian.Uint64(p) != uint64(next) {
				t.Fatalf("reply %d: got %v %x", next, k, p)
			}
			next++
		}
		if k, p, err := r.next(); err == nil {
			t.Fatalf("after DISCONNECT: %v %q", k, p)
		}
		if int64(next) != accepted.Load() {
			t.Fatalf("%d replies arrived, %d sends were accepted", next, accepted.Load())
		}
	})
}

// A handler that mixes Send with a broadcast (which reaches the same
// session another way) keeps its order.
func TestHandlerSendsKeepOrderAcrossPaths(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, opts...)
		srv.OnMessage(func(s *msgnet.Session, msg []byte) {
			i := binary.BigEndian.Uint64(msg)
			s.Send(seqMsg(int(3 * i)))
			srv.Broadcast(seqMsg(int(3*i + 1)))
			s.Send(seqMsg(int(3*i + 2)))
		})
		r := dialRaw(t, addr)
		r.hello("mixed")
		const n = 2000
		var buf []byte
		for i := range n {
			buf = frame.Append(buf, frame.KindData, 0, seqMsg(i))
		}
		r.write(buf)
		for want := range 3 * n {
			p := r.expect(frame.KindData)
			if got := binary.BigEndian.Uint64(p); got != uint64(want) {
				t.Fatalf("message %d: got %d", want, got)
			}
		}
	})
}
