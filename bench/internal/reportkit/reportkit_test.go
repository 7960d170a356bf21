package reportkit

import (
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestGroupAndNum(t *testing.T) {
	for _, c := range []struct {
		got, want string
	}{
		{Group(0), "0"},
		{Group(999), "999"},
		{Group(1000), "1,000"},
		{Group(1234567), "1,234,567"},
		{Group(-1234), "-1,234"},
		{Num(0, 0), "0"},
		{Num(1234.5, 1), "1,234.5"},
		{Num(1234567.891, 2), "1,234,567.89"},
		{Num(999.96, 1), "1,000.0"},
		{Num(-12345.25, 2), "-12,345.25"},
		{Num(-0.25, 2), "-0.25"},
		{Num(1e20, 0), "100,000,000,000,000,000,000"},
		{Num(math.NaN(), 1), "NaN"},
		{Num(math.Inf(1), 0), "+Inf"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestMedian(t *testing.T) {
	if m := Median([]float64{10, 1, 2}); m != 2 {
		t.Errorf("median of 3 = %v", m)
	}
	vs := []float64{10, 4, 2, 1}
	if m := Median(vs); m != 3 {
		t.Errorf("median of 4 = %v", m)
	}
	if vs[0] != 10 {
		t.Errorf("Median sorted its argument: %v", vs)
	}
	if m := Median(nil); !math.IsNaN(m) {
		t.Errorf("median of none = %v, want NaN", m)
	}
}

func TestSplice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "B.md")
	m := Markers{Begin: "<!-- x:begin -->", End: "<!-- x:end -->"}
	var sawExists []bool
	add := func(old []byte, exists bool, marked string) []byte {
		sawExists = append(sawExists, exists)
		return append(append(old, "\n## X\n\n"...), marked...)
	}
	read := func() string { b, _ := os.ReadFile(path); return string(b) }

	// No file: missing builds it.
	if err := Splice(path, m, "one\n", add); err != nil {
		t.Fatal(err)
	}
	if want := "\n## X\n\n" + m.Begin + "\none\n" + m.End + "\n"; read() != want {
		t.Errorf("new file: got %q, want %q", read(), want)
	}
	// Markers present: only what is between them changes.
	os.WriteFile(path, []byte("before\n"+m.Begin+"\nold\n"+m.End+"\nafter\n"), 0o644)
	if err := Splice(path, m, "two\n", add); err != nil {
		t.Fatal(err)
	}
	if want := "before\n" + m.Begin + "\ntwo\n" + m.End + "\nafter\n"; read() != want {
		t.Errorf("markers: got %q, want %q", read(), want)
	}
	// No markers in an existing file.
	os.WriteFile(path, []byte("text\n"), 0o644)
	if err := Splice(path, m, "three\n", add); err != nil {
		t.Fatal(err)
	}
	if want := "text\n\n## X\n\n" + m.Begin + "\nthree\n" + m.End + "\n"; read() != want {
		t.Errorf("appended: got %q, want %q", read(), want)
	}
	if len(sawExists) != 2 || sawExists[0] || !sawExists[1] {
		t.Errorf("missing saw exists = %v, want [false true]", sawExists)
	}
}
