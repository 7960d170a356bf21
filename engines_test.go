package msgnet_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

func loopOpts(extra ...msgnet.Option) []msgnet.Option {
	return append([]msgnet.Option{msgnet.WithEngine(msgnet.EngineLoop)}, extra...)
}

// Loops under pipelined load, broadcasts and disconnects from another
// goroutine, then a shutdown: for the race detector and goleak.
func TestLoopStress(t *testing.T) {
	srv, addr := startServer(t, msgnet.WithEngine(msgnet.EngineLoop),
		msgnet.WithSendQueueBytes(1<<20), msgnet.WithIdleTimeout(0))
	var sessions sync.Map
	var received atomic.Int64 // bytes the clients read
	srv.OnConnect(func(s *msgnet.Session) { sessions.Store(s, true) })
	srv.OnDisconnect(func(s *msgnet.Session, err error) { sessions.Delete(s) })
	srv.OnMessage(func(s *msgnet.Session, msg []byte) {
		s.Send(msg)
		if msg[0]%7 == 0 {
			srv.Broadcast(msg)
		}
		if msg[0]%13 == 0 {
			s.Send(msg)
		}
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var raws []*raw
	for c := 0; c < 20; c++ {
		r := dialRaw(t, addr)
		r.hello("s")
		raws = append(raws, r)
	}
	for _, r := range raws {
		wg.Add(2)
		go func() {
			defer wg.Done()
			var buf []byte
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				buf = buf[:0]
				for j := 0; j < 50; j++ {
					buf = frame.Append(buf, frame.KindData, 0, []byte{byte(i + j), 1, 2, 3})
				}
				r.nc.SetWriteDeadline(time.Now().Add(time.Second))
				if _, err := r.nc.Write(buf); err != nil {
					return
				}
				time.Sleep(50 * time.Microsecond)
			}
		}()
		go func() {
			defer wg.Done()
			b := make([]byte, 64<<10)
			for {
				select {
				case <-stop:
					return
				default:
				}
				r.nc.SetReadDeadline(time.Now().Add(3 * time.Second))
				n, err := r.nc.Read(b)
				received.Add(int64(n))
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			srv.Broadcast([]byte{byte(i), 9})
			if i%3000 == 2999 {
				sessions.Range(func(k, v any) bool { k.(*msgnet.Session).Disconnect("x"); return false })
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	// Run for a second, and until a megabyte has come back: on a loaded
	// machine that takes longer, and the test waits rather than fails.
	start := time.Now()
	for time.Since(start) < time.Second || received.Load() < 1<<20 {
		if time.Since(start) > 30*time.Second {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	for _, r := range raws {
		r.nc.SetReadDeadline(time.Now()) // a reader waiting in Read stops now
	}
	t0 := time.Now()
	wg.Wait()
	t.Logf("clients done after %v; %d bytes received", time.Since(t0), received.Load())
	if received.Load() < 1<<20 {
		t.Fatalf("the clients read %d bytes in %v of echoes and broadcasts", received.Load(), time.Since(start))
	}
	t0 = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown after %v: %v; %d sessions open", time.Since(t0), err, srv.ConnectionCount())
	}
	if n := srv.ConnectionCount(); n != 0 {
		t.Fatalf("%d sessions open after shutdown", n)
	}
}
