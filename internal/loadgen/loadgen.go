// Package loadgen is the engine of `msgnet bench`: a load generator that
// speaks msgnet's framed wire protocol (package frame) to a server and
// measures it.
//
// It has five modes, each bounded in time and in the number of connections,
// and each aimed only at the address it is given:
//
//   - throughput: Conns connections, each keeping Inflight DATA frames
//     outstanding against an echo server (pipelined, writes batched);
//     reports messages/s, MB/s and the round-trip latency under pipelining.
//   - latency: one frame in flight per connection (closed loop), or, with
//     Rate > 0, an open loop at a fixed total rate whose latency is measured
//     from each frame's intended send time (no coordinated omission).
//   - connrate: workers that connect, say hello, make one DATA round trip and
//     close, over and over; reports connections/s and per-connection latency.
//   - idle: opens Conns connections at a bounded concurrency and holds them;
//     with a server PID, reports the server's RSS growth per connection.
//   - fanout: receivers join a group on a managed-mode server, one sender
//     sends timestamped GROUP messages at a fixed rate, receivers record the
//     delivery latency.
//   - reliable: acknowledged delivery through a stream (msgnet's client
//     WithReliable, or any ReliableClient through RunReliable): one
//     publisher keeps Inflight publishes unacknowledged, one subscriber
//     records publish-to-delivery latency and checks exactly-once order.
//
// Run is the library entry point; Main is the command line (`msgnet bench`).
// Latencies are recorded in HDR histograms in nanoseconds and summarised in
// microseconds.
package loadgen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/msgnet/msgnet/frame"
)

// Mode selects what Run measures.
type Mode string

// The modes of Run; see the package documentation.
const (
	ModeThroughput Mode = "throughput" // pipelined echo throughput
	ModeLatency    Mode = "latency"    // closed- or open-loop echo latency
	ModeConnRate   Mode = "connrate"   // connection setup and teardown rate
	ModeIdle       Mode = "idle"       // many idle connections, RSS per connection
	ModeFanout     Mode = "fanout"     // group broadcast delivery latency
	ModeReliable   Mode = "reliable"   // acknowledged publish -> deliver through a stream
)

// Modes lists every mode in the order the command line documents them.
var Modes = []Mode{ModeThroughput, ModeLatency, ModeConnRate, ModeIdle, ModeFanout, ModeReliable}

// Config describes one run. Zero values take the defaults noted on each field
// (see Config.WithDefaults).
type Config struct {
	// Mode is what to measure. Required.
	Mode Mode
	// Addr is the server's host:port. Required. Nothing else is dialled.
	Addr string
	// Conns is the number of connections (throughput, latency, idle), of
	// parallel workers (connrate) or of receivers (fanout). Default 50.
	Conns int
	// Inflight is the number of DATA frames each throughput connection keeps
	// outstanding (default 32), or the publishes the reliable mode's
	// publisher keeps unacknowledged (default 1024).
	Inflight int
	// Size is the DATA payload size in bytes (throughput, latency,
	// connrate). Default 64. Negative is invalid; 0 sends empty payloads.
	Size int
	// Duration is the length of the measured window (throughput, latency,
	// connrate, fanout). In idle mode it bounds the phase that opens the
	// connections instead. Default 10s (idle: 60s).
	Duration time.Duration
	// Warmup runs the load before the measured window without recording it.
	// Default 0 (none).
	Warmup time.Duration
	// Rate is the total send rate in messages per second: in latency mode it
	// switches to the open loop (0 keeps the closed loop); in fanout mode it
	// is the sender's rate (default 100).
	Rate float64
	// NoHello skips the CONTROL hello / welcome handshake on connect.
	NoHello bool
	// ServerCloses, in connrate, ends each connection the other way round:
	// the client sends DISCONNECT and waits for the server to close first.
	ServerCloses bool
	// ClientID prefixes the client_id sent in hello; the connection's index
	// is appended. Default "bench".
	ClientID string
	// MaxLag, in reliable mode, bounds the messages published and not yet
	// delivered to the subscriber: the publisher waits at MaxLag, so that a
	// subscriber slower than the server's acknowledgements never falls
	// behind the stream's retention. 0 sets no bound.
	MaxLag int
	// Group is the fanout group name (with ProtoNATS, the subject), and
	// the reliable mode's group stream.
	// Default "bench".
	Group string
	// Proto is fanout's wire protocol: ProtoMsgnet (the default: JOIN and
	// GROUP to a managed-mode server) or ProtoNATS (SUB and PUB to a NATS
	// server).
	Proto string
	// JoinWait is how long fanout waits after the receivers' JOIN messages
	// before the sender starts, so the server has processed them. Default
	// 500ms.
	JoinWait time.Duration
	// Drain is how long fanout keeps receiving after the sender stops, for
	// deliveries still on their way. Default 1s.
	Drain time.Duration
	// Hold is how long idle mode holds the connections once they are open.
	// Default 10s.
	Hold time.Duration
	// Heartbeat is the interval at which idle mode sends HEARTBEAT frames on
	// every connection, so a server's idle timeout does not close them. 0
	// picks a third of the idle timeout the server announced in its welcome
	// (none if it announced none); negative disables heartbeats.
	Heartbeat time.Duration
	// PID, when > 0, is the server's process id on this machine: its CPU time
	// and RSS are read from /proc around the measured window.
	PID int
	// DialConcurrency bounds the connections being opened at once. Default 64.
	DialConcurrency int
	// DialRate, when > 0, bounds new connections per second while opening
	// them (idle, and the setup of the other modes).
	DialRate float64
	// DialTimeout bounds one connect plus handshake. Default 5s.
	DialTimeout time.Duration
	// MaxPayload is the largest payload accepted from the server. Default
	// frame.DefaultMaxPayload.
	MaxPayload int
	// TLS, when not nil, wraps every connection in TLS with this
	// configuration. An empty ServerName is taken from Addr's host.
	TLS *tls.Config
	// Progress, when not nil, receives a progress line every
	// ProgressInterval.
	Progress io.Writer
	// ProgressTTY rewrites one line with carriage returns instead of
	// printing one line per update.
	ProgressTTY bool
	// ProgressInterval is the time between progress lines. Default 1s.
	ProgressInterval time.Duration
}

