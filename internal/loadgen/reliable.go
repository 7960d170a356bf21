package loadgen

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msgnet/msgnet"
)

// The reliable mode: acknowledged publish -> deliver through a server's
// stream (docs/PROTOCOL.md, section 6.7), measured the same way for any
// messaging system that has a ReliableClient: one publisher keeps at most
// Inflight publishes unacknowledged by the server, one subscriber receives
// the stream. Each payload carries the monotonic time of its publish call
// and its number; the subscriber records publish-to-delivery latency and
// checks that every message arrives once, in order. The msgnet client
// (WithReliable) is built in; bench/cmd/jsbench plugs in NATS JetStream.

// ReliableClient is one messaging system's publisher and subscriber on one
// stream, for RunReliable.
type ReliableClient interface {
	// Subscribe starts delivering the stream's messages published from
	// now on to deliver, in order, one at a time, and returns once the
	// subscription is in place. deliver must not keep the payload.
	Subscribe(ctx context.Context, deliver func(payload []byte)) error
	// WaitWindow returns once fewer than n publishes wait for the server's
	// acknowledgement, or ctx ends.
	WaitWindow(ctx context.Context, n int) error
	// Publish publishes payload without waiting for its acknowledgement.
	// The caller reuses payload after it returns.
	Publish(payload []byte) error
	// Close ends both connections.
	Close() error
}

// reliableHeader is the part of each payload the mode writes: the publish
// call's nanotime and the message's number, from 1.
const reliableHeader = 16

// DefaultReliableInflight is Config.Inflight in reliable mode.
const DefaultReliableInflight = 1024

// ReliableStats is what the reliable mode adds to a Result.
type ReliableStats struct {
	// Published counts publishes over the whole run (warm-up and
	// window), Delivered the deliveries to the subscriber by the end of
	// the drain.
	Published int64 `json:"published"`
	Delivered int64 `json:"delivered"`
	// Gaps counts messages the subscriber never got between two it got;
	// Repeats, messages it got again or out of order.
	Gaps    int64 `json:"gaps"`
	Repeats int64 `json:"repeats"`
}

// RunReliable runs the reliable mode (cfg.Mode is taken as ModeReliable)
// with the publisher and subscriber of c, which it closes.
func RunReliable(ctx context.Context, cfg Config, c ReliableClient) (*Result, error) {
	cfg.Mode = ModeReliable
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		c.Close()
		return nil, err
	}
	r := &runner{cfg: cfg, errs: newErrorLog()}
	res, err := r.reliable(ctx, c)
	if err != nil {
		return nil, err
	}
	r.finish(res)
	return res, nil
}

// reliable measures acknowledged publish -> deliver through c.
func (r *runner) reliable(ctx context.Context, c ReliableClient) (*Result, error) {
	defer c.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msgs := newMeter(1)
	prog := r.startProgress(msgs, nil)
	defer prog.stop()

	hist := newHist()
	var (
		mu       sync.Mutex // the subscriber's state, read at the end
		st       ReliableStats
		next     uint64 = 1 // the number the subscriber expects
		inWindow int64
		w        window
		measure  atomic.Bool // w is set
	)
	// The publisher also waits while MaxLag of its messages are not
	// delivered yet: a subscriber slower than the server's
	// acknowledgements would otherwise fall behind until retention drops
	// what it has not read.
	var (
		published, delivered atomic.Int64
		waiting              atomic.Bool
		wake                 = make(chan struct{}, 1)
	)
	maxLag := int64(r.cfg.MaxLag)
	deliver := func(p []byte) {
		t := nanotime()
		msgs.add(0, 1)
		if d := delivered.Add(1); waiting.Load() && published.Load()-d < maxLag {
			select {
			case wake <- struct{}{}:
			default:
			}
		}
		mu.Lock()
		defer mu.Unlock()
		st.Delivered++
		if len(p) < reliableHeader {
			r.errs.add(fmt.Errorf("a delivery of %d bytes, shorter than the %d-byte header", len(p), reliableHeader))
			return
		}
		at := int64(binary.LittleEndian.Uint64(p))
		seq := binary.LittleEndian.Uint64(p[8:])
		switch {
		case seq == next:
		case seq > next:
			st.Gaps += int64(seq - next)
		default:
			st.Repeats++
			return
		}
		next = seq + 1
		if measure.Load() && w.contains(t) {
			_ = hist.RecordValue(min(max(t-at, histMin), histMax))
			inWindow++
		}
	}
	sctx, scancel := context.WithTimeout(ctx, r.cfg.DialTimeout)
	err := c.Subscribe(sctx, deliver)
	scancel()
	if err != nil {
		return nil, fmt.Errorf("loadgen: subscribe: %w", err)
	}

	mu.Lock()
	w = r.planWindow()
	mu.Unlock()
	measure.Store(true)
	var wg sync.WaitGroup
	wg.Go(func() {
		p := make([]byte, r.cfg.payloadSize())
		for i := range p[reliableHeader:] {
			p[reliableHeader+i] = byte('a' + i%26)
		}
		for seq := uint64(1); ctx.Err() == nil && nanotime() < w.end; seq++ {
			for maxLag > 0 && published.Load()-delivered.Load() >= maxLag {
				waiting.Store(true)
				if published.Load()-delivered.Load() < maxLag {
					waiting.Store(false)
					break
				}
				select {
				case <-wake:
				case <-ctx.Done():
					return
				}
				waiting.Store(false)
			}
			if err := c.WaitWindow(ctx, r.cfg.Inflight); err != nil {
				if ctx.Err() == nil {
					r.errs.add(fmt.Errorf("publisher: %w", err))
				}
				return
			}
			binary.LittleEndian.PutUint64(p[8:], seq)
			binary.LittleEndian.PutUint64(p, uint64(nanotime()))
			if err := c.Publish(p); err != nil {
				r.errs.add(fmt.Errorf("publish %d: %w", seq, err))
				return
			}
			published.Add(1)
		}
	})
	measured, stats := r.measure(ctx, prog, w)
	wg.Wait()

	// What was published is acknowledged, and delivered, within Drain.
	prog.setPhase("drain")
	n := published.Load()
	dctx, dcancel := context.WithTimeout(ctx, r.cfg.Drain)
	if err := c.WaitWindow(dctx, 1); err != nil && ctx.Err() == nil {
		r.errs.add(fmt.Errorf("publishes not acknowledged by the end of the drain (%s): %w", r.cfg.Drain, err))
	}
	for delivered.Load() < n && dctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	dcancel()
	prog.setPhase("stop")
	c.Close()

	mu.Lock()
	defer mu.Unlock()
	st.Published = n
	if st.Gaps > 0 || st.Repeats > 0 {
		r.errs.add(fmt.Errorf("delivery not exactly once in order: %d missing, %d repeated", st.Gaps, st.Repeats))
	}
	if lost := st.Published - st.Delivered; lost > 0 {
		r.errs.add(fmt.Errorf("%d published messages not delivered by the end of the drain", lost))
	}
	res := &Result{Inflight: r.cfg.Inflight, MaxLag: r.cfg.MaxLag, Seconds: measured.seconds(), Server: stats, Histogram: hist,
		Messages: inWindow, Sent: st.Published, Lost: st.Published - st.Delivered}
	rs := st
	res.Reliable = &rs
	return res, nil
}

