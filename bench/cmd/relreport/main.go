// Command relreport turns the JSON results of bench/reliable.sh into the
// tables of docs/BENCHMARKS.md's section "Reliable delivery vs JetStream":
// the median of each metric across rounds for each system, msgnet's ratio
// to JetStream with the same kind of storage, the spread across rounds,
// the machine and the method. It rewrites only the part of the file
// between <!-- reliable:begin --> and <!-- reliable:end -->, adding the
// section at the end of the file when the markers are missing.
//
// A result file is named SYSTEM.TEST.rROUND.json and holds what
// `msgnet bench reliable --json` or `jsbench --json` printed.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/msgnet/msgnet/bench/internal/reportkit"
	"github.com/msgnet/msgnet/internal/loadgen"
)

// markers delimit the generated part of the output file; heading starts
// the section when the file has none.
var markers = reportkit.Markers{Begin: "<!-- reliable:begin -->", End: "<!-- reliable:end -->"}

const heading = "## Reliable delivery vs JetStream"

// params are the run's settings, shown in the method.
type params struct {
	rounds                         int
	duration, warmup, consumer     string
	inflight                       int
	loadBefore, loadAfter, elapsed string
	natsVersion, baseRev           string
	systems, tests                 []string
	results                        map[string][]*loadgen.Result // SYSTEM.TEST -> rounds
}

func main() {
	var p params
	dir := flag.String("results", "", "directory of SYSTEM.TEST.rN.json files")
	out := flag.String("out", "", "markdown file to update (default: stdout)")
	systems := flag.String("systems", "msgnet-mem msgnet-file js-mem js-file", "systems, in column order")
	tests := flag.String("tests", "rel128 rel1k lat128", "tests, in row order")
	flag.IntVar(&p.rounds, "rounds", 0, "rounds run")
	flag.StringVar(&p.duration, "duration", "", "measured window")
	flag.StringVar(&p.warmup, "warmup", "", "warm-up")
	flag.IntVar(&p.inflight, "inflight", 1024, "the publisher's window")
	flag.StringVar(&p.consumer, "consumer", "ordered", "JetStream's subscriber")
	flag.StringVar(&p.loadBefore, "loadavg-before", "", "load average before")
	flag.StringVar(&p.loadAfter, "loadavg-after", "", "load average after")
	flag.StringVar(&p.elapsed, "elapsed", "", "how long the run took")
	flag.StringVar(&p.natsVersion, "nats-version", "", "nats-server's version")
	flag.StringVar(&p.baseRev, "base-rev", "", "the revision the *-base systems were built from")
	flag.Parse()
	p.systems, p.tests = strings.Fields(*systems), strings.Fields(*tests)
	var err error
	if p.results, err = load(*dir); err != nil {
		fmt.Fprintf(os.Stderr, "relreport: %v\n", err)
		os.Exit(1)
	}
	block := render(p)
	if *out == "" {
		fmt.Print(block)
		return
	}
	if err := reportkit.Splice(*out, markers, block, addSection); err != nil {
		fmt.Fprintf(os.Stderr, "relreport: %v\n", err)
		os.Exit(1)
	}
}

func load(dir string) (map[string][]*loadgen.Result, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	m := map[string][]*loadgen.Result{}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		i := strings.LastIndex(name, ".r")
		if i < 0 {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var r loadgen.Result
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		m[name[:i]] = append(m[name[:i]], &r)
	}
	return m, nil
}

// metric is one row of a test.
type metric struct {
	name, better string
	digits       int
	get          func(r *loadgen.Result) (float64, bool)
}

func metrics() []metric {
	return []metric{
		{"delivered (msg/s)", "higher", 0, func(r *loadgen.Result) (float64, bool) { return r.MsgsPerSec, r.Messages > 0 }},
		{"latency p50 (µs)", "lower", 0, func(r *loadgen.Result) (float64, bool) { return r.Latency.P50, r.Latency.Count > 0 }},
		{"latency p99 (µs)", "lower", 0, func(r *loadgen.Result) (float64, bool) { return r.Latency.P99, r.Latency.Count > 0 }},
		{"server CPU per message (µs)", "lower", 2, func(r *loadgen.Result) (float64, bool) {
			if r.Server == nil || r.Messages == 0 {
				return 0, false
			}
			return r.Server.CPUSeconds * 1e6 / float64(r.Messages), true
		}},
	}
}

var testNames = map[string]string{
	"rel128": "128 B, window %d",
	"rel1k":  "1 KiB, window %d",
	"lat128": "128 B, window 1",
}

func (p params) testName(t string) string {
	if n, ok := testNames[t]; ok {
		if strings.Contains(n, "%d") {
			return fmt.Sprintf(n, p.inflight)
		}
		return n
	}
	return t
}

