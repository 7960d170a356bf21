package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/msgnet/msgnet/bench/internal/reportkit"
	"github.com/msgnet/msgnet/internal/loadgen"
)

func TestSpliceKeepsTextOutsideTheMarkers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "docs", "B.md")
	// Missing file: created with the introduction.
	if err := splice(path, "one\n"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(b), "# Benchmarks") || !strings.Contains(string(b), markers.Begin+"\none\n"+markers.End+"\n") {
		t.Fatalf("new file:\n%s", b)
	}
	// Existing markers: only the inside changes.
	os.WriteFile(path, []byte("before\n"+markers.Begin+"\nold\n"+markers.End+"\nafter\n"), 0o644)
	if err := splice(path, "two\n"); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	if want := "before\n" + markers.Begin + "\ntwo\n" + markers.End + "\nafter\n"; string(b) != want {
		t.Errorf("got\n%q\nwant\n%q", b, want)
	}
	// No markers: the block is appended, the text kept.
	os.WriteFile(path, []byte("hand-written\n"), 0o644)
	splice(path, "three\n")
	b, _ = os.ReadFile(path)
	if !strings.HasPrefix(string(b), "hand-written\n") || !strings.HasSuffix(string(b), markers.Begin+"\nthree\n"+markers.End+"\n") {
		t.Errorf("appended:\n%s", b)
	}
}

func TestMedianAndRatios(t *testing.T) {
	if m := reportkit.Median([]float64{1, 2, 10}); m != 2 {
		t.Errorf("median of 3 = %v", m)
	}
	if m := reportkit.Median([]float64{1, 2, 4, 10}); m != 3 {
		t.Errorf("median of 4 = %v", m)
	}
	res := func(mps, p99 float64) *loadgen.Result {
		return &loadgen.Result{MsgsPerSec: mps, Latency: loadgen.Summary{Count: 1, P99: p99}}
	}
	data := results{
		"a": {"tp64": {res(100, 10), res(300, 30), res(200, 20)}},
		"b": {"tp64": {res(400, 5)}},
		"m": {"tp64": {res(800, 40)}},
	}
	out := render(data, []string{"m", "a", "b"}, []string{"a", "b"}, nil, params{rounds: 3, idleConns: 10})
	// Throughput: best peer b = 400; a's median 200 is 0.50x; m is 2.00x.
	if !strings.Contains(out, "| Throughput, 64 B (msg/s) | higher | 800 (2.00x) | 200 (0.50x) | 400 (1.00x) |") {
		t.Errorf("throughput row wrong:\n%s", out)
	}
	// p99, lower is better: best peer b = 5; a's median 20 is 4.00x.
	if !strings.Contains(out, "| Round trip p99 under pipelining, 64 B (µs) | lower | 40 (8.00x) | 20 (4.00x) | 5 (1.00x) |") {
		t.Errorf("p99 row wrong:\n%s", out)
	}
	if !strings.Contains(out, "b tp64: 1 of 3 rounds produced a result") {
		t.Errorf("missing rounds not noted:\n%s", out)
	}
}
