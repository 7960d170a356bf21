package loadgen

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// DefaultAddr is the address `msgnet bench` dials when --addr is not given.
const DefaultAddr = "127.0.0.1:8080"

// Main runs `msgnet bench` with args (without the "bench" word); returns the
// exit code: 0 when the run completed (its result may still count errors),
// 1 when it could not run, 2 for a usage error.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return 0
	}
	mode := Mode(args[0])
	known := false
	for _, m := range Modes {
		known = known || m == mode
	}
	if !known {
		fmt.Fprintf(stderr, "msgnet bench: unknown mode %q\n\n", args[0])
		usage(stderr)
		return 2
	}

	fs, opts := newFlagSet(mode, stderr)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "msgnet bench %s: unexpected argument %q\n", mode, fs.Arg(0))
		return 2
	}
	cfg, err := opts.config(mode)
	if err != nil {
		fmt.Fprintf(stderr, "msgnet bench %s: %v\n", mode, err)
		return 2
	}
	if !opts.quiet {
		cfg.Progress = stdout
		if opts.json {
			cfg.Progress = stderr
		}
		cfg.ProgressTTY = isTerminal(cfg.Progress)
	}
	if err := cfg.WithDefaults().Validate(); err != nil {
		fmt.Fprintf(stderr, "msgnet bench %s: %v\n", mode, err)
		return 2
	}

	res, err := Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "msgnet bench %s: %v\n", mode, err)
		return 1
	}
	if opts.chart != "" {
		if err := writeChartFile(opts.chart, res); err != nil {
			fmt.Fprintf(stderr, "msgnet bench %s: chart: %v\n", mode, err)
			return 1
		}
	}
	if opts.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fmt.Fprintf(stderr, "msgnet bench %s: %v\n", mode, err)
			return 1
		}
	} else {
		res.WriteText(stdout)
		if opts.chart != "" {
			fmt.Fprintf(stdout, "chart       %s\n", opts.chart)
		}
	}
	return 0
}

// options are the parsed command-line flags.
type options struct {
	addr, clientID, group, proto           string
	conns, inflight, pid, dialConc, maxPay int
	maxLag                                 int
	size                                   sizeFlag
	duration, warmup, hold, heartbeat      time.Duration
	joinWait, drain, dialTimeout           time.Duration
	rate, dialRate                         float64
	noHello, json, quiet, serverCloses     bool
	chart                                  string
	tls, tlsInsecure                       bool
	tlsCA, tlsServerName                   string
}

