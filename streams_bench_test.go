package msgnet_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
)

// liveHeap is the live heap after two collections.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkRetainedMessageMemory reports what the memory store holds per
// retained message of 128 bytes, beyond its payload ("B/msg" includes the
// payload; "overhead-B/msg" is what is left without it).
func BenchmarkRetainedMessageMemory(b *testing.B) {
	const n = 100_000
	payload := make([]byte, 128)
	for range b.N {
		st := msgnet.MemoryStore()
		before := liveHeap()
		l, err := st.Open("group:g", msgnet.Retention{MaxMessages: n, MaxBytes: 1 << 30, MaxAge: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		for range n {
			l.Append(payload, "")
		}
		held := float64(liveHeap() - before)
		b.ReportMetric(held/n, "B/msg")
		b.ReportMetric(held/n-float64(len(payload)), "overhead-B/msg")
		runtime.KeepAlive(l)
	}
}

// BenchmarkResumableInboxMemory reports what the server holds for a client
// id whose inbox stream exists while the client is away (its stream with
// nothing retained, and the registry entries), per client id.
func BenchmarkResumableInboxMemory(b *testing.B) {
	const n = 2_000
	for range b.N {
		srv := msgnet.NewServer("mem", msgnet.WithMaxConnections(0))
		if err := srv.Start("127.0.0.1:0"); err != nil {
			b.Fatal(err)
		}
		addr := srv.Addr().String()
		before := liveHeap()
		for i := range n {
			c := msgnet.NewClient(fmt.Sprint("client-", i), msgnet.WithReliable(msgnet.ReliableOptions{}))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := c.Connect(ctx, addr); err != nil {
				b.Fatal(err)
			}
			if err := c.Subscribe(ctx, msgnet.ClientStream(fmt.Sprint("client-", i))); err != nil {
				b.Fatal(err)
			}
			cancel()
			c.Close()
		}
		deadline := time.Now().Add(10 * time.Second)
		for srv.ConnectionCount() > 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		held := float64(liveHeap() - before)
		b.ReportMetric(held/n, "B/inbox")
		srv.Close()
		srv.Wait()
	}
}
