// Command jsbench is `msgnet bench reliable` against NATS JetStream: the
// same measuring loop (internal/loadgen's RunReliable: a publisher with a
// bounded window of unacknowledged publishes, a subscriber recording
// publish-to-delivery latency and checking exactly-once order), with
// nats.go's JetStream client in place of msgnet's.
//
//	jsbench --addr 127.0.0.1:4222 --storage file --size 128 --inflight 1024
//
// It makes the stream afresh (one subject, limits as msgnet's default
// retention: 10,000 messages, 16 MiB, 10 minutes; duplicates window 2
// minutes), publishes with PublishMsgAsync and a Nats-Msg-Id on every
// message (JetStream's de-duplication, as msgnet's --store uses it), and
// subscribes with an ordered consumer (the client keeps its position, as a
// msgnet reliable subscriber does) or, with --consumer ackall, a pull
// consumer that acknowledges in runs (AckAll every 256 messages and every
// 50 ms, as a msgnet subscriber does).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/msgnet/msgnet/internal/loadgen"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are jsbench's flags beyond the load's.
type options struct {
	storage  string
	consumer string
	stream   string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("jsbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	cfg := loadgen.Config{Mode: loadgen.ModeReliable}
	var size sizeFlag = 64
	addr := fs.String("addr", "127.0.0.1:4222", "NATS server `host:port`")
	fs.Var(&size, "size", "payload size: bytes, or with a unit: 1KiB")
	fs.IntVar(&cfg.Inflight, "inflight", loadgen.DefaultReliableInflight, "publishes kept unacknowledged by the server, at most")
	fs.IntVar(&cfg.MaxLag, "max-lag", -1, "publishes not yet delivered to the subscriber, at most (-1: as --inflight; 0: no bound)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "length of the measured window")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Second, "load before the measured window, not recorded")
	fs.DurationVar(&cfg.Drain, "drain", 10*time.Second, "how long to wait, after the window, for the last acknowledgements and deliveries")
	fs.IntVar(&cfg.PID, "pid", 0, "server process id on this machine: report its CPU time and RSS from /proc")
	fs.StringVar(&o.storage, "storage", "file", "the stream's storage: file or memory")
	fs.StringVar(&o.consumer, "consumer", "ordered", "ordered (an ordered consumer) or ackall (a pull consumer acknowledging in runs)")
	fs.StringVar(&o.stream, "stream", "BENCH", "the JetStream stream (and subject, lower-cased), made afresh")
	asJSON := fs.Bool("json", false, "print the result as one JSON object (progress goes to stderr)")
	quiet := fs.Bool("quiet", false, "no progress line")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || (o.storage != "file" && o.storage != "memory") || (o.consumer != "ordered" && o.consumer != "ackall") {
		fmt.Fprintln(stderr, "jsbench: --storage file|memory, --consumer ordered|ackall, and no arguments")
		return 2
	}
	cfg.Addr, cfg.Size = *addr, int(size)
	if cfg.MaxLag < 0 {
		cfg.MaxLag = cfg.Inflight
	}
	cfg.DialTimeout = 5 * time.Second
	if !*quiet {
		cfg.Progress = stdout
		if *asJSON {
			cfg.Progress = stderr
		}
	}
	c, err := dial(ctx, cfg, o)
	if err != nil {
		fmt.Fprintf(stderr, "jsbench: %v\n", err)
		return 1
	}
	res, err := loadgen.RunReliable(ctx, cfg, c)
	if err != nil {
		fmt.Fprintf(stderr, "jsbench: %v\n", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fmt.Fprintf(stderr, "jsbench: %v\n", err)
			return 1
		}
		return 0
	}
	res.WriteText(stdout)
	return 0
}

// jsClient is a loadgen.ReliableClient on JetStream: a publisher
// connection and a subscriber connection.
type jsClient struct {
	o        options
	pubConn  *nats.Conn
	subConn  *nats.Conn
	js       jetstream.JetStream
	subject  string
	msgID    string // the publisher's id, before each message's number
	seq      uint64
	inflight []jetstream.PubAckFuture // unacknowledged, oldest first
	cc       jetstream.ConsumeContext
	stopAcks chan struct{}
	acksDone sync.WaitGroup
	once     sync.Once
}

func dial(ctx context.Context, cfg loadgen.Config, o options) (*jsClient, error) {
	url := "nats://" + cfg.Addr
	c := &jsClient{o: o, subject: lower(o.stream), stopAcks: make(chan struct{})}
	var err error
	if c.pubConn, err = nats.Connect(url, nats.Name("jsbench-pub"), nats.Timeout(cfg.DialTimeout), nats.NoReconnect()); err != nil {
		return nil, err
	}
	if c.subConn, err = nats.Connect(url, nats.Name("jsbench-sub"), nats.Timeout(cfg.DialTimeout), nats.NoReconnect()); err != nil {
		c.pubConn.Close()
		return nil, err
	}
	// The async window is kept by WaitWindow; nats.go's own bound is the
	// same, so that it never stalls first.
	if c.js, err = jetstream.New(c.pubConn, jetstream.WithPublishAsyncMaxPending(cfg.Inflight+1)); err != nil {
		c.Close()
		return nil, err
	}
	var b [8]byte
	rand.Read(b[:])
	c.msgID = hex.EncodeToString(b[:]) + "-"
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.js.DeleteStream(sctx, o.stream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		c.Close()
		return nil, fmt.Errorf("delete stream: %w", err)
	}
	storage := jetstream.FileStorage
	if o.storage == "memory" {
		storage = jetstream.MemoryStorage
	}
	// msgnet's default retention (msgnet.DefaultRetention) and its --store
	// stream settings (cluster/nats/store.go).
	_, err = c.js.CreateStream(sctx, jetstream.StreamConfig{
		Name: o.stream, Subjects: []string{c.subject},
		Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardOld,
		MaxMsgs: 10_000, MaxBytes: 16 << 20, MaxAge: 10 * time.Minute,
		Duplicates: 2 * time.Minute, Replicas: 1, AllowDirect: true, Storage: storage,
	})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("create stream: %w", err)
	}
	return c, nil
}

func (c *jsClient) Subscribe(ctx context.Context, deliver func([]byte)) error {
	js, err := jetstream.New(c.subConn)
	if err != nil {
		return err
	}
	// Up to 1,024 messages sent and not yet taken, as a msgnet
	// subscription's window (subWindow).
	window := jetstream.PullMaxMessages(1024)
	if c.o.consumer == "ordered" {
		cons, err := js.OrderedConsumer(ctx, c.o.stream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
		if err != nil {
			return err
		}
		c.cc, err = cons.Consume(func(m jetstream.Msg) { deliver(m.Data()) }, window)
		return err
	}
	cons, err := js.CreateConsumer(ctx, c.o.stream, jetstream.ConsumerConfig{
		AckPolicy: jetstream.AckAllPolicy, DeliverPolicy: jetstream.DeliverAllPolicy, MaxAckPending: 1024,
	})
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var last jetstream.Msg // delivered, not acknowledged
	n := 0
	c.cc, err = cons.Consume(func(m jetstream.Msg) {
		deliver(m.Data())
		mu.Lock()
		n++
		if n%256 == 0 {
			last = nil
			mu.Unlock()
			m.Ack()
			return
		}
		last = m
		mu.Unlock()
	}, window)
	if err != nil {
		return err
	}
	c.acksDone.Go(func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-c.stopAcks:
				return
			case <-t.C:
				mu.Lock()
				m := last
				last = nil
				mu.Unlock()
				if m != nil {
					m.Ack()
				}
			}
		}
	})
	return nil
}

