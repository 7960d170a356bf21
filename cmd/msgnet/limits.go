package main

import (
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/msgnet/msgnet"
)

func init() { serveFeatures = append(serveFeatures, newLimitsFeature) }

// limitsFeature holds `msgnet serve`'s limits on what peers may take
// (docs/PROTOCOL.md, section 6.5): the flags of every field of
// msgnet.Limits, which a SIGHUP reloads (reload.go).
type limitsFeature struct {
	baseFeature
	fs           *flag.FlagSet
	slowConsumer *string
	readBuffer   sizeFlag
	writeBuffer  sizeFlag
}

func newLimitsFeature(fs *flag.FlagSet) serveFeature {
	d := msgnet.DefaultLimits()
	f := &limitsFeature{fs: fs}
	fs.Int("max-connections", d.MaxConnections, "most sessions open at once (0: no limit)")
	fs.Int("max-connections-per-ip", d.MaxConnectionsPerIP, "most sessions from one IP address (0: no limit)")
	limit, queue, budget := sizeFlag(d.MessageSize), sizeFlag(d.SendQueueBytes), sizeFlag(d.ServerQueueBytes)
	fs.Var(&limit, "message-size-limit", "largest message payload, e.g. 1MiB, 64KiB, 1000")
	fs.Var(&queue, "send-queue-bytes", "bytes queued for one session before sends to it fail, e.g. 4MiB")
	fs.Var(&budget, "max-queued-bytes", "bytes queued on all sessions together before sends fail and connections are refused with server_busy, e.g. 256MiB (0: no bound)")
	fs.Duration("idle-timeout", d.IdleTimeout, "close sessions silent this long (0: never)")
	fs.Duration("handshake-timeout", d.HandshakeTimeout, "close connections that have not completed the handshake (or sent a first message) by then (0: never)")
	fs.Float64("message-rate", 0, "messages per second allowed per session, requests, PING and CONTROL included (0: no limit)")
	fs.Int("message-burst", 100, "burst allowed above --message-rate")
	fs.Float64("control-rate", 0, "frames other than DATA (PING, CONTROL, ...) per second allowed per session (0: no limit)")
	fs.Int("control-burst", 100, "burst allowed above --control-rate")
	fs.Int("max-client-id-length", d.MaxClientIDLength, "longest client id a hello may claim, in bytes (longer: ERROR bad_client_id)")
	fs.Int("max-groups-per-session", d.MaxGroupsPerSession, "most groups one session may join (more: ERROR too_many_groups)")
	fs.Int("max-group-name-length", d.MaxGroupNameLength, "longest group name, in bytes (longer: ERROR bad_group)")
	fs.Int("max-streams", d.MaxStreams, "most streams the server keeps open (0: no limit; more: refused with bad_stream)")
	f.slowConsumer = fs.String("slow-consumer", "error", "what a full send queue does: error (the send fails and is counted) or disconnect (the session is closed)")
	fs.Var(&f.readBuffer, "socket-read-buffer", "the kernel's receive buffer per TCP connection (SO_RCVBUF), e.g. 256KiB; 0: the kernel sizes it with the traffic (the default). Larger helps fast links with a long round trip; smaller bounds the kernel memory of many connections")
	fs.Var(&f.writeBuffer, "socket-write-buffer", "the kernel's send buffer per TCP connection (SO_SNDBUF); 0: the kernel's (see --socket-read-buffer)")
	return f
}

func (f *limitsFeature) options(*slog.Logger) ([]msgnet.Option, error) {
	opts := []msgnet.Option{
		msgnet.WithLimits(limitsFromFlags(f.fs)),
		msgnet.WithSocketBuffers(int(f.readBuffer), int(f.writeBuffer)),
	}
	switch *f.slowConsumer {
	case "error":
	case "disconnect":
		opts = append(opts, msgnet.WithSlowConsumerPolicy(msgnet.SlowConsumerDisconnect))
	default:
		return nil, fmt.Errorf("unknown --slow-consumer %q (error or disconnect)", *f.slowConsumer)
	}
	return opts, nil
}

// limitFlags are the flags of msgnet.Limits, which a SIGHUP may change.
var limitFlags = []string{
	"max-connections", "max-connections-per-ip", "message-size-limit", "send-queue-bytes", "max-queued-bytes",
	"idle-timeout", "handshake-timeout", "message-rate", "message-burst", "control-rate", "control-burst",
	"max-client-id-length", "max-groups-per-session", "max-group-name-length", "max-streams",
}

// limitsFromFlags reads msgnet.Limits from the flags of fs.
func limitsFromFlags(fs *flag.FlagSet) msgnet.Limits {
	get := func(name string) any { return fs.Lookup(name).Value.(flag.Getter).Get() }
	return msgnet.Limits{
		MaxConnections:      get("max-connections").(int),
		MaxConnectionsPerIP: get("max-connections-per-ip").(int),
		MessageSize:         int(get("message-size-limit").(size)),
		SendQueueBytes:      int(get("send-queue-bytes").(size)),
		ServerQueueBytes:    int64(get("max-queued-bytes").(size)),
		IdleTimeout:         get("idle-timeout").(time.Duration),
		HandshakeTimeout:    get("handshake-timeout").(time.Duration),
		MessageRate:         get("message-rate").(float64),
		MessageBurst:        get("message-burst").(int),
		ControlRate:         get("control-rate").(float64),
		ControlBurst:        get("control-burst").(int),
		MaxClientIDLength:   get("max-client-id-length").(int),
		MaxGroupsPerSession: get("max-groups-per-session").(int),
		MaxGroupNameLength:  get("max-group-name-length").(int),
		MaxStreams:          get("max-streams").(int),
	}
}
