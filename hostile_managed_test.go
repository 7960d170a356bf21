package msgnet_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

// Hostile clients of managed mode (msgnet serve's default: package
// managed), whose commands reach other sessions: groups, private
// messages, broadcasts.

func managedTarget() target { return serveTargets()[0] }

// script is a run of commands pipelined in one write, with the answer
// each must get, in order.
type script struct {
	in   []byte
	want []func(frame.Frame) error
}

func (s *script) add(cmd string, want func(frame.Frame) error) {
	s.in = frame.Append(s.in, frame.KindData, 0, []byte(cmd))
	s.want = append(s.want, want)
}

// run sends the script and checks every answer.
func (s *script) run(nc net.Conn, rd *frame.Reader) error {
	if err := writeAll(nc, s.in, 10*time.Second); err != nil {
		return err
	}
	return expectFrames(nc, rd, s.want...)
}

// JOIN/LEAVE storms: sessions that join hundreds of groups get "Joined"
// for the first 64 (the default limit) and ERROR too_many_groups for each
// one past it, ERROR bad_group for names with control characters, and
// "Left" for every LEAVE, each in order; the server keeps no group past
// the limit, no group once its members left or ended, and no memory
// beyond a constant. The honest client stays within its bound.
func TestHostileJoinLeaveStorm(t *testing.T) {
	tg := managedTarget()
	srv, addr := tg.start(t)
	h := newHonest(t, tg, addr)
	const attackers, groups = 4, 200
	limit := msgnet.DefaultMaxGroupsPerSession
	before := heapInuse()
	a := newAttack(t)
	var running atomic.Int32
	for w := range attackers {
		running.Add(1)
		id := fmt.Sprint("joiner-", w)
		nc := dialRaw(t, addr).nc
		rd, err := handshake(nc, id, "")
		if err != nil {
			t.Fatal(err)
		}
		s := sessionOf(t, srv, id)
		a.goDo(func(stop <-chan struct{}) {
			defer running.Add(-1)
			var joins, churn script
			for i := range groups {
				g := fmt.Sprintf("g-%d-%d", w, i)
				if i < limit {
					joins.add("JOIN:"+g, isData("Joined "+g))
				} else {
					joins.add("JOIN:"+g, isError(msgnet.CodeTooManyGroups))
				}
			}
			for _, bad := range []string{"tab\tx", "nl\nx", "\x1b[2J", strings.Repeat("n", msgnet.DefaultMaxGroupNameLength+1)} {
				joins.add("JOIN:"+bad, isError(msgnet.CodeBadGroup))
			}
			if err := joins.run(nc, rd); err != nil {
				t.Errorf("%s joining: %v", id, err)
				return
			}
			if n := len(s.Groups()); n != limit {
				t.Errorf("%s is in %d groups, limit %d", id, n, limit)
			}
			if m := srv.GroupMembers(fmt.Sprintf("g-%d-%d", w, limit)); len(m) != 0 {
				t.Errorf("a group past the limit has %d members", len(m))
			}
			if w == 0 {
				return // leaves by disconnecting, in its groups
			}
			for i := range groups {
				g := fmt.Sprintf("g-%d-%d", w, i)
				churn.add("LEAVE:"+g, isData("Left "+g))
			}
			for range 50 {
				churn.add("JOIN:shared", isData("Joined shared"))
				churn.add("LEAVE:shared", isData("Left shared"))
			}
			if err := churn.run(nc, rd); err != nil {
				t.Errorf("%s leaving: %v", id, err)
				return
			}
			if g := s.Groups(); len(g) != 0 {
				t.Errorf("%s still in %v", id, g)
			}
		})
	}
	h.during(30, 30*time.Second, func() bool { return running.Load() == 0 })
	a.end()
	if m := srv.GroupMembers("shared"); len(m) != 0 {
		t.Errorf("shared has %d members after all left", len(m))
	}
	if m := srv.GroupMembers("g-0-0"); len(m) != 1 {
		t.Errorf("g-0-0 has %d members, want its joiner", len(m))
	}
	s0 := sessionOf(t, srv, "joiner-0")
	s0.Disconnect("enough")
	waitFor(t, "joiner-0 to end", func() bool { _, ok := srv.SessionByClientID("joiner-0"); return !ok })
	for i := range limit {
		if m := srv.GroupMembers(fmt.Sprintf("g-0-%d", i)); len(m) != 0 {
			t.Fatalf("g-0-%d keeps %d members after its only member ended", i, len(m))
		}
	}
	held := heldSince(before)
	t.Logf("%d sessions joined %d groups each; the process holds %+d KiB", attackers, groups, held>>10)
	if held > 1<<20 {
		t.Errorf("the process holds %d KiB more after the storm", held>>10)
	}
}

