package msgnet_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

// BenchmarkEchoPipelined measures the server's whole echo path over loopback
// (read, parse, dispatch, queue, writev) with a raw client that keeps a
// window of frames in flight and allocates nothing itself, so the reported
// allocs/op are the server's per message. One op is one echoed frame.
func BenchmarkEchoPipelined(b *testing.B) {
	for _, size := range []int{64, 1024} {
		for _, e := range benchEngines {
			b.Run(e.name+"/"+sizeName(size), func(b *testing.B) { benchEcho(b, size, 64, e.opts...) })
		}
	}
}

func sizeName(n int) string {
	if n >= 1024 {
		return itoa(n/1024) + "KiB"
	}
	return itoa(n) + "B"
}

func itoa(n int) string {
	return string(bytes.TrimLeft([]byte{byte('0' + n/100%10), byte('0' + n/10%10), byte('0' + n%10)}, "0"))
}

// benchEngines are the server's read paths. The client is in the same
// process, so blocking-loop shows what EngineLoopBlocking costs the
// process's other network goroutines, not the server's own speed (which
// bench/run.sh measures, server and load in separate processes).
var benchEngines = []struct {
	name string
	opts []msgnet.Option
}{
	{"parked", []msgnet.Option{msgnet.WithEngine(msgnet.EngineParked)}},
	{"goroutine", []msgnet.Option{msgnet.WithEngine(msgnet.EngineGoroutine)}},
	{"loop", []msgnet.Option{msgnet.WithEngine(msgnet.EngineLoop)}},
	{"blocking-loop", []msgnet.Option{msgnet.WithEngine(msgnet.EngineLoopBlocking)}},
}

// echoConn starts an echo server with opts and returns a connection to it;
// both are closed when the benchmark ends.
func echoConn(b *testing.B, opts ...msgnet.Option) net.Conn {
	srv := msgnet.NewServer("bench", opts...)
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.Send(msg) })
	if err := srv.Start("127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	nc, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { nc.Close() })
	return nc
}

func benchEcho(b *testing.B, size, window int, opts ...msgnet.Option) {
	nc := echoConn(b, opts...)

	one := frame.Append(nil, frame.KindData, 0, make([]byte, size))
	batch := bytes.Repeat(one, window)
	frameLen := len(one)

	var wg sync.WaitGroup
	wg.Add(1)
	credits := make(chan int, 4)
	readErr := make(chan error, 1)
	b.SetBytes(int64(frameLen))
	b.ReportAllocs()
	b.ResetTimer()
	go func() {
		defer wg.Done()
		buf := make([]byte, 256<<10)
		total := b.N * frameLen
		got := 0
		for got < total {
			n, err := nc.Read(buf)
			if err != nil {
				readErr <- err
				return
			}
			before := got / frameLen
			got += n
			if done := got/frameLen - before; done > 0 {
				credits <- done
			}
		}
	}()
	sent, inflight := 0, 0
	for sent < b.N {
		for inflight < window && sent < b.N {
			k := min(window-inflight, b.N-sent)
			if _, err := nc.Write(batch[:k*frameLen]); err != nil {
				b.Fatal(err)
			}
			sent += k
			inflight += k
		}
		select {
		case d := <-credits:
			inflight -= d
		case err := <-readErr:
			b.Fatal(err)
		}
	}
	wg.Wait()
	b.StopTimer()
	_ = io.EOF
}

// BenchmarkRoundTrip is one frame in flight: the latency of the whole path.
func BenchmarkRoundTrip(b *testing.B) {
	for _, e := range benchEngines {
		b.Run(e.name, func(b *testing.B) {
			nc := echoConn(b, e.opts...)
			one := frame.Append(nil, frame.KindData, 0, make([]byte, 64))
			buf := make([]byte, len(one))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := nc.Write(one); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(nc, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkClientEcho is the Go client against the server.
func BenchmarkClientEcho(b *testing.B) {
	srv := msgnet.NewServer("bench")
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.Send(msg) })
	if err := srv.Start("127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	got := make(chan struct{}, 1024)
	c := msgnet.NewClient("bench")
	c.OnMessage(func([]byte) { got <- struct{}{} })
	if err := c.Connect(context.Background(), srv.Addr().String()); err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ReportAllocs()
	pumpEcho(b, c, got, make([]byte, 64), 512)
}

// pumpEcho sends b.N copies of msg with up to window in flight and waits
// for every echo (one token on got per echo).
func pumpEcho(b *testing.B, c *msgnet.Client, got <-chan struct{}, msg []byte, window int) {
	b.ResetTimer()
	inflight := 0
	for i := 0; i < b.N; i++ {
		for inflight >= window {
			<-got
			inflight--
		}
		if err := c.Send(msg); err != nil {
			b.Fatal(err)
		}
		inflight++
	}
	for ; inflight > 0; inflight-- {
		<-got
	}
}

// BenchmarkPipelineEcho is the Go client's echo through each negotiated
// payload stage, beside the plain path: 1 KiB JSON-like payloads, 256 in
// flight. MB/s counts payload bytes one way.
func BenchmarkPipelineEcho(b *testing.B) {
	psk := []byte("benchmark pre-shared key, 32 B..")
	payload := bytes.Repeat([]byte(`{"user":"alice","x":12,"y":34},`), 40)[:1024]
	cases := []struct {
		name string
		srv  []msgnet.Option
		cli  []msgnet.Option
	}{
		{"plain", nil, nil},
		{"s2", nil, []msgnet.Option{msgnet.WithCompression("s2")}},
		{"zstd", nil, []msgnet.Option{msgnet.WithCompression("zstd")}},
		{"lz4", nil, []msgnet.Option{msgnet.WithCompression("lz4")}},
		{"chacha20", []msgnet.Option{msgnet.WithEncryption(psk, "chacha20-poly1305")}, []msgnet.Option{msgnet.WithEncryption(psk)}},
		{"aes-gcm", []msgnet.Option{msgnet.WithEncryption(psk, "aes-256-gcm")}, []msgnet.Option{msgnet.WithEncryption(psk, "aes-256-gcm")}},
		{"s2+aes-gcm", []msgnet.Option{msgnet.WithEncryption(psk, "aes-256-gcm")}, []msgnet.Option{msgnet.WithEncryption(psk, "aes-256-gcm"), msgnet.WithCompression("s2")}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			srv := msgnet.NewServer("bench", tc.srv...)
			srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.Send(msg) })
			if err := srv.Start("127.0.0.1:0"); err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			got := make(chan struct{}, 1024)
			c := msgnet.NewClient("bench", tc.cli...)
			c.OnMessage(func([]byte) { got <- struct{}{} })
			if err := c.Connect(context.Background(), srv.Addr().String()); err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			pumpEcho(b, c, got, payload, 256)
		})
	}
}
