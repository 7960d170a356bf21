package natsbus

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/nats-io/nats.go"
)

// spy records every NATS message on a subject, as the servers route it.
type spy struct {
	mu   sync.Mutex
	msgs [][]byte
}

func spyOn(t *testing.T, url, subject string) *spy {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	s := &spy{}
	if _, err := nc.Subscribe(subject, func(m *nats.Msg) {
		s.mu.Lock()
		s.msgs = append(s.msgs, m.Data)
		s.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return s
}

// unpack returns the data messages the spy saw (control messages, such as
// directory syncs, left out), batches opened, and how many NATS messages
// were batches.
func (s *spy) unpack(t *testing.T) (msgs []wireMsg, batches int) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, data := range s.msgs {
		m, err := parseMsg(data)
		if err != nil {
			t.Fatalf("malformed message on the wire: % x", data)
		}
		if m.kind != kindBatch {
			if m.kind&^flagStored <= kindDirect {
				msgs = append(msgs, m)
			}
			continue
		}
		batches++
		if err := eachBatched(m, func(r wireMsg) { msgs = append(msgs, r) }); err != nil {
			t.Fatalf("malformed batch on the wire: % x", data)
		}
	}
	return msgs, batches
}

// inOrder checks that msgs are the direct messages prefix0..prefix(n-1).
func inOrder(t *testing.T, msgs []wireMsg, prefix string, n int) {
	t.Helper()
	if len(msgs) != n {
		t.Fatalf("%d messages on the wire, want %d", len(msgs), n)
	}
	for i, m := range msgs {
		if m.kind != kindDirect || string(m.body) != prefix+strconv.Itoa(i) {
			t.Fatalf("message %d on the wire is kind %d %q, want %q", i, m.kind, m.body, prefix+strconv.Itoa(i))
		}
	}
}

// A burst of private messages across nodes leaves in batches, and arrives
// whole and in order.
func TestBurstCrossesInBatches(t *testing.T) {
	a := startNode(t, "a", with(embeddedRoutes())...)
	b := startNode(t, "b", with(embeddedRoutes(a))...)
	waitCluster(t, a, b)
	eventually(t, 5*time.Second, func() bool { return a.bus.batchOK.Load() }, "a learns that b reads batches")
	ca, _ := client(t, "alice", a.addr)
	_, rb := client(t, "bob", b.addr)
	waitKnows(t, a, "bob")
	wire := spyOn(t, a.bus.ClientURL(), "msgnet.n.b")

	const n = 3000
	for i := range n {
		send(t, ca, "P:bob:m"+strconv.Itoa(i))
	}
	eventually(t, 10*time.Second, func() bool { return len(rb.all()) >= n }, "bob gets %d messages", n)
	got := rb.all()
	for i, m := range got {
		if m != "m"+strconv.Itoa(i) {
			t.Fatalf("bob's message %d is %q", i, m)
		}
	}
	var msgs []wireMsg
	var batches int
	eventually(t, 5*time.Second, func() bool { msgs, batches = wire.unpack(t); return len(msgs) >= n }, "the spy sees them all")
	inOrder(t, msgs, "m", n)
	if batches == 0 {
		t.Fatalf("%d messages in a burst crossed one NATS message each: no batch", n)
	}
	t.Logf("%d messages crossed in %d NATS messages, %d of them batches", n, len(wire.msgs), batches)
	if st := b.bus.Stats(); st.Errors != 0 {
		t.Fatalf("b counted %d errors", st.Errors)
	}
}

// oldNode plays a node of a version before batches, on a's NATS server:
// it heartbeats without the batch field (or with it, once upgraded),
// announces client carol, and records its inbox.
type oldNode struct {
	nc       *nats.Conn
	upgraded chan struct{}
}

func startOldNode(t *testing.T, url string) (*oldNode, *spy) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	inbox := spyOn(t, url, "msgnet.n.old")
	o := &oldNode{nc: nc, upgraded: make(chan struct{})}
	stop := make(chan struct{})
	done := make(chan struct{})
	t.Cleanup(func() { close(stop); <-done })
	up, _ := json.Marshal(dirEvent{Instance: "i1", Session: "0000beef-1", Stamp: uint64(time.Now().UnixNano())})
	nc.Publish("msgnet.d", appendMsg(nil, kindUp, "old", "carol", up))
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		batch := false
		for {
			select {
			case <-o.upgraded:
				batch, o.upgraded = true, nil
			default:
			}
			// The old encoding has no "batch" field at all.
			body := `{"instance":"i1","sessions":1,"at":` + strconv.FormatInt(time.Now().UnixNano(), 10) + `,"interval_ms":50}`
			if batch {
				body = strings.Replace(body, "}", `,"batch":true}`, 1)
			}
			nc.Publish("msgnet.l", appendMsg(nil, kindLoad, "old", "", []byte(body)))
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return o, inbox
}

// A node that has not said it reads batches never gets one; once it says
// so, bursts to it are batched.
func TestNoBatchToANodeThatCannotReadThem(t *testing.T) {
	var log logBuffer
	a := startNode(t, "a", with(embeddedRoutes(), WithLogger(slog.New(slog.NewTextHandler(&log, nil))))...)
	old, inbox := startOldNode(t, a.bus.ClientURL())
	ca, _ := client(t, "alice", a.addr)
	eventually(t, 5*time.Second, func() bool { n, ok := a.bus.Lookup("carol"); return ok && n == "old" }, "a learns carol on the old node")
	if a.bus.batchOK.Load() {
		t.Fatal("batching on with a node that never said it reads batches")
	}
	// The operator is told, once, though the node heartbeats every 50 ms.
	eventually(t, 5*time.Second, func() bool { return log.lines("does not read batches") > 0 }, "the log names the old node")
	const n = 1000
	for i := range n {
		send(t, ca, "P:carol:x"+strconv.Itoa(i))
	}
	var msgs []wireMsg
	var batches int
	eventually(t, 10*time.Second, func() bool { msgs, batches = inbox.unpack(t); return len(msgs) >= n }, "the old node gets %d messages", n)
	inOrder(t, msgs, "x", n)
	if batches != 0 {
		t.Fatalf("the old node got %d batches", batches)
	}

	close(old.upgraded)
	eventually(t, 5*time.Second, func() bool { return a.bus.batchOK.Load() }, "a learns that the node reads batches")
	for i := range n {
		send(t, ca, "P:carol:y"+strconv.Itoa(i))
	}
	eventually(t, 10*time.Second, func() bool { msgs, batches = inbox.unpack(t); return len(msgs) >= 2*n }, "the upgraded node gets %d more", n)
	inOrder(t, msgs[n:], "y", n)
	if batches == 0 {
		t.Fatal("no batch to a node that reads them")
	}
	if got := log.lines("does not read batches"); got != 1 {
		t.Fatalf("%d log lines about the old node, want 1", got)
	}
}

// Malformed batches from a hostile or broken publisher are counted and
// dropped from the first bad record on; what precedes it, and the
// messages after, are delivered; nothing panics.
func TestMalformedBatchesCounted(t *testing.T) {
	a := startNode(t, "a", with(embeddedRoutes())...)
	_, ra := client(t, "bob", a.addr)
	nc, err := nats.Connect(a.bus.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rec := func(kind byte, origin, text string) []byte {
		m := appendMsg(nil, kind, origin, "bob", []byte(text))
		return append([]byte{0, 0, 0, byte(len(m))}, m...)
	}
	batch := func(origin string, records ...[]byte) []byte {
		return appendMsg(nil, kindBatch, origin, "", bytes.Join(records, nil))
	}
	good := rec(kindDirect, "z", "good")
	bad := [][]byte{
		batch("z", good[:3]),                                        // cut in the length
		batch("z", good[:len(good)-1]),                              // cut in the record
		batch("z", append([]byte{0xff, 0xff, 0xff, 0xff}, good...)), // a length past the end
		batch("z", rec(kindDirect, "y", "other origin")),
		batch("z", rec(kindBatch, "z", "nested")),
		batch("z", rec(kindLoad, "z", "{}")), // control messages never travel in batches
		batch("z", rec(0, "z", "kind 0")),    // nor kinds that are no data kind
		batch("z", rec(flagStored, "z", "stored, kind 0")),
		batch("z", rec(kindBroadcast|flagStored, "z", "stored broadcast")),   // broadcasts are never stored
		batch("z", rec(kindDirect, "z", "before"), []byte{0, 0, 0, 2, 1, 1}), // a good record, then a bad one
	}
	for _, data := range bad {
		nc.Publish("msgnet.n.a", data)
	}
	nc.Publish("msgnet.n.a", batch("z", rec(kindDirect, "z", "after1"), rec(kindDirect, "z", "after2")))
	eventually(t, 5*time.Second, func() bool { return ra.has("after2") }, "the good batch after the bad ones")
	want := []string{"before", "after1", "after2"}
	if got := ra.all(); !slices.Equal(got, want) {
		t.Fatalf("bob got %q, want %q", got, want)
	}
	if st := a.bus.Stats(); st.Errors != uint64(len(bad)) {
		t.Fatalf("%d errors counted, want %d", st.Errors, len(bad))
	}
}

// Whatever a batch's body holds, forEachRecord does not panic and yields
// records that lie inside it, back to back.
func FuzzBatchRecords(f *testing.F) {
	m := appendMsg(nil, kindDirect, "n", "bob", []byte("hi"))
	f.Add(append([]byte{0, 0, 0, byte(len(m))}, m...))
	f.Add([]byte{0, 0, 0, 9, 1})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, body []byte) {
		used := 0
		err := forEachRecord(body, func(rec []byte) error {
			used += 4 + len(rec)
			if used > len(body) {
				t.Fatalf("records past the end: %d of %d bytes", used, len(body))
			}
			parseMsg(rec)
			return nil
		})
		if err == nil && used != len(body) {
			t.Fatalf("accepted a body of %d bytes, of which records cover %d", len(body), used)
		}
	})
}