// A GROUP flood to a group with a member that never reads: the honest
// member gets every message it is due, in order and escaped, while the
// silent member's queue overflows. Every message the silent member does
// not get is counted in Stats().Dropped["queue_full"], exactly, and it
// gets the rest once it reads. The honest client outside the group stays
// within its bound.
func TestHostileGroupFlood(t *testing.T) {
	tg := managedTarget()
	const queue = 1 << 20
	srv, addr := tg.start(t, msgnet.WithSendQueueBytes(queue))
	h := newHonest(t, tg, addr)
	join := func(id string, rcvbuf int) (net.Conn, *frame.Reader) {
		nc, err := dialAttacker(addr, rcvbuf)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		rd, err := handshake(nc, id, "")
		if err != nil {
			t.Fatal(err)
		}
		var s script
		s.add("JOIN:room", isData("Joined room"))
		if err := s.run(nc, rd); err != nil {
			t.Fatal(err)
		}
		return nc, rd
	}
	silentNC, silentRd := join("silent", 16<<10)
	fairNC, fairRd := join("fair", 0)
	talkNC, talkRd := join("talker", 0)
	const n, batch, size = 4000, 100, 4 << 10
	msg := func(i int) string { return fmt.Sprintf("%08d:%s", i, strings.Repeat("z", size)) }
	relayed := func(m string) string { return "[room] talker: " + m }

	// The fair member reads everything; the talker waits for it after
	// each batch, so what it is due never fills its queue.
	var fairGot atomic.Int64
	fairDone := make(chan struct{})
	go func() {
		defer close(fairDone)
		for i := 0; ; i++ {
			fairNC.SetReadDeadline(time.Now().Add(10 * time.Second))
			f, err := fairRd.ReadFrame()
			if err != nil {
				if i < n+1 {
					t.Errorf("fair member: after %d messages: %v", i, err)
				}
				return
			}
			want := relayed(msg(i))
			if i == n {
				want = relayed("END")
			}
			if f.Kind != frame.KindData || string(f.Payload) != want {
				t.Errorf("fair member: message %d: got %v %.60q, want %.60q", i, f.Kind, f.Payload, want)
				return
			}
			fairGot.Add(1)
		}
	}()
	t.Cleanup(func() { fairNC.Close(); <-fairDone })
	go func() { // the talker is sent nothing
		if f, err := talkRd.ReadFrame(); err == nil {
			t.Errorf("talker got %v %q", f.Kind, f.Payload)
		}
	}()

	before := heapInuse()
	a := newAttack(t)
	talking := make(chan struct{})
	a.goDo(func(stop <-chan struct{}) {
		defer close(talking)
		for i := 0; i < n && !stopped(stop); i += batch {
			var b []byte
			for j := i; j < i+batch; j++ {
				b = frame.Append(b, frame.KindData, 0, []byte("GROUP:room:"+msg(j)))
			}
			if err := writeAll(talkNC, b, 10*time.Second); err != nil {
				t.Errorf("talker: %v", err)
				return
			}
			for deadline := time.Now().Add(10 * time.Second); fairGot.Load() < int64(i+batch); time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) || stopped(stop) {
					t.Errorf("the fair member got %d of the first %d messages", fairGot.Load(), i+batch)
					return
				}
			}
		}
	})
	h.during(30, 60*time.Second, func() bool { return stopped(talking) })
	a.end()
	if t.Failed() {
		return
	}
	ss := sessionOf(t, srv, "silent")
	held := heldSince(before)
	st := srv.Stats()
	dropped := st.Dropped[msgnet.DropQueueFull]
	t.Logf("%d messages of %d KiB; the silent member's queue %d KiB; dropped %d; the process holds %+d KiB",
		n, size>>10, ss.Info().QueueBytes>>10, dropped, held>>10)
	if dropped == 0 {
		t.Fatalf("the silent member's queue never overflowed")
	}
	if q := ss.Info().QueueBytes; q > queue {
		t.Errorf("the silent member's queue holds %d bytes; bound %d", q, queue)
	}
	if limit := int64(queue + 4<<20); held > limit {
		t.Errorf("the process holds %d KiB more during the flood; bound %d KiB", held>>10, limit>>10)
	}
	if st.SlowConsumers != dropped {
		t.Errorf("%d slow-consumer refusals, %d drops", st.SlowConsumers, dropped)
	}
	// The silent member reads at last: it gets every message not counted
	// as dropped, in order, then the marker.
	silentGot := 0
	silentDone := make(chan error, 1)
	go func() {
		last := -1
		for {
			silentNC.SetReadDeadline(time.Now().Add(10 * time.Second))
			f, err := silentRd.ReadFrame()
			if err != nil {
				silentDone <- err
				return
			}
			if string(f.Payload) == relayed("END") {
				silentDone <- nil
				return
			}
			var i int
			if _, err := fmt.Sscanf(strings.TrimPrefix(string(f.Payload), "[room] talker: "), "%08d:", &i); err != nil || i <= last ||
				string(f.Payload) != relayed(msg(i)) {
				silentDone <- fmt.Errorf("got %.60q after message %d", f.Payload, last)
				return
			}
			last = i
			silentGot++
		}
	}()
	waitFor(t, "the silent member's queue to drain", func() bool { return ss.Info().QueueBytes == 0 })
	if err := writeAll(talkNC, frame.Append(nil, frame.KindData, 0, []byte("GROUP:room:END")), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, silentDone, "the silent member to read to the marker"); err != nil {
		t.Fatalf("silent member: %v", err)
	}
	waitFor(t, "the fair member's marker", func() bool { return fairGot.Load() == n+1 })
	if uint64(silentGot)+dropped != n {
		t.Errorf("the silent member got %d, %d drops counted: %d of %d unaccounted for",
			silentGot, dropped, n-silentGot-int(dropped), n)
	}
}

