//go:build unix

package natsbus

import (
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/nats-io/nats.go"
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
// text) to another through the server, at most 1024 in flight. "nats" is
// the anchor: the same flow between two nats.go clients of two routed NATS
// servers, as the cross-node path has them underneath.
func BenchmarkDirectThroughput(b *testing.B) {
	b.Run("nats", benchNATSRouted)
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
			cpu := startCPU()
			sent := sendWindowed(b, snd, msg, sem)
			waitCount(b, &got, sent)
			b.ReportMetric(float64(sent)/b.Elapsed().Seconds(), "msgs/s")
			cpu.report(b, sent)
		})
	}
}

// benchNATSRouted: a nats.go client publishes 64-byte messages to one NATS
// server, and another, subscribed on a second server routed to the first,
// receives them; at most 1024 in flight, as in the msgnet modes.
func benchNATSRouted(b *testing.B) {
	log := slog.New(slog.DiscardHandler)
	na, err := startEmbedded(Embedded{ClusterListen: "127.0.0.1:0"}, log)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { na.Shutdown(); na.WaitForShutdown() }()
	nb, err := startEmbedded(Embedded{ClusterListen: "127.0.0.1:0",
		Routes: []string{"nats-route://" + na.ClusterAddr().String()}}, log)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { nb.Shutdown(); nb.WaitForShutdown() }()
	pub, err := nats.Connect(na.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	sub, err := nats.Connect(nb.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	sem := make(chan struct{}, 1024)
	var got atomic.Int64
	if _, err := sub.Subscribe("recv", func(*nats.Msg) {
		got.Add(1)
		select {
		case <-sem:
		default:
		}
	}); err != nil {
		b.Fatal(err)
	}
	sub.Flush()
	deadline := time.Now().Add(10 * time.Second)
	for na.GlobalAccount().Interest("recv") != 1 {
		if time.Now().After(deadline) {
			b.Fatal("the subscription never reached the publisher's server")
		}
		time.Sleep(time.Millisecond)
	}
	msg := []byte(strings.Repeat("x", 64))
	sent := int64(0)
	cpu := startCPU()
	for b.Loop() {
		sem <- struct{}{}
		if err := pub.Publish("recv", msg); err != nil {
			b.Fatal(err)
		}
		sent++
		if len(sem) == cap(sem) {
			pub.Flush() // nats.go's flusher would; do not wait for it
		}
	}
	pub.Flush()
	waitCount(b, &got, sent)
	b.ReportMetric(float64(sent)/b.Elapsed().Seconds(), "msgs/s")
	cpu.report(b, sent)
}

// cpuMeter measures the process's CPU time (every server, bus and client
// of a benchmark runs in it) per message.
type cpuMeter struct{ start time.Duration }

func startCPU() cpuMeter { return cpuMeter{processCPU()} }

func (m cpuMeter) report(b *testing.B, msgs int64) {
	if msgs > 0 {
		b.ReportMetric(float64((processCPU()-m.start).Nanoseconds())/1e3/float64(msgs), "cpu-µs/msg")
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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

// BenchmarkGroupFanout: one client sends group messages (64-byte text) to
// a group of 50 members on the receiving node, at most 256 messages in
// flight (counted at one member). The metrics count deliveries: one
// message is 50.
func BenchmarkGroupFanout(b *testing.B) {
	const members = 50
	for _, mode := range []string{"single", "cross"} {
		b.Run(mode, func(b *testing.B) {
			fromAddr, toAddr := benchPair(b, mode)
			sem := make(chan struct{}, 256)
			var got, probed atomic.Int64
			for i := range members {
				c, _ := newClient(b, fmt.Sprint("m", i))
				first := i == 0
				var seen atomic.Bool
				c.OnMessage(func(msg []byte) {
					switch {
					case string(msg) == "probe":
						if !seen.Swap(true) {
							probed.Add(1)
						}
					case len(msg) > 0 && msg[0] == 'x':
						got.Add(1)
						if first {
							select {
							case <-sem:
							default:
							}
						}
					}
				})
				if err := c.Connect(b.Context(), toAddr); err != nil {
					b.Fatal(err)
				}
				send(b, c, "J:grp")
			}
			snd, _ := client(b, "send", fromAddr)
			// Probe until every member has one: the group's interest has
			// spread to the sender's node.
			deadline := time.Now().Add(10 * time.Second)
			for probed.Load() < members {
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d members reachable", probed.Load(), members)
				}
				send(b, snd, "G:grp:probe")
				time.Sleep(20 * time.Millisecond)
			}
			msg := []byte("G:grp:" + strings.Repeat("x", 64))
			cpu := startCPU()
			sent := sendWindowed(b, snd, msg, sem)
			waitCount(b, &got, sent*members)
			b.ReportMetric(float64(sent*members)/b.Elapsed().Seconds(), "deliveries/s")
			cpu.report(b, sent*members)
		})
	}
}

// sendWindowed sends msg from snd for every iteration of b's loop, taking
// a slot of sem first (the receiver's handler frees it), and returns how
// many it sent.
func sendWindowed(b *testing.B, snd *msgnet.Client, msg []byte, sem chan struct{}) int64 {
	var sent int64
	for b.Loop() {
		sem <- struct{}{}
		if err := snd.Send(msg); err != nil {
			b.Fatal(err)
		}
		sent++
	}
	return sent
}

// waitCount waits until got reaches want: every message sent arrived.
func waitCount(b *testing.B, got *atomic.Int64, want int64) {
	deadline := time.Now().Add(30 * time.Second)
	for got.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d arrived", got.Load(), want)
		}
		time.Sleep(time.Millisecond)
	}
}