// Defaults of Config, applied by WithDefaults to zero fields.
const (
	DefaultConns           = 50                     // Config.Conns
	DefaultInflight        = 32                     // Config.Inflight
	DefaultSize            = 64                     // Config.Size, bytes
	DefaultDuration        = 10 * time.Second       // Config.Duration
	DefaultIdleDuration    = 60 * time.Second       // Config.Duration in idle mode
	DefaultHold            = 10 * time.Second       // Config.Hold
	DefaultFanoutRate      = 100                    // Config.Rate in fanout mode, messages/s
	DefaultGroup           = "bench"                // Config.Group
	DefaultClientID        = "bench"                // Config.ClientID
	DefaultJoinWait        = 500 * time.Millisecond // Config.JoinWait
	DefaultDrain           = time.Second            // Config.Drain
	DefaultDialConcurrency = 64                     // Config.DialConcurrency
	DefaultDialTimeout     = 5 * time.Second        // Config.DialTimeout
)

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Conns == 0 {
		c.Conns = DefaultConns
	}
	if c.Inflight == 0 {
		c.Inflight = DefaultInflight
		if c.Mode == ModeReliable {
			c.Inflight = DefaultReliableInflight
		}
	}
	if c.Size == 0 {
		c.Size = DefaultSize
	}
	if c.Duration == 0 {
		c.Duration = DefaultDuration
		if c.Mode == ModeIdle {
			c.Duration = DefaultIdleDuration
		}
	}
	if c.Hold == 0 {
		c.Hold = DefaultHold
	}
	if c.Rate == 0 && c.Mode == ModeFanout {
		c.Rate = DefaultFanoutRate
	}
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.ClientID == "" {
		c.ClientID = DefaultClientID
	}
	if c.JoinWait == 0 {
		c.JoinWait = DefaultJoinWait
	}
	if c.Drain == 0 {
		c.Drain = DefaultDrain
	}
	if c.DialConcurrency == 0 {
		c.DialConcurrency = DefaultDialConcurrency
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = frame.DefaultMaxPayload
	}
	if c.ProgressInterval == 0 {
		c.ProgressInterval = time.Second
	}
	return c
}

// EmptyPayload, as Config.Size, asks for empty DATA payloads (a zero Size
// means the default).
const EmptyPayload = -1

// Validate reports the first problem with c, which must already have its
// defaults applied.
func (c Config) Validate() error {
	switch c.Mode {
	case ModeThroughput, ModeLatency, ModeConnRate, ModeIdle, ModeFanout, ModeReliable:
	case "":
		return errors.New("loadgen: no mode")
	default:
		return fmt.Errorf("loadgen: unknown mode %q", c.Mode)
	}
	switch {
	case c.Addr == "":
		return errors.New("loadgen: no address")
	case c.Conns < 1:
		return fmt.Errorf("loadgen: conns must be at least 1, not %d", c.Conns)
	case c.Inflight < 1:
		return fmt.Errorf("loadgen: inflight must be at least 1, not %d", c.Inflight)
	case c.Size < EmptyPayload:
		return fmt.Errorf("loadgen: size must not be negative, not %d", c.Size)
	case c.payloadSize() > c.MaxPayload:
		return fmt.Errorf("loadgen: size %d is above the payload limit %d", c.payloadSize(), c.MaxPayload)
	case c.Mode == ModeReliable && c.payloadSize() < reliableHeader:
		return fmt.Errorf("loadgen: reliable mode needs a size of at least %d bytes (a timestamp and a number), not %d", reliableHeader, c.payloadSize())
	case c.Duration <= 0:
		return errors.New("loadgen: duration must be positive")
	case c.Warmup < 0:
		return errors.New("loadgen: warmup must not be negative")
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		return errors.New("loadgen: rate must be a finite number >= 0")
	case c.MaxLag < 0:
		return errors.New("loadgen: max lag must not be negative")
	case c.Hold < 0:
		return errors.New("loadgen: hold must not be negative")
	case c.DialConcurrency < 1:
		return errors.New("loadgen: dial concurrency must be at least 1")
	case c.DialRate < 0:
		return errors.New("loadgen: dial rate must not be negative")
	}
	return c.validateProto()
}