var systemNames = map[string]string{
	"msgnet-mem":       "msgnet, memory",
	"msgnet-file":      "msgnet --store (JetStream file)",
	"js-mem":           "JetStream, memory",
	"js-file":          "JetStream, file",
	"msgnet-mem-base":  "msgnet base, memory",
	"msgnet-file-base": "msgnet base --store",
}

func values(p params, key string, m metric) []float64 {
	var vs []float64
	for _, r := range p.results[key] {
		if v, ok := m.get(r); ok {
			vs = append(vs, v)
		}
	}
	slices.Sort(vs)
	return vs
}

// pairs are the ratios shown: msgnet over JetStream with the same storage.
// With a base build, msgnet over its base too.
var pairs = [][2]string{{"msgnet-mem", "js-mem"}, {"msgnet-file", "js-file"},
	{"msgnet-mem", "msgnet-mem-base"}, {"msgnet-file", "msgnet-file-base"}}

func render(p params) string {
	var b strings.Builder
	now := time.Now().UTC().Format("2006-01-02 15:04 UTC")
	fmt.Fprintf(&b, "Generated by `bench/reliable.sh` on %s. Each cell is the median of %d interleaved round(s) (spread below). ", now, p.rounds)
	b.WriteString("Each ratio column is the first system's figure over the second's (msgnet over JetStream with the same kind of storage, or msgnet over its base build): above 1 is more for the first, which is better for messages/s and worse for latency and CPU.\n\n")
	var pairCols [][2]string
	for _, pr := range pairs {
		if slices.Contains(p.systems, pr[0]) && slices.Contains(p.systems, pr[1]) {
			pairCols = append(pairCols, pr)
		}
	}
	b.WriteString("| test | metric |")
	for _, s := range p.systems {
		fmt.Fprintf(&b, " %s |", name(s))
	}
	for _, pr := range pairCols {
		fmt.Fprintf(&b, " %s / %s |", short(pr[0]), short(pr[1]))
	}
	b.WriteString("\n|---|---|")
	b.WriteString(strings.Repeat("---:|", len(p.systems)+len(pairCols)))
	b.WriteString("\n")
	for _, t := range p.tests {
		for _, m := range metrics() {
			fmt.Fprintf(&b, "| %s | %s |", p.testName(t), m.name)
			med := map[string]float64{}
			for _, s := range p.systems {
				v := reportkit.Median(values(p, s+"."+t, m))
				med[s] = v
				fmt.Fprintf(&b, " %s |", num(v, m.digits))
			}
			for _, pr := range pairCols {
				a, c := med[pr[0]], med[pr[1]]
				if math.IsNaN(a) || math.IsNaN(c) || c == 0 {
					b.WriteString(" – |")
					continue
				}
				fmt.Fprintf(&b, " %.2fx |", a/c)
			}
			b.WriteString("\n")
		}
	}

	b.WriteString("\n### Spread across rounds (min – max)\n\n| test | metric |")
	for _, s := range p.systems {
		fmt.Fprintf(&b, " %s |", name(s))
	}
	b.WriteString("\n|---|---|" + strings.Repeat("---:|", len(p.systems)) + "\n")
	for _, t := range p.tests {
		for _, m := range metrics() {
			fmt.Fprintf(&b, "| %s | %s |", p.testName(t), m.name)
			for _, s := range p.systems {
				vs := values(p, s+"."+t, m)
				if len(vs) == 0 {
					b.WriteString(" – |")
					continue
				}
				fmt.Fprintf(&b, " %s – %s |", num(vs[0], m.digits), num(vs[len(vs)-1], m.digits))
			}
			b.WriteString("\n")
		}
	}

	b.WriteString("\n### CPU busy over the window, and checks (median)\n\n")
	b.WriteString("Server / load tool CPU time over the window, in % of one core (/proc/PID/stat). The server has CPU 0 to itself and the load tool CPU 1: near 100% marks the side that limited the test. The last line of each cell is what the subscriber got over all rounds: messages published, delivered, and any missing or repeated (any is an error).\n\n| test |")
	for _, s := range p.systems {
		fmt.Fprintf(&b, " %s |", name(s))
	}
	b.WriteString("\n|---|" + strings.Repeat("---:|", len(p.systems)) + "\n")
	for _, t := range p.tests {
		fmt.Fprintf(&b, "| %s |", p.testName(t))
		for _, s := range p.systems {
			rs := p.results[s+"."+t]
			if len(rs) == 0 {
				b.WriteString(" – |")
				continue
			}
			var srv, ld []float64
			var pub, del, gaps, reps, errs int64
			for _, r := range rs {
				if r.Server != nil && r.Seconds > 0 {
					srv = append(srv, 100*r.Server.CPUSeconds/r.Seconds)
				}
				if r.Seconds > 0 {
					ld = append(ld, 100*r.LoadCPUSeconds/r.Seconds)
				}
				if rl := r.Reliable; rl != nil {
					pub, del, gaps, reps = pub+rl.Published, del+rl.Delivered, gaps+rl.Gaps, reps+rl.Repeats
				}
				errs += r.Errors
			}
			slices.Sort(srv)
			slices.Sort(ld)
			fmt.Fprintf(&b, " %.0f%% / %.0f%%<br>%s pub, %s del", reportkit.Median(srv), reportkit.Median(ld), num(float64(pub), 0), num(float64(del), 0))
			if gaps+reps+errs > 0 {
				fmt.Fprintf(&b, ", **%d missing, %d repeated, %d errors**", gaps, reps, errs)
			}
			b.WriteString(" |")
		}
		b.WriteString("\n")
	}

	b.WriteString("\n### Machine and method\n\n")
	fmt.Fprintf(&b, "- CPU: %s, %d logical CPUs; kernel Linux %s; %s\n", reportkit.CPUModel(), runtime.NumCPU(), reportkit.Kernel(), reportkit.GoVersion())
	fmt.Fprintf(&b, "- Load average (1, 5, 15 min) before: %s; after: %s. The machine is shared: other work shows up as noise. The run took %s.\n", p.loadBefore, p.loadAfter, p.elapsed)
	fmt.Fprintf(&b, "- Each test: a fresh server (and store directory) pinned to CPU 0 with taskset, the load pinned to CPU 1, %s of warm-up, then a %s window; %d rounds, systems interleaved within each test (%s, then again).\n", p.warmup, p.duration, p.rounds, strings.Join(p.systems, ", "))
	fmt.Fprintf(&b, "- Load: one publisher and one subscriber (separate connections) on one stream. The publisher keeps at most %d publishes unacknowledged by the server and at most %d not yet delivered (window 1: one message in flight), stamps each payload with the time of its publish call, and the subscriber records publish-to-delivery latency and checks every message arrives once, in order. The same measuring loop drives both systems (internal/loadgen RunReliable).\n", p.inflight, p.inflight)
	b.WriteString("- msgnet: `msgnet serve --addr 127.0.0.1:PORT --quiet [--store DIR]` (managed mode, default retention: 10,000 messages, 16 MiB, 10 min), driven by `msgnet bench reliable` (two msgnet clients WithReliable; Publish, WaitPending; Subscribe to group:bench, OnStream).\n")
	fmt.Fprintf(&b, "- JetStream: `bench/cmd/natsd --addr 127.0.0.1:PORT --store DIR` (nats-server %s as a library, defaults, JetStream on), driven by `bench/cmd/jsbench --storage memory|file` (nats.go: PublishMsgAsync with a Nats-Msg-Id on every message; a stream with the same limits as msgnet's --store streams: 10,000 messages, 16 MiB, 10 min, duplicates window 2 min; subscriber: %s).\n", p.natsVersion, consumerText(p.consumer))
	if p.baseRev != "" {
		fmt.Fprintf(&b, "- msgnet base: `msgnet serve` built from %s, driven by this tree's `msgnet bench reliable`.\n", p.baseRev)
	}
	fmt.Fprintf(&b, "- Reproduce: `cd bench && ./reliable.sh` (env ROUNDS, DURATION, WARMUP, INFLIGHT, SYSTEMS, TESTS, CONSUMER, PROFILE; see the script's header).\n")
	return b.String()
}

func consumerText(c string) string {
	if c == "ackall" {
		return "a pull consumer with AckAll, acknowledging every 256 messages and every 50 ms, at most 1,024 unacknowledged"
	}
	return "an ordered consumer, Consume with PullMaxMessages 1,024 (a msgnet subscription's window is 1,024 too)"
}

func name(s string) string {
	if n, ok := systemNames[s]; ok {
		return n
	}
	return s
}

func short(s string) string {
	return map[string]string{"msgnet-mem": "msgnet mem", "js-mem": "JS mem", "msgnet-file": "msgnet file", "js-file": "JS file",
		"msgnet-mem-base": "base mem", "msgnet-file-base": "base file"}[s]
}

// addSection appends a new section with the markers to a file that has
// none (or does not exist yet).
func addSection(old []byte, _ bool, marked string) []byte {
	if len(old) > 0 && !bytes.HasSuffix(old, []byte("\n")) {
		old = append(old, '\n')
	}
	return append(append(old, "\n"+heading+"\n\n"...), marked...)
}

// num is reportkit.Num with a dash for a missing value (NaN).
func num(v float64, digits int) string {
	if math.IsNaN(v) {
		return "–"
	}
	return reportkit.Num(v, digits)
}
