package msgnet_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

// Broadcasting to a silent session until its queue is full under
// SlowConsumerDisconnect must not deadlock the server: the session's end
// takes the registry locks the broadcast holds.
func TestSlowConsumerDisconnectDuringBroadcast(t *testing.T) {
	srv, addr := startServer(t, msgnet.WithSendQueueBytes(1000),
		msgnet.WithSlowConsumerPolicy(msgnet.SlowConsumerDisconnect))
	nc, err := net.Dial("tcp", addr) // says nothing: its queue only grows
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	waitFor(t, "session registered", func() bool { return srv.ConnectionCount() == 1 })
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 20; i++ {
			srv.Broadcast(bytes.Repeat([]byte{'x'}, 100))
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("broadcast deadlocked")
	}
	waitFor(t, "slow session closed", func() bool { return srv.ConnectionCount() == 0 })
	if st := srv.Stats(); st.Disconnects["slow_consumer"] != 1 {
		t.Fatalf("disconnects %v", st.Disconnects)
	}
}

// A peer that sends a lot at once and reads everything at once is not a
// slow consumer. On an event loop, the replies of a whole turn (up to
// loopReads reads) are held until the turn ends; an echo handler must not
// find the send queue full just because the loop has not tried to write
// yet.
func TestLoopTurnEchoWithinQueueBound(t *testing.T) {
	const limit = 64 << 10
	srv, addr := startServer(t, loopOpts(msgnet.WithSendQueueBytes(limit), msgnet.WithIdleTimeout(0))...)
	var sendErrs atomic.Int64
	var firstErr atomic.Value
	var once sync.Once
	srv.OnMessage(func(s *msgnet.Session, msg []byte) {
		once.Do(func() {
			// Hold the loop once, so that the peer's input piles up in the
			// socket and the next turn reads several full buffers.
			time.Sleep(300 * time.Millisecond)
		})
		if err := s.Send(msg); err != nil {
			if sendErrs.Add(1) == 1 {
				firstErr.Store(err.Error())
			}
		}
	})
	r := dialRaw(t, addr)
	r.hello("c")
	r.send(frame.KindData, "hold")
	time.Sleep(50 * time.Millisecond) // the loop is in the handler's sleep

	const n = 400
	const size = 1000
	go func() {
		var buf []byte
		for i := range n {
			p := make([]byte, size)
			binary.BigEndian.PutUint64(p, uint64(i))
			buf = frame.Append(buf, frame.KindData, 0, p)
		}
		r.nc.Write(buf)
	}()
	if p := r.expect(frame.KindData); string(p) != "hold" {
		t.Fatalf("got %q, want hold", p)
	}
	for i := range n {
		k, p, err := r.next()
		if err != nil {
			t.Fatalf("reply %d: %v (send errors: %d, first %v)", i, err, sendErrs.Load(), firstErr.Load())
		}
		if k != frame.KindData || binary.BigEndian.Uint64(p) != uint64(i) {
			t.Fatalf("reply %d: got %v seq %d (send errors: %d, first %v)", i, k, binary.BigEndian.Uint64(p), sendErrs.Load(), firstErr.Load())
		}
	}
	if e := sendErrs.Load(); e != 0 {
		t.Fatalf("%d echo sends failed (first: %v) for a peer that reads everything", e, firstErr.Load())
	}
}

// The send queue's bound covers everything not yet handed to the socket,
// with one documented exception (WithSendQueueBytes): what a handler stages
// during its event loop's turn, at most min(256 KiB, the bound), is not seen
// by other goroutines' sends until the turn ends. Sends from another
// goroutine during the turn stop at the bound counted without the stage,
// so the total stays within the bound plus the stage's room, and sends do
// not fail before the bound.
func TestLoopQueueBoundWithStage(t *testing.T) {
	const limit = 64 << 10
	srv, addr := startServer(t, loopOpts(msgnet.WithSendQueueBytes(limit), msgnet.WithIdleTimeout(0))...)
	type result struct{ own, foreign, queued int }
	got := make(chan result, 1)
	srv.OnMessage(func(s *msgnet.Session, msg []byte) {
		var res result
		for res.own < 60 && s.Send(make([]byte, 1000)) == nil {
			res.own++
		}
		done := make(chan struct{})
		go func() { // another goroutine, during the turn
			defer close(done)
			for res.foreign < 100 && s.Send(make([]byte, 1000)) == nil {
				res.foreign++
			}
		}()
		<-done
		res.queued = s.Info().QueueBytes
		got <- res
	})
	r := dialRaw(t, addr)
	r.hello("c")
	r.send(frame.KindData, "go")
	res := <-got
	const frameLen = frame.HeaderLen + 1000
	stageRoom := min(256<<10, limit)
	if res.own != 60 || res.foreign != limit/frameLen {
		t.Fatalf("queue bound %d: handler queued %d of 60, another goroutine %d, want %d (the bound without the stage)",
			limit, res.own, res.foreign, limit/frameLen)
	}
	if total := (res.own + res.foreign) * frameLen; total > limit+stageRoom || res.queued != total {
		t.Fatalf("queue bound %d: %d bytes queued, QueueBytes %d; want at most the bound plus the stage's room (%d)",
			limit, total, res.queued, limit+stageRoom)
	}
}

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

