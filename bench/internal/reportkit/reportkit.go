// Package reportkit holds what the benchmark report commands (cmd/report,
// cmd/relreport, cmd/fanoutreport) share: number formatting, the median of
// a metric over rounds, the machine description and the rewriting of the
// generated part of a Markdown file. Each command keeps its own tables and
// wording; only helpers that were copied between them live here, so that a
// fix to one reaches all three reports.
package reportkit

import (
	"bytes"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// Group writes n with thousands separators (1234567 -> "1,234,567"): the
// reports' tables are read by people comparing magnitudes at a glance.
func Group(n int) string {
	return groupDigits(strconv.Itoa(n))
}

// Num formats v with digits decimals and thousands separators in its
// integer part ("1,234.50"). A value without a plain integer part (NaN,
// ±Inf) is returned as strconv writes it; callers that show a dash for a
// missing value check for NaN first.
func Num(v float64, digits int) string {
	s := strconv.FormatFloat(v, 'f', digits, 64)
	intPart, frac, hasFrac := strings.Cut(s, ".")
	digitsOnly := strings.TrimPrefix(intPart, "-")
	if digitsOnly == "" || strings.Trim(digitsOnly, "0123456789") != "" {
		return s
	}
	out := groupDigits(intPart)
	if hasFrac {
		out += "." + frac
	}
	return out
}

// groupDigits puts separators into a string of decimal digits, with an
// optional leading minus sign.
func groupDigits(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Median returns the median of vs, or NaN when vs is empty, so that a cell
// with no result can be told from a zero. It sorts a copy: callers may pass
// values in any order and keep their slice as it was.
func Median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	vs = slices.Clone(vs)
	slices.Sort(vs)
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}

// CPUModel returns lscpu's "Model name", or "unknown CPU": results are only
// comparable on the same processor, so the reports name it.
func CPUModel() string {
	out, err := exec.Command("lscpu").Output()
	if err == nil {
		for line := range strings.Lines(string(out)) {
			if v, ok := strings.CutPrefix(line, "Model name:"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return "unknown CPU"
}

// Kernel returns the running Linux release (/proc/sys/kernel/osrelease),
// or "unknown": loopback TCP and epoll costs move between kernels.
func Kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// GoVersion returns what `go version` prints after "go version ", the
// toolchain that built the measured binaries, or this program's runtime
// version when the go command is not at hand.
func GoVersion() string {
	out, err := exec.Command("go", "version").Output()
	if err != nil {
		return runtime.Version()
	}
	return strings.TrimPrefix(strings.TrimSpace(string(out)), "go version ")
}

// Markers delimit the generated part of a Markdown file, e.g.
// "<!-- bench:begin -->" and "<!-- bench:end -->": what lies outside them is
// written by hand and must survive a new run.
type Markers struct {
	Begin, End string
}

// Splice writes block between m's markers in the file at path, replacing
// what was there, and drops one newline after the end marker since the
// block brings its own. When the file has no such markers, missing builds
// the whole new content from old (nil when the file does not exist,
// exists false) and the marked block: each report places a new section in
// its own way.
func Splice(path string, m Markers, block string, missing func(old []byte, exists bool, marked string) []byte) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	exists := err == nil
	gen := m.Begin + "\n" + block + m.End + "\n"
	i := bytes.Index(old, []byte(m.Begin))
	j := bytes.Index(old, []byte(m.End))
	var out []byte
	if i < 0 || j < i {
		out = missing(old, exists, gen)
	} else {
		rest := bytes.TrimPrefix(old[j+len(m.End):], []byte("\n"))
		out = append(append(append([]byte{}, old[:i]...), gen...), rest...)
	}
	return os.WriteFile(path, out, 0o644)
}
