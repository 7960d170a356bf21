package msgnet_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

// Hostile use of connections themselves: too many of them, resets,
// half-closes, connect-and-close storms, and the server-wide queue budget.

// refusal reads what a refused connection is told: exactly ERROR code and
// DISCONNECT, then the close.
func refusal(nc net.Conn, code string) error {
	b, _, err := readUntilClosed(nc, 5*time.Second)
	fs, ferr := frames(b)
	if err != nil || ferr != nil || len(fs) != 2 || fs[0].Kind != frame.KindError ||
		frame.ParseError(fs[0].Payload).Code != code || fs[1].Kind != frame.KindDisconnect {
		return fmt.Errorf("got %q (%v), want ERROR %s, DISCONNECT and the close", b, err, code)
	}
	return nil
}

// Up to the connection limit from one address: with the server full of
// idle attackers, a storm of newcomers each get ERROR server_full and
// DISCONNECT, at accept, and are closed (the Go client's Connect fails
// with ErrServerFull); each refusal is counted; the honest client,
// connected before, stays within its bound; once attackers leave, a
// newcomer is welcome again.
func TestHostileMaxConnections(t *testing.T) {
	forServeTargets(t, func(t *testing.T, tg target) {
		const limit, newcomers = 32, 100
		srv, addr := tg.start(t, msgnet.WithMaxConnections(limit))
		h := newHonest(t, tg, addr)
		var idle []net.Conn
		for i := range limit - 1 {
			nc := dialRaw(t, addr).nc
			if _, err := handshake(nc, fmt.Sprint("squatter-", i), ""); err != nil {
				t.Fatal(err)
			}
			idle = append(idle, nc)
		}
		a := newAttack(t)
		var storming sync.WaitGroup
		for w := range 4 {
			storming.Add(1)
			a.goDo(func(stop <-chan struct{}) {
				defer storming.Done()
				for i := 0; i < newcomers/4 && !stopped(stop); i++ {
					nc, err := net.Dial("tcp", addr)
					if err != nil {
						t.Error(err)
						return
					}
					if w%2 == 0 {
						nc.Write(helloFrame("newcomer", "")) // a hello changes nothing
					}
					if err := refusal(nc, frame.CodeServerFull); err != nil {
						t.Errorf("newcomer %d.%d: %v", w, i, err)
					}
					nc.Close()
				}
			})
		}
		done := make(chan struct{})
		go func() { storming.Wait(); close(done) }()
		h.during(30, 30*time.Second, func() bool { return stopped(done) })
		a.end()
		c := msgnet.NewClient("go-newcomer")
		if err := c.Connect(ctx5s(t), addr); !errors.Is(err, msgnet.ErrServerFull) {
			c.Close()
			t.Errorf("a Go client's Connect to a full server: %v, want ErrServerFull", err)
		}
		if n := srv.Stats().Refused[frame.CodeServerFull]; n != newcomers+1 {
			t.Errorf("%d refusals counted for %d newcomers", n, newcomers+1)
		}
		for _, nc := range idle[:8] {
			nc.Close()
		}
		waitFor(t, "the squatters that left to be gone", func() bool { return srv.ConnectionCount() == limit-8 })
		if _, err := handshake(dialRaw(t, addr).nc, "welcome-again", ""); err != nil {
			t.Errorf("a newcomer once there is room: %v", err)
		}
		h.trip(20)
	})
}

