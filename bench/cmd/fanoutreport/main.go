// Command fanoutreport turns the JSON results of bench/fanout.sh into the
// fan-out tables of docs/BENCHMARKS.md: for each subscriber count, rate and
// server, the median across rounds of the delivery latency, the share
// delivered, the server's CPU time per delivery and its peak memory; then
// the highest rate of the ladder that each server sustains. It rewrites
// only what is between <!-- fanout:begin --> and <!-- fanout:end -->,
// appending a section with the markers when the file has none.
//
//	fanoutreport --results DIR --out ../docs/BENCHMARKS.md
//
// A result file is named SERVER.sSUBS.dRATE.rROUND.json (RATE in
// deliveries per second) and holds what `msgnet bench fanout --json`
// printed.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/msgnet/msgnet/bench/internal/reportkit"
	"github.com/msgnet/msgnet/internal/loadgen"
)

// markers delimit the generated part of the output file; heading starts
// the section when the file has none.
var markers = reportkit.Markers{Begin: "<!-- fanout:begin -->", End: "<!-- fanout:end -->"}

const heading = "## Fan-out: msgnet vs nats-server"

// The bar a point of the ladder must clear to count as sustained.
const (
	sustainedPct   = loadgen.SustainedPct
	sustainedP99Us = 200_000
)

type key struct {
	server string
	subs   int
	rate   int // deliveries per second
}

type params struct {
	rounds                         int
	duration, warmup, drain        string
	loadBefore, loadAfter, elapsed string
	machine, ulimit, serves, net   string
}

func main() {
	dir := flag.String("results", "", "directory of SERVER.sSUBS.dRATE.rN.json files")
	out := flag.String("out", "../docs/BENCHMARKS.md", "markdown file to update")
	servers := flag.String("servers", "msgnet nats", "servers, in row order")
	var p params
	flag.IntVar(&p.rounds, "rounds", 0, "rounds run")
	flag.StringVar(&p.duration, "duration", "", "measured window")
	flag.StringVar(&p.warmup, "warmup", "", "warm-up")
	flag.StringVar(&p.drain, "drain", "", "drain after the window")
	flag.StringVar(&p.loadBefore, "loadavg-before", "", "/proc/loadavg before the run")
	flag.StringVar(&p.loadAfter, "loadavg-after", "", "/proc/loadavg after the run")
	flag.StringVar(&p.elapsed, "elapsed", "", "how long the run took")
	flag.StringVar(&p.machine, "machine", "", "one line about the machine")
	flag.StringVar(&p.ulimit, "ulimit", "", "what the script found of the descriptor limit")
	flag.StringVar(&p.serves, "serve-cmds", "", "how each server was started")
	flag.StringVar(&p.net, "net", "", "what the kernel's counters said about the network during the run")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "fanoutreport: --results is required")
		os.Exit(2)
	}
	data, err := load(*dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fanoutreport:", err)
		os.Exit(1)
	}
	if len(data) == 0 {
		fmt.Fprintln(os.Stderr, "fanoutreport: no results in", *dir)
		os.Exit(1)
	}
	block := render(data, strings.Fields(*servers), p)
	if err := reportkit.Splice(*out, markers, block, addSection); err != nil {
		fmt.Fprintln(os.Stderr, "fanoutreport:", err)
		os.Exit(1)
	}
	fmt.Printf("fanoutreport: wrote %s\n", *out)
}

