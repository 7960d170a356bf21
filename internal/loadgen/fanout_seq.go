package loadgen

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// FanoutStats is fanout's per-message accounting. Every GROUP message
// carries its sequence number, and each receiver keeps the set of the
// numbers it got, so that a loss shows as the missing numbers, whoever lost
// them (a server dropping for a full queue, a receiver cut off as a slow
// consumer), instead of as a shortfall in a count that duplicates could
// hide.
type FanoutStats struct {
	// Proto is the wire protocol: msgnet or nats.
	Proto string `json:"proto"`
	// Delivered counts the distinct (receiver, message) pairs of the
	// window's messages that arrived; DeliveredPct is it as a percentage of
	// Result.Expected.
	Delivered    int64   `json:"delivered"`
	DeliveredPct float64 `json:"delivered_pct"`
	// Sustained is DeliveredPct >= SustainedPct.
	Sustained bool `json:"sustained"`
	// Gaps counts the window's messages a receiver never got, summed over
	// the receivers (Expected - Delivered); GapRuns counts the runs of
	// consecutive missing numbers, and ReceiversWithGaps the receivers that
	// missed any.
	Gaps              int64 `json:"gaps"`
	GapRuns           int64 `json:"gap_runs"`
	ReceiversWithGaps int   `json:"receivers_with_gaps"`
	// OutOfOrder counts window messages that arrived after a later one of
	// the same sender on the same receiver; Duplicates those that arrived
	// twice.
	OutOfOrder int64 `json:"out_of_order"`
	Duplicates int64 `json:"duplicates"`
	// Polled counts the receivers read by the polled readers (Linux); the
	// others had a goroutine each: TLS, other systems, or a reader that
	// could not be set up (out of descriptors), which would otherwise
	// change what was measured without a trace.
	Polled int `json:"polled"`
	// CPUWait is the time the server and the load tool waited for a CPU
	// over the window.
	CPUWait *CPUWait `json:"cpu_wait,omitempty"`
}

// SustainedPct is the share of expected deliveries at or above which a
// fanout run counts as sustained.
const SustainedPct = 99.9

// seqSet is one receiver's record of the sequence numbers it got: a bit
// set that grows with the highest number seen, so that it costs an eighth
// of a byte per message sent, whatever the receivers.
type seqSet struct {
	bits       []uint64
	top        uint64 // highest number seen plus one
	outOfOrder int64
	dups       int64
}

// maxSeqBits bounds a seqSet; a number past it is not one of the sender's
// (it sends fewer than this in any run the load tool can measure).
const maxSeqBits = 1 << 32

// add records seq; counted says whether out-of-order arrivals and
// duplicates of this one are counted (a message of the window). It reports
// false for a number too large to be the sender's.
func (s *seqSet) add(seq uint64, counted bool) bool {
	if seq >= maxSeqBits {
		return false
	}
	w := int(seq / 64)
	if w >= len(s.bits) {
		s.bits = append(s.bits, make([]uint64, w+1-len(s.bits)+len(s.bits)/2)...)
	}
	m := uint64(1) << (seq % 64)
	switch {
	case s.bits[w]&m != 0:
		if counted {
			s.dups++
		}
		return true
	case seq+1 < s.top && counted:
		s.outOfOrder++
	}
	s.bits[w] |= m
	s.top = max(s.top, seq+1)
	return true
}

// has reports whether seq was recorded.
func (s *seqSet) has(seq uint64) bool {
	w := seq / 64
	return w < uint64(len(s.bits)) && s.bits[w]&(1<<(seq%64)) != 0
}

// count returns how many numbers in [lo, hi) were recorded, and the runs of
// consecutive numbers missing among them.
func (s *seqSet) count(lo, hi uint64) (got, runs int64) {
	missing := false
	for seq := lo; seq < hi; {
		// A whole word at a time where the range covers it.
		if seq%64 == 0 && seq+64 <= hi {
			var word uint64
			if w := seq / 64; w < uint64(len(s.bits)) {
				word = s.bits[w]
			}
			switch word {
			case ^uint64(0):
				got += 64
				missing = false
				seq += 64
				continue
			case 0:
				if !missing {
					runs++
				}
				missing = true
				seq += 64
				continue
			}
		}
		if s.has(seq) {
			got++
			missing = false
		} else {
			if !missing {
				runs++
			}
			missing = true
		}
		seq++
	}
	return got, runs
}

// fanoutStats sums the receivers' sets over the window's messages [lo, hi).
func fanoutStats(proto string, sets []seqSet, lo, hi uint64, expected int64) *FanoutStats {
	if proto == "" {
		proto = ProtoMsgnet
	}
	st := &FanoutStats{Proto: proto}
	for i := range sets {
		s := &sets[i]
		got, runs := s.count(lo, hi)
		st.Delivered += got
		st.GapRuns += runs
		if runs > 0 {
			st.ReceiversWithGaps++
		}
		st.OutOfOrder += s.outOfOrder
		st.Duplicates += s.dups
	}
	st.Gaps = expected - st.Delivered
	if expected > 0 {
		st.DeliveredPct = 100 * float64(st.Delivered) / float64(expected)
	}
	st.Sustained = expected > 0 && st.DeliveredPct >= SustainedPct
	return st
}

// ProcPeakRSS returns the peak resident set size of process pid in bytes,
// from the VmHWM line of /proc/PID/status.
func ProcPeakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("%s/%d/status", procRoot, pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, "VmHWM:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 2 && f[1] == "kB" {
			if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				return kb * 1024, nil
			}
		}
		break
	}
	return 0, fmt.Errorf("loadgen: no VmHWM in /proc/%d/status", pid)
}
