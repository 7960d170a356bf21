//go:build linux

package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgnet/msgnet/frame"
	"golang.org/x/sys/unix"
)

// pollFixture is one polled reader with one receiver, connected on
// loopback to a listener whose side of the connection (srv) the test
// writes as a server would.
type pollFixture struct {
	t    *testing.T
	r    *runner
	sink *fanoutSink
	rd   *pollReader
	sub  *pollSub
	srv  net.Conn
}

func newPollFixture(t *testing.T, nats bool) *pollFixture {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ln.Accept()
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	r := &runner{cfg: Config{MaxPayload: 1 << 20}, errs: newErrorLog()}
	c := &client{nc: nc}
	if nats {
		c.nats = &natsConn{rd: newNATSReader(nc, 1<<20)}
	} else {
		c.r = frame.NewReader(nc, 1<<20)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	now := nanotime()
	sink := &fanoutSink{
		w:       window{start: now - int64(time.Hour), end: now + int64(time.Hour)},
		last:    1 << 30,
		mono0:   now,
		wall0:   time.Now().UnixNano(),
		seqs:    make([]seqSet, 1),
		workers: []*connWorker{newConnWorker(r, ctx, 0, c)},
		msgs:    newMeter(1),
		hist:    newShardedHist(1),
	}
	rd, err := newPollReader(sink, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := rd.add(0); err != nil {
		rd.close()
		t.Fatal(err)
	}
	f := &pollFixture{t: t, r: r, sink: sink, rd: rd, sub: rd.subs[0], srv: srv}
	return f
}

// payload is a delivery of seq as the msgnet managed server relays it.
func (f *pollFixture) payload(seq uint64) []byte {
	return []byte("[g] c1: " + strconv.FormatUint(seq, 10) + ":" + strconv.FormatInt(f.sink.wall0+1000, 10))
}

func (f *pollFixture) write(b []byte) {
	f.t.Helper()
	if _, err := f.srv.Write(b); err != nil {
		f.t.Fatal(err)
	}
}

// roundsUntil runs the reader's rounds on the test's goroutine until cond
// holds, failing the test if it does not within a few seconds.
func (f *pollFixture) roundsUntil(what string, cond func() bool) {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			f.t.Fatalf("no %s within 5s", what)
		}
		if _, err := f.rd.round(20); err != nil {
			f.t.Fatal(err)
		}
	}
}

// got reports how many of [0, n) the receiver has, and whether the
// counters agree.
func (f *pollFixture) check(n int) {
	f.t.Helper()
	set := &f.sink.seqs[0]
	got, _ := set.count(0, uint64(n))
	if got != int64(n) || set.top != uint64(n) || set.dups != 0 || set.outOfOrder != 0 {
		f.t.Fatalf("receiver has %d of %d (top %d, dups %d, out of order %d)", got, n, set.top, set.dups, set.outOfOrder)
	}
	if c := f.sink.workers[0].count; c != int64(n) {
		f.t.Fatalf("count %d, want %d", c, n)
	}
	if c := f.sink.inWindow.Load(); c != int64(n) {
		f.t.Fatalf("inWindow %d, want %d", c, n)
	}
	if c := f.rd.hist.TotalCount(); c != int64(n) {
		f.t.Fatalf("%d latencies, want %d", c, n)
	}
}

// splitEverywhere sends stream, of which ends[i] is where its i-th
// delivery ends, once per byte boundary k: the first k bytes in one read,
// the rest in another, checking after each that the reader took exactly
// the deliveries complete so far. mk builds the stream for deliveries
// numbered from base.
func splitEverywhere(t *testing.T, f *pollFixture, mk func(base uint64) (stream []byte, ends []int)) {
	stream, _ := mk(0)
	var base uint64
	var bytesSent int64
	for k := 1; k < len(stream); k++ {
		stream, ends := mk(base)
		f.write(stream[:k])
		bytesSent += int64(k)
		f.roundsUntil("read of the first part", func() bool { return f.sub.read == bytesSent })
		done := 0
		for _, e := range ends {
			if e <= k {
				done++
			}
		}
		f.check(int(base) + done)
		f.write(stream[k:])
		bytesSent += int64(len(stream) - k)
		base += uint64(len(ends))
		f.roundsUntil("all deliveries", func() bool { return f.sink.inWindow.Load() == int64(base) })
		f.check(int(base))
		if len(f.sub.tail) != 0 || f.sub.dead {
			t.Fatalf("split at %d: tail %q, dead %v", k, f.sub.tail, f.sub.dead)
		}
	}
	if n, samples := f.r.errs.snapshot(); n != 0 {
		t.Fatalf("errors: %v", samples)
	}
}

