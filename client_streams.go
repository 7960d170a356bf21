package msgnet

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/msgnet/msgnet/frame"
)

// A client's side of streams (docs/PROTOCOL.md, section 6.7): subscribing
// to streams and publishing to them. With WithReliable the client keeps
// what it published until the server acknowledges it, and sends it again
// after a reconnection (the server drops what it already has); it resumes
// each subscription where it left off, gets what it missed, exactly once
// and in order, and is told when that was not possible
// (OnContinuityLost).

// StreamMessage is a message received on a subscription.
type StreamMessage struct {
	Stream  string // "group:<name>" or "client:<id>"
	Epoch   uint64 // the stream's incarnation
	Offset  uint64 // its place in the stream, contiguous within an epoch
	Payload []byte // valid until the handler returns
}

// ContinuityLost says that a subscription could not go on where it left
// off: messages from Missed on left the stream's retention before they
// were delivered, or the stream's log was lost (a new epoch). Delivery goes
// on from Next.
type ContinuityLost struct {
	Stream string
	Missed uint64 // the first offset that was wanted (0: unknown, another epoch)
	Next   uint64 // where delivery goes on
	Epoch  uint64 // the stream's epoch now
	Reason string
}

func (e *ContinuityLost) Error() string {
	return "msgnet: continuity lost on " + e.Stream + ": " + e.Reason
}

// ReliableOptions bounds what a reliable client keeps (WithReliable).
type ReliableOptions struct {
	// MaxBytes bounds the payload bytes of publishes kept until the server
	// acknowledges them (default 8 MiB); past it Publish fails with
	// ErrBufferFull.
	MaxBytes int
	// MaxAge bounds how long a publish may stay unacknowledged (default 1
	// minute); then it is given up and reported to OnPublishFailed. The
	// server remembers a publisher's sequence numbers for longer, so a
	// retry within this age is never added twice.
	MaxAge time.Duration
}

// WithReliable makes a client's streams reliable: publishes are kept until
// acknowledged and sent again on a new connection, subscriptions resume
// where they left off, and the application sees each message of a stream
// once, in order (or is told, with OnContinuityLost, what could not be
// recovered). Combine it with WithReconnect. Client only.
func WithReliable(o ReliableOptions) Option {
	if o.MaxBytes <= 0 {
		o.MaxBytes = 8 << 20
	}
	if o.MaxAge <= 0 {
		o.MaxAge = time.Minute
	}
	return func(c *config) { c.reliable = &o }
}

// clientStreams is a client's state of streams, kept across connections.
type clientStreams struct {
	mu        sync.Mutex
	publisher string // random for the client's life: a restarted process is a new publisher
	seq       uint64 // the last sequence number used
	pending   []pendingPub
	pendBytes int
	drained   chan struct{} // closed when pending empties; replaced when it fills
	shrunk    chan struct{} // closed when pending shrinks, for WaitPending; nil when nobody waits
	subs      map[string]*clientSub
	// session is the connection the pending publishes were last (re)sent
	// on, in order, by resumeStreams: new publishes go there, behind them.
	session *Session

	onMessage handlerSlot[func(StreamMessage)]
	onLost    handlerSlot[func(*ContinuityLost)]
	onFailed  handlerSlot[func(stream string, payload []byte, err error)]
}

type pendingPub struct {
	seq     uint64
	stream  string
	payload []byte
	at      time.Time
}

type clientSub struct {
	epoch  uint64
	last   uint64 // the last offset delivered
	acked  uint64 // the last offset acknowledged to the server
	known  bool   // epoch and last are known (a subscribed arrived)
	wait   chan error
	active bool
}

// handlerSlot holds a handler.
type handlerSlot[T any] struct {
	mu sync.Mutex
	v  T
}

func (a *handlerSlot[T]) store(v T) { a.mu.Lock(); a.v = v; a.mu.Unlock() }
func (a *handlerSlot[T]) load() T   { a.mu.Lock(); defer a.mu.Unlock(); return a.v }

func newClientStreams() *clientStreams {
	var b [16]byte
	rand.Read(b[:])
	d := make(chan struct{})
	close(d)
	return &clientStreams{publisher: hex.EncodeToString(b[:]), subs: map[string]*clientSub{}, drained: d}
}