// load reads every result file of dir.
func load(dir string) (map[key][]*loadgen.Result, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	data := map[key][]*loadgen.Result{}
	for _, f := range files {
		k, ok := parseName(filepath.Base(f))
		if !ok {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var r loadgen.Result
		if err := json.Unmarshal(b, &r); err != nil || r.Fanout == nil {
			fmt.Fprintf(os.Stderr, "fanoutreport: skipping %s: not a fanout result (%v)\n", f, err)
			continue
		}
		data[k] = append(data[k], &r)
	}
	return data, nil
}

// parseName reads SERVER.sSUBS.dRATE.rROUND.json.
func parseName(name string) (key, bool) {
	parts := strings.Split(strings.TrimSuffix(name, ".json"), ".")
	if len(parts) != 4 || !strings.HasPrefix(parts[1], "s") || !strings.HasPrefix(parts[2], "d") || !strings.HasPrefix(parts[3], "r") {
		return key{}, false
	}
	subs, err1 := strconv.Atoi(parts[1][1:])
	rate, err2 := strconv.Atoi(parts[2][1:])
	if err1 != nil || err2 != nil {
		return key{}, false
	}
	return key{parts[0], subs, rate}, true
}

// point is one (server, subscribers, rate) over its rounds.
type point struct {
	n                      int
	p50, p99, max          float64 // µs
	p99Lo, p99Hi           float64
	pct, pctLo, pctHi      float64
	gaps, errors           float64
	cpuUs, srvCPU, loadCPU float64 // µs per delivery, % of a core, % of a core
	rssMiB                 float64
	srvWait, loadWait      float64 // % of the window runnable but waiting for a CPU
	sustainedRounds        int
	sustained              bool
	disorder               bool // out-of-order or duplicate deliveries in some round
}

func summarize(rs []*loadgen.Result) point {
	var p point
	p.n = len(rs)
	var p50, p99, mx, pct, gaps, errs, cpu, srvCPU, loadCPU, rss, srvWait, loadWait []float64
	for _, r := range rs {
		if r.Latency.Count > 0 {
			p50 = append(p50, r.Latency.P50)
			p99 = append(p99, r.Latency.P99)
			mx = append(mx, r.Latency.Max)
		} else { // nothing delivered in time: later than any delivery
			p50 = append(p50, math.Inf(1))
			p99 = append(p99, math.Inf(1))
			mx = append(mx, math.Inf(1))
		}
		pct = append(pct, r.Fanout.DeliveredPct)
		gaps = append(gaps, float64(r.Fanout.Gaps))
		errs = append(errs, float64(r.Errors))
		if r.Seconds > 0 {
			loadCPU = append(loadCPU, 100*r.LoadCPUSeconds/r.Seconds)
		}
		if w := r.Fanout.CPUWait; w != nil && r.Seconds > 0 {
			srvWait = append(srvWait, 100*w.Server/r.Seconds)
			loadWait = append(loadWait, 100*w.Load/r.Seconds)
		}
		if s := r.Server; s != nil {
			if r.Messages > 0 {
				cpu = append(cpu, s.CPUSeconds*1e6/float64(r.Messages))
			}
			if r.Seconds > 0 {
				srvCPU = append(srvCPU, 100*s.CPUSeconds/r.Seconds)
			}
			if s.RSSPeak > 0 {
				rss = append(rss, float64(s.RSSPeak)/(1<<20))
			}
		}
		if r.Fanout.OutOfOrder > 0 || r.Fanout.Duplicates > 0 {
			p.disorder = true
		}
		if r.Fanout.DeliveredPct >= sustainedPct && r.Latency.P99 <= sustainedP99Us && r.Latency.Count > 0 {
			p.sustainedRounds++
		}
	}
	p.p50, p.p99, p.max = reportkit.Median(p50), reportkit.Median(p99), reportkit.Median(mx)
	p.p99Lo, p.p99Hi = slices.Min(p99), slices.Max(p99)
	p.pct, p.pctLo, p.pctHi = reportkit.Median(pct), slices.Min(pct), slices.Max(pct)
	p.gaps, p.errors = reportkit.Median(gaps), reportkit.Median(errs)
	p.cpuUs, p.srvCPU, p.loadCPU, p.rssMiB = reportkit.Median(cpu), reportkit.Median(srvCPU), reportkit.Median(loadCPU), reportkit.Median(rss)
	p.srvWait, p.loadWait = reportkit.Median(srvWait), reportkit.Median(loadWait)
	p.sustained = p.pct >= sustainedPct && p.p99 <= sustainedP99Us
	return p
}

func render(data map[key][]*loadgen.Result, servers []string, p params) string {
	var subsList, rates []int
	for k := range data {
		if !slices.Contains(subsList, k.subs) {
			subsList = append(subsList, k.subs)
		}
		if !slices.Contains(rates, k.rate) {
			rates = append(rates, k.rate)
		}
	}
	slices.Sort(subsList)
	slices.Sort(rates)
	var b strings.Builder
	fmt.Fprintf(&b, "Generated by `bench/fanout.sh`. Each cell is the median of %d round(s) (p99 and delivered also give the range across rounds). "+
		"Sustained (✓): median delivered ≥ %.1f%% and median p99 ≤ %d ms; the last column counts the rounds that cleared the bar on their own.\n\n",
		p.rounds, sustainedPct, sustainedP99Us/1000)
	b.WriteString("| subscribers | deliveries/s (msg/s) | server | p50 | p99 (range) | max | delivered % (range) | missing | server CPU-µs per delivery | CPU used: server / load tool | CPU waited for: server / load tool | server peak RSS | sustained |\n")
	b.WriteString("|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|\n")
	for _, subs := range subsList {
		for _, rate := range rates {
			for _, s := range servers {
				rs := data[key{s, subs, rate}]
				if len(rs) == 0 {
					continue
				}
				pt := summarize(rs)
				mark := ""
				if pt.sustained {
					mark = "✓ "
				}
				fmt.Fprintf(&b, "| %s | %s (%s) | %s | %s | %s (%s – %s) | %s | %s (%s – %s) | %s | %s | %s / %s | %s / %s | %s | %s%d/%d |\n",
					reportkit.Group(subs), rateName(rate), reportkit.Num(float64(rate)/float64(subs), 0), s,
					ms(pt.p50), ms(pt.p99), ms(pt.p99Lo), ms(pt.p99Hi), ms(pt.max),
					pctStr(pt.pct), pctStr(pt.pctLo), pctStr(pt.pctHi), reportkit.Num(pt.gaps, 0),
					numOr(pt.cpuUs, 2), pctOr(pt.srvCPU), pctOr(pt.loadCPU), pctOr(pt.srvWait), pctOr(pt.loadWait),
					unitOr(pt.rssMiB, " MiB"), mark, pt.sustainedRounds, pt.n)
			}
		}
	}
	b.WriteString("\n**Highest rate of the ladder sustained** (median of the rounds; ✓ above):\n\n")
	b.WriteString("| subscribers |")
	for _, s := range servers {
		fmt.Fprintf(&b, " %s |", s)
	}
	b.WriteString("\n|--:|")
	for range servers {
		b.WriteString("--:|")
	}
	b.WriteString("\n")
	for _, subs := range subsList {
		fmt.Fprintf(&b, "| %s |", reportkit.Group(subs))
		for _, s := range servers {
			best := 0
			var failedBelow []string
			for _, rate := range rates {
				rs := data[key{s, subs, rate}]
				if len(rs) == 0 {
					continue
				}
				if summarize(rs).sustained {
					best = rate
				}
			}
			for _, rate := range rates {
				if rs := data[key{s, subs, rate}]; rate < best && len(rs) > 0 && !summarize(rs).sustained {
					failedBelow = append(failedBelow, rateName(rate))
				}
			}
			lowest := 0
			for _, rate := range rates {
				if len(data[key{s, subs, rate}]) > 0 && (lowest == 0 || rate < lowest) {
					lowest = rate
				}
			}
			switch {
			case lowest == 0:
				b.WriteString(" – |")
			case best == 0:
				fmt.Fprintf(&b, " none (lowest rung: %s) |", rateName(lowest))
			case len(failedBelow) > 0:
				fmt.Fprintf(&b, " %s deliveries/s (%s msg/s), though not at %s |", rateName(best), reportkit.Num(float64(best)/float64(subs), 0), strings.Join(failedBelow, ", "))
			default:
				fmt.Fprintf(&b, " %s deliveries/s (%s msg/s) |", rateName(best), reportkit.Num(float64(best)/float64(subs), 0))
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	var disorder []string
	for k, rs := range data {
		if summarize(rs).disorder {
			disorder = append(disorder, fmt.Sprintf("%s at %s subscribers, %s", k.server, reportkit.Group(k.subs), rateName(k.rate)))
		}
	}
	slices.Sort(disorder)
	var errLines []string
	for k, rs := range data {
		var n int64
		var sample string
		for _, r := range rs {
			n += r.Errors
			if sample == "" && len(r.ErrorSamples) > 0 {
				sample = r.ErrorSamples[0]
			}
		}
		if n > 0 {
			errLines = append(errLines, fmt.Sprintf("%s at %s subscribers, %s: %d in %d round(s), e.g. %q", k.server, reportkit.Group(k.subs), rateName(k.rate), n, len(rs), sample))
		}
	}
	slices.Sort(errLines)
	if len(errLines) > 0 {
		b.WriteString("- Errors the load tool counted (a connection the server closed, a refusal):\n")
		for _, l := range errLines {
			fmt.Fprintf(&b, "  - %s\n", l)
		}
	}
	if len(disorder) > 0 {
		fmt.Fprintf(&b, "- Out-of-order or duplicated deliveries were seen in: %s.\n", strings.Join(disorder, "; "))
	} else {
		b.WriteString("- No subscriber got a message out of order or twice, in any test.\n")
	}
	if p.machine != "" {
		fmt.Fprintf(&b, "- Machine: %s\n", p.machine)
	}
	fmt.Fprintf(&b, "- Load average (1, 5, 15 min) before: %s; after: %s. The whole run took %s.\n", p.loadBefore, p.loadAfter, p.elapsed)
	if p.net != "" {
		fmt.Fprintf(&b, "- Kernel: %s.\n", p.net)
	}
	if p.ulimit != "" {
		fmt.Fprintf(&b, "- Descriptors: %s\n", p.ulimit)
	}
	if p.serves != "" {
		fmt.Fprintf(&b, "- Servers: %s\n", p.serves)
	}
	fmt.Fprintf(&b, "- Each test: a fresh server pinned to CPU 0, `msgnet bench fanout` pinned to CPU 1 (one sender, the subscribers on their own connections, all on loopback), "+
		"%s warm-up, %s measured, up to %s more for the window's last deliveries. Rounds interleave the servers at every rung.\n", p.warmup, p.duration, p.drain)
	b.WriteString("- Columns: latency from each message's intended send time (open loop) to its arrival at a subscriber, over every delivery of the window's messages; " +
		"delivered and missing from the sequence numbers each subscriber got; server CPU-µs per delivery = the server's user+system time over the window (/proc/PID/stat) ÷ deliveries in the window; " +
		"CPU used in % of one core over the window (user+system, /proc/PID/stat); CPU waited for = the time the process's threads were runnable but waiting for a core, in % of the window (/proc/PID/task/*/schedstat): what other work on the machine took from them; " +
		"p50/p99/max \"none\" = no delivery of the window's messages arrived by the end of the drain; peak RSS = VmHWM at the end of the test.\n")
	b.WriteString("- Reproduce: `cd bench && ./fanout.sh` (env ROUNDS, SUBS, RATES, SERVERS, DURATION, WARMUP, DRAIN; see the script's header).\n")
	return b.String()
}

// rateName writes a rate as 250k, 1M, 1.5M.
func rateName(r int) string {
	switch {
	case r >= 1_000_000:
		return strconv.FormatFloat(float64(r)/1e6, 'f', -1, 64) + "M"
	case r >= 1000:
		return strconv.FormatFloat(float64(r)/1e3, 'f', -1, 64) + "k"
	}
	return strconv.Itoa(r)
}

// ms writes microseconds as milliseconds with a precision that suits them.
func ms(us float64) string {
	switch {
	case math.IsNaN(us):
		return "–"
	case math.IsInf(us, 1):
		return "none"
	case us < 10_000:
		return strconv.FormatFloat(us/1000, 'f', 2, 64) + " ms"
	case us < 100_000:
		return strconv.FormatFloat(us/1000, 'f', 1, 64) + " ms"
	}
	return reportkit.Num(us/1000, 0) + " ms"
}

func pctStr(v float64) string {
	if v == 100 {
		return "100"
	}
	if v >= 99.9 {
		return strconv.FormatFloat(math.Floor(v*1000)/1000, 'f', 3, 64)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

func pctOr(v float64) string { return unitOr(v, "%") }

// unitOr writes v rounded, with its unit, or a dash for none.
func unitOr(v float64, unit string) string {
	if math.IsNaN(v) {
		return "–"
	}
	return reportkit.Num(v, 0) + unit
}

func numOr(v float64, digits int) string {
	if math.IsNaN(v) {
		return "–"
	}
	return reportkit.Num(v, digits)
}

// addSection appends a new section with the markers to a file that has
// none (or does not exist yet), one blank line after its text.
func addSection(old []byte, _ bool, marked string) []byte {
	return append(bytes.TrimRight(old, "\n"), []byte("\n\n"+heading+"\n\n"+marked)...)
}