func TestPollReaderFramesSplitAtEveryByte(t *testing.T) {
	f := newPollFixture(t, false)
	defer f.rd.close()
	splitEverywhere(t, f, func(base uint64) ([]byte, []int) {
		var b []byte
		var ends []int
		b = frame.Append(b, frame.KindData, 0, f.payload(base))
		ends = append(ends, len(b))
		b = frame.Append(b, frame.KindHeartbeat, 0, nil)           // skipped
		b = frame.Append(b, frame.KindData, 0, []byte("Joined g")) // not a delivery
		b = frame.Append(b, frame.KindData, 0, f.payload(base+1))
		ends = append(ends, len(b))
		b = frame.Append(b, frame.KindData, 0, []byte("GROUP:g:"+strconv.FormatUint(base+2, 10)+":"+strconv.FormatInt(f.sink.wall0+5, 10)))
		ends = append(ends, len(b))
		return b, ends
	})
}

func TestPollReaderNATSSplitAtEveryByte(t *testing.T) {
	f := newPollFixture(t, true)
	defer f.rd.close()
	splitEverywhere(t, f, func(base uint64) ([]byte, []int) {
		var b []byte
		var ends []int
		b = appendNATSMsg(b, "", f.payload(base))
		ends = append(ends, len(b))
		b = append(b, "+OK\r\nINFO {\"server_id\":\"x\"}\r\nPONG\r\n"...)
		b = appendNATSMsg(b, "_INBOX.r", f.payload(base+1))
		ends = append(ends, len(b))
		b = appendNATSMsg(b, "", f.payload(base+2))
		ends = append(ends, len(b))
		return b, ends
	})
}

func appendNATSMsg(b []byte, reply string, payload []byte) []byte {
	b = append(b, "MSG g 1 "...)
	if reply != "" {
		b = append(b, reply+" "...)
	}
	b = strconv.AppendInt(b, int64(len(payload)), 10)
	b = append(b, "\r\n"...)
	b = append(b, payload...)
	return append(b, "\r\n"...)
}

// TestPollReaderLargeMessage checks a message larger than the read buffer.
func TestPollReaderLargeMessage(t *testing.T) {
	f := newPollFixture(t, false)
	defer f.rd.close()
	big := append(bytes.Repeat([]byte{'x'}, 3*pollReadSize), ": "...)
	big = append(big, f.payload(0)...)
	b := frame.Append(nil, frame.KindData, 0, big)
	b = frame.Append(b, frame.KindData, 0, f.payload(1))
	wrote := make(chan error, 1)
	go func() { _, err := f.srv.Write(b); wrote <- err }()
	f.roundsUntil("deliveries", func() bool { return f.sink.inWindow.Load() == 2 })
	f.check(2)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}

func TestPollReaderServerCloses(t *testing.T) {
	for _, tc := range []struct {
		nats    bool
		partial bool
		want    string
	}{
		{false, false, "EOF"},
		{false, true, "unexpected EOF"},
		{true, false, "EOF"},
		{true, true, "unexpected EOF"},
	} {
		f := newPollFixture(t, tc.nats)
		var b []byte
		if tc.nats {
			b = appendNATSMsg(nil, "", f.payload(0))
		} else {
			b = frame.Append(nil, frame.KindData, 0, f.payload(0))
		}
		n := len(b)
		if tc.partial {
			n = len(b) - 3
		}
		f.write(b[:n])
		f.srv.Close()
		f.roundsUntil("end of the receiver", func() bool { return f.sub.dead })
		f.check(map[bool]int{false: 1, true: 0}[tc.partial])
		count, samples := f.r.errs.snapshot()
		if count != 1 || samples[0] != tc.want {
			t.Errorf("nats %v partial %v: errors %d %q, want %q", tc.nats, tc.partial, count, samples, tc.want)
		}
		select {
		case <-f.sink.workers[0].dead:
		default:
			t.Error("the worker was not failed")
		}
		f.rd.close()
	}
}