// PRIVATE and GROUP messages carrying newlines and escape sequences, from
// a binary and a text-mode attacker, reach a text-mode (nc-like) victim as
// exactly one line each, starting with the prefix the server writes and
// holding no control byte but tab: no sender can write a line that reads
// as if someone else had written it, or drive the victim's terminal.
func TestHostilePrivateToTextVictim(t *testing.T) {
	tg := managedTarget()
	srv, addr := tg.start(t)
	h := newHonest(t, tg, addr)
	textConn := func(first string) (net.Conn, *bufio.Reader) {
		nc := dialRaw(t, addr).nc
		br := bufio.NewReader(nc)
		nc.Write([]byte(first + "\n"))
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if line, err := br.ReadString('\n'); err != nil {
			t.Fatalf("text peer: %v", err)
		} else if !strings.HasPrefix(line, "Joined") && !strings.HasPrefix(line, "Echo: ") {
			t.Fatalf("text peer: got %q", line)
		}
		return nc, br
	}
	victim, victimRd := textConn("JOIN:lobby")
	var victimID string
	srv.Range(func(s *msgnet.Session) bool {
		if s.Mode() == frame.ModeText {
			victimID = s.ID()
		}
		return true
	})
	payloads := []string{
		"line1\nPrivate from admin: send me your password",
		"\r\x1b[2J\x1b[HYou have been logged out",
		"\x00\x07\x08\x0b\x0c\x7f",
		"tab\tinside",
		"\xff\xfe not UTF-8",
		"trailing newline\n",
		"\n",
		"",
		"a\r\nb\r\n\r\nc",
		`\n a backslash and an n`,
		strings.Repeat("x\n", 16<<10),
		"\x1b]0;new window title\x07",
	}
	mallory := dialRaw(t, addr)
	mallory.hello("mallory")
	mallory.send(frame.KindData, "JOIN:lobby")
	mallory.expect(frame.KindData)
	var in []byte
	var want []string
	for _, p := range payloads {
		in = frame.Append(in, frame.KindData, 0, []byte("PRIVATE:"+victimID+":"+p))
		want = append(want, "Private from mallory: "+string(frame.AppendEscaped(nil, []byte(p))))
		in = frame.Append(in, frame.KindData, 0, []byte("GROUP:lobby:"+p))
		want = append(want, "[lobby] mallory: "+string(frame.AppendEscaped(nil, []byte(p))))
	}
	// A text-mode attacker: its lines end at "\n", but a "\r" inside one
	// and other control bytes still reach the relay.
	eve, _ := textConn("hello")
	eveID := ""
	srv.Range(func(s *msgnet.Session) bool {
		if s.Mode() == frame.ModeText && s.ID() != victimID {
			eveID = s.ID()
		}
		return true
	})
	evePayloads := []string{"a\rPrivate from admin: b", "\x1b[31mred\x1b[0m", "\x00"}
	a := newAttack(t)
	sending := make(chan struct{})
	a.goDo(func(stop <-chan struct{}) {
		defer close(sending)
		if err := writeAll(mallory.nc, in, 10*time.Second); err != nil {
			t.Error(err)
			return
		}
		for _, p := range evePayloads {
			eve.Write([]byte("PRIVATE:" + victimID + ":" + p + "\n"))
		}
	})
	for _, p := range evePayloads {
		want = append(want, "Private from "+eveID+": "+string(frame.AppendEscaped(nil, []byte(p))))
	}
	var lines []string
	readDone := make(chan error, 1)
	go func() {
		for range want {
			victim.SetReadDeadline(time.Now().Add(10 * time.Second))
			line, err := victimRd.ReadString('\n')
			if err != nil {
				readDone <- err
				return
			}
			lines = append(lines, strings.TrimSuffix(line, "\n"))
		}
		readDone <- nil
	}()
	h.during(20, 30*time.Second, func() bool { return stopped(sending) })
	a.end()
	if err := recv(t, readDone, "the victim's lines"); err != nil {
		t.Fatalf("victim: after %d lines: %v", len(lines), err)
	}
	// Mallory's PRIVATE and GROUP lines interleave only as they were sent;
	// eve's come after hers or among them, each in its own order.
	var fromMallory, fromEve []string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "Private from mallory: "), strings.HasPrefix(l, "[lobby] mallory: "):
			fromMallory = append(fromMallory, l)
		case strings.HasPrefix(l, "Private from "+eveID+": "):
			fromEve = append(fromEve, l)
		default:
			t.Errorf("the victim got a line no sender's prefix starts: %.100q", l)
		}
		for _, c := range []byte(l) {
			if c < 0x20 && c != '\t' || c == 0x7f {
				t.Errorf("a control byte %#x reached the victim: %.100q", c, l)
				break
			}
		}
	}
	for i, l := range fromMallory {
		if l != want[i] {
			t.Errorf("line %d from mallory: got %.100q, want %.100q", i, l, want[i])
		}
	}
	for i, l := range fromEve {
		if w := want[2*len(payloads)+i]; l != w {
			t.Errorf("line %d from eve: got %.100q, want %.100q", i, l, w)
		}
	}
	if len(fromMallory) != 2*len(payloads) || len(fromEve) != len(evePayloads) {
		t.Errorf("%d and %d lines, want %d and %d: one line per message", len(fromMallory), len(fromEve), 2*len(payloads), len(evePayloads))
	}
	// Nothing more: one line per message.
	victim.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if extra, err := victimRd.ReadString('\n'); err == nil || extra != "" {
		t.Errorf("an extra line reached the victim: %.100q", extra)
	}
}