// With a per-IP limit, connections from one address beyond it get ERROR
// per_ip_limit and DISCONNECT and are closed, and are counted; the honest
// client, on another address, stays within its bound, and newcomers from
// a third address are welcome; once the attackers leave, their address
// may connect again.
func TestHostilePerIPLimit(t *testing.T) {
	forServeTargets(t, func(t *testing.T, tg target) {
		const perIP, newcomers = 4, 60
		srv, addr := tg.start(t, msgnet.WithMaxConnectionsPerIP(perIP))
		h := newHonestFrom(t, tg, addr, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)})
		var mine []net.Conn
		for i := range perIP {
			nc := dialRaw(t, addr).nc
			if _, err := handshake(nc, fmt.Sprint("mine-", i), ""); err != nil {
				t.Fatal(err)
			}
			mine = append(mine, nc)
		}
		a := newAttack(t)
		done := make(chan struct{})
		a.goDo(func(stop <-chan struct{}) {
			defer close(done)
			for i := 0; i < newcomers && !stopped(stop); i++ {
				nc, err := net.Dial("tcp", addr)
				if err != nil {
					t.Error(err)
					return
				}
				if err := refusal(nc, msgnet.CodePerIPLimit); err != nil {
					t.Errorf("newcomer %d: %v", i, err)
				}
				nc.Close()
			}
		})
		h.during(30, 30*time.Second, func() bool { return stopped(done) })
		a.end()
		other := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}}
		nc, err := other.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		if _, err := handshake(nc, "elsewhere", ""); err != nil {
			t.Errorf("a newcomer from another address: %v", err)
		}
		if n := srv.Stats().Refused[msgnet.CodePerIPLimit]; n != newcomers {
			t.Errorf("%d refusals counted for %d newcomers", n, newcomers)
		}
		for _, nc := range mine {
			nc.Close()
		}
		waitFor(t, "the attackers to be gone", func() bool { return srv.ConnectionCount() == 2 })
		if _, err := handshake(dialRaw(t, addr).nc, "back", ""); err != nil {
			t.Errorf("the address once its connections left: %v", err)
		}
	})
}

// Connection abuse: resets in the middle of a frame, resets while the
// server writes to the peer, and storms of connections closed at once,
// after a byte, after a hello or in the middle of a header. No panic, no
// session or memory left behind (the heap within 1 MiB of before), every
// end counted, and the honest client within its bound meanwhile.
func TestHostileConnectionAbuse(t *testing.T) {
	forEngines(t, func(t *testing.T, tg target) {
		srv, addr := tg.start(t)
		h := newHonest(t, tg, addr)
		before := heapInuse()
		big := frame.Append(nil, frame.KindData, 0, bytes.Repeat([]byte("r"), 256<<10))
		var pings []byte
		for len(pings) < 512<<10 {
			pings = frame.Append(pings, frame.KindPing, 0, make([]byte, 4<<10))
		}
		var ids atomic.Int64
		abuser := func() string { return fmt.Sprint("abuser-", ids.Add(1)) }
		abuses := []func(nc net.Conn) error{
			func(nc net.Conn) error { return nc.Close() },
			func(nc net.Conn) error { nc.Write([]byte("M")); return nc.Close() },
			func(nc net.Conn) error { nc.Write([]byte("MSGI\x00")); rst(nc); return nil },
			func(nc net.Conn) error { nc.Write(helloFrame(abuser(), "")); rst(nc); return nil },
			func(nc net.Conn) error { // a reset in the middle of a frame
				if _, err := handshake(nc, abuser(), ""); err != nil {
					return err
				}
				nc.Write(big[:len(big)/2])
				rst(nc)
				return nil
			},
			func(nc net.Conn) error { // a reset while the server writes to it
				if _, err := handshake(nc, abuser(), ""); err != nil {
					return err
				}
				writeAll(nc, pings, 5*time.Second)
				rst(nc)
				return nil
			},
			func(nc net.Conn) error { // text, cut in the middle of a line
				nc.Write([]byte("hello\nhalf a li"))
				rst(nc)
				return nil
			},
		}
		const workers, each = 4, 28
		a := newAttack(t)
		var abusing sync.WaitGroup
		for w := range workers {
			abusing.Add(1)
			a.goDo(func(stop <-chan struct{}) {
				defer abusing.Done()
				for i := 0; i < each && !stopped(stop); i++ {
					nc, err := net.Dial("tcp", addr)
					if err != nil {
						t.Error(err)
						return
					}
					if err := abuses[(w+i)%len(abuses)](nc); err != nil {
						t.Errorf("abuse %d: %v", (w+i)%len(abuses), err)
						nc.Close()
					}
				}
			})
		}
		done := make(chan struct{})
		go func() { abusing.Wait(); close(done) }()
		h.during(30, 30*time.Second, func() bool { return stopped(done) })
		a.end()
		// Connections closed before the server accepted them are still
		// accepted (and end at once); a backlog drains in well under a
		// second.
		settle := time.Now()
		waitFor(t, "every connection accepted and ended", func() bool {
			return srv.Stats().Accepted == workers*each+1 && srv.ConnectionCount() == 1
		})
		if d := time.Since(settle); d > 500*time.Millisecond {
			t.Errorf("the last connections were accepted %v after the storm", d)
		}
		st := srv.Stats()
		ended := uint64(0)
		for class, n := range st.Disconnects {
			ended += n
			if class == "handler_panic" || strings.HasPrefix(class, "protocol:") {
				t.Errorf("%d sessions ended with %s", n, class)
			}
		}
		if st.Accepted != workers*each+1 || ended != workers*each {
			t.Errorf("%d accepted, %d ended (%v); want %d and %d", st.Accepted, ended, st.Disconnects, workers*each+1, workers*each)
		}
		held := heldSince(before)
		t.Logf("%d abusive connections; the process holds %+d KiB; ends %v", workers*each, held>>10, st.Disconnects)
		if held > 1<<20 {
			t.Errorf("the process holds %d KiB more after the abuse", held>>10)
		}
	})
}

