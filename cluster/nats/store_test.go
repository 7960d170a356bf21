package natsbus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// streamRecorder keeps what a reliable client's subscriptions deliver.
type streamRecorder struct {
	mu   sync.Mutex
	msgs []string
	offs []uint64
	lost []*msgnet.ContinuityLost
}

func (r *streamRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

// reliable connects a reliable client that reconnects by itself, trying
// addrs in turn.
func reliable(t testing.TB, id string, addrs ...string) (*msgnet.Client, *streamRecorder) {
	t.Helper()
	r := &streamRecorder{}
	c := msgnet.NewClient(id, msgnet.WithReliable(msgnet.ReliableOptions{}),
		msgnet.WithReconnect(10*time.Millisecond, 100*time.Millisecond, 0), msgnet.WithConnectTimeout(2*time.Second))
	c.OnStream(func(m msgnet.StreamMessage) {
		r.mu.Lock()
		r.msgs = append(r.msgs, string(m.Payload))
		r.offs = append(r.offs, m.Offset)
		r.mu.Unlock()
	})
	c.OnContinuityLost(func(l *msgnet.ContinuityLost) {
		r.mu.Lock()
		r.lost = append(r.lost, l)
		r.mu.Unlock()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx, addrs...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, r
}

// publish publishes m-from ... m-to, waiting while the client's store of
// unacknowledged publishes is full, pausing pace after every tenth.
func publish(t testing.TB, c *msgnet.Client, stream string, from, to int, pace time.Duration) {
	t.Helper()
	for i := from; i <= to; {
		if pace > 0 && i%10 == 0 {
			time.Sleep(pace)
		}
		switch err := c.Publish(stream, []byte(fmt.Sprint("m-", i))); {
		case err == nil:
			i++
		case errors.Is(err, msgnet.ErrBufferFull):
			time.Sleep(time.Millisecond)
		default:
			t.Fatalf("publish %d: %v", i, err)
		}
	}
}

// exactlyOnce waits until r has n messages, then checks they are m-1 ...
// m-n in order, with no continuity lost.
func exactlyOnce(t testing.TB, r *streamRecorder, n int, d time.Duration) {
	t.Helper()
	eventually(t, d, func() bool { return r.count() >= n }, "the subscriber did not get %d messages", n)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.lost) > 0 {
		t.Errorf("continuity lost: %+v", *r.lost[0])
	}
	if len(r.msgs) != n {
		for i, m := range r.msgs {
			if want := fmt.Sprint("m-", i+1); m != want {
				t.Logf("first difference at %d: %q (offset %d); around it: %q %v", i, m, r.offs[i], r.msgs[max(0, i-3):min(len(r.msgs), i+3)], r.offs[max(0, i-3):min(len(r.msgs), i+3)])
				break
			}
		}
		t.Fatalf("got %d messages, want %d", len(r.msgs), n)
	}
	for i, m := range r.msgs {
		if want := fmt.Sprint("m-", i+1); m != want {
			t.Fatalf("message %d is %q, want %q", i, m, want)
		}
	}
}

// storeServer serves msgnet on addr ("127.0.0.1:0" for any port) with a
// store kept in dir.
func storeServer(t testing.TB, addr, dir string) (*msgnet.Server, *Store) {
	t.Helper()
	st, err := OpenStore(dir, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv := msgnet.NewServer("single", msgnet.WithStore(st))
	if err := srv.Start(addr); err != nil {
		st.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv, st
}

// A publisher's retry of a message already stored is recognised after
// the store is closed and opened again: the de-duplication window is
// JetStream's, on disk, not the server's memory.
func TestStoreDeduplicatesAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	for round := range 2 {
		st, err := OpenStore(dir, StoreOptions{})
		if err != nil {
			t.Fatal(err)
		}
		l, err := st.Open("group:g", msgnet.DefaultRetention())
		if err != nil {
			t.Fatal(err)
		}
		off, dup, err := l.Append([]byte("once"), "client/pub/1")
		if err != nil || off != 1 || dup != (round == 1) {
			t.Errorf("round %d: Append = %d, dup %v, %v; want offset 1, dup %v", round, off, dup, err, round == 1)
		}
		epoch, first, last := l.Bounds()
		if round == 0 {
			l.Append([]byte("two"), "")
		}
		var got []string
		if err := l.Read(1, 10, func(off uint64, p []byte) bool { got = append(got, fmt.Sprint(off, ":", string(p))); return true }); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != "[1:once 2:two]" {
			t.Errorf("round %d: read %v", round, got)
		}
		t.Logf("round %d: epoch %d, first %d, last %d", round, epoch, first, last)
		st.Close()
	}
}

// A second store on a directory in use is refused, and allowed once the
// first is closed.
func TestStoreDirectoryLocked(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenStore(dir, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st2, err := OpenStore(dir, StoreOptions{}); err == nil || !strings.Contains(err.Error(), "in use by another process") {
		if st2 != nil {
			st2.Close()
		}
		t.Fatalf("a second store on one directory: %v", err)
	}
	st.Close()
	st, err = OpenStore(dir, StoreOptions{})
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	st.Close()
}

// A state report older than the appends this node has seen since (an
// empty stream, while the watch already moved last to 1) must not move
// first past a message that is there: that read as a continuity loss of
// message 1 in a cluster test.
func TestRefreshBoundsStaleReport(t *testing.T) {
	for _, c := range []struct {
		first, last uint64
		st          jetstream.StreamState
		want        [2]uint64
	}{
		{1, 1, jetstream.StreamState{}, [2]uint64{1, 1}},                                      // stale: empty
		{1, 0, jetstream.StreamState{Msgs: 3, FirstSeq: 1, LastSeq: 3}, [2]uint64{1, 3}},      // fresher
		{1, 10, jetstream.StreamState{Msgs: 5, FirstSeq: 4, LastSeq: 8}, [2]uint64{4, 10}},    // retention moved first
		{4, 10, jetstream.StreamState{Msgs: 0, FirstSeq: 11, LastSeq: 10}, [2]uint64{11, 10}}, // all expired
		{6, 10, jetstream.StreamState{Msgs: 5, FirstSeq: 4, LastSeq: 8}, [2]uint64{6, 10}},    // never back
	} {
		f, l := refreshBounds(c.first, c.last, c.st)
		if [2]uint64{f, l} != c.want {
			t.Errorf("refreshBounds(%d, %d, %+v) = %d, %d; want %v", c.first, c.last, c.st, f, l, c.want)
		}
	}
}

// The epoch of a stream is its JetStream creation time: the same after a
// restart, so positions stay valid.
func TestStoreEpochSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	var epochs [2]uint64
	for i := range epochs {
		st, err := OpenStore(dir, StoreOptions{})
		if err != nil {
			t.Fatal(err)
		}
		l, err := st.Open("client:someone", msgnet.DefaultRetention())
		if err != nil {
			t.Fatal(err)
		}
		epochs[i], _, _ = l.Bounds()
		st.Close()
	}
	if epochs[0] != epochs[1] || epochs[0] == 0 {
		t.Fatalf("epochs %v: want one, not zero", epochs)
	}
}

// A server with a JetStream store on disk is closed while messages flow
// and started again on the same directory: the reliable subscriber gets
// every message exactly once, in order, and the publisher's resends after
// the restart are not stored twice.
func TestStoreServerRestart(t *testing.T) {
	dir := t.TempDir()
	srv, _ := storeServer(t, "127.0.0.1:0", dir)
	addr := srv.Addr().String()
	sub, got := reliable(t, "sub", addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sub.Subscribe(ctx, msgnet.GroupStream("room")); err != nil {
		t.Fatal(err)
	}
	pub, _ := reliable(t, "pub", addr)
	publish(t, pub, msgnet.GroupStream("room"), 1, 500, 0)
	eventually(t, 20*time.Second, func() bool { return got.count() >= 300 }, "nothing flowed")
	srv.Close()                                               // closes the store, and its JetStream server
	srv.Wait()                                                // which must be gone before another opens the directory
	publish(t, pub, msgnet.GroupStream("room"), 501, 1000, 0) // kept by the client meanwhile
	storeServer(t, addr, dir)
	if err := pub.WaitPublished(ctx); err != nil {
		t.Fatal(err)
	}
	exactlyOnce(t, got, 1000, 30*time.Second)
}

// In a cluster of three nodes with a replicated store, the subscriber's
// node dies while 2,000 messages flow: the subscriber resumes on another
// node, and gets each exactly once, in order.
func TestStoreClusterNodeDeath(t *testing.T) {
	if testing.Short() {
		t.Skip("forms a JetStream cluster")
	}
	nodes := startStoreCluster(t)
	sub, got := reliable(t, "sub", nodes[1].addr, nodes[2].addr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := sub.Subscribe(ctx, msgnet.GroupStream("room")); err != nil {
		t.Fatal(err)
	}
	pub, _ := reliable(t, "pub", nodes[0].addr, nodes[2].addr)
	const n = 2000
	done := make(chan struct{})
	go func() {
		defer close(done)
		publish(t, pub, msgnet.GroupStream("room"), 1, n, 2*time.Millisecond)
	}()
	eventually(t, 30*time.Second, func() bool { return got.count() >= n/4 }, "nothing flowed")
	t.Logf("node n1 dies after %d of %d messages reached the subscriber", got.count(), n)
	nodes[1].srv.Close() // the subscriber's node: its server, NATS and JetStream
	<-done
	if err := pub.WaitPublished(ctx); err != nil {
		t.Fatal(err)
	}
	exactlyOnce(t, got, n, 60*time.Second)
}

// Across a JetStream cluster: a node that found a client's stream absent
// learns that another node created it from JetStream's advisory.
func TestStoreClusterAbsenceForgotten(t *testing.T) {
	nodes := startStoreCluster(t)
	a, b := nodes[0].store, nodes[1].store
	var err error
	eventually(t, 30*time.Second, func() bool { _, err = a.Open("group:first", msgnet.DefaultRetention()); return err == nil },
		"no stream could be created: %v", err)
	eventually(t, 5*time.Second, a.absence.advised.Load, "no creation advisory reached n0")
	eventually(t, 30*time.Second, func() bool { ok, err := a.Exists("client:roamer"); return !ok && err == nil },
		"JetStream never answered that the stream does not exist")
	if absent, _ := a.absence.known(a.streamName("client:roamer")); !absent {
		t.Fatal(`JetStream's "no" is not remembered`)
	}
	if _, err := b.Open("client:roamer", msgnet.DefaultRetention()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() bool { ok, _ := a.Exists("client:roamer"); return ok },
		"the stream node n1 created is still absent on n0")
}

// startStoreCluster starts three nodes whose embedded NATS servers form a
// JetStream cluster, each with a store of three replicas.
func startStoreCluster(t *testing.T) []*testNode {
	t.Helper()
	// Clustered JetStream wants routes configured on every server, the
	// first one's too: each lists all three (its own is ignored).
	var listen, routes []string
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		listen = append(listen, l.Addr().String())
		routes = append(routes, "nats-route://"+l.Addr().String())
		l.Close()
	}
	var buses []*Bus
	for i := range 3 {
		e := Embedded{ClusterListen: listen[i], Routes: routes, ServerName: fmt.Sprint("js", i), StoreDir: t.TempDir()}
		b, err := New(with(WithEmbedded(e))...)
		if err != nil {
			t.Fatal(err)
		}
		buses = append(buses, b)
	}
	var nodes []*testNode
	for i, b := range buses {
		var st *Store
		eventually(t, 30*time.Second, func() bool {
			var err error
			st, err = b.Store(StoreOptions{Replicas: 3})
			return err == nil
		}, "JetStream did not become available on node %d", i)
		id := fmt.Sprint("n", i)
		srv := msgnet.NewServer(id, msgnet.WithBus(b), msgnet.WithStore(st), msgnet.WithIdleTimeout(0))
		if err := srv.Start("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		n := &testNode{id: id, srv: srv, bus: b, store: st, addr: srv.Addr().String()}
		t.Cleanup(n.stop)
		nodes = append(nodes, n)
	}
	waitCluster(t, nodes...)
	return nodes
}

// AppendBatch appends a run in order, with offsets as Append's, and
// de-duplicates by key within the run and against earlier appends.
func TestStoreAppendBatch(t *testing.T) {
	st, err := OpenStore(t.TempDir(), StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l, err := st.Open("group:g", msgnet.DefaultRetention())
	if err != nil {
		t.Fatal(err)
	}
	bl := l.(msgnet.BatchLog)
	if _, _, err := l.Append([]byte("m-1"), "c/p/1"); err != nil {
		t.Fatal(err)
	}
	res, err := bl.AppendBatch([]msgnet.BatchMessage{
		{Payload: []byte("m-1"), Key: "c/p/1"}, // a retry
		{Payload: []byte("m-2"), Key: "c/p/2"},
		{Payload: []byte("m-3"), Key: "c/p/3"},
		{Payload: []byte("m-2"), Key: "c/p/2"}, // again, in the same run
		{Payload: []byte("m-4"), Key: ""},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []msgnet.Appended{{Offset: 1, Dup: true}, {Offset: 2}, {Offset: 3}, {Offset: 2, Dup: true}, {Offset: 4}}
	if fmt.Sprint(res) != fmt.Sprint(want) {
		t.Fatalf("AppendBatch = %v, want %v", res, want)
	}
	if _, _, last := l.Bounds(); last != 4 {
		t.Errorf("last offset %d, want 4", last)
	}
	var got []string
	l.Read(1, 10, func(off uint64, p []byte) bool { got = append(got, fmt.Sprint(off, ":", string(p))); return true })
	if fmt.Sprint(got) != "[1:m-1 2:m-2 3:m-3 4:m-4]" {
		t.Errorf("read %v", got)
	}
	if res, err := bl.AppendBatch(nil); err != nil || len(res) != 0 {
		t.Errorf("an empty run: %v, %v", res, err)
	}
}

// A store remembers that a stream does not exist, rather than asking
// JetStream for every message to a client id without one, and forgets it
// as soon as any connection to the JetStream (another node's store)
// creates a stream.
func TestStoreRemembersAbsenceUntilCreated(t *testing.T) {
	st, err := OpenStore(t.TempDir(), StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Exists("client:away"); err != nil {
		t.Fatal(err)
	}
	if absent, _ := st.absence.known(st.streamName("client:away")); absent {
		t.Fatal(`a "no" was remembered before any advisory showed that they arrive`)
	}
	// The store's own first stream brings the first advisory.
	if _, err := st.Open("group:first", msgnet.DefaultRetention()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, st.absence.advised.Load, "a creation advisory arrives")
	for range 3 {
		if ok, err := st.Exists("client:away"); ok || err != nil {
			t.Fatalf("Exists = %v, %v; want false", ok, err)
		}
	}
	if absent, _ := st.absence.known(st.streamName("client:away")); !absent {
		t.Fatal(`JetStream's "no" is not remembered`)
	}
	// Another node's store, on another connection, creates it.
	nc, err := nats.Connect("", nats.InProcessServer(st.ns))
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewStore(nc, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Open("client:away", msgnet.DefaultRetention()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() bool {
		ok, err := st.Exists("client:away")
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}, "the stream another store created is seen here")
	// A "no" asked for before a creation was advised is not remembered.
	_, gen := st.absence.known(st.streamName("client:late"))
	st.absence.forget()
	st.absence.remember(st.streamName("client:late"), gen)
	if absent, _ := st.absence.known(st.streamName("client:late")); absent {
		t.Fatal(`a "no" older than the last creation was remembered`)
	}
	// Nor one asked for before this store's own Open of that stream, whose
	// advisory has not come yet.
	_, gen = st.absence.known(st.streamName("client:mine"))
	st.absence.opened(st.streamName("client:mine"))
	st.absence.remember(st.streamName("client:mine"), gen)
	if absent, _ := st.absence.known(st.streamName("client:mine")); absent {
		t.Fatal(`a "no" older than this store's own Open was remembered`)
	}
}

// BenchmarkStoreExistsAbsent: what a server pays per message to a client
// id without a stream, when JetStream is asked each time ("asked", as
// before absence was remembered) and when its "no" is remembered.
func BenchmarkStoreExistsAbsent(b *testing.B) {
	st, err := OpenStore(b.TempDir(), StoreOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	for _, remember := range []bool{false, true} {
		b.Run(map[bool]string{false: "asked", true: "remembered"}[remember], func(b *testing.B) {
			st.absence.advised.Store(remember)
			for b.Loop() {
				if ok, err := st.Exists("client:nobody"); ok || err != nil {
					b.Fatal(ok, err)
				}
			}
		})
	}
}

// A peer naming ever new client ids cannot grow the memory of absent
// streams without bound: at maxAbsent it starts again empty.
func TestAbsenceMemoryBounded(t *testing.T) {
	var a absence
	a.advised.Store(true)
	for i := range 3*maxAbsent + 7 {
		_, gen := a.known(fmt.Sprint("MSGNET_id", i))
		a.remember(fmt.Sprint("MSGNET_id", i), gen)
		if len(a.m) > maxAbsent {
			t.Fatalf("%d names remembered after %d, bound %d", len(a.m), i+1, maxAbsent)
		}
	}
	if absent, _ := a.known(fmt.Sprint("MSGNET_id", 3*maxAbsent+6)); !absent {
		t.Fatal("the latest name is not remembered")
	}
}
