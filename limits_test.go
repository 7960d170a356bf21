package msgnet_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/internal/testenv"
	"github.com/msgnet/msgnet/managed"
)

// One session may be in a bounded number of groups, with bounded names:
// before, JOIN lines grew the server's memory (and a cluster's NATS
// subscriptions) without limit.
func TestGroupLimits(t *testing.T) {
	srv, addr := startServer(t, msgnet.WithMaxGroupsPerSession(3), msgnet.WithMaxGroupNameLength(8))
	managed.Install(srv)
	r := dialRaw(t, addr)
	r.hello("joiner")
	for i := range 3 {
		r.send(frame.KindData, fmt.Sprint("JOIN:g", i))
		if got := r.expect(frame.KindData); string(got) != fmt.Sprint("Joined g", i) {
			t.Fatalf("got %q", got)
		}
	}
	r.send(frame.KindData, "JOIN:g0") // again: harmless, not a fourth
	r.expect(frame.KindData)
	r.send(frame.KindData, "JOIN:g3")
	r.expectError(msgnet.CodeTooManyGroups)
	r.send(frame.KindData, "LEAVE:g1")
	r.expect(frame.KindData)
	r.send(frame.KindData, "JOIN:room 1") // a space is allowed
	if got := r.expect(frame.KindData); string(got) != "Joined room 1" {
		t.Fatalf("got %q", got)
	}
	for _, bad := range []string{"123456789", "tab\there", "nl\nx", "\u202egrp"} {
		r.send(frame.KindData, "JOIN:"+bad)
		r.expectError(msgnet.CodeBadGroup)
	}
	s, _ := srv.SessionByClientID("joiner")
	if g := s.Groups(); len(g) != 3 {
		t.Fatalf("groups %v, want 3", g)
	}
	if err := srv.Join(s, "x"); !errors.Is(err, msgnet.ErrTooManyGroups) {
		t.Fatalf("Join past the limit: %v", err)
	}
	if err := srv.Join(s, ""); !errors.Is(err, msgnet.ErrBadGroup) {
		t.Fatalf("Join with an empty name: %v", err)
	}
}

// The bytes queued on all sessions together are bounded: with every
// session's own bound far above it, sends fail with ErrServerQueueFull
// once the budget is spent, new connections are refused with server_busy,
// and both recover when the queues drain.
func TestServerQueueBudget(t *testing.T) {
	const budget = 256 << 10
	srv, addr := startServer(t, msgnet.WithServerQueueBytes(budget), msgnet.WithSendQueueBytes(64<<20))
	var stalled []*raw
	for i := range 4 {
		r := dialRaw(t, addr)
		r.hello(fmt.Sprint("stalled-", i)) // never reads again
		stalled = append(stalled, r)
	}
	msg := bytes.Repeat([]byte("q"), 32<<10)
	var queued, refused int
	var firstErr error
	// Offer messages until the sockets' buffers are full and the budget
	// refuses every send for a while: then what is queued stays queued.
	for streak, deadline := 0, time.Now().Add(20*time.Second); streak < 50; {
		if time.Now().After(deadline) {
			t.Fatalf("the budget never refused for long: queued %d, refused %d", queued, refused)
		}
		streak++
		for _, s := range srv.Sessions() {
			if err := s.Send(msg); err != nil {
				refused++
				firstErr = err
			} else {
				queued++
				streak = 0
			}
		}
		time.Sleep(time.Millisecond) // let the writers fill the sockets
	}
	if !errors.Is(firstErr, msgnet.ErrServerQueueFull) || !errors.Is(firstErr, msgnet.ErrQueueFull) {
		t.Fatalf("refused with %v, want ErrServerQueueFull", firstErr)
	}
	st := srv.Stats()
	// What the sockets took is not queued; what is queued stays within
	// the budget (charged in granules, so at most one more per session).
	if st.QueueCharged > budget+4*16<<10 || st.QueueBytes > budget+4*16<<10 {
		t.Fatalf("charged %d, queued %d; budget %d", st.QueueCharged, st.QueueBytes, budget)
	}
	if st.Dropped[msgnet.DropServerQueueFull] != uint64(refused) {
		t.Fatalf("dropped %v, want %d server_queue_full", st.Dropped, refused)
	}
	// Once the sockets take nothing more, the charge stays where it is:
	// wait until it has not moved for a while (topping up if it fell),
	// and a newcomer is then refused.
	for same, last, deadline := 0, int64(-1), time.Now().Add(20*time.Second); same < 10; {
		if time.Now().After(deadline) {
			t.Fatal("the queued bytes never settled at the budget")
		}
		cur := srv.Stats().QueueCharged
		if cur+16<<10 <= budget {
			for _, s := range srv.Sessions() {
				s.Send(msg)
			}
			same, last = 0, -1
			continue
		}
		if cur == last {
			same++
		} else {
			same, last = 0, cur
		}
		time.Sleep(20 * time.Millisecond) // sampling the charge, not synchronising
	}
	late := dialRaw(t, addr)
	late.expectError(msgnet.CodeServerBusy)
	late.expect(frame.KindDisconnect)

	// The peers read: the queues drain, the charge falls, and the server
	// takes connections and sends again.
	for _, r := range stalled {
		r.nc.Close()
	}
	waitFor(t, "the budget to be released", func() bool { return srv.Stats().QueueCharged == 0 })
	again := dialRaw(t, addr)
	again.hello("again")
	s, _ := srv.SessionByClientID("again")
	if err := s.Send(msg); err != nil {
		t.Fatalf("send after the queues drained: %v", err)
	}
	if got := again.expect(frame.KindData); len(got) != len(msg) {
		t.Fatalf("got %d bytes", len(got))
	}
}

