package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msgnet/msgnet"
)

// `msgnet sub` and `msgnet pub`: a group's stream from the command line, as
// `nats sub`/`nats pub` and `mosquitto_sub`/`mosquitto_pub` do it. Both
// take a comma-separated list of addresses and reconnect by themselves;
// with --reliable, pub keeps what the server has not acknowledged and sends
// it again, and sub resumes where it left off: each message once, in order.

// streamFlags are pub's and sub's common flags.
type streamFlags struct {
	fs       *flag.FlagSet
	addr     *string
	id       *string
	group    *string
	reliable *bool
	verbose  *bool
	sec      *clientSecurity
}

func newStreamFlags(name string, stderr io.Writer) *streamFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return &streamFlags{
		fs:       fs,
		addr:     fs.String("addr", "127.0.0.1:8080", "server address; several, comma-separated, are tried in turn"),
		id:       fs.String("id", "msgnet-"+name, "client id sent in the hello"),
		group:    fs.String("group", "", "the group (required)"),
		reliable: fs.Bool("reliable", false, "acknowledged delivery: "+map[string]string{"pub": "keep each message until the server acknowledges it, send it again after a reconnection, and exit 0 only once all are acknowledged", "sub": "resume where it left off after a reconnection: each message once, in order"}[name]),
		verbose:  fs.Bool("v", false, "log connections and reconnections to stderr"),
		sec:      addClientSecurityFlags(fs),
	}
}

// client makes the command's client: reconnecting by itself, reliable if
// asked, logging to stderr when verbose.
func (f *streamFlags) client(stderr io.Writer) (*msgnet.Client, error) {
	opts, err := f.sec.options()
	if err != nil {
		return nil, err
	}
	opts = append(opts, msgnet.WithReconnect(50*time.Millisecond, 2*time.Second, 0), msgnet.WithConnectTimeout(3*time.Second))
	if *f.reliable {
		opts = append(opts, msgnet.WithReliable(msgnet.ReliableOptions{}))
	}
	if *f.verbose {
		opts = append(opts, msgnet.WithLogger(slog.New(slog.NewTextHandler(stderr, nil))))
	}
	return msgnet.NewClient(*f.id, opts...), nil
}

func (f *streamFlags) parse(args []string) error {
	if err := f.fs.Parse(args); err != nil {
		return errParse
	}
	if *f.group == "" {
		return errors.New("--group is required")
	}
	return nil
}

// sub prints every message of a group, its payload exactly as published,
// one per line, and nothing else on stdout.
func sub(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newStreamFlags("sub", stderr)
	if err := f.parse(args); err != nil {
		if err != errParse {
			fmt.Fprintf(stderr, "msgnet sub: %v\n", err)
		}
		return 2
	}
	c, err := f.client(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "msgnet sub: %v\n", err)
		return 2
	}
	out := bufio.NewWriter(stdout)
	var mu sync.Mutex
	c.OnStream(func(m msgnet.StreamMessage) {
		mu.Lock()
		out.Write(m.Payload)
		out.WriteByte('\n')
		out.Flush()
		mu.Unlock()
	})
	c.OnContinuityLost(func(l *msgnet.ContinuityLost) {
		fmt.Fprintf(stderr, "msgnet sub: continuity lost on %s: %s (missed from %d, going on from %d)\n", l.Stream, l.Reason, l.Missed, l.Next)
	})
	c.OnError(func(e *msgnet.ProtocolError) {
		fmt.Fprintf(stderr, "msgnet sub: the server says %v\n", e)
	})
	if err := c.Connect(ctx, splitList(*f.addr)...); err != nil {
		fmt.Fprintf(stderr, "msgnet sub: %v\n", err)
		return 1
	}
	defer c.Close()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = c.Subscribe(sctx, msgnet.GroupStream(*f.group))
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "msgnet sub: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "msgnet sub: listening on group %q\n", *f.group)
	<-ctx.Done()
	return 0
}

// pub publishes a text to a group, count times at a rate, {n} in the text
// standing for the message's number.
func pub(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newStreamFlags("pub", stderr)
	count := f.fs.Int("count", 1, "how many messages")
	rate := f.fs.Float64("rate", 0, "messages per second (0: as fast as the server takes them)")
	wait := f.fs.Duration("wait", 2*time.Minute, "with --reliable, how long to wait for the acknowledgements at the end")
	if err := f.parse(args); err != nil {
		if err != errParse {
			fmt.Fprintf(stderr, "msgnet pub: %v\n", err)
		}
		return 2
	}
	if f.fs.NArg() != 1 {
		fmt.Fprintln(stderr, "msgnet pub: give the text to publish, once ({n} stands for the message's number)")
		return 2
	}
	text := f.fs.Arg(0)
	c, err := f.client(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "msgnet pub: %v\n", err)
		return 2
	}
	var failed atomic.Int64
	c.OnPublishFailed(func(stream string, payload []byte, err error) {
		failed.Add(1)
		fmt.Fprintf(stderr, "msgnet pub: %q not published: %v\n", payload, err)
	})
	if err := c.Connect(ctx, splitList(*f.addr)...); err != nil {
		fmt.Fprintf(stderr, "msgnet pub: %v\n", err)
		return 1
	}
	defer c.Close()
	stream := msgnet.GroupStream(*f.group)
	start := time.Now()
	for n := 1; n <= *count; n++ {
		if *rate > 0 {
			due := start.Add(time.Duration(float64(n-1) / *rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return 1
				}
			}
		}
		msg := []byte(strings.ReplaceAll(text, "{n}", strconv.Itoa(n)))
		for {
			err := c.Publish(stream, msg)
			if err == nil {
				break
			}
			if !errors.Is(err, msgnet.ErrBufferFull) && !errors.Is(err, msgnet.ErrQueueFull) &&
				!errors.Is(err, msgnet.ErrNotConnected) && !errors.Is(err, msgnet.ErrSessionClosed) {
				fmt.Fprintf(stderr, "msgnet pub: message %d: %v\n", n, err)
				return 1
			}
			// Full or between connections: wait a little and try again.
			select {
			case <-time.After(time.Millisecond):
			case <-ctx.Done():
				return 1
			}
		}
	}
	if !*f.reliable {
		return 0 // Close (deferred) writes what is queued
	}
	wctx, cancel := context.WithTimeout(ctx, *wait)
	defer cancel()
	if err := c.WaitPublished(wctx); err != nil {
		fmt.Fprintf(stderr, "msgnet pub: %d messages not acknowledged: %v\n", c.Pending(), err)
		return 1
	}
	if n := failed.Load(); n > 0 {
		fmt.Fprintf(stderr, "msgnet pub: %d messages not published\n", n)
		return 1
	}
	return 0
}