// A peer that half-closes (shuts its write side) after its requests still
// gets every answer it is due, then the close: the end of its input is
// not a failure (docs/PROTOCOL.md, sections 2 and 5). In text mode the
// unterminated last line is a message too. A half-close in the middle of
// a frame drops that frame and closes without a word.
func TestHostileHalfClose(t *testing.T) {
	forEngines(t, func(t *testing.T, tg target) {
		_, addr := tg.start(t)
		h := newHonest(t, tg, addr)
		closeWrite := func(nc net.Conn) { nc.(*net.TCPConn).CloseWrite() }

		// Binary: a message and a request, then the half-close.
		nc := dialRaw(t, addr).nc
		req := frame.Append(nil, frame.KindData, frame.FlagRequest, []byte("\x00\x00\x00\x00\x00\x00\x00\x07ask"))
		in := append(helloFrame("halfway", `,"features":["request"]`), frame.Append(nil, frame.KindData, 0, []byte("last words"))...)
		nc.Write(append(in, req...))
		closeWrite(nc)
		b, _, err := readUntilClosed(nc, 5*time.Second)
		fs, ferr := frames(b)
		if err != nil || ferr != nil || len(fs) != 3 {
			t.Fatalf("binary: got %q (%v, %v), want the welcome, the echo and the reply, then the close", b, err, ferr)
		}
		if op, _ := frame.ControlOp(fs[0].Payload); op != "welcome" {
			t.Errorf("binary: first %v %q, want the welcome", fs[0].Kind, fs[0].Payload)
		}
		if fs[1].Kind != frame.KindData || string(fs[1].Payload) != tg.reply("last words") {
			t.Errorf("binary: got %v %q, want the echo", fs[1].Kind, fs[1].Payload)
		}
		if p := fs[2].Payload; fs[2].Flags != frame.FlagReply || len(p) < 9 || p[7] != 7 || p[8] != 1 {
			t.Errorf("binary: got %v %#x %q, want the reply to request 7 (status 1: no handler)", fs[2].Kind, fs[2].Flags, p)
		}

		// Text: a line and an unterminated one.
		nc = dialRaw(t, addr).nc
		nc.Write([]byte("first line\nno newline"))
		closeWrite(nc)
		b, _, err = readUntilClosed(nc, 5*time.Second)
		if want := tg.reply("first line") + "\n" + tg.reply("no newline") + "\n"; err != nil || string(b) != want {
			t.Errorf("text: got %q (%v), want %q then the close", b, err, want)
		}

		// Binary, cut in the middle of a frame.
		nc = dialRaw(t, addr).nc
		msg := frame.Append(nil, frame.KindData, 0, []byte("never finished"))
		nc.Write(append(helloFrame("cut", ""), msg[:12]...))
		closeWrite(nc)
		b, _, err = readUntilClosed(nc, 5*time.Second)
		if fs, ferr := frames(b); err != nil || ferr != nil || len(fs) != 1 {
			t.Errorf("cut: got %q (%v), want only the welcome, then the close", b, err)
		}
		h.trip(20)
	})
}