// What Publish accepted before Close leaves before the node says goodbye.
func TestCloseSendsWhatWasQueued(t *testing.T) {
	a := startNode(t, "a", with(embeddedRoutes())...)
	b := startNode(t, "b", with(embeddedRoutes(a))...)
	waitCluster(t, a, b)
	_, rb := client(t, "bob", b.addr)
	waitKnows(t, a, "bob")
	const n = 2000
	for i := range n / 2 {
		m := msgnet.ClusterMessage{Kind: msgnet.ClusterDirect, Target: "bob", Payload: []byte("q" + strconv.Itoa(i))}
		if err := a.bus.Publish(m); err != nil {
			t.Fatal(err)
		}
	}
	// Once the flusher has published the first half and has no kick left
	// to take, the second half is queued without waking it, so that only
	// Close's final flush can publish it.
	q := &a.bus.queue
	eventually(t, 10*time.Second, func() bool { return len(rb.all()) == n/2 && len(q.kick) == 0 }, "bob gets the first %d", n/2)
	subj, batch, ok := a.bus.route("bob")
	if !ok {
		t.Fatal("no route to bob")
	}
	q.mu.Lock()
	for i := n / 2; i < n; i++ {
		q.addLocked(subj, batch, true, maxRunBytes, kindDirect, a.bus.id, "bob", []byte("q"+strconv.Itoa(i)))
	}
	q.mu.Unlock()
	a.bus.Close()
	eventually(t, 10*time.Second, func() bool { return len(rb.all()) >= n }, "bob gets all %d", n)
	for i, m := range rb.all() {
		if m != "q"+strconv.Itoa(i) {
			t.Fatalf("bob's message %d is %q", i, m)
		}
	}
	if err := a.bus.Publish(msgnet.ClusterMessage{Kind: msgnet.ClusterBroadcast, Payload: []byte("late")}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
}

// A message NATS would refuse is refused by Publish itself, at once.
func TestPublishTooLarge(t *testing.T) {
	a := startNode(t, "a", with(WithEmbedded(Embedded{ClusterListen: "127.0.0.1:0", MaxPayload: 4096}))...)
	err := a.bus.Publish(msgnet.ClusterMessage{Kind: msgnet.ClusterBroadcast, Payload: make([]byte, 5000)})
	if !errors.Is(err, nats.ErrMaxPayload) {
		t.Fatalf("Publish of 5000 bytes under a 4096-byte limit: %v", err)
	}
	if err := a.bus.Publish(msgnet.ClusterMessage{Kind: msgnet.ClusterBroadcast, Payload: make([]byte, 4000)}); err != nil {
		t.Fatal(err)
	}
}

// The queue cuts runs where the subject or the kind changes and at the
// size limit, batches only data kinds it is told it may, lets a message to
// a node's inbox join an earlier run to that inbox across runs to other
// inboxes but not across a message for every node, and says when it is
// full.
func TestPubQueueRuns(t *testing.T) {
	type msg struct {
		subj         string
		batch, merge bool
		kind         byte
		size         int
	}
	for _, c := range []struct {
		name string
		msgs []msg
		want []string // each run: subject and count
	}{
		{"consecutive", []msg{{"s1", true, false, kindGroup, 10}, {"s1", true, false, kindGroup, 10}, {"s2", true, false, kindGroup, 10}},
			[]string{"s1:2", "s2:1"}},
		{"control alone", []msg{{"s", true, false, kindGroup, 10}, {"s", false, false, kindUp, 10}, {"s", true, false, kindGroup, 10}},
			[]string{"s:1", "s:1", "s:1"}},
		{"not batching", []msg{{"s", false, true, kindDirect, 10}, {"s", false, true, kindDirect, 10}},
			[]string{"s:1", "s:1"}},
		{"size limit", []msg{{"s", true, false, kindGroup, maxRunBytes - 100}, {"s", true, false, kindGroup, 200}},
			[]string{"s:1", "s:1"}},
		{"inboxes merge", []msg{{"n.b", true, true, kindDirect, 10}, {"n.c", true, true, kindDirect, 10}, {"n.b", true, true, kindDirect, 10}, {"n.c", true, true, kindDirect, 10}},
			[]string{"n.b:2", "n.c:2"}},
		{"not across a broadcast", []msg{{"n.b", true, true, kindDirect, 10}, {"b", true, false, kindBroadcast, 10}, {"n.b", true, true, kindDirect, 10}},
			[]string{"n.b:1", "b:1", "n.b:1"}},
		{"not across control", []msg{{"n.b", true, true, kindDirect, 10}, {"d", false, false, kindUp, 10}, {"n.b", true, true, kindDirect, 10}},
			[]string{"n.b:1", "d:1", "n.b:1"}},
		{"not past an unbatched one", []msg{{"n.b", true, true, kindDirect, 10}, {"n.b", false, true, kindDirect, 10}, {"n.c", true, true, kindDirect, 10}, {"n.b", true, true, kindDirect, 10}},
			[]string{"n.b:1", "n.b:1", "n.c:1", "n.b:1"}},
		{"a shared run takes only consecutive", []msg{{"b", true, false, kindBroadcast, 10}, {"n.b", true, true, kindDirect, 10}, {"b", true, false, kindBroadcast, 10}},
			[]string{"b:1", "n.b:1", "b:1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			q := newPubQueue("n")
			for _, m := range c.msgs {
				if _, err := q.add(m.subj, m.batch, m.merge, maxRunBytes, m.kind, "n", "t", make([]byte, m.size)); err != nil {
					t.Fatal(err)
				}
			}
			var got []string
			for _, r := range q.runs {
				got = append(got, r.subj+":"+strconv.Itoa(r.n))
				if r.n > 1 && len(r.buf) > maxRunBytes {
					t.Fatalf("a run of %d bytes", len(r.buf))
				}
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("runs %v, want %v", got, c.want)
			}
		})
	}
	q := newPubQueue("n")
	full := false
	for i := 0; i < 200 && !full; i++ {
		full, _ = q.add("s3", true, false, maxRunBytes, kindGroup, "n", "", make([]byte, 32<<10))
	}
	if !full || q.size > maxQueuedBytes+64<<10 {
		t.Fatalf("queue of %d bytes; full reported: %v", q.size, full)
	}
	q.stopped = true
	if _, err := q.add("s", true, false, maxRunBytes, kindGroup, "n", "", nil); err != errQueueStopped {
		t.Fatalf("add to a stopped queue: %v", err)
	}
}

// With NATS's maximum payload below the bus's batch size, batches stay
// under it: a burst that fits message by message arrives whole.
func TestBatchesFitMaxPayload(t *testing.T) {
	emb := func(to ...*testNode) Option {
		var routes []string
		for _, n := range to {
			routes = append(routes, "nats-route://"+n.bus.ClusterAddr())
		}
		return WithEmbedded(Embedded{ClusterListen: "127.0.0.1:0", Routes: routes, MaxPayload: 4096})
	}
	a := startNode(t, "a", with(emb())...)
	b := startNode(t, "b", with(emb(a))...)
	waitCluster(t, a, b)
	eventually(t, 5*time.Second, func() bool { return a.bus.batchOK.Load() }, "a learns that b reads batches")
	_, rb := client(t, "bob", b.addr)
	waitKnows(t, a, "bob")
	const n = 200
	payload := bytes.Repeat([]byte("x"), 1000)
	for i := range n {
		p := append([]byte(strconv.Itoa(i)+":"), payload...)
		if err := a.bus.Publish(msgnet.ClusterMessage{Kind: msgnet.ClusterDirect, Target: "bob", Payload: p}); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
	eventually(t, 10*time.Second, func() bool { return len(rb.all()) >= n }, "bob gets %d messages of 1 KB under a 4 KiB limit (%d errors counted)", n, a.bus.Stats().Errors)
	if st := a.bus.Stats(); st.Errors != 0 {
		t.Fatalf("a counted %d errors", st.Errors)
	}
}

// While NATS is unreachable, Publish goes through nats.go's reconnect
// buffer and fails once it is full, as a plain NATS publish does: the
// sender learns of the loss.
func TestPublishFailsPastReconnectBuffer(t *testing.T) {
	url, kill := startExternalNATS(t)
	x := startNode(t, "x1", with(WithURL(url), WithPrefix("ext.msgnet"))...)
	kill()
	eventually(t, 10*time.Second, func() bool { return !x.bus.nc.IsConnected() }, "the bus notices NATS is gone")
	payload := make([]byte, 256<<10)
	failed := 0
	for range 64 { // 16 MiB, twice the reconnect buffer
		if err := x.bus.Publish(msgnet.ClusterMessage{Kind: msgnet.ClusterBroadcast, Payload: payload}); err != nil {
			if !errors.Is(err, nats.ErrReconnectBufExceeded) {
				t.Fatalf("Publish: %v", err)
			}
			failed++
		}
	}
	if failed == 0 {
		t.Fatalf("16 MiB published while NATS is down: Publish never failed (%d errors counted)", x.bus.Stats().Errors)
	}
	if got := x.bus.Stats().Errors; got < uint64(failed) {
		t.Fatalf("%d publishes failed, %d errors counted", failed, got)
	}
}

// A node that does not read batches keeps them off the subjects every node
// subscribes to even after it expires (stalled, still subscribed), while a
// node that reads them still gets its direct messages batched.
func TestNoSharedBatchesAfterAnOldNodeSpoke(t *testing.T) {
	a := startNode(t, "a", with(embeddedRoutes())...)
	b := startNode(t, "b", with(embeddedRoutes(a))...)
	waitCluster(t, a, b)
	// The old node heartbeats once, then stalls past its TTL, still
	// subscribed to broadcasts.
	shared := spyOn(t, a.bus.ClientURL(), "msgnet.b")
	nc, err := nats.Connect(a.bus.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	body := `{"instance":"i1","sessions":0,"at":` + strconv.FormatInt(time.Now().UnixNano(), 10) + `,"interval_ms":100}`
	nc.Publish("msgnet.l", appendMsg(nil, kindLoad, "old", "", []byte(body)))
	eventually(t, 5*time.Second, func() bool {
		a.bus.mu.RLock()
		defer a.bus.mu.RUnlock()
		_, ok := a.bus.peers["old"]
		return ok
	}, "a hears the old node")
	eventually(t, 10*time.Second, func() bool {
		a.bus.mu.RLock()
		defer a.bus.mu.RUnlock()
		_, ok := a.bus.peers["old"]
		return !ok && a.bus.batchOK.Load()
	}, "the old node expires, and every known node reads batches")

	_, rb := client(t, "bob", b.addr)
	waitKnows(t, a, "bob")
	direct := spyOn(t, a.bus.ClientURL(), "msgnet.n.b")
	const n = 2000
	for i := range n {
		if err := a.bus.Publish(msgnet.ClusterMessage{Kind: msgnet.ClusterBroadcast, Payload: []byte("b" + strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		if err := a.bus.Publish(msgnet.ClusterMessage{Kind: msgnet.ClusterDirect, Target: "bob", Payload: []byte("d" + strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, func() bool { return rb.has("d" + strconv.Itoa(n-1)) }, "bob's last message")
	msgs, batches := shared.unpack(t)
	if len(msgs) != n || batches != 0 {
		t.Fatalf("broadcasts: %d messages, %d batches; want %d, none", len(msgs), batches, n)
	}
	if msgs, batches = direct.unpack(t); len(msgs) != n || batches == 0 {
		t.Fatalf("direct to b: %d messages, %d batches; want %d, some", len(msgs), batches, n)
	}
}

// Private messages from one node to clients on two others, interleaved,
// still leave in batches per node, and each client gets its own in order.
func TestInterleavedInboxesBatch(t *testing.T) {
	a := startNode(t, "a", with(embeddedRoutes())...)
	b := startNode(t, "b", with(embeddedRoutes(a))...)
	c := startNode(t, "c", with(embeddedRoutes(a))...)
	waitCluster(t, a, b, c)
	eventually(t, 5*time.Second, func() bool { return a.bus.batchOK.Load() }, "a learns that b and c read batches")
	ca, _ := client(t, "alice", a.addr)
	_, rb := client(t, "bob", b.addr)
	_, rc := client(t, "carol", c.addr)
	waitKnows(t, a, "bob", "carol")
	toB := spyOn(t, a.bus.ClientURL(), "msgnet.n.b")
	toC := spyOn(t, a.bus.ClientURL(), "msgnet.n.c")
	const n = 2000
	for i := range n {
		send(t, ca, "P:bob:m"+strconv.Itoa(i))
		send(t, ca, "P:carol:m"+strconv.Itoa(i))
	}
	for _, r := range []*recorder{rb, rc} {
		eventually(t, 10*time.Second, func() bool { return len(r.all()) >= n }, "%d messages each", n)
		for i, m := range r.all() {
			if m != "m"+strconv.Itoa(i) {
				t.Fatalf("message %d is %q", i, m)
			}
		}
	}
	for _, s := range []*spy{toB, toC} {
		var msgs []wireMsg
		var batches int
		eventually(t, 5*time.Second, func() bool { msgs, batches = s.unpack(t); return len(msgs) >= n }, "the spy sees them all")
		inOrder(t, msgs, "m", n)
		if batches == 0 {
			t.Fatal("no batch to an inbox whose messages were interleaved with another's")
		}
	}
}

// waitKnows waits until n's directory places every client id.
func waitKnows(t *testing.T, n *testNode, ids ...string) {
	t.Helper()
	eventually(t, 5*time.Second, func() bool {
		for _, id := range ids {
			if _, ok := n.bus.Lookup(id); !ok {
				return false
			}
		}
		return true
	}, "%s learns %v", n.id, ids)
}

// When NATS does not take what the flusher hands it (here: a flush held
// up), the queue stops growing near maxQueuedBytes and Publish waits,
// rather than buffering without bound; it goes on once NATS takes again.
func TestQueueBoundedWhileNATSStalls(t *testing.T) {
	a := startNode(t, "a", with(embeddedRoutes())...)
	q := &a.bus.queue
	q.flushMu.Lock() // a flush stuck in a write to NATS
	stalled := true
	defer func() {
		if stalled {
			q.flushMu.Unlock()
		}
	}()
	const n, size = 100, 64 << 10 // 6.4 MiB, past the 4 MiB bound
	done := make(chan error, 1)
	go func() {
		for range n {
			if err := a.bus.Publish(msgnet.ClusterMessage{Kind: msgnet.ClusterBroadcast, Payload: make([]byte, size)}); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	queued := func() int {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.size
	}
	// The publisher must end up waiting in a flush of its own: at the
	// bound, Publish flushes rather than queue more.
	inFlush := func() bool {
		buf := make([]byte, 1<<20)
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "(*Bus).Publish") && strings.Contains(g, "(*Bus).flushQueue") {
				return true
			}
		}
		return false
	}
	eventually(t, 10*time.Second, func() bool {
		select {
		case err := <-done:
			t.Fatalf("Publish of 6.4 MiB returned (%v) while NATS took nothing", err)
		default:
		}
		return inFlush()
	}, "Publish to wait in a flush once the queue is full")
	if got := queued(); got <= maxQueuedBytes || got > maxQueuedBytes+size+64 {
		t.Fatalf("%d bytes queued; the bound is %d", got, maxQueuedBytes)
	}
	q.flushMu.Unlock()
	stalled = false
	if err := recv(t, 10*time.Second, done, "the publisher to finish once NATS takes again"); err != nil {
		t.Fatal(err)
	}
	if st := a.bus.Stats(); st.Errors != 0 || st.Published["broadcast"] != n {
		t.Fatalf("errors %d, published %d; want 0 and %d", st.Errors, st.Published["broadcast"], n)
	}
}