// payloadSize is Size with EmptyPayload mapped to 0.
func (c Config) payloadSize() int {
	if c.Size < 0 {
		return 0
	}
	return c.Size
}

// Result is what Run measured. Rates are over the measured window (Seconds).
// Its JSON form is what `msgnet bench --json` prints.
type Result struct {
	Mode     Mode    `json:"mode"`
	Addr     string  `json:"addr"`
	TLS      bool    `json:"tls"`
	Conns    int     `json:"conns"`
	Inflight int     `json:"inflight,omitempty"`
	MaxLag   int     `json:"max_lag,omitempty"`
	Size     int     `json:"size"`
	Rate     float64 `json:"rate,omitempty"`
	// OpenLoop is true for a latency run at a fixed rate.
	OpenLoop bool `json:"open_loop,omitempty"`
	// Warmup and Seconds are the warm-up and the measured window, in seconds.
	Warmup  float64 `json:"warmup_seconds"`
	Seconds float64 `json:"seconds"`
	// Messages counts completed round trips (throughput, latency, connrate)
	// or deliveries (fanout) in the window.
	Messages int64 `json:"messages"`
	// Sent counts the frames sent in the window whose answer was expected:
	// for fanout, the sender's GROUP messages; for an open-loop latency run,
	// the frames scheduled.
	Sent int64 `json:"sent,omitempty"`
	// Expected is, for fanout, Sent times the receivers; Lost is Expected
	// minus the deliveries seen (negative if the server delivered more).
	Expected int64 `json:"expected,omitempty"`
	Lost     int64 `json:"lost,omitempty"`
	// Unanswered counts open-loop frames scheduled in the window whose echo
	// had not arrived when the run stopped; each is recorded in the latency
	// histogram with the time it had waited by then.
	Unanswered int64 `json:"unanswered,omitempty"`
	// MsgsPerSec is Messages per second; MBPerSec the DATA payload bytes of
	// those messages per second in one direction, in 10^6 bytes.
	MsgsPerSec float64 `json:"msgs_per_sec"`
	MBPerSec   float64 `json:"mb_per_sec"`
	// Connections counts connections opened (idle) or completed (connrate);
	// ConnsPerSec is connrate's rate.
	Connections int64   `json:"connections"`
	ConnsPerSec float64 `json:"conns_per_sec,omitempty"`
	// Dropped counts idle connections the server closed while held.
	Dropped int64 `json:"dropped,omitempty"`
	// Errors counts failures (dials, handshakes, unexpected frames, broken
	// connections); ErrorSamples holds the first few distinct messages.
	Errors       int64    `json:"errors"`
	ErrorSamples []string `json:"error_samples,omitempty"`
	// Latency summarises Histogram: round trips (throughput, latency), whole
	// connections (connrate, idle: connect plus handshake), deliveries
	// (fanout).
	Latency Summary `json:"latency"`
	// Reliable is the reliable mode's count of what was published and
	// delivered.
	Reliable *ReliableStats `json:"reliable,omitempty"`
	// Server is the server process's resource use, with Config.PID.
	Server *ServerStats `json:"server,omitempty"`
	// Fanout is fanout's per-message accounting.
	Fanout *FanoutStats `json:"fanout,omitempty"`
	// LoadCPUSeconds is the CPU time the load tool itself used over the
	// window (idle: over the connecting and the hold), from /proc/self/stat;
	// close to Seconds times its cores means the load tool was the limit.
	LoadCPUSeconds float64 `json:"load_cpu_seconds"`
	// Histogram holds every latency recorded, in nanoseconds.
	Histogram *hdrhistogram.Histogram `json:"-"`
}

// Summary is a latency distribution in microseconds.
type Summary struct {
	Count int64   `json:"count"`
	Min   float64 `json:"min_us"`
	Mean  float64 `json:"mean_us"`
	P50   float64 `json:"p50_us"`
	P90   float64 `json:"p90_us"`
	P99   float64 `json:"p99_us"`
	P999  float64 `json:"p999_us"`
	Max   float64 `json:"max_us"`
}