// The server-wide queue budget (WithServerQueueBytes, small here): peers
// that flood without reading fill their queues until the budget refuses.
// Sends then fail with ErrServerQueueFull (which matches ErrQueueFull),
// counted in Stats().Dropped["server_queue_full"]; new connections get
// ERROR server_busy and DISCONNECT; what is charged stays within the
// budget (plus what the event loops stage and a granule per session).
// The honest client is not cut off, and once the attackers go the charge
// returns to zero, the honest client is within its bound again and
// newcomers are welcome.
func TestHostileServerQueueBudget(t *testing.T) {
	forServeTargets(t, func(t *testing.T, tg target) {
		const budget, attackers, granule = 1 << 20, 6, 16 << 10
		srv, addr := tg.start(t, msgnet.WithServerQueueBytes(budget))
		h := newHonest(t, tg, addr)
		var probes atomic.Int64
		h.onOther(func(k frame.Kind, p []byte) bool {
			if k == frame.KindData && string(p) == "budget probe" {
				probes.Add(1)
				return true
			}
			return false
		})
		msg := frame.Append(nil, frame.KindData, 0, bytes.Repeat([]byte("b"), 16<<10))
		batch := bytes.Repeat(msg, 4)
		a := newAttack(t)
		var conns []net.Conn
		for i := range attackers {
			nc, err := dialAttacker(addr, 16<<10)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { nc.Close() })
			if _, err := handshake(nc, fmt.Sprint("hoarder-", i), ""); err != nil {
				t.Fatal(err)
			}
			conns = append(conns, nc)
		}
		for i, nc := range conns {
			a.goDo(func(stop <-chan struct{}) {
				for !stopped(stop) {
					if err := writeAll(nc, batch, 10*time.Second); err != nil {
						t.Errorf("hoarder %d: %v", i, err)
						return
					}
				}
			})
		}
		waitForWithin(t, 20*time.Second, "the budget to refuse", func() bool {
			return srv.Stats().Dropped[msgnet.DropServerQueueFull] > 0
		})
		// While the hoarders flood, a send finds the budget spent (or, if
		// it squeezes in, reaches the honest client) ...
		hs := sessionOf(t, srv, "honest")
		var sendErr error
		waitForWithin(t, 10*time.Second, "a send refused for the budget", func() bool {
			sendErr = hs.SendString("budget probe")
			return sendErr != nil
		})
		if !errors.Is(sendErr, msgnet.ErrServerQueueFull) || !errors.Is(sendErr, msgnet.ErrQueueFull) {
			t.Errorf("a send with the budget spent: %v, want ErrServerQueueFull", sendErr)
		}
		// ... and a newcomer is turned away.
		busy := false
		waitForWithin(t, 10*time.Second, "a newcomer turned away", func() bool {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			rd := frame.NewReader(nc, 1<<20)
			nc.Write(helloFrame("newcomer", ""))
			nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			f, err := rd.ReadFrame()
			if err == nil && f.Kind == frame.KindError {
				if code := frame.ParseError(f.Payload).Code; code != msgnet.CodeServerBusy {
					t.Fatalf("a newcomer got ERROR %s, want %s", code, msgnet.CodeServerBusy)
				}
				f, err = rd.ReadFrame()
				busy = err == nil && f.Kind == frame.KindDisconnect
				return true
			}
			return false // welcomed: the budget had room at that instant
		})
		if !busy {
			t.Error("a newcomer got server_busy but no DISCONNECT")
		}
		st := srv.Stats()
		t.Logf("charged %d KiB of %d KiB, queued %d KiB; dropped %v; refused %v",
			st.QueueCharged>>10, budget>>10, st.QueueBytes>>10, st.Dropped, st.Refused)
		if limit := int64(budget + 2*stageLimit + (attackers+1)*granule); st.QueueCharged > limit {
			t.Errorf("%d bytes charged; budget %d (bound with staging and granules %d)", st.QueueCharged, budget, limit)
		}
		// Stats reads the charge before it sums the queues, so under the
		// flood one reading can see queues that grew after it: what must
		// hold is that a reading comes where they agree, not that every
		// one does.
		waitForWithin(t, 10*time.Second, "the queues within what is charged", func() bool {
			st := srv.Stats()
			return st.QueueBytes <= int(st.QueueCharged)+2*stageLimit
		})
		if st.Refused[msgnet.CodeServerBusy] == 0 {
			t.Errorf("no server_busy refusal counted: %v", st.Refused)
		}
		// The attackers go.
		a.end()
		for _, nc := range conns {
			nc.Close()
		}
		waitForWithin(t, 10*time.Second, "the budget to be released", func() bool {
			st := srv.Stats()
			return st.QueueCharged == 0 && st.Sessions == 1
		})
		h.trip(50)
		if _, err := handshake(dialRaw(t, addr).nc, "welcome-again", ""); err != nil {
			t.Errorf("a newcomer after the attackers left: %v", err)
		}
		t.Logf("%d probe sends got through before the budget refused one", probes.Load())
	})
}
