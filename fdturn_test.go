// Tests from the review of the event loop's whole-burst turn (0316d04) and
// its raw descriptor use during the turn (21b5925).

package msgnet_test

import (
	"context"
	"encoding/binary"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

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

// Server.Close cuts a lingering close short ("at once"), as does Shutdown
// once its context is done. On an event loop abort cuts it with an expired
// read deadline instead of closing the socket; the linger's own deadline
// must not undo that when the lingering goroutine starts after abort. One
// processor makes that order certain: Shutdown's close starts the linger
// goroutine, and with its context already done goes on to Close, which
// aborts the session, before that goroutine runs.
// The silent peer never ends the linger itself, so only the cut, or the
// linger's own limit of one second, can end it; the bound below is half of
// that limit, not a measure of speed.
func TestLoopCloseCutsLinger(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	srv := msgnet.NewServer("test_server", loopOpts(msgnet.WithIdleTimeout(0))...)
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	sess := make(chan *msgnet.Session, 1)
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { sess <- s })
	r := dialRaw(t, srv.Addr().String())
	r.write([]byte("hello\n")) // text mode: Disconnect queues nothing and lingers at once
	s := <-sess
	waitFor(t, "the turn to end", func() bool { return s.Info().MsgsIn == 1 })
	time.Sleep(10 * time.Millisecond)

	closed := make(chan struct{})
	go func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		srv.Shutdown(ctx)
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(500 * time.Millisecond):
		<-closed
		t.Fatal("Close waited for the linger's own deadline instead of cutting it")
	}
}

// Connections come and go while the event loops read and write them and
// other goroutines close them mid-turn: a closed session's descriptor
// number is soon reused by a new connection, and the loop must never read
// or write a session's bytes on another's socket. Every connection sends
// messages carrying its own token and must get back only its own, in
// order. (A stress test: closes during a turn mostly stop the loop's I/O
// through stopRead already, so it passes even with closeFdLocked's deferral
// removed; it guards the whole close and reuse path, not that window.)
func TestLoopNoCrossTalkUnderCloseAndReuse(t *testing.T) {
	srv, addr := startServer(t, loopOpts(msgnet.WithIdleTimeout(0), msgnet.WithSendQueueBytes(64<<10),
		msgnet.WithSlowConsumerPolicy(msgnet.SlowConsumerDisconnect))...)
	srv.OnMessage(func(s *msgnet.Session, msg []byte) {
		if len(msg) == 16 && binary.BigEndian.Uint64(msg[8:])%20 == 0 {
			// Widen the turn, so that closes and accepts land inside it.
			time.Sleep(300 * time.Microsecond)
		}
		for range 3 {
			if s.Send(msg) != nil {
				return
			}
		}
	})
	stop := make(chan struct{})
	var killer sync.WaitGroup
	killer.Add(1)
	go func() { // closes sessions from outside the loop, in all the ways
		defer killer.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			for j, s := range srv.Sessions() {
				if (i+j)%7 == 0 {
					switch j % 3 {
					case 0:
						s.Disconnect("kill")
					case 1:
						// Past the queue bound: a slow-consumer abort,
						// which closes the socket at once.
						for s.Send(make([]byte, 16<<10)) == nil {
						}
					default:
						s.Send(nil) // keeps a writer busy alongside
					}
				}
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	const clients = 16
	deadline := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	var conns atomic.Int64
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; time.Now().Before(deadline); k++ {
				conns.Add(1)
				token := uint64(c)<<32 | uint64(k)
				r := dialRaw(t, addr)
				r.send(frame.KindControl, `{"op":"hello","client_id":"c"}`)
				go func() {
					var buf []byte
					for i := range 200 {
						p := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, token), uint64(i))
						buf = frame.Append(buf, frame.KindData, 0, p)
						if i%20 == 19 {
							if _, err := r.nc.Write(buf); err != nil {
								return
							}
							buf = buf[:0]
						}
					}
				}()
				var next, got uint64
				for {
					kind, p, err := r.next()
					if err != nil || kind == frame.KindDisconnect {
						break
					}
					if kind != frame.KindData || len(p) == 0 || len(p) == 16<<10 { // the killer's sends
						continue
					}
					if len(p) != 16 || binary.BigEndian.Uint64(p) != token {
						t.Errorf("connection %x got a message for %x", token, binary.BigEndian.Uint64(p))
						break
					}
					if seq := binary.BigEndian.Uint64(p[8:]); seq != next {
						t.Errorf("connection %x: got seq %d, want %d", token, seq, next)
						break
					}
					if got++; got%3 == 0 {
						next++
					}
					if next == 200 {
						break
					}
				}
				r.nc.Close()
			}
		}()
	}
	wg.Wait()
	close(stop)
	killer.Wait()
	waitFor(t, "every session to end", func() bool { return srv.ConnectionCount() == 0 })
	t.Logf("%d connections", conns.Load())
}
