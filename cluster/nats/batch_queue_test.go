package natsbus

import (
	"encoding/binary"
	"math/rand"
	"slices"
	"strings"
	"testing"
)

// A model check of pubQueue's order claim (docs/CLUSTER.md, "Batches").
// Random messages to two inboxes (merge), a broadcast subject, a group
// subject and P.a (shared), and control messages, with random batch flags
// and sizes around the limit; each node (n.b, n.c) receives its inbox and
// every shared subject. The runs, flattened in queue order, must give
// each node exactly its messages, in publish order, each in a run to its
// own subject.
func TestPubQueueKeepsEachNodesOrder(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	subjects := []struct {
		s          string
		merge, ctl bool
	}{{"n.b", true, false}, {"n.c", true, false}, {"b", false, false}, {"g.x", false, false}, {"a", false, false}, {"d", false, true}, {"n.b", false, true}}
	const limit = 600
	inbox := func(subj string) bool { return strings.HasPrefix(subj, "n.") } // one node's; the rest every node's
	for iter := 0; iter < 3000; iter++ {
		q := newPubQueue("n")
		nmsg := 1 + rng.Intn(40)
		want := map[string][]int{} // what each node must get, in order
		for i := 0; i < nmsg; i++ {
			si := rng.Intn(len(subjects))
			s := subjects[si]
			batch := !s.ctl && rng.Intn(5) != 0
			kind := byte(kindDirect)
			if s.ctl {
				kind = kindSync
			}
			body := make([]byte, 5+rng.Intn(300)) // its number, then its subject's index
			binary.BigEndian.PutUint32(body, uint32(i))
			body[4] = byte(si)
			if _, err := q.add(s.s, batch, s.merge, limit, kind, "n", "", body); err != nil {
				t.Fatal(err)
			}
			for _, node := range []string{"n.b", "n.c"} {
				if s.s == node || !inbox(s.s) {
					want[node] = append(want[node], i)
				}
			}
		}
		for _, node := range []string{"n.b", "n.c"} {
			var got []int
			for _, r := range q.runs {
				if r.subj != node && inbox(r.subj) {
					continue
				}
				if r.n > 1 && len(r.buf) > limit {
					t.Fatalf("iter %d: a batch of %d bytes over %d", iter, len(r.buf), limit)
				}
				forEachRecord(r.buf[len(q.header):], func(rec []byte) error {
					m, _ := parseMsg(rec)
					if subj := subjects[m.body[4]].s; subj != r.subj {
						t.Fatalf("iter %d: a message to %s in a run to %s", iter, subj, r.subj)
					}
					got = append(got, int(binary.BigEndian.Uint32(m.body)))
					return nil
				})
			}
			if !slices.Equal(got, want[node]) {
				t.Fatalf("iter %d: node %s gets %v, want %v", iter, node, got, want[node])
			}
		}
	}
}

// The run buffers kept between flushes stay within keepBufBytes per
// array, spare entries past len included: flushes whose last run holds
// one large message, each with one run fewer than the one before, must
// not pile up a large buffer per flush.
func TestPubQueueKeptBuffersBounded(t *testing.T) {
	q := newPubQueue("n")
	big := make([]byte, 900<<10)
	for k := 40; k >= 1; k-- {
		for i := 0; i < k-1; i++ {
			q.add("s", false, false, maxRunBytes, kindBroadcast, "n", "", []byte("x"))
		}
		q.add("s", false, false, maxRunBytes, kindBroadcast, "n", "", big)
		q.giveBackLocked(q.takeLocked()) // what flush does around publishing
	}
	kept := 0
	for _, runs := range [][]pubRun{q.runs, q.spare} { // the two arrays flushes alternate
		for _, r := range runs[:cap(runs)] {
			kept += cap(r.buf)
		}
	}
	if kept > 2*keepBufBytes {
		t.Fatalf("%d KiB of run buffers kept between flushes; the bound is %d KiB", kept>>10, keepBufBytes>>10)
	}
}

// A batch cut at any byte yields exactly the records that are whole before
// the cut, in order, and an error unless the cut falls between records.
func TestBatchCutAtEveryByte(t *testing.T) {
	q := newPubQueue("n")
	bodies := []string{"one", "", "three and more"}
	var ends []int // where each record ends in the batch's body
	for _, b := range bodies {
		if _, err := q.add("s", true, true, maxRunBytes, kindDirect, "n", "bob", []byte(b)); err != nil {
			t.Fatal(err)
		}
		ends = append(ends, len(q.runs[0].buf)-len(q.header))
	}
	full := q.runs[0].buf
	batch, err := parseMsg(full)
	if err != nil || batch.kind != kindBatch {
		t.Fatalf("the queue's run is not a batch: %v", err)
	}
	for cut := 0; cut <= len(batch.body); cut++ {
		m := batch
		m.body = batch.body[:cut]
		var got []string
		err := eachBatched(m, func(r wireMsg) { got = append(got, string(r.body)) })
		whole := 0
		for whole < len(ends) && ends[whole] <= cut {
			whole++
		}
		if !slices.Equal(got, bodies[:whole]) {
			t.Fatalf("cut at %d: records %q, want %q", cut, got, bodies[:whole])
		}
		onBoundary := cut == 0 || slices.Contains(ends, cut)
		if (err == nil) != onBoundary {
			t.Fatalf("cut at %d (between records: %v): error %v", cut, onBoundary, err)
		}
	}
}

// Reading a batch of records to one target allocates nothing per record:
// the ids come from the batch and the record before.
func TestBatchReadAllocations(t *testing.T) {
	q := newPubQueue("node-a")
	for range 100 {
		q.add("s", true, false, maxRunBytes, kindGroup, "node-a", "room", make([]byte, 100))
	}
	m, err := parseMsg(q.runs[0].buf)
	if err != nil || m.kind != kindBatch {
		t.Fatalf("the run is not a batch: %v %v", m.kind, err)
	}
	records := 0
	if err := eachBatched(m, func(r wireMsg) {
		if r.origin != "node-a" || r.target != "room" || len(r.body) != 100 {
			t.Fatalf("record %+v", r)
		}
		records++
	}); err != nil || records != 100 {
		t.Fatalf("%d records, %v", records, err)
	}
	if n := testing.AllocsPerRun(100, func() { eachBatched(m, func(wireMsg) {}) }); n > 2 {
		t.Fatalf("%v allocations to read a batch of 100 records to one target", n)
	}
}