// C1 control characters (U+0080 to U+009F) are control characters too:
// U+009B is the one-character CSI and U+0085 the next-line control, which
// terminals that act on C1 controls obey as ESC [ and a line break. A
// relayed text must not carry them raw to a text-mode victim any more
// than ESC or a newline.
func TestHostilePrivateC1Controls(t *testing.T) {
	tg := managedTarget()
	srv, addr := tg.start(t)
	h := newHonest(t, tg, addr)
	victim := dialRaw(t, addr).nc
	br := bufio.NewReader(victim)
	victim.Write([]byte("hi\n"))
	victim.SetReadDeadline(time.Now().Add(5 * time.Second))
	br.ReadString('\n')
	var victimID string
	srv.Range(func(s *msgnet.Session) bool {
		if s.Mode() == frame.ModeText {
			victimID = s.ID()
		}
		return true
	})
	mallory := dialRaw(t, addr)
	mallory.hello("mallory")
	for _, p := range []string{"\u009b2J\u009bHlogged out", "one\u0085Private from admin: two"} {
		mallory.send(frame.KindData, "PRIVATE:"+victimID+":"+p)
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range line {
			if r >= 0x80 && r <= 0x9f {
				t.Errorf("the C1 control U+%04X reached the text-mode victim raw: %q", r, line)
				break
			}
		}
	}
	h.trip(20)
}