func TestPollReaderErrorFrame(t *testing.T) {
	for _, kind := range []frame.Kind{frame.KindError, frame.KindDisconnect} {
		f := newPollFixture(t, false)
		b := frame.Append(nil, frame.KindData, 0, f.payload(0))
		if kind == frame.KindError {
			b = frame.Append(b, kind, 0, frame.AppendError(nil, "slow_consumer", "queue full"))
		} else {
			b = frame.Append(b, kind, 0, []byte("bye"))
		}
		b = frame.Append(b, frame.KindData, 0, f.payload(1)) // after the end: not taken
		f.write(b)
		f.roundsUntil("end of the receiver", func() bool { return f.sub.dead })
		f.check(1)
		want := map[frame.Kind]string{frame.KindError: "server sent ERROR slow_consumer: queue full",
			frame.KindDisconnect: `server sent DISCONNECT "bye"`}[kind]
		if count, samples := f.r.errs.snapshot(); count != 1 || samples[0] != want {
			t.Errorf("%v: errors %d %q, want %q", kind, count, samples, want)
		}
		// The socket is closed: the server sees the end of it.
		f.srv.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := f.srv.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("%v: server side read %v, want EOF", kind, err)
		}
		f.rd.close()
	}
}

func TestPollReaderNATSErr(t *testing.T) {
	f := newPollFixture(t, true)
	defer f.rd.close()
	f.write(append(appendNATSMsg(nil, "", f.payload(0)), "-ERR 'Slow Consumer'\r\n"...))
	f.roundsUntil("end of the receiver", func() bool { return f.sub.dead })
	f.check(1)
	if count, samples := f.r.errs.snapshot(); count != 1 || samples[0] != "server sent -ERR 'Slow Consumer'" {
		t.Errorf("errors %d %q", count, samples)
	}
}

// TestPollReaderNATSPing runs the reader as fanout does, on its own
// goroutine, parked between messages, and checks that it answers the
// server's PING with PONG and stops when its context ends.
func TestPollReaderNATSPing(t *testing.T) {
	f := newPollFixture(t, true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { f.rd.run(ctx) })
	f.srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := range 3 {
		f.write([]byte("PING\r\n"))
		buf := make([]byte, 6)
		if _, err := io.ReadFull(f.srv, buf); err != nil || string(buf) != "PONG\r\n" {
			t.Fatalf("PING %d: answer %q %v, want PONG", i, buf, err)
		}
	}
	f.write(appendNATSMsg(nil, "", f.payload(0)))
	deadline := time.Now().Add(5 * time.Second)
	for f.sink.inWindow.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the MSG after the PINGs was not delivered within 5s")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	wg.Wait()
	f.check(1)
	if f.sink.hist.merged().TotalCount() != 1 {
		t.Error("the reader's histogram was not merged into the sink's")
	}
	if n, samples := f.r.errs.snapshot(); n != 0 {
		t.Errorf("errors: %v", samples)
	}
	// Stopping closed the socket.
	if _, err := f.srv.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("server side read %v, want EOF", err)
	}
}

// TestFanoutGoroutinePerReceiver runs fanout with the goroutine per
// receiver that non-Linux platforms and TLS use.
func TestFanoutGoroutinePerReceiver(t *testing.T) {
	fanoutPolling = false
	defer func() { fanoutPolling = true }()
	s := startServer(t, serverOpts{joinNotice: true})
	res := run(t, Config{Mode: ModeFanout, Addr: s.addr(), Conns: 3, Rate: 200,
		Duration: 300 * time.Millisecond, Warmup: 50 * time.Millisecond, Drain: 2 * time.Second, JoinWait: 50 * time.Millisecond})
	noErrors(t, res)
	if res.Expected == 0 || res.Messages != res.Expected || res.Fanout.Delivered != res.Expected || res.Latency.Count != res.Messages {
		t.Errorf("delivered %d (%d distinct, %d latencies) of %d", res.Messages, res.Fanout.Delivered, res.Latency.Count, res.Expected)
	}
}

