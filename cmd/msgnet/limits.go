package main

import (
	"flag"
	"fmt"
	"log/slog"

	"github.com/msgnet/msgnet"
)

func init() { serveFeatures = append(serveFeatures, newLimitsFeature) }

// limitsFeature holds `msgnet serve`'s limits on what one peer may take
// (docs/PROTOCOL.md, section 6.5). The connection and message limits of
// the original flags (--max-connections, --message-size-limit,
// --idle-timeout) are in serve.go; the abuse limits of the handshake and
// rates are in security.go.
type limitsFeature struct {
	baseFeature
	clientIDLen  *int
	groups       *int
	groupNameLen *int
	queueBytes   sizeFlag
	serverQueue  sizeFlag
	readBuffer   sizeFlag
	writeBuffer  sizeFlag
	controlRate  *float64
	controlBurst *int
	slowConsumer *string
}

func newLimitsFeature(fs *flag.FlagSet) serveFeature {
	f := &limitsFeature{
		clientIDLen:  fs.Int("max-client-id-length", msgnet.DefaultMaxClientIDLength, "longest client id a hello may claim, in bytes (longer: ERROR bad_client_id)"),
		groups:       fs.Int("max-groups-per-session", msgnet.DefaultMaxGroupsPerSession, "most groups one session may join (more: ERROR too_many_groups)"),
		groupNameLen: fs.Int("max-group-name-length", msgnet.DefaultMaxGroupNameLength, "longest group name, in bytes (longer: ERROR bad_group)"),
		controlRate:  fs.Float64("control-rate", 0, "frames other than DATA (PING, CONTROL, ...) per second allowed per session (0: no limit)"),
		controlBurst: fs.Int("control-burst", 100, "burst allowed above --control-rate"),
		slowConsumer: fs.String("slow-consumer", "error", "what a full send queue does: error (the send fails and is counted) or disconnect (the session is closed)"),
		queueBytes:   sizeFlag(4 << 20),
		serverQueue:  sizeFlag(msgnet.DefaultServerQueueBytes),
	}
	fs.Var(&f.queueBytes, "send-queue-bytes", "bytes queued for one session before sends to it fail, e.g. 4MiB")
	fs.Var(&f.readBuffer, "socket-read-buffer", "the kernel's receive buffer per TCP connection (SO_RCVBUF), e.g. 256KiB; 0: the kernel sizes it with the traffic (the default). Larger helps fast links with a long round trip; smaller bounds the kernel memory of many connections")
	fs.Var(&f.writeBuffer, "socket-write-buffer", "the kernel's send buffer per TCP connection (SO_SNDBUF); 0: the kernel's (see --socket-read-buffer)")
	fs.Var(&f.serverQueue, "max-queued-bytes", "bytes queued on all sessions together before sends fail and connections are refused with server_busy, e.g. 256MiB (0: no bound)")
	return f
}

func (f *limitsFeature) options(*slog.Logger) ([]msgnet.Option, error) {
	opts := []msgnet.Option{
		msgnet.WithMaxClientIDLength(*f.clientIDLen),
		msgnet.WithMaxGroupsPerSession(*f.groups),
		msgnet.WithMaxGroupNameLength(*f.groupNameLen),
		msgnet.WithSendQueueBytes(int(f.queueBytes)),
		msgnet.WithServerQueueBytes(int(f.serverQueue)),
		msgnet.WithSocketBuffers(int(f.readBuffer), int(f.writeBuffer)),
	}
	if *f.controlRate > 0 {
		opts = append(opts, msgnet.WithControlRate(*f.controlRate, *f.controlBurst))
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