// newFlagSet declares the flags of one mode.
func newFlagSet(mode Mode, stderr io.Writer) (*flag.FlagSet, *options) {
	o := &options{size: DefaultSize}
	fs := flag.NewFlagSet("msgnet bench "+string(mode), flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: msgnet bench %s [flags]\n\n%s\n\nflags:\n", mode, modeHelp[mode])
		fs.PrintDefaults()
	}
	fs.StringVar(&o.addr, "addr", DefaultAddr, "server `host:port`; nothing else is dialled")
	defConns := DefaultConns
	connsHelp := "connections"
	switch mode {
	case ModeConnRate:
		connsHelp = "parallel workers, each opening one connection at a time"
		defConns = 8
	case ModeIdle:
		connsHelp = "connections to open and hold"
		defConns = 1000
	case ModeFanout:
		connsHelp = "receiving connections (the sender is one more)"
	}
	if mode != ModeReliable { // one publisher, one subscriber
		fs.IntVar(&o.conns, "conns", defConns, connsHelp)
	} else {
		o.conns = 1
	}
	defDur := DefaultDuration
	durHelp := "length of the measured window"
	if mode == ModeIdle {
		defDur = DefaultIdleDuration
		durHelp = "time limit for opening the connections"
	}
	fs.DurationVar(&o.duration, "duration", defDur, durHelp)
	if mode != ModeIdle {
		fs.DurationVar(&o.warmup, "warmup", time.Second, "load before the measured window, not recorded")
	}
	switch mode {
	case ModeThroughput:
		fs.IntVar(&o.inflight, "inflight", DefaultInflight, "DATA frames kept in flight per connection")
	case ModeLatency:
		fs.Float64Var(&o.rate, "rate", 0, "open loop: total frames per second over all connections, latency measured from each frame's intended send time (0: closed loop, one frame in flight per connection)")
		fs.DurationVar(&o.drain, "drain", DefaultDrain, "open loop: how long to wait for the last echoes")
	case ModeConnRate:
		fs.BoolVar(&o.serverCloses, "server-closes", false, "end each connection with DISCONNECT and wait for the server to close first (default: the client closes)")
	case ModeIdle:
		fs.DurationVar(&o.hold, "hold", DefaultHold, "how long to hold the connections once open")
		fs.DurationVar(&o.heartbeat, "heartbeat", 0, "HEARTBEAT interval on held connections (0: a third of the server's announced idle timeout; negative: none)")
	case ModeReliable:
		fs.IntVar(&o.inflight, "inflight", DefaultReliableInflight, "publishes kept unacknowledged by the server, at most")
		fs.IntVar(&o.maxLag, "max-lag", -1, "publishes not yet delivered to the subscriber, at most (-1: as --inflight; 0: no bound)")
		fs.StringVar(&o.group, "group", DefaultGroup, "the group whose stream is published to and subscribed")
		fs.DurationVar(&o.drain, "drain", 10*time.Second, "how long to wait, after the window, for the last acknowledgements and deliveries")
	case ModeFanout:
		fs.Float64Var(&o.rate, "rate", DefaultFanoutRate, "GROUP messages per second from the sender")
		fs.StringVar(&o.group, "group", DefaultGroup, "group to join and send to (nats: the subject)")
		fs.StringVar(&o.proto, "proto", ProtoMsgnet, "wire protocol: msgnet (JOIN and GROUP to a managed-mode server) or nats (SUB and PUB to a NATS server)")
		fs.DurationVar(&o.joinWait, "join-wait", DefaultJoinWait, "pause after JOIN before sending")
		fs.DurationVar(&o.drain, "drain", DefaultDrain, "how long to keep receiving after the sender stops")
	}
	if mode == ModeThroughput || mode == ModeLatency || mode == ModeConnRate || mode == ModeReliable {
		fs.Var(&o.size, "size", "DATA payload size: bytes, or with a unit: 1KiB, 4K (1024), 1KB (1000), 1MiB")
	}
	if mode != ModeReliable {
		fs.BoolVar(&o.noHello, "no-hello", false, "skip the CONTROL hello / welcome handshake")
	}
	fs.StringVar(&o.clientID, "client-id", DefaultClientID, "client_id prefix sent in hello")
	fs.IntVar(&o.pid, "pid", 0, "server process id on this machine: report its CPU time and RSS from /proc")
	fs.IntVar(&o.dialConc, "dial-concurrency", DefaultDialConcurrency, "connections being opened at once, at most")
	fs.Float64Var(&o.dialRate, "dial-rate", 0, "new connections per second while connecting, at most (0: no limit)")
	fs.DurationVar(&o.dialTimeout, "dial-timeout", DefaultDialTimeout, "limit for one connect plus handshake")
	fs.IntVar(&o.maxPay, "max-payload", 0, "largest payload accepted from the server (0: 1 MiB)")
	fs.BoolVar(&o.json, "json", false, "print the result as one JSON object (progress goes to stderr)")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress line")
	fs.StringVar(&o.chart, "chart", "", "write a latency-percentile chart to this SVG `file`")
	fs.BoolVar(&o.tls, "tls", false, "connect with TLS (implied by the other --tls-* flags)")
	fs.StringVar(&o.tlsCA, "tls-ca", "", "PEM `file` of CA certificates to verify the server with (default: the system's)")
	fs.BoolVar(&o.tlsInsecure, "tls-insecure", false, "do not verify the server's certificate")
	fs.StringVar(&o.tlsServerName, "tls-server-name", "", "server name to verify (default: the host of --addr)")
	return fs, o
}

// config turns the flags into a Config.
func (o *options) config(mode Mode) (Config, error) {
	c := Config{
		Mode: mode, Addr: o.addr, Conns: o.conns, Inflight: o.inflight,
		Size: int(o.size), Duration: o.duration, Warmup: o.warmup, Rate: o.rate,
		NoHello: o.noHello, ServerCloses: o.serverCloses, ClientID: o.clientID, Group: o.group, Proto: o.proto,
		JoinWait: o.joinWait, Drain: o.drain, Hold: o.hold, Heartbeat: o.heartbeat,
		PID: o.pid, DialConcurrency: o.dialConc, DialRate: o.dialRate,
		DialTimeout: o.dialTimeout, MaxPayload: o.maxPay, MaxLag: o.maxLag,
	}
	if c.MaxLag == -1 {
		c.MaxLag = c.Inflight
	}
	if c.Size == 0 {
		c.Size = EmptyPayload
	}
	if c.Conns < 1 {
		return c, fmt.Errorf("--conns must be at least 1")
	}
	if (mode == ModeThroughput || mode == ModeReliable) && c.Inflight < 1 {
		return c, fmt.Errorf("--inflight must be at least 1")
	}
	if o.tls || o.tlsCA != "" || o.tlsInsecure || o.tlsServerName != "" {
		tc := &tls.Config{ServerName: o.tlsServerName, InsecureSkipVerify: o.tlsInsecure}
		if o.tlsCA != "" {
			pem, err := os.ReadFile(o.tlsCA)
			if err != nil {
				return c, err
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return c, fmt.Errorf("no certificate in %s", o.tlsCA)
			}
			tc.RootCAs = pool
		}
		c.TLS = tc
	}
	return c, nil
}