// As TestStagingConcurrentSendersAndDisconnect, with
// A peer that reads slowly, so that the loop's one write leaves a rest for
// A writer goroutine and later turns find a writer running.
func TestStagingSlowPeerWithWriter(t *testing.T) {
	for iter := 0; iter < 5; iter++ {
		t.Run(fmt.Sprint(iter), func(t *testing.T) {
			srv, addr := startServer(t, loopOpts(msgnet.WithSendQueueBytes(256<<20), msgnet.WithIdleTimeout(0))...)
			var accepted [2]atomic.Uint64
			var handlerSeq uint64
			ended := make(chan struct{})
			srv.OnDisconnect(func(*msgnet.Session, error) { close(ended) })
			var once sync.Once
			var wg sync.WaitGroup
			pad := make([]byte, 2000)
			srv.OnMessage(func(s *msgnet.Session, msg []byte) {
				once.Do(func() {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for seq := uint64(0); ; seq++ {
							if s.Send(append(tagMsg(1, seq), pad...)) != nil {
								return
							}
							accepted[1].Add(1)
							if seq == 3000 {
								s.Disconnect("enough")
							}
							if seq%8 == 0 {
								time.Sleep(10 * time.Microsecond)
							}
						}
					}()
				})
				for range 3 {
					if s.Send(append(tagMsg(0, handlerSeq), pad...)) != nil {
						return
					}
					handlerSeq++
					accepted[0].Add(1)
				}
			})
			r := dialRaw(t, addr)
			r.hello("c")
			go func() {
				var buf []byte
				for i := 0; i < 2000; i++ {
					buf = frame.Append(buf[:0], frame.KindData, 0, seqMsg(i))
					r.nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
					if _, err := r.nc.Write(buf); err != nil {
						return
					}
					time.Sleep(20 * time.Microsecond)
				}
			}()
			var next [2]uint64
			for n := 0; ; n++ {
				if n%200 == 0 {
					time.Sleep(2 * time.Millisecond) // fall behind now and then
				}
				k, p, err := r.next()
				if err != nil {
					t.Fatalf("before DISCONNECT: %v (received %v)", err, next)
				}
				if k == frame.KindDisconnect {
					break
				}
				src, seq := p[0], binary.BigEndian.Uint64(p[1:9])
				if seq != next[src] {
					t.Fatalf("sender %d: got seq %d, want %d", src, seq, next[src])
				}
				next[src]++
			}
			r.nc.Close()
			wg.Wait()
			<-ended
			for k := range next {
				if a := accepted[k].Load(); a != next[k] {
					t.Fatalf("sender %d: %d sends accepted, %d arrived", k, a, next[k])
				}
			}
		})
	}
}

// What a handler has sent and the loop has not yet written is "yet to hand
// to the socket": Info().QueueBytes and Stats().QueueBytes, read by the
// handler, count the stage.
func TestStagingQueueBytesSeesStagedSends(t *testing.T) {
	srv, addr := startServer(t, loopOpts()...)
	got := make(chan [2]int, 1)
	srv.OnMessage(func(s *msgnet.Session, msg []byte) {
		for range 3 {
			s.Send(make([]byte, 1000))
		}
		got <- [2]int{s.Info().QueueBytes, srv.Stats().QueueBytes}
	})
	r := dialRaw(t, addr)
	r.hello("c")
	r.send(frame.KindData, "go")
	want := 3 * (frame.HeaderLen + 1000)
	if q := <-got; q[0] != want || q[1] != want {
		t.Fatalf("right after 3 sends of 1010 bytes: Info().QueueBytes %d, Stats().QueueBytes %d, want %d", q[0], q[1], want)
	}
}

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

// Peers that write without pause must not keep their loop from the other
// sessions: every read fills the buffer, so a loop that read until the
// socket was empty would never get back to epoll.
func TestFloodDoesNotStarveOthers(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, append(opts, msgnet.WithIdleTimeout(0))...)
		var handled atomic.Int64
		srv.OnMessage(func(s *msgnet.Session, msg []byte) {
			// a non-blocking handler with a little work (~1 µs)
			x := uint64(len(msg))
			for i := 0; i < 300; i++ {
				x = x*6364136223846793005 + 1442695040888963407
			}
			if x == 42 {
				s.Send(msg)
			}
			handled.Add(1)
		})
		// Several flooders, so that every loop has one whatever the placement.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for k := 0; k < 4; k++ {
			f := dialRaw(t, addr)
			f.hello("flood")
			var buf []byte
			for len(buf) < 256<<10 {
				buf = frame.Append(buf, frame.KindData, 0, []byte("x"))
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					f.nc.SetWriteDeadline(time.Now().Add(time.Second))
					if _, err := f.nc.Write(buf); err != nil {
						return
					}
				}
			}()
		}
		defer func() { close(stop); wg.Wait() }()
		time.Sleep(300 * time.Millisecond)
		for k := 0; k < 4; k++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			if _, err := c.Write(frame.Append(nil, frame.KindControl, 0, []byte(`{"op":"hello","client_id":"victim"}`))); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			rd := frame.NewReader(c, 1<<20)
			if _, err := rd.ReadFrame(); err != nil {
				t.Errorf("victim %d: no welcome after %v: %v (handled %d)", k, time.Since(start), err, handled.Load())
			} else {
				t.Logf("victim %d: welcome after %v", k, time.Since(start))
			}
		}
	})
}

func TestSendQueueBoundReturnsErrQueueFull(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, append(opts, msgnet.WithSendQueueBytes(64<<10))...)
		sessions := make(chan *msgnet.Session, 1)
		srv.OnConnect(func(s *msgnet.Session) { sessions <- s })
		r := dialRaw(t, addr) // never reads
		r.hello("slow")
		s := <-sessions
		msg := make([]byte, 1000)
		var err error
		for i := 0; i < 1e6 && err == nil; i++ {
			err = s.Send(msg)
		}
		if !errors.Is(err, msgnet.ErrQueueFull) {
			t.Fatalf("got %v, want ErrQueueFull", err)
		}
		if err := s.Send(make([]byte, 2<<20)); !errors.Is(err, msgnet.ErrMessageTooLarge) {
			t.Fatalf("oversized send: %v", err)
		}
	})
}
