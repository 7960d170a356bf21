package monitor

import (
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
	"github.com/prometheus/client_golang/prometheus"
)

// Names of the label values that are always exported, so that a series
// exists (at 0) before its first event and rate() sees it start.
var (
	// frameKinds are the kinds of the core protocol.
	frameKinds = []string{"DATA", "PING", "PONG", "CONTROL", "ERROR", "HEARTBEAT", "DISCONNECT"}
	// sentCodes are the ERROR codes msgnet itself sends. Codes the core
	// adds later are exported all the same when sent; listing them here
	// makes their series start at 0 and keeps them out of "other" when a
	// peer sends them.
	sentCodes = sendCodes()
	// refusalCodes are the codes a connection can be refused with (counted
	// as refusals, not as ERROR frames sent).
	refusalCodes = []string{frame.CodeServerFull, msgnet.CodePerIPLimit}
	// receivedCodes: a peer may send any code. Received codes other than
	// msgnet's own and "unknown" (an ERROR payload that did not parse) are
	// counted as "other", so that a peer cannot create series at will.
	receivedCodes   = slices.Concat(sentCodes, refusalCodes, []string{"unknown", otherCode})
	requestOutcomes = []string{"ok", "remote_error", "timeout", "lost"}
	dropReasons     = []string{msgnet.DropQueueFull, msgnet.DropServerQueueFull, msgnet.DropSlowConsumer, msgnet.DropRateLimited}
	clusterKinds    = []string{"broadcast", "group", "direct"}
)

// otherCode is the label value of received ERROR codes that msgnet does
// not send itself.
const otherCode = "other"

func newDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("msgnet_"+name, help, labels, nil)
}

// The metrics. docs/MONITORING.md describes each; keep the two in step.
var (
	descRunning = newDesc("server_running",
		"1 while the server is serving, 0 before it starts and after it stops.")
	descStartTime = newDesc("server_start_time_seconds",
		"When the server was created, in seconds since the Unix epoch.")
	descSessions = newDesc("sessions_open",
		"Sessions open now.")
	descAccepted = newDesc("connections_accepted_total",
		"Connections accepted as sessions.")
	descRefused = newDesc("connections_refused_total",
		"Connections refused, by the ERROR code they were answered with.", "reason")
	descFramesIn = newDesc("frames_received_total",
		"Frames received from peers, by kind; text-mode lines count as DATA.", "kind")
	descFramesOut = newDesc("frames_sent_total",
		"Frames queued for peers, by kind; text-mode lines count as DATA.", "kind")
	descBytesIn = newDesc("received_bytes_total",
		"Bytes received from peers, frame headers included, by frame kind.", "kind")
	descBytesOut = newDesc("sent_bytes_total",
		"Bytes written to peers, frame headers included, by frame kind; kinds other than DATA count when queued.", "kind")
	descQueue = newDesc("send_queue_bytes",
		"Bytes waiting in the send queues of the open sessions.")
	descQueueBudget = newDesc("send_queue_budget_bytes",
		"The bound on the bytes queued on all sessions together (0: none); sends past it fail and connections are refused with server_busy.")
	descQueueCharged = newDesc("send_queue_charged_bytes",
		"Bytes charged to that bound now, in 16 KiB granules per session.")
	descDropped = newDesc("messages_dropped_total",
		"Messages not delivered, by reason: queue_full, server_queue_full, slow_consumer, rate_limited.", "reason")
	descSlow = newDesc("slow_consumer_events_total",
		"Sends refused with ErrQueueFull, or sessions closed, because a session's send queue was full.")
	descErrSent = newDesc("errors_sent_total",
		"ERROR frames sent to peers, by code.", "code")
	descErrRecv = newDesc("errors_received_total",
		`ERROR frames received from peers, by code; codes msgnet does not send count as "other".`, "code")
	descDisconnects = newDesc("disconnects_total",
		"Sessions ended, by reason class (see msgnet.ReasonClass).", "reason")
	descReqHandled = newDesc("requests_handled_total",
		"Requests from peers answered by the request handler, by outcome: ok, or error when the handler returned one.", "outcome")
	descReqSent = newDesc("requests_sent_total",
		"Requests the server sent to peers with Session.Request.")
	descReqDone = newDesc("requests_completed_total",
		"Requests sent to peers that have ended, by outcome: ok, remote_error, timeout, lost.", "outcome")
	descLate = newDesc("late_replies_total",
		"Replies that arrived after their request had ended.")
	descLatency = newDesc("message_handler_duration_seconds",
		"Time spent in the message handler, sampled: one call in 64 is timed.")
	descClusterNodes = newDesc("cluster_nodes",
		"Cluster nodes known alive, this one included (only when clustered).")
	descClusterPub = newDesc("cluster_messages_published_total",
		"Messages published to other cluster nodes, by kind: broadcast, group, direct.", "kind")
	descClusterRecv = newDesc("cluster_messages_received_total",
		"Messages received from other cluster nodes, by kind: broadcast, group, direct.", "kind")
	descClusterErr = newDesc("cluster_errors_total",
		"Errors of the cluster bus.")
)

var allDescs = []*prometheus.Desc{
	descRunning, descStartTime, descSessions, descAccepted, descRefused,
	descFramesIn, descFramesOut, descBytesIn, descBytesOut, descQueue, descQueueBudget, descQueueCharged,
	descDropped, descSlow,
	descErrSent, descErrRecv, descDisconnects,
	descReqHandled, descReqSent, descReqDone, descLate, descLatency,
	descClusterNodes, descClusterPub, descClusterRecv, descClusterErr,
}

