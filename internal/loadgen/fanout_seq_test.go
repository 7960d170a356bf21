package loadgen

import (
	"testing"
	"time"
)

func TestFanoutCountsGaps(t *testing.T) {
	s := startServer(t, serverOpts{groupDrop: 10})
	res := run(t, Config{Mode: ModeFanout, Addr: s.addr(), Conns: 4, Rate: 200,
		Duration: 500 * time.Millisecond, Warmup: 100 * time.Millisecond, Drain: 300 * time.Millisecond, JoinWait: 100 * time.Millisecond})
	noErrors(t, res)
	f := res.Fanout
	// One member is left out of every 10th message: about 10 of the
	// window's 100 messages, each missing on one receiver.
	if f.Gaps < 8 || f.Gaps > 12 || f.Gaps != res.Expected-f.Delivered || f.Gaps != res.Lost {
		t.Errorf("gaps %d (lost %d, expected %d, delivered %d), want about 10", f.Gaps, res.Lost, res.Expected, f.Delivered)
	}
	if f.GapRuns != f.Gaps || f.ReceiversWithGaps < 1 || f.Sustained || f.DeliveredPct >= 100 {
		t.Errorf("per-message accounting %+v", f)
	}
}

func TestSeqSet(t *testing.T) {
	var s seqSet
	// 0..199 except 5, 6 and 64..127; 130 arrives late; 7 twice.
	for seq := uint64(0); seq < 200; seq++ {
		if seq == 5 || seq == 6 || seq == 130 || seq >= 64 && seq < 128 {
			continue
		}
		s.add(seq, true)
	}
	s.add(130, true)
	s.add(7, true)
	got, runs := s.count(0, 200)
	if want := int64(200 - 2 - 64); got != want || runs != 2 {
		t.Errorf("count(0, 200) = %d, %d runs; want %d, 2", got, runs, want)
	}
	if s.outOfOrder != 1 || s.dups != 1 {
		t.Errorf("out of order %d, duplicates %d; want 1 and 1", s.outOfOrder, s.dups)
	}
	if got, runs := s.count(100, 300); got != 72 || runs != 2 {
		t.Errorf("count(100, 300) = %d, %d runs; want 72, 2 (28 and 100 missing)", got, runs)
	}
	if s.add(maxSeqBits, true) {
		t.Error("a number past maxSeqBits was taken")
	}
	st := fanoutStats("", []seqSet{s, {}}, 0, 200, 400)
	if st.Proto != ProtoMsgnet || st.Delivered != 134 || st.Gaps != 266 || st.ReceiversWithGaps != 2 || st.GapRuns != 3 || st.Sustained {
		t.Errorf("fanoutStats = %+v", st)
	}
}