// OnStream sets the handler for messages of the client's subscriptions.
// Messages of one stream arrive in order, one at a time; with WithReliable,
// each exactly once.
func (c *Client) OnStream(h func(m StreamMessage)) { c.streams.onMessage.store(h) }

// OnContinuityLost sets the handler told when a subscription could not go
// on where it left off (see ContinuityLost).
func (c *Client) OnContinuityLost(h func(lost *ContinuityLost)) { c.streams.onLost.store(h) }

// OnPublishFailed sets the handler told of a publish that the server
// refused, or that stayed unacknowledged too long (ErrPublishExpired).
func (c *Client) OnPublishFailed(h func(stream string, payload []byte, err error)) {
	c.streams.onFailed.store(h)
}

// Subscribe subscribes the client to a stream (GroupStream, ClientStream)
// and waits until the server has confirmed it; messages go to OnStream.
// The subscription is renewed on every new connection: with WithReliable
// from where it left off, otherwise from then on. If ctx ends before the
// server answers, Subscribe returns ctx's error and the subscription stays
// asked for, renewed like a confirmed one, its messages going to OnStream
// once a server confirms it; Unsubscribe withdraws it.
func (c *Client) Subscribe(ctx context.Context, stream string) error {
	cs := c.streams
	cs.mu.Lock()
	sub := cs.subs[stream]
	if sub != nil && sub.known {
		// Confirmed already, and renewed by every new connection. A sub
		// sent again now would be answered behind the messages already on
		// their way, and would move the position back before them: they
		// would be delivered twice.
		cs.mu.Unlock()
		return nil
	}
	created := sub == nil
	if created {
		sub = &clientSub{}
		cs.subs[stream] = sub
	}
	sub.active = true
	wait := make(chan error, 1)
	sub.wait = wait
	msg := cs.subMsgLocked(stream, sub, c.cfg.reliable != nil)
	cs.mu.Unlock()
	// forget undoes a subscription that was never sent, so that it is not
	// sent after the next reconnection behind the caller's back.
	forget := func(err error) error {
		if created {
			cs.mu.Lock()
			if cs.subs[stream] == sub {
				delete(cs.subs, stream)
			}
			cs.mu.Unlock()
		}
		return err
	}
	s, err := c.current()
	if err != nil {
		return forget(err)
	}
	if s.features.Load()&featReliable == 0 {
		return forget(ErrNotNegotiated)
	}
	if err := s.c.Enqueue(frame.KindControl, 0, msg); err != nil {
		return forget(err)
	}
	select {
	case err := <-wait:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Unsubscribe ends a subscription.
func (c *Client) Unsubscribe(stream string) error {
	cs := c.streams
	cs.mu.Lock()
	delete(cs.subs, stream)
	cs.mu.Unlock()
	s, err := c.current()
	if err != nil {
		return err
	}
	b, _ := json.Marshal(subMsg{Op: "unsub", Stream: stream})
	return s.c.Enqueue(frame.KindControl, 0, b)
}

// subMsgLocked is the sub for a stream, naming its position when the
// subscription resumes. Lock must be held.
func (cs *clientStreams) subMsgLocked(stream string, sub *clientSub, resume bool) []byte {
	m := subMsg{Op: "sub", Stream: stream}
	if resume && sub.known {
		m.Epoch = epochText(sub.epoch)
		after := sub.last
		m.After = &after
	}
	b, _ := json.Marshal(m)
	return b
}

// Publish publishes payload to a stream (GroupStream, ClientStream). It
// never waits on the network. With WithReliable the payload is kept until
// the server acknowledges it, and sent again on a new connection; it fails
// with ErrBufferFull when that store is full, and with ErrQueueFull when
// the connection's send queue is (nothing is kept then: try again). Without, it fails with
// ErrNotConnected while there is no connection. WaitPublished waits for
// the acknowledgements.
func (c *Client) Publish(stream string, payload []byte) error {
	if len(payload)+8+1+len(stream) > c.cfg.maxPayload || len(stream) > 255 {
		return ErrMessageTooLarge
	}
	reliable := c.cfg.reliable != nil
	s, err := c.current()
	if err != nil && !reliable {
		return err
	}
	if err == nil && s.features.Load()&featReliable == 0 {
		return ErrNotNegotiated
	}
	cs := c.streams
	cs.mu.Lock()
	if reliable && cs.pendBytes+len(payload) > c.cfg.reliable.MaxBytes {
		cs.mu.Unlock()
		return ErrBufferFull
	}
	cs.seq++
	p := pendingPub{seq: cs.seq, stream: stream, payload: append([]byte(nil), payload...), at: time.Now()}
	if len(cs.pending) == 0 {
		cs.drained = make(chan struct{})
	}
	cs.pending = append(cs.pending, p)
	cs.pendBytes += len(payload)
	defer cs.mu.Unlock()
	if reliable {
		// The session the pending publishes were resent on, in order: a
		// session that connected since has not resent them yet, and a
		// publish sent on it now would overtake them (the server takes
		// a publisher's numbers in order, and one behind the last it
		// took is a repeat).
		s = cs.session
	}
	if s == nil {
		return nil // sent when the client is connected again
	}
	// Queued under the lock, for the same reason.
	if err := s.c.Enqueue(frame.KindData, frame.FlagPublish, p.frame()); err != nil {
		if reliable && errors.Is(err, ErrSessionClosed) {
			return nil // the connection is ending: resent on the next one
		}
		// Not taken (a full queue): not published at all, and not kept,
		// or an acknowledgement of a later one would count it done.
		cs.removeLocked(p.seq)
		return err
	}
	return nil
}

// WaitPublished waits until every publish so far has been acknowledged (or
// given up), or ctx ends.
func (c *Client) WaitPublished(ctx context.Context) error {
	c.streams.mu.Lock()
	d := c.streams.drained
	c.streams.mu.Unlock()
	select {
	case <-d:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// WaitPending waits until at most n publishes wait for their
// acknowledgement, or ctx ends: with Publish, a publisher that keeps a
// bounded window of unacknowledged messages in flight. WaitPending(ctx, 0)
// is WaitPublished.
func (c *Client) WaitPending(ctx context.Context, n int) error {
	cs := c.streams
	for {
		cs.mu.Lock()
		if len(cs.pending) <= n {
			cs.mu.Unlock()
			return nil
		}
		if cs.shrunk == nil {
			cs.shrunk = make(chan struct{})
		}
		w := cs.shrunk
		cs.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Pending reports how many publishes wait for their acknowledgement.
func (c *Client) Pending() int {
	c.streams.mu.Lock()
	defer c.streams.mu.Unlock()
	return len(c.streams.pending)
}

func (p *pendingPub) frame() []byte {
	b := make([]byte, 0, 8+1+len(p.stream)+len(p.payload))
	b = binary.BigEndian.AppendUint64(b, p.seq)
	b = append(b, byte(len(p.stream)))
	b = append(b, p.stream...)
	return append(b, p.payload...)
}

// removeLocked forgets a publish that was not sent. Lock must be held.
func (cs *clientStreams) removeLocked(seq uint64) {
	for i, p := range cs.pending {
		if p.seq == seq {
			cs.pendBytes -= len(p.payload)
			cs.pending = append(cs.pending[:i], cs.pending[i+1:]...)
			break
		}
	}
	cs.drainedLocked()
}

// drainedLocked wakes WaitPending and, when nothing is pending any more,
// WaitPublished: publishes left pending. Lock must be held.
func (cs *clientStreams) drainedLocked() {
	if cs.shrunk != nil {
		close(cs.shrunk)
		cs.shrunk = nil
	}
	if len(cs.pending) == 0 {
		select {
		case <-cs.drained:
		default:
			close(cs.drained)
		}
	}
}

// resume renews the client's subscriptions and sends its unacknowledged
// publishes on a new connection, before anything newer; without
// WithReliable, the publishes of the lost connection are given up.
func (c *Client) resumeStreams(s *Session) {
	if s.features.Load()&featReliable == 0 {
		c.streams.mu.Lock()
		c.streams.session = nil
		c.streams.mu.Unlock()
		return
	}
	cs := c.streams
	reliable := c.cfg.reliable != nil
	// What expired while away is given up, not sent again: past the
	// server's de-duplication window it could be stored twice.
	c.expirePublishes(time.Now())
	cs.mu.Lock()
	var failed []pendingPub
	for stream, sub := range cs.subs {
		s.c.EnqueueForce(frame.KindControl, 0, cs.subMsgLocked(stream, sub, reliable))
	}
	if reliable {
		for i := range cs.pending {
			s.c.EnqueueForce(frame.KindData, frame.FlagPublish, cs.pending[i].frame())
		}
		cs.session = s
	} else {
		failed, cs.pending, cs.pendBytes = cs.pending, nil, 0
		cs.drainedLocked()
	}
	cs.mu.Unlock()
	for _, p := range failed {
		c.publishFailed(p, ErrConnectionLost)
	}
}

func (c *Client) publishFailed(p pendingPub, err error) {
	if h := c.streams.onFailed.load(); h != nil {
		h(p.stream, p.payload, err)
	}
}

// handleStreamMessage delivers a message of a subscription, once: one at
// or before the last delivered offset is a repeat and is dropped.
func (c *Client) handleStreamMessage(s *Session, p []byte) error {
	name, rest, ok := cutName(p)
	if !ok || len(rest) < 8 {
		return &ProtocolError{Code: CodeBadStream, Message: "a stream message is a stream name, an offset and a payload"}
	}
	off := binary.BigEndian.Uint64(rest)
	cs := c.streams
	cs.mu.Lock()
	sub := cs.subs[string(name)]
	if sub == nil || (sub.known && off <= sub.last) {
		cs.mu.Unlock()
		return nil
	}
	sub.last, sub.known = off, true
	epoch := sub.epoch
	cs.mu.Unlock()
	if h := cs.onMessage.load(); h != nil {
		h(StreamMessage{Stream: string(name), Epoch: epoch, Offset: off, Payload: rest[8:]})
	}
	// Acknowledge after the handler: an acknowledged message was handled.
	// In runs, so that the server's window keeps moving without an answer
	// per message.
	cs.mu.Lock()
	ack := off-sub.acked >= subWindow/4
	if ack {
		sub.acked = off
	}
	cs.mu.Unlock()
	if ack {
		c.sendAck(s, string(name), off)
	}
	return nil
}

func (c *Client) sendAck(s *Session, stream string, off uint64) {
	b := make([]byte, 0, 1+len(stream)+8)
	b = append(b, byte(len(stream)))
	b = append(b, stream...)
	b = binary.BigEndian.AppendUint64(b, off)
	s.c.Enqueue(frame.KindData, frame.FlagAck, b)
}

// flushAcks acknowledges what was delivered and not yet acknowledged: the
// client's ticker calls it, so a quiet stream is acknowledged too.
func (c *Client) flushAcks(s *Session) {
	cs := c.streams
	type ack struct {
		stream string
		off    uint64
	}
	var acks []ack
	cs.mu.Lock()
	for name, sub := range cs.subs {
		if sub.known && sub.last > sub.acked {
			sub.acked = sub.last
			acks = append(acks, ack{name, sub.last})
		}
	}
	cs.mu.Unlock()
	for _, a := range acks {
		c.sendAck(s, a.stream, a.off)
	}
}

// handlePubAck takes the server's answer to a run of publishes.
func (c *Client) handlePubAck(p []byte) error {
	if len(p) < 17 {
		return &ProtocolError{Code: CodeBadStream, Message: "a publish acknowledgement is two sequence numbers and a status"}
	}
	first, last, status := binary.BigEndian.Uint64(p), binary.BigEndian.Uint64(p[8:]), p[16]
	cs := c.streams
	cs.mu.Lock()
	var failed []pendingPub
	keep := cs.pending[:0]
	for _, pp := range cs.pending {
		if pp.seq >= first && pp.seq <= last || status == 0 && pp.seq < first {
			// Acknowledged (a publish before first was acknowledged on a
			// connection that died before its answer arrived).
			cs.pendBytes -= len(pp.payload)
			if status != 0 {
				failed = append(failed, pp)
			}
			continue
		}
		keep = append(keep, pp)
	}
	for i := len(keep); i < len(cs.pending); i++ {
		cs.pending[i] = pendingPub{}
	}
	cs.pending = keep
	cs.drainedLocked()
	cs.mu.Unlock()
	err := errors.New(string(p[17:]))
	for _, pp := range failed {
		c.publishFailed(pp, err)
	}
	return nil
}

// expirePublishes gives up the publishes older than MaxAge.
func (c *Client) expirePublishes(now time.Time) {
	if c.cfg.reliable == nil {
		return
	}
	cs := c.streams
	limit := now.Add(-c.cfg.reliable.MaxAge)
	cs.mu.Lock()
	var expired []pendingPub
	for len(cs.pending) > 0 && cs.pending[0].at.Before(limit) {
		expired = append(expired, cs.pending[0])
		cs.pendBytes -= len(cs.pending[0].payload)
		cs.pending = cs.pending[1:]
	}
	cs.drainedLocked()
	cs.mu.Unlock()
	for _, p := range expired {
		c.publishFailed(p, ErrPublishExpired)
	}
}

// handleStreamControl takes the server's CONTROL frames of streams:
// subscribed, refused, lost.
func (c *Client) handleStreamControl(op string, p []byte) bool {
	cs := c.streams
	switch op {
	case "subscribed":
		var m subscribedMsg
		if json.Unmarshal(p, &m) != nil {
			return true
		}
		epoch, _ := strconv.ParseUint(m.Epoch, 10, 64)
		cs.mu.Lock()
		sub := cs.subs[m.Stream]
		var wait chan error
		if sub != nil {
			sub.epoch, sub.last, sub.known = epoch, m.Next-1, true
			sub.acked = sub.last
			wait, sub.wait = sub.wait, nil
		}
		cs.mu.Unlock()
		if m.Lost != nil {
			c.continuityLost(&ContinuityLost{Stream: m.Stream, Missed: m.Lost.Missed, Next: m.Next, Epoch: epoch, Reason: m.Lost.Reason})
		}
		if wait != nil {
			wait <- nil
		}
	case "refused":
		var m refusedMsg
		json.Unmarshal(p, &m)
		cs.mu.Lock()
		var wait chan error
		sub := cs.subs[m.Stream]
		if sub != nil {
			wait, sub.wait = sub.wait, nil
			if !sub.known {
				delete(cs.subs, m.Stream)
			}
		}
		cs.mu.Unlock()
		if sub == nil {
			return true // unsubscribed meanwhile: nothing to renew
		}
		e := &ProtocolError{Code: m.Code, Message: m.Message, Remote: true}
		if wait != nil {
			wait <- e
			return true
		}
		// A subscription renewed on a new connection: nobody waits for
		// the answer, and the stream delivers nothing on this one. It is
		// renewed again on the next.
		c.log.Warn("stream subscription refused on this connection", "stream", m.Stream, "code", m.Code, "message", m.Message)
		if h := c.onError.Load(); h != nil {
			(*h)(e)
		}
	case "lost":
		var m lostMsg
		if json.Unmarshal(p, &m) != nil {
			return true
		}
		epoch, _ := strconv.ParseUint(m.Epoch, 10, 64)
		cs.mu.Lock()
		if sub := cs.subs[m.Stream]; sub != nil {
			sub.epoch, sub.last, sub.known = epoch, m.Next-1, true
			sub.acked = sub.last
		}
		cs.mu.Unlock()
		c.continuityLost(&ContinuityLost{Stream: m.Stream, Missed: m.Missed, Next: m.Next, Epoch: epoch, Reason: m.Reason})
	default:
		return false
	}
	return true
}

func (c *Client) continuityLost(l *ContinuityLost) {
	c.log.Warn("stream continuity lost", "stream", l.Stream, "missed", l.Missed, "next", l.Next, "reason", l.Reason)
	if h := c.streams.onLost.load(); h != nil {
		h(l)
	}
}

// streamTicker acknowledges delivered messages and gives up expired
// publishes while a connection lives.
func (c *Client) streamTicker(s *Session, ended <-chan struct{}) {
	defer c.wg.Done()
	t := time.NewTicker(streamTick)
	defer t.Stop()
	for {
		select {
		case <-ended:
			return
		case now := <-t.C:
			c.flushAcks(s)
			c.expirePublishes(now)
		}
	}
}

// streamTick is how often a client acknowledges what it was delivered
// when a run of acknowledgements has not done so already.
const streamTick = 50 * time.Millisecond