// msgnetReliable is the ReliableClient of a msgnet server: two reliable
// clients (WithReliable), one publishing to a group's stream, one
// subscribed to it.
type msgnetReliable struct {
	pub, sub *msgnet.Client
	stream   string
	failed   atomic.Int64
	lost     atomic.Int64
	once     sync.Once
}

// DialMsgnetReliable connects the reliable mode's publisher and subscriber
// to the msgnet server at cfg.Addr.
func DialMsgnetReliable(ctx context.Context, cfg Config) (ReliableClient, error) {
	cfg = cfg.WithDefaults()
	r := &runner{cfg: cfg}
	opts := []msgnet.Option{
		msgnet.WithConnectTimeout(cfg.DialTimeout),
		msgnet.WithMessageSizeLimit(cfg.MaxPayload),
		// Room for the window: Publish fails past MaxBytes.
		msgnet.WithReliable(msgnet.ReliableOptions{MaxBytes: max(8<<20, 2*cfg.Inflight*cfg.payloadSize())}),
		msgnet.WithLogger(slog.New(slog.DiscardHandler)),
	}
	if cfg.TLS != nil {
		opts = append(opts, msgnet.WithTLS(r.tlsConfig()))
	}
	m := &msgnetReliable{stream: msgnet.GroupStream(cfg.Group)}
	m.pub = msgnet.NewClient(cfg.ClientID+"-pub", opts...)
	m.sub = msgnet.NewClient(cfg.ClientID+"-sub", opts...)
	m.pub.OnPublishFailed(func(string, []byte, error) { m.failed.Add(1) })
	m.sub.OnContinuityLost(func(l *msgnet.ContinuityLost) { m.lost.Add(1) })
	dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	for _, c := range []*msgnet.Client{m.sub, m.pub} {
		if err := c.Connect(dctx, cfg.Addr); err != nil {
			m.Close()
			return nil, err
		}
	}
	return m, nil
}

func (m *msgnetReliable) Subscribe(ctx context.Context, deliver func([]byte)) error {
	m.sub.OnStream(func(sm msgnet.StreamMessage) { deliver(sm.Payload) })
	return m.sub.Subscribe(ctx, m.stream)
}

func (m *msgnetReliable) WaitWindow(ctx context.Context, n int) error {
	if err := m.pub.WaitPending(ctx, n-1); err != nil {
		return err
	}
	return m.problem()
}

func (m *msgnetReliable) Publish(p []byte) error {
	if err := m.pub.Publish(m.stream, p); err != nil {
		return err
	}
	return nil
}

// problem reports a failed publish or a lost continuity, which the
// benchmark counts as failures.
func (m *msgnetReliable) problem() error {
	if n := m.failed.Load(); n > 0 {
		return errors.New(strconv.FormatInt(n, 10) + " publishes failed")
	}
	if n := m.lost.Load(); n > 0 {
		return errors.New("the subscription lost continuity " + strconv.FormatInt(n, 10) + " times")
	}
	return nil
}

func (m *msgnetReliable) Close() error {
	m.once.Do(func() {
		m.pub.Close()
		m.sub.Close()
	})
	return nil
}
