package monitor

import (
	"slices"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// collectOne runs f, which must send exactly one metric, and returns it.
// The channel has room for more, so that f never blocks: f has returned
// before the channel is read, so what it sent is there.
func collectOne(t *testing.T, f func(ch chan<- prometheus.Metric)) *dto.Metric {
	t.Helper()
	ch := make(chan prometheus.Metric, 8)
	f(ch)
	if len(ch) != 1 {
		t.Fatalf("collected %d metrics, want 1", len(ch))
	}
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		t.Fatal(err)
	}
	return &m
}

// A counter is never exported lower than before, per series: a sum over
// live sessions may read low for a moment while a session ends.
func TestCounterNeverGoesDown(t *testing.T) {
	c := NewCollector(msgnet.NewServer("x")).(*collector)
	export := func(n uint64, kind string) float64 {
		return collectOne(t, func(ch chan<- prometheus.Metric) {
			c.counter(ch, descFramesIn, n, kind)
		}).GetCounter().GetValue()
	}
	for i, step := range []struct {
		n    uint64
		kind string
		want float64
	}{
		{10, "DATA", 10},
		{8, "DATA", 10}, // read low: held
		{12, "DATA", 12},
		{3, "PING", 3}, // another series is its own
		{11, "DATA", 12},
	} {
		if got := export(step.n, step.kind); got != step.want {
			t.Errorf("step %d: exported %v for %d, want %v", i, got, step.n, step.want)
		}
	}
}

// The histogram is converted to seconds with cumulative buckets, the last
// (unbounded) bucket left to +Inf.
func TestLatencyHistogram(t *testing.T) {
	h := msgnet.Histogram{
		Bounds: []time.Duration{1024, 2048, 4096, 1<<63 - 1},
		Counts: []uint64{1, 0, 2, 3},
		Count:  5, // read apart from the buckets: not trusted
		Sum:    1500 * time.Millisecond,
	}
	m := collectOne(t, func(ch chan<- prometheus.Metric) { ch <- latencyHistogram(h) })
	hist := m.GetHistogram()
	if hist.GetSampleCount() != 6 || hist.GetSampleSum() != 1.5 {
		t.Errorf("count %d sum %v, want 6 and 1.5", hist.GetSampleCount(), hist.GetSampleSum())
	}
	var bounds []float64
	var counts []uint64
	for _, b := range hist.GetBucket() {
		bounds = append(bounds, b.GetUpperBound())
		counts = append(counts, b.GetCumulativeCount())
	}
	if !slices.Equal(bounds, []float64{1.024e-6, 2.048e-6, 4.096e-6}) || !slices.Equal(counts, []uint64{1, 1, 3}) {
		t.Errorf("buckets %v %v", bounds, counts)
	}
}

func TestCompareIDs(t *testing.T) {
	ids := []string{"ab-10", "ab-9", "aa-100", "ab-1", "ab-09x", "ab-010"}
	slices.SortFunc(ids, compareIDs)
	want := []string{"aa-100", "ab-1", "ab-9", "ab-010", "ab-10", "ab-09x"}
	if !slices.Equal(ids, want) {
		t.Errorf("sorted %v, want %v", ids, want)
	}
}
