package monitor

import (
	"math"
	"runtime"
	"runtime/metrics"
	"time"

	"github.com/msgnet/msgnet"
)

// Varz is the JSON document /varz serves: the server's state and its
// counters since it was created (see msgnet.Stats).
type Varz struct {
	ServerID      string    `json:"server_id"`
	Addr          string    `json:"addr"`
	Running       bool      `json:"running"`
	Start         time.Time `json:"start"`
	Now           time.Time `json:"now"`
	UptimeSeconds float64   `json:"uptime_seconds"`

	Sessions int               `json:"sessions"` // open now
	Accepted uint64            `json:"accepted"`
	Refused  map[string]uint64 `json:"refused"` // by ERROR code

	MsgsIn   uint64 `json:"msgs_in"`
	MsgsOut  uint64 `json:"msgs_out"`
	BytesIn  uint64 `json:"bytes_in"`
	BytesOut uint64 `json:"bytes_out"`
	// Frames and bytes by kind ("DATA", "PING", ...).
	FramesIn     map[string]uint64 `json:"frames_in"`
	FramesOut    map[string]uint64 `json:"frames_out"`
	KindBytesIn  map[string]uint64 `json:"kind_bytes_in"`
	KindBytesOut map[string]uint64 `json:"kind_bytes_out"`

	QueueBytes    int    `json:"queue_bytes"`
	QueueBudget   int64  `json:"queue_budget"`  // bound on queue_bytes as charged; 0: none
	QueueCharged  int64  `json:"queue_charged"` // charged now, in 16 KiB granules per session
	SlowConsumers uint64 `json:"slow_consumers"`
	// Dropped counts messages not delivered, by reason (queue_full,
	// server_queue_full, slow_consumer, rate_limited).
	Dropped map[string]uint64 `json:"dropped"`

	ErrorsSent     map[string]uint64 `json:"errors_sent"`     // by code
	ErrorsReceived map[string]uint64 `json:"errors_received"` // by code, as the peers sent them
	Disconnects    map[string]uint64 `json:"disconnects"`     // by reason class

	Requests       VarzRequests `json:"requests"`
	HandlerLatency VarzLatency  `json:"handler_latency"`
	Cluster        *VarzCluster `json:"cluster,omitempty"` // only when clustered
	Runtime        VarzRuntime  `json:"runtime"`
}

// VarzRequests counts requests, both those the server answered and those
// it sent with Session.Request.
type VarzRequests struct {
	Handled       uint64 `json:"handled"`
	HandlerErrors uint64 `json:"handler_errors"`
	Sent          uint64 `json:"sent"`
	OK            uint64 `json:"ok"`
	RemoteError   uint64 `json:"remote_error"`
	TimedOut      uint64 `json:"timed_out"`
	Lost          uint64 `json:"lost"`
	LateReplies   uint64 `json:"late_replies"`
}

// VarzLatency summarizes the sampled message handler latency. The
// quantiles are the upper bounds of the histogram buckets they fall in
// (powers of two from 1.024µs), so they are at most twice the truth; they
// are 0 until a call has been timed, and -1 when they fall in the last
// bucket, which has no bound.
type VarzLatency struct {
	Count       uint64  `json:"count"` // calls timed
	MeanSeconds float64 `json:"mean_seconds"`
	P50Seconds  float64 `json:"p50_seconds"`
	P90Seconds  float64 `json:"p90_seconds"`
	P99Seconds  float64 `json:"p99_seconds"`
}

// VarzCluster is the cluster bus's traffic.
type VarzCluster struct {
	Nodes     int               `json:"nodes"`
	Published map[string]uint64 `json:"published"`
	Received  map[string]uint64 `json:"received"`
	Errors    uint64            `json:"errors"`
}

// VarzRuntime describes the Go process.
type VarzRuntime struct {
	GoVersion   string `json:"go_version"`
	GOMAXPROCS  int    `json:"gomaxprocs"`
	NumCPU      int    `json:"num_cpu"`
	Goroutines  int    `json:"goroutines"`
	MemoryBytes uint64 `json:"memory_bytes"` // all memory the Go runtime has mapped
}

// varz builds the /varz document.
func varz(srv *msgnet.Server) Varz {
	st := srv.Stats()
	now := time.Now()
	v := Varz{
		ServerID: st.ID, Addr: st.Addr, Running: st.Running, Start: st.Start, Now: now,
		UptimeSeconds: now.Sub(st.Start).Seconds(),
		Sessions:      st.Sessions, Accepted: st.Accepted, Refused: st.Refused,
		MsgsIn: st.MsgsIn, MsgsOut: st.MsgsOut, BytesIn: st.BytesIn, BytesOut: st.BytesOut,
		FramesIn: st.FramesIn, FramesOut: st.FramesOut, KindBytesIn: st.KindBytesIn, KindBytesOut: st.KindBytesOut,
		QueueBytes: st.QueueBytes, QueueBudget: st.QueueBudget, QueueCharged: st.QueueCharged,
		SlowConsumers: st.SlowConsumers, Dropped: st.Dropped,
		ErrorsSent: st.ErrorsSent, ErrorsReceived: st.ErrorsReceived, Disconnects: st.Disconnects,
		Requests: VarzRequests{
			Handled: st.RequestsHandled, HandlerErrors: st.RequestHandlerErrors,
			Sent: st.RequestsSent, OK: st.RequestsOK, RemoteError: st.RequestsRemoteError,
			TimedOut: st.RequestsTimedOut, Lost: st.RequestsLost, LateReplies: st.LateReplies,
		},
		HandlerLatency: latencySummary(st.HandlerLatency),
		Runtime: VarzRuntime{
			GoVersion: runtime.Version(), GOMAXPROCS: runtime.GOMAXPROCS(0), NumCPU: runtime.NumCPU(),
			Goroutines: runtime.NumGoroutine(), MemoryBytes: runtimeMemory(),
		},
	}
	if cl := st.Cluster; cl != nil {
		v.Cluster = &VarzCluster{Nodes: cl.Nodes, Published: cl.Published, Received: cl.Received, Errors: cl.Errors}
	}
	return v
}

func latencySummary(h msgnet.Histogram) VarzLatency {
	var total uint64
	for _, n := range h.Counts {
		total += n
	}
	out := VarzLatency{Count: total}
	if total == 0 {
		return out
	}
	out.MeanSeconds = h.Sum.Seconds() / float64(total)
	quantile := func(q float64) float64 {
		rank := max(uint64(math.Ceil(q*float64(total))), 1)
		var cum uint64
		for i, n := range h.Counts {
			cum += n
			if cum >= rank {
				if i == len(h.Counts)-1 {
					return -1
				}
				return h.Bounds[i].Seconds()
			}
		}
		return -1
	}
	out.P50Seconds, out.P90Seconds, out.P99Seconds = quantile(0.50), quantile(0.90), quantile(0.99)
	return out
}

// runtimeMemory reads the Go runtime's total mapped memory without
// stopping the world (runtime.ReadMemStats would).
func runtimeMemory() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
