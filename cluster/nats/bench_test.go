package natsbus

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
)

// benchPair returns the addresses of a sender's node and a receiver's
// node: the same server without a bus ("single"), or two nodes of a
// cluster joined by routes between embedded NATS servers ("cross").
func benchPair(b *testing.B, mode string) (from, to string) {
	switch mode {
	case "single":
		n := startPlain(b, "single")
		return n.addr, n.addr
	case "cross":
		n1 := startNode(b, "n1", embeddedRoutes())
		n2 := startNode(b, "n2", embeddedRoutes(n1))
		waitCluster(b, n1, n2)
		return n1.addr, n2.addr
	}
	b.Fatal(mode)
	return
}

// waitKnown waits until a private message to id from c goes through.
func waitKnown(b *testing.B, c *msgnet.Client, got chan struct{}, id string) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := c.SendString("P:" + id + ":probe"); err != nil {
			b.Fatal(err)
		}
		select {
		case <-got:
			return
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatal("target never reachable")
		}
	}
}

// BenchmarkDirectThroughput: one client sends private messages (64-byte
// text) to another through the server, at most 1024 in flight.
func BenchmarkDirectThroughput(b *testing.B) {
	for _, mode := range []string{"single", "cross"} {
		b.Run(mode, func(b *testing.B) {
			fromAddr, toAddr := benchPair(b, mode)
			probe := make(chan struct{}, 1)
			sem := make(chan struct{}, 1024)
			var got atomic.Int64
			recv, _ := newClient(b, "recv")
			var probing atomic.Bool
			probing.Store(true)
			recv.OnMessage(func([]byte) {
				if probing.Load() {
					select {
					case probe <- struct{}{}:
					default:
					}
					return
				}
				got.Add(1)
				// Its slot was taken before it was sent, so one is there;
				// a stray late probe finds none and must not wait.
				select {
				case <-sem:
				default:
				}
			})
			if err := recv.Connect(b.Context(), toAddr); err != nil {
				b.Fatal(err)
			}
			snd, _ := client(b, "send", fromAddr)
			waitKnown(b, snd, probe, "recv")
			time.Sleep(100 * time.Millisecond) // let stray probes land
			probing.Store(false)
			msg := []byte("P:recv:" + strings.Repeat("x", 64))
			sent := int64(0)
			for b.Loop() {
				sem <- struct{}{}
				if err := snd.Send(msg); err != nil {
					b.Fatal(err)
				}
				sent++
			}
			for got.Load() < sent {
				time.Sleep(time.Millisecond)
			}
			b.ReportMetric(float64(sent)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkDirectRoundTrip: A sends a private message to B, B's handler
// sends one back to A; one op is the round trip (two private messages).
func BenchmarkDirectRoundTrip(b *testing.B) {
	for _, mode := range []string{"single", "cross"} {
		b.Run(mode, func(b *testing.B) {
			aAddr, bAddr := benchPair(b, mode)
			back := make(chan struct{}, 1)
			ca, _ := newClient(b, "a")
			ca.OnMessage(func([]byte) {
				select {
				case back <- struct{}{}:
				default:
				}
			})
			if err := ca.Connect(b.Context(), aAddr); err != nil {
				b.Fatal(err)
			}
			cb, _ := newClient(b, "b")
			cb.OnMessage(func([]byte) { cb.SendString("P:a:pong") })
			if err := cb.Connect(b.Context(), bAddr); err != nil {
				b.Fatal(err)
			}
			waitKnown(b, ca, back, "b") // b answers: both ways work
			time.Sleep(100 * time.Millisecond)
			for len(back) > 0 {
				<-back // cannot block: only this goroutine receives, and one is there
			}
			for b.Loop() {
				if err := ca.SendString("P:b:ping"); err != nil {
					b.Fatal(err)
				}
				select {
				case <-back:
				case <-time.After(10 * time.Second):
					b.Fatal("round trip lost")
				}
			}
		})
	}
}