func (c *jsClient) WaitWindow(ctx context.Context, n int) error {
	for len(c.inflight) >= n && len(c.inflight) > 0 {
		f := c.inflight[0]
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publish not acknowledged: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
		c.inflight[0] = nil
		c.inflight = c.inflight[1:]
	}
	if len(c.inflight) == 0 {
		c.inflight = c.inflight[:0:cap(c.inflight)]
	}
	return nil
}

func (c *jsClient) Publish(p []byte) error {
	c.seq++
	// nats.go keeps the message until its acknowledgement (to retry it),
	// so each gets its own payload.
	m := &nats.Msg{Subject: c.subject, Data: append([]byte(nil), p...),
		Header: nats.Header{jetstream.MsgIDHeader: []string{c.msgID + strconv.FormatUint(c.seq, 10)}}}
	f, err := c.js.PublishMsgAsync(m)
	if err != nil {
		return err
	}
	c.inflight = append(c.inflight, f)
	return nil
}

func (c *jsClient) Close() error {
	c.once.Do(func() {
		close(c.stopAcks)
		c.acksDone.Wait()
		if c.cc != nil {
			c.cc.Stop()
		}
		c.pubConn.Close()
		if c.subConn != nil {
			c.subConn.Close()
		}
	})
	return nil
}

func lower(s string) string {
	b := []byte(s)
	for i, ch := range b {
		if 'A' <= ch && ch <= 'Z' {
			b[i] = ch + 'a' - 'A'
		}
	}
	return string(b)
}

// sizeFlag is a byte count with an optional unit, as msgnet bench takes it.
type sizeFlag int

func (s *sizeFlag) String() string { return strconv.Itoa(int(*s)) }

func (s *sizeFlag) Set(v string) error {
	n, err := loadgen.ParseSize(v)
	*s = sizeFlag(n)
	return err
}