// sizeFlag is a byte count written as a number with an optional unit.
type sizeFlag int

// String returns the size in bytes.
func (s *sizeFlag) String() string { return strconv.Itoa(int(*s)) }

// Set parses a size such as 64, 1KiB, 4K, 1KB or 2MiB.
func (s *sizeFlag) Set(v string) error {
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	*s = sizeFlag(n)
	return nil
}

// ParseSize parses a byte count: a whole number with an optional unit B,
// K/KiB (1024), KB (1000), M/MiB (1024²), MB (1000²). Units are not case
// sensitive except that "KB"/"MB" are decimal and "K"/"M"/"KiB"/"MiB" binary.
func ParseSize(v string) (int, error) {
	s := strings.TrimSpace(v)
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("bad size %q", v)
	}
	n, err := strconv.Atoi(s[:i])
	if err != nil {
		return 0, fmt.Errorf("bad size %q", v)
	}
	mult := 0
	switch strings.ToLower(strings.TrimSpace(s[i:])) {
	case "", "b":
		mult = 1
	case "k", "ki", "kib":
		mult = 1 << 10
	case "kb":
		mult = 1000
	case "m", "mi", "mib":
		mult = 1 << 20
	case "mb":
		mult = 1000 * 1000
	default:
		return 0, fmt.Errorf("bad size unit in %q", v)
	}
	if n > (1<<31)/mult {
		return 0, fmt.Errorf("size %q too large", v)
	}
	return n * mult, nil
}

// isTerminal reports whether w is a character device, such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// writeChartFile writes res's latency chart to path.
func writeChartFile(path string, res *Result) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	title := fmt.Sprintf("msgnet bench %s\np50 %s, p99 %s, p99.9 %s, max %s (%s samples)",
		res.describe(), fmtUs(res.Latency.P50), fmtUs(res.Latency.P99),
		fmtUs(res.Latency.P999), fmtUs(res.Latency.Max), group(res.Latency.Count))
	err = WriteChart(f, title, ChartSeries{Name: res.latencyName(), Histogram: res.Histogram})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

var modeHelp = map[Mode]string{
	ModeThroughput: "Keeps --inflight DATA frames outstanding on each of --conns connections\nagainst an echo server; reports messages/s, MB/s and round-trip latency.",
	ModeLatency:    "One DATA frame in flight per connection (closed loop), or with --rate an\nopen loop at a fixed total rate, latency measured from intended send times.",
	ModeConnRate:   "Workers connect, say hello, make one DATA round trip and close, in a loop;\nreports connections/s and the latency of a whole connection.",
	ModeIdle:       "Opens --conns connections (at most --dial-concurrency at once) and holds\nthem for --hold; with --pid, reports the server's RSS growth per connection.",
	ModeFanout:     "Receivers send DATA \"JOIN:<group>\" to a managed-mode server; a sender sends\n\"GROUP:<group>:<seq>:<unix-nanos>\" at --rate; reports delivery latency and\nmissing messages. --proto nats: the same through a NATS server (SUB / PUB).",
	ModeReliable:   "A reliable publisher (WithReliable) keeps --inflight publishes to a group's\nstream unacknowledged, a reliable subscriber receives them; reports\ndeliveries/s, publish-to-delivery latency and exactly-once order.",
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: msgnet bench MODE [flags]\n\nModes:\n")
	for _, m := range Modes {
		fmt.Fprintf(w, "  %-11s %s\n", m, strings.ReplaceAll(modeHelp[m], "\n", "\n              "))
	}
	fmt.Fprintf(w, "\nRun 'msgnet bench MODE -h' for the flags of a mode.\n")
}
