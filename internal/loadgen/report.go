package loadgen

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// WriteText writes the result as an aligned plain-text report.
func (res *Result) WriteText(w io.Writer) {
	line := func(k, format string, a ...any) { fmt.Fprintf(w, "%-11s %s\n", k, fmt.Sprintf(format, a...)) }
	line("mode", "%s", res.describe())
	line("addr", "%s%s", res.Addr, map[bool]string{true: " (TLS)", false: ""}[res.TLS])
	if res.Warmup > 0 {
		line("window", "%.2f s after %.2f s of warm-up", res.Seconds, res.Warmup)
	} else {
		line("window", "%.2f s", res.Seconds)
	}
	switch res.Mode {
	case ModeThroughput, ModeLatency:
		line("messages", "%s round trips: %s msg/s, %.2f MB/s of payload each way", group(res.Messages), group(int64(res.MsgsPerSec)), res.MBPerSec)
		if res.OpenLoop {
			line("scheduled", "%s frames, %s unanswered at the end", group(res.Sent), group(res.Unanswered))
		}
	case ModeConnRate:
		line("conns", "%s completed: %s conn/s", group(res.Connections), group(int64(res.ConnsPerSec)))
	case ModeIdle:
		line("conns", "%s opened and held, %s closed by the server", group(res.Connections), group(res.Dropped))
	case ModeReliable:
		line("delivered", "%s in the window: %s msg/s, %.2f MB/s of payload", group(res.Messages), group(int64(res.MsgsPerSec)), res.MBPerSec)
		if rs := res.Reliable; rs != nil {
			line("in all", "%s published, %s delivered, %s missing, %s repeated", group(rs.Published), group(rs.Delivered), group(rs.Gaps), group(rs.Repeats))
		}
	case ModeFanout:
		line("sent", "%s GROUP messages to %d receivers", group(res.Sent), res.Conns)
		line("delivered", "%s of %s expected: %s deliveries/s", group(res.Messages), group(res.Expected), group(int64(res.MsgsPerSec)))
		if f := res.Fanout; f != nil {
			line("", "%.3f%% delivered: %s missing in %s gaps on %d receivers, %s out of order, %s duplicated",
				f.DeliveredPct, group(f.Gaps), group(f.GapRuns), f.ReceiversWithGaps, group(f.OutOfOrder), group(f.Duplicates))
			if w := f.CPUWait; w != nil {
				line("cpu wait", "runnable but waiting for a CPU over the window: server %.2f s, load tool %.2f s", w.Server, w.Load)
			}
		}
	}
	line("errors", "%d", res.Errors)
	for _, s := range res.ErrorSamples {
		line("", "  %s", s)
	}
	l := res.Latency
	line(res.latencyName(), "p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (n=%s, mean %s)",
		fmtUs(l.P50), fmtUs(l.P90), fmtUs(l.P99), fmtUs(l.P999), fmtUs(l.Max), group(l.Count), fmtUs(l.Mean))
	if s := res.Server; s != nil {
		line("server", "pid %d: %.2f CPU-s, RSS %s -> %s", s.PID, s.CPUSeconds, fmtBytes(s.RSSBefore), fmtBytes(s.RSSAfter))
		if s.RSSPeak > 0 {
			line("", "peak RSS %s", fmtBytes(s.RSSPeak))
		}
		if s.MsgsPerCPUSecond > 0 {
			line("", "%s messages per server CPU-second", group(int64(s.MsgsPerCPUSecond)))
		}
		if s.CPUMicrosPerConn > 0 {
			line("", "%.1f server CPU-µs per connection", s.CPUMicrosPerConn)
		}
		if res.Mode == ModeIdle && res.Connections > 0 {
			line("", "%.0f bytes (%.2f KiB) of RSS growth per connection", s.RSSPerConn, s.RSSPerConn/1024)
		}
	}
	if res.LoadCPUSeconds > 0 && res.Seconds > 0 {
		line("load tool", "%.2f CPU-s (%.0f%% of one core over the window)", res.LoadCPUSeconds, 100*res.LoadCPUSeconds/res.Seconds)
	}
}

// describe is the mode with its main parameters.
func (res *Result) describe() string {
	switch res.Mode {
	case ModeThroughput:
		return fmt.Sprintf("throughput: %d conns x %d in flight, %d B payload", res.Conns, res.Inflight, res.Size)
	case ModeLatency:
		if res.OpenLoop {
			return fmt.Sprintf("latency, open loop: %d conns, %s msg/s in all, %d B payload", res.Conns, group(int64(res.Rate)), res.Size)
		}
		return fmt.Sprintf("latency, closed loop: %d conns x 1 in flight, %d B payload", res.Conns, res.Size)
	case ModeConnRate:
		return fmt.Sprintf("connrate: %d workers, %d B payload", res.Conns, res.Size)
	case ModeIdle:
		return fmt.Sprintf("idle: %d conns", res.Conns)
	case ModeFanout:
		proto := ""
		if res.Fanout != nil && res.Fanout.Proto != ProtoMsgnet {
			proto = ", " + res.Fanout.Proto
		}
		return fmt.Sprintf("fanout%s: %d receivers, %s msg/s sent", proto, res.Conns, group(int64(res.Rate)))
	case ModeReliable:
		lag := "no bound"
		if res.MaxLag > 0 {
			lag = strconv.Itoa(res.MaxLag)
		}
		return fmt.Sprintf("reliable: 1 publisher x %d unacknowledged (undelivered: %s), 1 subscriber, %d B payload", res.Inflight, lag, res.Size)
	}
	return string(res.Mode)
}

// latencyName says what the latency histogram measures.
func (res *Result) latencyName() string {
	switch res.Mode {
	case ModeConnRate, ModeIdle:
		return "connect"
	case ModeFanout, ModeReliable:
		return "delivery"
	}
	return "round trip"
}

// fmtUs formats microseconds with a fitting unit.
func fmtUs(us float64) string {
	switch {
	case us >= 1e6:
		return strconv.FormatFloat(us/1e6, 'f', 2, 64) + "s"
	case us >= 1e3:
		return strconv.FormatFloat(us/1e3, 'f', 2, 64) + "ms"
	default:
		return strconv.FormatFloat(us, 'f', 1, 64) + "µs"
	}
}

// fmtBytes formats a byte count in MiB.
func fmtBytes(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// group writes n with thousands separators.
func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