// A BROADCAST flood: every session gets every broadcast it is due. The
// honest client reads and gets each one (the flooder waits for it after
// each batch); the flooder and the silent sessions read nothing until the
// flood is over, then get every broadcast not counted as dropped, exactly.
// The honest client's own round trips stay within its bound.
func TestHostileBroadcastFlood(t *testing.T) {
	tg := managedTarget()
	srv, addr := tg.start(t)
	h := newHonest(t, tg, addr)
	var broadcasts atomic.Int64
	h.onOther(func(k frame.Kind, p []byte) bool {
		if k == frame.KindData && string(p) == "Broadcast from flooder" {
			broadcasts.Add(1)
			return true
		}
		return false
	})
	const silents, n, batch = 3, 6000, 200
	type peer struct {
		nc net.Conn
		rd *frame.Reader
		s  *msgnet.Session
	}
	var quiet []peer
	for i := range silents + 1 {
		id := fmt.Sprint("silent-", i)
		if i == silents {
			id = "flooder"
		}
		nc, err := dialAttacker(addr, 16<<10)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		rd, err := handshake(nc, id, "")
		if err != nil {
			t.Fatal(err)
		}
		quiet = append(quiet, peer{nc: nc, rd: rd, s: sessionOf(t, srv, id)})
	}
	flooder := quiet[silents]
	before := heapInuse()
	a := newAttack(t)
	flooding := make(chan struct{})
	a.goDo(func(stop <-chan struct{}) {
		defer close(flooding)
		var b []byte
		for range batch {
			b = frame.Append(b, frame.KindData, 0, []byte("BROADCAST"))
		}
		for i := 0; i < n && !stopped(stop); i += batch {
			if err := writeAll(flooder.nc, b, 10*time.Second); err != nil {
				t.Errorf("flooder: %v", err)
				return
			}
			for deadline := time.Now().Add(10 * time.Second); broadcasts.Load() < int64(i+batch); time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) || stopped(stop) {
					t.Errorf("the honest client got %d of the first %d broadcasts", broadcasts.Load(), i+batch)
					return
				}
			}
		}
	})
	h.during(30, 60*time.Second, func() bool { return stopped(flooding) })
	a.end()
	if t.Failed() {
		return
	}
	held := heldSince(before)
	dropped := srv.Stats().Dropped[msgnet.DropQueueFull]
	t.Logf("%d broadcasts to %d sessions; dropped %d; the process holds %+d KiB", n, silents+2, dropped, held>>10)
	if limit := int64((silents+1)*(4<<20) + 4<<20); held > limit {
		t.Errorf("the process holds %d KiB more during the flood; bound %d KiB", held>>10, limit>>10)
	}
	// The quiet ones read at last, each to a marker PONG queued after
	// every broadcast.
	total := 0
	for i, p := range quiet {
		waitFor(t, "a quiet session's queue to drain", func() bool { return p.s.Info().QueueBytes == 0 })
		got, done := 0, make(chan error, 1)
		go func() {
			for {
				p.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
				f, err := p.rd.ReadFrame()
				switch {
				case err != nil:
					done <- err
					return
				case f.Kind == frame.KindPong:
					done <- nil
					return
				case f.Kind != frame.KindData || string(f.Payload) != "Broadcast from flooder":
					done <- fmt.Errorf("got %v %q", f.Kind, f.Payload)
					return
				}
				got++
			}
		}()
		p.nc.Write(frame.Append(nil, frame.KindPing, 0, []byte("marker")))
		if err := recv(t, done, "a quiet session's marker"); err != nil {
			t.Fatalf("quiet session %d: %v", i, err)
		}
		total += got
	}
	if want := n * len(quiet); total+int(dropped) != want {
		t.Errorf("the quiet sessions got %d broadcasts, %d drops counted; %d were due", total, dropped, want)
	}
	if got := broadcasts.Load(); got != n {
		t.Errorf("the honest client got %d broadcasts of %d", got, n)
	}
}