// Summarize computes the Summary of a histogram of nanoseconds.
func Summarize(h *hdrhistogram.Histogram) Summary {
	if h == nil || h.TotalCount() == 0 {
		return Summary{}
	}
	us := func(ns int64) float64 { return float64(ns) / 1e3 }
	return Summary{
		Count: h.TotalCount(),
		Min:   us(h.Min()),
		Mean:  h.Mean() / 1e3,
		P50:   us(h.ValueAtPercentile(50)),
		P90:   us(h.ValueAtPercentile(90)),
		P99:   us(h.ValueAtPercentile(99)),
		P999:  us(h.ValueAtPercentile(99.9)),
		Max:   us(h.Max()),
	}
}

// ServerStats is the server process's resource use read from /proc.
type ServerStats struct {
	PID int `json:"pid"`
	// CPUSeconds is the user plus system CPU time the server used during
	// the measured window (idle: from before the first connection to the
	// end of the hold).
	CPUSeconds float64 `json:"cpu_seconds"`
	// MsgsPerCPUSecond is Result.Messages per server CPU-second.
	MsgsPerCPUSecond float64 `json:"msgs_per_cpu_second,omitempty"`
	// CPUMicrosPerConn is server CPU microseconds per connection made
	// (connrate, idle).
	CPUMicrosPerConn float64 `json:"cpu_us_per_conn,omitempty"`
	// RSSBefore and RSSAfter are the server's resident set in bytes at the
	// start and the end of the window; RSSPerConn their difference per
	// connection opened (idle).
	RSSBefore  int64   `json:"rss_before_bytes"`
	RSSAfter   int64   `json:"rss_after_bytes"`
	RSSPerConn float64 `json:"rss_bytes_per_conn,omitempty"`
	// RSSPeak is the server's peak resident set over its life (VmHWM),
	// read at the end of the window (fanout).
	RSSPeak int64 `json:"rss_peak_bytes,omitempty"`
}

// Run performs one measurement described by cfg and returns its result. It
// returns an error when cfg is invalid or when the run could not start at
// all (no connection could be made); failures of single connections are
// counted in Result.Errors instead. Cancelling ctx ends the run early with
// what was measured so far. Run leaves no goroutine behind.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, errs: newErrorLog()}
	var res *Result
	var err error
	switch cfg.Mode {
	case ModeThroughput:
		res, err = r.throughput(ctx)
	case ModeLatency:
		if cfg.Rate > 0 {
			res, err = r.openLoop(ctx)
		} else {
			res, err = r.closedLoop(ctx)
		}
	case ModeConnRate:
		res, err = r.connRate(ctx)
	case ModeIdle:
		res, err = r.idle(ctx)
	case ModeFanout:
		res, err = r.fanout(ctx)
	case ModeReliable:
		var c ReliableClient
		if c, err = DialMsgnetReliable(ctx, cfg); err != nil {
			return nil, fmt.Errorf("loadgen: connect to %s: %w", cfg.Addr, err)
		}
		res, err = r.reliable(ctx, c)
	}
	if err != nil {
		return nil, err
	}
	r.finish(res)
	return res, nil
}

// finish fills in what every mode's result shares.
func (r *runner) finish(res *Result) {
	cfg := r.cfg
	res.Mode, res.Addr, res.TLS = cfg.Mode, cfg.Addr, cfg.TLS != nil
	res.Conns = cfg.Conns
	if cfg.Mode == ModeReliable {
		res.Conns = 2 // a publisher and a subscriber
	}
	if cfg.Mode != ModeIdle && cfg.Mode != ModeFanout {
		res.Size = cfg.payloadSize() // idle sends no DATA; fanout's are text
	}
	res.Warmup = cfg.Warmup.Seconds()
	res.Errors, res.ErrorSamples = r.errs.snapshot()
	res.LoadCPUSeconds = r.loadCPU
	res.Latency = Summarize(res.Histogram)
	if res.Seconds > 0 {
		res.MsgsPerSec = float64(res.Messages) / res.Seconds
		res.MBPerSec = res.MsgsPerSec * float64(res.Size) / 1e6
	}
	if s := res.Server; s != nil && s.CPUSeconds > 0 {
		if res.Messages > 0 {
			s.MsgsPerCPUSecond = float64(res.Messages) / s.CPUSeconds
		}
		if res.Connections > 0 && (cfg.Mode == ModeConnRate || cfg.Mode == ModeIdle) {
			s.CPUMicrosPerConn = s.CPUSeconds * 1e6 / float64(res.Connections)
		}
	}
	if s := res.Server; s != nil && cfg.Mode == ModeIdle && res.Connections > 0 {
		s.RSSPerConn = float64(s.RSSAfter-s.RSSBefore) / float64(res.Connections)
	}
}