// TestFanoutReceiverDropped checks a run in which the server drops the
// receivers: each is one error, and their messages are missing.
func TestFanoutReceiverDropped(t *testing.T) {
	s := startServer(t, serverOpts{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		deadline := time.Now().Add(10 * time.Second)
		members := func() int {
			s.mu.Lock()
			defer s.mu.Unlock()
			return len(s.groups["bench"])
		}
		for members() < 4 && time.Now().Before(deadline) { // the receivers and the sender
			time.Sleep(5 * time.Millisecond)
		}
		s.dropAll()
	}()
	res := run(t, Config{Mode: ModeFanout, Addr: s.addr(), Conns: 3, Rate: 100, Group: "bench",
		Duration: 200 * time.Millisecond, JoinWait: 50 * time.Millisecond, Drain: 100 * time.Millisecond})
	<-done
	if res.Errors < 3 || !strings.Contains(strings.Join(res.ErrorSamples, " "), "EOF") {
		t.Errorf("dropped receivers not reported: %d %v", res.Errors, res.ErrorSamples)
	}
	if res.Expected == 0 || res.Fanout.Delivered >= res.Expected || res.Fanout.ReceiversWithGaps != 3 {
		t.Errorf("delivered %d of %d after the drop, %d receivers with gaps", res.Fanout.Delivered, res.Expected, res.Fanout.ReceiversWithGaps)
	}
}

func TestParseDeliveryFast(t *testing.T) {
	for _, in := range []string{
		"[bench] c1: 12:1700000000000000000", "GROUP:bench:3:17", "3:17", " 5 : 99 \n", "joined bench",
		"a:b", "17", "x:-1:5", "1:0", "x12:17", ":12:17", "12:+17", "c1:  7:8", "c1:\t7:8",
		"1:9223372036854775807", "1:9223372036854775808", "1:8999999999999999999", "18446744073709551615:5",
		"18446744073709551616:5", "1:01", "::", "1:", ":1",
	} {
		s1, t1, ok1 := parseDelivery([]byte(in))
		s2, t2, ok2 := parseDeliveryFast([]byte(in))
		if s1 != s2 || t1 != t2 || ok1 != ok2 {
			t.Errorf("%q: fast %d %d %v, parseDelivery %d %d %v", in, s2, t2, ok2, s1, t1, ok1)
		}
	}
}

// A NATS server that floods PINGs and never reads the PONGs: once the
// receiver's socket has no room for a PONG, that receiver fails at once
// with the reason, instead of the reader waiting on it while every other
// receiver it serves goes unread.
func TestPollReaderPongNotRead(t *testing.T) {
	f := newPollFixture(t, true)
	defer f.rd.close()
	if err := unix.SetsockoptInt(f.sub.fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.(*net.TCPConn).SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	flood := make(chan error, 1)
	go func() {
		f.srv.SetWriteDeadline(time.Now().Add(20 * time.Second))
		_, err := f.srv.Write(bytes.Repeat([]byte("PING\r\n"), 200000))
		flood <- err
	}()
	f.roundsUntil("end of the receiver", func() bool { return f.sub.dead })
	_, samples := f.r.errs.snapshot()
	if len(samples) != 1 || !strings.Contains(samples[0], "does not read this connection") {
		t.Fatalf("errors %q, want the receiver failed for its unread PONGs", samples)
	}
	f.srv.Close()
	<-flood // the flood ends once the receiver's socket is closed
}

// A message far larger than a read, trickled in small segments with a
// round between them, arrives whole; it is gathered in the receiver's own
// buffer, which is let go once it is taken, and the reader's shared buffer
// never grows to its size.
func TestPollReaderLargeMessageTrickled(t *testing.T) {
	f := newPollFixture(t, false)
	defer f.rd.close()
	big := append(bytes.Repeat([]byte{'x'}, 8*pollReadSize), ": "...)
	b := frame.Append(nil, frame.KindData, 0, append(big, f.payload(0)...))
	b = frame.Append(b, frame.KindData, 0, f.payload(1))
	sent := 0
	for sent < len(b) {
		n := min(4096, len(b)-sent)
		f.write(b[sent : sent+n])
		sent += n
		f.roundsUntil(fmt.Sprint("the segment read (", sent, ")"), func() bool { return f.sub.read == int64(sent) || f.sub.dead })
		if f.sub.dead {
			_, samples := f.r.errs.snapshot()
			t.Fatalf("receiver failed at %d: %q", sent, samples)
		}
		if len(f.rd.buf) > 2*pollReadSize {
			t.Fatalf("the reader's shared buffer grew to %d bytes", len(f.rd.buf))
		}
	}
	f.check(2)
	if cap(f.sub.tail) > pollReadSize {
		t.Fatalf("the receiver keeps a %d-byte buffer after the large message", cap(f.sub.tail))
	}
}