// Group messages that find a member's queue full are not dropped in
// silence: each is counted, and the server logs it at warning level (so it
// shows under --quiet), at most once per session per interval.
func TestGroupDropsCountedAndLogged(t *testing.T) {
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// Small socket buffers on the slow side: what the kernel takes must
	// not swallow the burst before the queue's bound is met.
	srv, addr := startServer(t, msgnet.WithSendQueueBytes(64<<10), msgnet.WithLogger(logger),
		msgnet.WithSocketBuffers(0, 16<<10))
	managed.Install(srv)
	snc, err := dialAttacker(addr, 4<<10)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { snc.Close() })
	slow := &raw{t: t, nc: snc, r: frame.NewReader(snc, 16<<20)}
	slow.hello("slow")
	slow.send(frame.KindData, "JOIN:room")
	slow.expect(frame.KindData)
	talker := dialRaw(t, addr)
	talker.hello("talker")
	talker.send(frame.KindData, "JOIN:room")
	talker.expect(frame.KindData)
	line := "GROUP:room:" + strings.Repeat("x", 8<<10)
	const n = 100 // 800 KiB to a peer that does not read, with a 64 KiB bound
	var burst []byte
	for range n {
		burst = frame.Append(burst, frame.KindData, 0, []byte(line))
	}
	talker.write(burst)
	talker.send(frame.KindPing, "done")
	talker.expect(frame.KindPong)
	st := srv.Stats()
	dropped := st.Dropped[msgnet.DropQueueFull]
	if dropped == 0 || dropped >= n {
		t.Fatalf("dropped %v of %d; want some, counted", st.Dropped, n)
	}
	if got := strings.Count(logs.String(), "messages dropped"); got != 1 {
		t.Fatalf("logged %d drop lines, want exactly 1 per session per interval:\n%s", got, logs.String())
	}
	if !strings.Contains(logs.String(), "client=slow") || !strings.Contains(logs.String(), "reason=queue_full") {
		t.Fatalf("the log does not name the session and reason:\n%s", logs.String())
	}
}

// WithControlRate bounds frames other than DATA on their own; messages are
// not counted against it.
func TestControlRate(t *testing.T) {
	srv, addr := echoServer(t, msgnet.WithControlRate(1, 3))
	r := dialRaw(t, addr)
	r.hello("pinger")
	var b []byte
	for i := range 10 {
		b = frame.Append(b, frame.KindPing, 0, []byte{byte(i)})
	}
	for range 10 {
		b = frame.Append(b, frame.KindData, 0, []byte("d"))
	}
	r.write(b)
	pongs, data, limited := 0, 0, 0
	for data < 10 {
		k, p, err := r.next()
		if err != nil {
			t.Fatalf("after %d pongs, %d echoes, %d errors: %v", pongs, data, limited, err)
		}
		switch {
		case k == frame.KindPong:
			pongs++
		case k == frame.KindData:
			data++
		case k == frame.KindError && frame.ParseError(p).Code == msgnet.CodeRateLimited:
			limited++
		default:
			t.Fatalf("got %v %q", k, p)
		}
	}
	if pongs < 3 || pongs > 4 || limited != 1 {
		t.Fatalf("%d pongs and %d rate_limited errors for 10 pings at 1/s with a burst of 3", pongs, limited)
	}
	if d := srv.Stats().Dropped[msgnet.DropRateLimited]; d != uint64(10-pongs) {
		t.Fatalf("dropped %d, want %d", d, 10-pongs)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer = testenv.Buffer

// SetLimits changes the limits of a running server: the next checks use
// the new values, the idle timeout included.
func TestSetLimitsWhileRunning(t *testing.T) {
	srv, addr := echoServer(t, msgnet.WithIdleTimeout(0))
	managed.Install(srv)
	first := dialRaw(t, addr)
	first.hello("first")
	l := srv.Limits()
	if l.MaxConnections != msgnet.DefaultMaxConnections || l.IdleTimeout != 0 {
		t.Fatalf("limits %+v", l)
	}
	l.MaxConnections = 1
	l.MaxGroupsPerSession = 0
	l.IdleTimeout = 300 * time.Millisecond
	srv.SetLimits(l)
	second := dialRaw(t, addr)
	second.expectError(msgnet.CodeServerFull)
	first.send(frame.KindData, "JOIN:g")
	first.expectError(msgnet.CodeTooManyGroups)
	// Silent from now on: the new idle timeout ends the session.
	if got := first.expect(frame.KindDisconnect); string(got) != msgnet.ErrIdleTimeout.Error() {
		t.Fatalf("got DISCONNECT %q, want the idle timeout", got)
	}
}