// collector exports a server's Stats.
type collector struct {
	srv *msgnet.Server

	// last holds the value last exported for each counter series. Counts
	// derived from sums over the live sessions (frames and bytes by kind)
	// can read a little low for a moment while a session ends and its
	// counts move to the server's totals; a counter must never go down, or
	// Prometheus takes it for a restart. So a counter is exported as the
	// larger of what Stats says and what was exported before.
	mu   sync.Mutex
	last map[seriesKey]float64
}

// seriesKey names one series of the collector's metrics.
type seriesKey struct {
	desc   *prometheus.Desc
	labels string
}

// NewCollector returns a Prometheus collector of srv's counters, for a
// registry of your own:
//
//	reg.MustRegister(monitor.NewCollector(srv))
//
// It reads srv.Stats() when scraped, and costs nothing between scrapes
// (it keeps only the last value of each counter it exported). To tell several servers apart in one registry,
// register each through prometheus.WrapRegistererWith with a label of your
// choice. The metrics are listed in docs/MONITORING.md.
func NewCollector(srv *msgnet.Server) prometheus.Collector {
	return &collector{srv: srv, last: make(map[seriesKey]float64)}
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.srv.Stats()
	c.mu.Lock()
	defer c.mu.Unlock()

	running := 0.0
	if st.Running {
		running = 1
	}
	gauge(ch, descRunning, running)
	if !st.Start.IsZero() {
		gauge(ch, descStartTime, float64(st.Start.UnixNano())/1e9)
	}
	gauge(ch, descSessions, float64(st.Sessions))
	gauge(ch, descQueue, float64(st.QueueBytes))
	gauge(ch, descQueueBudget, float64(st.QueueBudget))
	gauge(ch, descQueueCharged, float64(st.QueueCharged))

	c.counter(ch, descAccepted, st.Accepted)
	c.counterMap(ch, descRefused, st.Refused, refusalCodes, nil)
	c.counterMap(ch, descFramesIn, st.FramesIn, frameKinds, nil)
	c.counterMap(ch, descFramesOut, st.FramesOut, frameKinds, nil)
	c.counterMap(ch, descBytesIn, st.KindBytesIn, frameKinds, nil)
	c.counterMap(ch, descBytesOut, st.KindBytesOut, frameKinds, nil)
	c.counter(ch, descSlow, st.SlowConsumers)
	c.counterMap(ch, descDropped, st.Dropped, dropReasons, nil)
	c.counterMap(ch, descErrSent, st.ErrorsSent, sentCodes, nil)
	c.counterMap(ch, descErrRecv, st.ErrorsReceived, receivedCodes, knownCode)
	c.counterMap(ch, descDisconnects, st.Disconnects, nil, nil)

	c.counter(ch, descReqHandled, st.RequestsHandled-min(st.RequestHandlerErrors, st.RequestsHandled), "ok")
	c.counter(ch, descReqHandled, st.RequestHandlerErrors, "error")
	c.counter(ch, descReqSent, st.RequestsSent)
	outcomes := [...]uint64{st.RequestsOK, st.RequestsRemoteError, st.RequestsTimedOut, st.RequestsLost}
	for i, o := range requestOutcomes {
		c.counter(ch, descReqDone, outcomes[i], o)
	}
	c.counter(ch, descLate, st.LateReplies)
	ch <- latencyHistogram(st.HandlerLatency)

	if cl := st.Cluster; cl != nil {
		gauge(ch, descClusterNodes, float64(cl.Nodes))
		c.counterMap(ch, descClusterPub, cl.Published, clusterKinds, nil)
		c.counterMap(ch, descClusterRecv, cl.Received, clusterKinds, nil)
		c.counter(ch, descClusterErr, cl.Errors)
	}
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
}

// counter exports one counter series, never lower than it was last
// exported (see collector.last). c.mu is held.
func (c *collector) counter(ch chan<- prometheus.Metric, d *prometheus.Desc, n uint64, labels ...string) {
	key := seriesKey{d, strings.Join(labels, "\xff")}
	v := math.Max(float64(n), c.last[key])
	c.last[key] = v
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

// counterMap exports a counter by label value: every value in always (0
// when m lacks it), then the rest of m. rename, when set, maps a label
// value to the one exported; values that map to the same name are summed.
func (c *collector) counterMap(ch chan<- prometheus.Metric, d *prometheus.Desc, m map[string]uint64, always []string, rename func(string) string) {
	sums := make(map[string]uint64, len(m)+len(always))
	for _, k := range always {
		sums[k] = 0
	}
	for k, v := range m {
		if rename != nil {
			k = rename(k)
		}
		sums[k] += v
	}
	for k, v := range sums {
		c.counter(ch, d, v, k)
	}
}

// knownCode folds received ERROR codes outside receivedCodes into "other".
func knownCode(code string) string {
	if slices.Contains(receivedCodes, code) {
		return code
	}
	return otherCode
}

// latencyHistogram converts the server's power-of-two histogram to a
// Prometheus histogram in seconds. The count is the sum of the buckets,
// read together, so that the +Inf bucket always equals it.
func latencyHistogram(h msgnet.Histogram) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Counts))
	var cum uint64
	for i, n := range h.Counts {
		cum += n
		if i < len(h.Bounds)-1 { // the last bound is +Inf, implied by the count
			buckets[h.Bounds[i].Seconds()] = cum
		}
	}
	return prometheus.MustNewConstHistogram(descLatency, cum, h.Sum.Seconds(), buckets)
}

// sendCodes is msgnet.ErrorCodes less the refusal codes.
func sendCodes() []string {
	var codes []string
	for _, c := range msgnet.ErrorCodes {
		if c != frame.CodeServerFull && c != msgnet.CodePerIPLimit {
			codes = append(codes, c)
		}
	}
	return codes
}
