package natsbus

import (
	"bytes"
	"encoding/json"
	"errors"
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
		if err := forEachRecord(m.body, func(rec []byte) error {
			r, err := parseMsg(rec)
			if err != nil || r.kind == kindBatch || r.origin != m.origin {
				return errBadMessage
			}
			msgs = append(msgs, r)
			return nil
		}); err != nil {
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
	eventually(t, 5*time.Second, func() bool { _, ok := a.bus.Lookup("bob"); return ok }, "a learns bob")
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
	a := startNode(t, "a", with(embeddedRoutes())...)
	old, inbox := startOldNode(t, a.bus.ClientURL())
	ca, _ := client(t, "alice", a.addr)
	eventually(t, 5*time.Second, func() bool { n, ok := a.bus.Lookup("carol"); return ok && n == "old" }, "a learns carol on the old node")
	if a.bus.batchOK.Load() {
		t.Fatal("batching on with a node that never said it reads batches")
	}
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
	eventually(t, 5*time.Second, func() bool { _, ok := a.bus.Lookup("bob"); return ok }, "a learns bob")
	const n = 2000
	for i := range n {
		m := msgnet.ClusterMessage{Kind: msgnet.ClusterDirect, Target: "bob", Payload: []byte("q" + strconv.Itoa(i))}
		if err := a.bus.Publish(m); err != nil {
			t.Fatal(err)
		}
	}
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

// The queue cuts runs where the subject or the kind changes and at
// maxRunBytes, batches only data kinds it is told it may, and says when it
// is full.
func TestPubQueueRuns(t *testing.T) {
	q := newPubQueue("n")
	add := func(subj string, batch bool, kind byte, size int) bool {
		full, err := q.add(subj, batch, kind, "n", "t", make([]byte, size))
		if err != nil {
			t.Fatal(err)
		}
		return full
	}
	add("s1", true, kindDirect, 10)
	add("s1", true, kindDirect, 10)
	add("s2", true, kindDirect, 10)
	add("s2", false, kindUp, 10) // control: alone
	add("s2", true, kindDirect, 10)
	add("s2", false, kindDirect, 10) // not batching: alone
	add("s2", true, kindDirect, maxRunBytes-100)
	add("s2", true, kindDirect, 200) // would pass maxRunBytes
	var ns []int
	for _, r := range q.runs {
		ns = append(ns, r.n)
	}
	if want := []int{2, 1, 1, 1, 1, 1, 1}; !slices.Equal(ns, want) {
		t.Fatalf("runs of %v messages, want %v", ns, want)
	}
	for _, r := range q.runs {
		if r.end-r.off > maxRunBytes+len(q.header) {
			t.Fatalf("a run of %d bytes", r.end-r.off)
		}
	}
	full := false
	for i := 0; i < 200 && !full; i++ {
		full = add("s3", true, kindDirect, 32<<10)
	}
	if !full || len(q.buf) > maxQueuedBytes+64<<10 {
		t.Fatalf("queue of %d bytes; full reported: %v", len(q.buf), full)
	}
	q.stopped = true
	if _, err := q.add("s", true, kindDirect, "n", "", nil); err != errQueueStopped {
		t.Fatalf("add to a stopped queue: %v", err)
	}
}
