package msgnet

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/msgnet/msgnet/frame"
)

// Streams: acknowledged delivery (docs/PROTOCOL.md, section 6.7). A stream
// is a server-side log of messages with positions (an epoch and an
// offset): "group:<name>" holds a group's messages, "client:<id>" the
// messages addressed to a client id. A client that negotiated "reliable"
// subscribes to streams naming where it left off; the server replays what
// it missed from the store, in order, then goes on live, and acknowledged
// publishes enter their stream exactly once.

// Stream name prefixes.
const (
	groupPrefix  = "group:"
	clientPrefix = "client:"
)

// GroupStream is the name of a group's stream.
func GroupStream(group string) string { return groupPrefix + group }

// ClientStream is the name of the stream of messages addressed to a client
// id (its inbox).
func ClientStream(clientID string) string { return clientPrefix + clientID }

// subWindow bounds the messages a subscription has sent and not yet had
// acknowledged: the server sends no more until the client acknowledges.
const subWindow = 1024

// Position is where a message sits in its stream.
type Position struct {
	Epoch  uint64 // the stream's incarnation: offsets of another epoch are not comparable
	Offset uint64 // 1 for the stream's first message, contiguous within an epoch
}

// streams is a server's streams and the state of its publishers.
type streams struct {
	srv    *Server
	store  Store
	shared SharedStore // store, when the cluster's nodes share it; else nil

	openMu   sync.Mutex // serializes opening streams in the store
	idleScan time.Time  // when reclaim last found nothing to drop; guarded by openMu
	mu       sync.Mutex
	m        map[string]*stream
	closing  bool                 // close was called: a stream opened now has its watch stopped
	absent   map[string]time.Time // shared store: group streams found not to exist, and when
	pubs     map[pubKey]*pubState // publishers' last sequence numbers, for de-duplication
}

// absentFor is how long a shared store's answer that a group's stream
// does not exist is trusted, so that SendGroup to a group without one
// does not ask the store each time. A group stream created on another
// node is appended to from this one at most this long after.
const absentFor = time.Second

// pubKey names a publisher: a client id and the publisher id its client
// chose for the process's life, so that a restarted process (which counts
// from 1 again) is a new publisher.
type pubKey struct{ client, publisher string }

type pubState struct {
	// mu serializes a publisher's publishes from the check of its number to
	// the append: two sessions of one publisher (an old connection still
	// draining, and its replacement resending) must not both add one.
	mu   sync.Mutex
	last uint64 // the highest sequence number accepted
	seen int64  // unix nanoseconds of the last publish, for forgetting idle publishers
}

// pubMemory is how long a publisher's last sequence number is kept after
// its last publish. A client gives up a publish that stays unacknowledged
// for ReliableOptions.MaxAge (one minute by default), so its retries never
// come later than this.
const pubMemory = 10 * time.Minute

// stream is one stream on this server: its log and its subscriptions. mu
// orders appends with the fan-out to subscriptions and with subscribing,
// so a subscription sees every offset exactly once.
type stream struct {
	name  string
	group string // the group of a group stream; "" otherwise
	log   StreamLog
	ss    *streams
	// shared: the log is a shared store's (WatchedLog), appended to by
	// every node; its watch fans out what any node appends.
	shared bool

	mu   sync.Mutex
	subs map[*subscription]struct{}
	// closed: reclaim dropped the stream to make room for another; whoever
	// finds it set looks the name up again (ss.get).
	closed bool
	// watched: the shared log's watch runs, and it, not append, fans out.
	// A shared log whose watch could not start yet fans out its own
	// appends, and what other nodes append is read at each sweep, which
	// also starts the watch again (expire). stopWatch stops it; noWatch:
	// the server is closing, and no watch may start.
	watched   bool
	stopWatch func()
	noWatch   bool
	// watchWarned is when a failed watch was last logged.
	watchWarned time.Time
	// readWarned is when a failed read of the log was last logged: a
	// subscription behind a failing store is retried at every ack, watched
	// message and sweep, and logged at most once per readWarnEvery.
	readWarned time.Time
}

// readWarnEvery bounds how often one stream logs a failed read.
const readWarnEvery = 10 * time.Second

// subscription is one session's subscription to a stream. Its fields are
// guarded by the stream's mu.
type subscription struct {
	s     *Session
	st    *stream
	epoch uint64
	next  uint64 // the next offset to send
	acked uint64 // the highest offset acknowledged
}

func newStreams(srv *Server, store Store) *streams {
	ss := &streams{srv: srv, store: store, m: map[string]*stream{}, absent: map[string]time.Time{}, pubs: map[pubKey]*pubState{}}
	ss.shared, _ = store.(SharedStore)
	return ss
}

// validStream reports whether name is a stream a peer may use, and which
// kind it is.
func (ss *streams) validStream(name string) (group, client string, ok bool) {
	l := ss.srv.lim()
	switch {
	case strings.HasPrefix(name, groupPrefix):
		g := name[len(groupPrefix):]
		return g, "", validGroup(g, l.MaxGroupNameLength)
	case strings.HasPrefix(name, clientPrefix):
		c := name[len(clientPrefix):]
		return "", c, validClientID(c, l.MaxClientIDLength)
	}
	return "", "", false
}

// get returns the named stream, opening it in the store when create is
// set and it is not open yet. Without create, it returns nil for a stream
// that does not exist: not open here, or, with a shared store, not in the
// store either.
func (ss *streams) get(name string, create bool) (*stream, error) {
	ss.mu.Lock()
	st := ss.m[name]
	ss.mu.Unlock()
	if st != nil {
		return st, nil
	}
	if !create {
		if ss.shared == nil || !ss.mayExist(name) {
			return nil, nil
		}
		ok, err := ss.shared.Exists(name)
		if err != nil {
			return nil, &storeError{err}
		}
		if !ok {
			if strings.HasPrefix(name, groupPrefix) {
				ss.mu.Lock()
				if len(ss.absent) >= 10_000 {
					clear(ss.absent)
				}
				ss.absent[name] = time.Now()
				ss.mu.Unlock()
			}
			return nil, nil
		}
	}
	ss.openMu.Lock()
	defer ss.openMu.Unlock()
	ss.mu.Lock()
	st, n := ss.m[name], len(ss.m)
	ss.mu.Unlock()
	if st != nil {
		return st, nil
	}
	if max := ss.srv.lim().MaxStreams; max > 0 && n >= max && !ss.reclaim() {
		return nil, errTooManyStreams
	}
	log, err := ss.store.Open(name, ss.srv.retentionFor(name))
	if err != nil {
		return nil, &storeError{err}
	}
	st = &stream{name: name, log: log, ss: ss, subs: map[*subscription]struct{}{}}
	if g, ok := strings.CutPrefix(name, groupPrefix); ok {
		st.group = g
	}
	if _, ok := log.(WatchedLog); ok && ss.shared != nil {
		st.shared = true
		st.watch()
	}
	ss.mu.Lock()
	closing := ss.closing
	ss.m[name] = st
	delete(ss.absent, name)
	ss.mu.Unlock()
	if closing {
		// close listed the streams before this one: stop its watch here.
		if stop := st.unwatch(); stop != nil {
			stop()
		}
	}
	return st, nil
}

// reclaim drops one stream that holds nothing and has no subscription, to
// make room for a new one at Limits.MaxStreams, and reports whether it
// did: streams a peer opened and left empty must not keep others out for
// good. A scan that finds none is not repeated for a second, so a peer
// asking for new streams at the limit costs a map walk at most that often.
// A dropped stream reopens with a new epoch in the memory store: a
// subscriber resuming it is told continuity_lost, with nothing missed.
// openMu must be held.
func (ss *streams) reclaim() bool {
	if time.Since(ss.idleScan) < time.Second {
		return false
	}
	ss.mu.Lock()
	list := make([]*stream, 0, len(ss.m))
	for _, st := range ss.m {
		list = append(list, st)
	}
	ss.mu.Unlock()
	for _, st := range list {
		st.mu.Lock()
		_, first, last := st.log.Bounds()
		idle := len(st.subs) == 0 && first > last && !st.closed
		var stop func()
		if idle {
			st.closed, stop = true, st.stopWatch
		}
		st.mu.Unlock()
		if !idle {
			continue
		}
		ss.mu.Lock()
		delete(ss.m, st.name)
		ss.mu.Unlock()
		if stop != nil {
			stop()
		}
		if f, ok := ss.store.(forgetter); ok {
			f.forget(st.name, st.log)
		}
		return true
	}
	ss.idleScan = time.Now()
	return false
}

// forgetter is a store that can let go of an empty stream's log
// (reclaim); a store without it keeps the log, and hands it back when the
// stream is opened again.
type forgetter interface {
	forget(name string, log StreamLog)
}

// isOpen reports whether the stream named name (as bytes: the lookup
// builds no string) is open on this server.
func (ss *streams) isOpen(name []byte) bool {
	ss.mu.Lock()
	_, ok := ss.m[string(name)]
	ss.mu.Unlock()
	return ok
}

// mayExist reports whether a shared store is worth asking about name: a
// group stream found absent within absentFor is not.
func (ss *streams) mayExist(name string) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	at, ok := ss.absent[name]
	return !ok || time.Since(at) > absentFor
}

// close stops the streams' watches; the server is closing.
// It returns a channel closed once every watch has stopped: a JetStream
// watch whose NATS connection is reconnecting may only stop once the
// store closes that connection, so the caller closes the store before
// waiting on it.
func (ss *streams) close() <-chan struct{} {
	ss.mu.Lock()
	ss.closing = true
	list := make([]*stream, 0, len(ss.m))
	for _, st := range ss.m {
		list = append(list, st)
	}
	ss.mu.Unlock()
	var wg sync.WaitGroup
	for _, st := range list {
		if stop := st.unwatch(); stop != nil {
			wg.Go(stop)
		}
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}

// append adds payload to st and sends it to the subscriptions that are
// caught up; the others get it from the log when they catch up.
func (st *stream) append(payload []byte, key string) (Position, bool, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return Position{}, false, errReclaimed
	}
	off, dup, err := st.log.Append(payload, key)
	var pe *ProtocolError
	if err != nil && !errors.As(err, &pe) {
		err = &storeError{err} // a refusal (too large, store full) is not a failure
	}
	if err != nil || dup {
		epoch, _, _ := st.log.Bounds()
		return Position{epoch, off}, dup, err
	}
	epoch, _, _ := st.log.Bounds()
	if !st.watched {
		st.fanOut(epoch, off, payload)
	}
	return Position{epoch, off}, false, nil
}

// errReclaimed tells whoever held a stream that reclaim dropped it: the
// name is to be looked up again.
var errReclaimed = errors.New("msgnet: stream reclaimed")

// errTooManyStreams refuses a stream past Limits.MaxStreams.
var errTooManyStreams = &ProtocolError{Code: CodeBadStream, Message: "the server keeps as many streams as it may"}

// storeError is a failure of the store, rather than of what was asked of
// it: worth trying again, on this node later or on another.
type storeError struct{ err error }

func (e *storeError) Error() string { return "stream store: " + e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

// storeFailed ends a session whose publish or subscription the store could
// not take, with DISCONNECT store_unavailable: its client reconnects, and
// resends and resubscribes in order, rather than taking a failure for
// final. Its later publishes are ignored: none may overtake the failed one.
func (s *Session) storeFailed(err error) {
	e := s.x()
	e.pubHalted = true
	s.close(&ProtocolError{Code: CodeStoreUnavailable, Message: err.Error()}, true)
}

// watch starts the shared log's watch, unless the stream is closed or
// closing. A watch that cannot start (JetStream cannot start a consumer
// while a lost node's streams elect their leaders) is logged, and the
// stream goes on without: the sweep reads what other nodes append and
// tries again (expire). Refusing the subscription instead left its client
// silent for good; ending its session, in a loop for as long as the store
// fails. The stream lock must not be held: the watch takes it.
//
// It reports whether the watch could start.
func (st *stream) watch() bool {
	stop, err := st.log.(WatchedLog).Watch(st.watchedAppend)
	st.mu.Lock()
	switch {
	case err != nil:
		if now := time.Now(); now.Sub(st.watchWarned) >= readWarnEvery {
			st.watchWarned = now
			st.ss.srv.log.Warn("stream store: watching a stream failed; reading it at each sweep until the watch starts",
				"stream", st.name, "err", err)
		}
		st.mu.Unlock()
		return false
	case st.closed || st.noWatch:
		st.mu.Unlock()
		stop() // may wait for the store: not under the lock
		return true
	}
	st.watched, st.stopWatch = true, stop
	if !st.watchWarned.IsZero() {
		st.ss.srv.log.Info("stream store: watching a stream again", "stream", st.name)
		st.watchWarned = time.Time{}
	}
	st.mu.Unlock()
	return true
}

// unwatch keeps a watch from starting and returns the running one's stop
// (nil if none) for the caller to call outside the lock: the server is
// closing.
func (st *stream) unwatch() func() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.noWatch = true
	stop := st.stopWatch
	st.stopWatch = nil
	return stop
}

// watchedAppend fans out a message the shared log's watch reports,
// appended on this node or another.
func (st *stream) watchedAppend(off uint64, payload []byte) {
	st.mu.Lock()
	defer st.mu.Unlock()
	epoch, _, _ := st.log.Bounds()
	st.fanOut(epoch, off, payload)
}

// fanOut sends the message at off to the subscriptions that are caught
// up; one that is behind catches up from the log. Stream lock must be
// held.
func (st *stream) fanOut(epoch, off uint64, payload []byte) {
	for sub := range st.subs {
		switch {
		case sub.epoch == epoch && sub.next == off && sub.next-1-sub.acked < subWindow:
			if sub.send(off, payload) {
				sub.next++
			}
		case sub.next < off:
			sub.pump()
		}
	}
}

// send queues one message of the subscription's stream on its session, and
// reports whether it was queued. Stream lock must be held.
func (sub *subscription) send(off uint64, payload []byte) bool {
	name := sub.st.name
	b := make([]byte, 0, 1+len(name)+8+len(payload))
	b = append(b, byte(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint64(b, off)
	b = append(b, payload...)
	return sub.s.c.Enqueue(frame.KindData, frame.FlagStream, b) == nil
}

// pump sends what the subscription has not been sent yet, from the log,
// within its window; what the session's queue does not take is sent at the
// next acknowledgement or sweep. If retention overtook the subscription, or
// the log's epoch changed, the session is told continuity was lost and the
// subscription goes on from what is retained. Stream lock must be held.
func (sub *subscription) pump() {
	epoch, first, last := sub.st.log.Bounds()
	if epoch != sub.epoch || sub.next < first {
		reason := "the messages after its position have left retention"
		if epoch != sub.epoch {
			reason = "the stream's epoch changed: its log was lost (a restart without a durable store)"
		}
		if sub.s.sendStreamControl(lostMsg{Op: "lost", Stream: sub.st.name, Code: CodeContinuityLost,
			Epoch: epochText(epoch), Next: first, Missed: sub.next, Reason: reason}) != nil {
			return // the queue is full: the jump waits until the client can be told of it
		}
		if epoch != sub.epoch {
			sub.epoch, sub.acked = epoch, first-1
		}
		sub.next = first
		sub.acked = max(sub.acked, first-1)
	}
	for sub.next <= last && sub.next-1-sub.acked < subWindow {
		sent := true
		n := 0
		err := sub.st.log.Read(sub.next, int(min(last-sub.next+1, 256)), func(off uint64, p []byte) bool {
			n++
			if sent = sub.send(off, p); sent {
				sub.next = off + 1
			}
			return sent && sub.next-1-sub.acked < subWindow
		})
		if err != nil {
			sub.st.readFailed(sub.next, err)
		}
		if !sent || n == 0 {
			return
		}
	}
}

// readFailed logs a failed read of the log, at most once per
// readWarnEvery: the subscription waits for its next ack, watched message
// or sweep to try again, and a store that keeps failing must not stall it
// unseen. Stream lock must be held.
func (st *stream) readFailed(from uint64, err error) {
	if now := time.Now(); now.Sub(st.readWarned) >= readWarnEvery {
		st.readWarned = now
		st.ss.srv.log.Warn("stream store: reading a stream for a subscription failed; retrying", "stream", st.name, "from", from, "err", err)
	}
}

// epochText is an epoch as the protocol writes it: a decimal string, since
// JSON numbers lose precision past 2^53.
func epochText(e uint64) string { return strconv.FormatUint(e, 10) }

// Control messages of streams (docs/PROTOCOL.md, section 6.7).
type (
	subMsg struct {
		Op     string  `json:"op"`
		Stream string  `json:"stream"`
		Epoch  string  `json:"epoch,omitempty"`
		After  *uint64 `json:"after,omitempty"`
	}
	subscribedMsg struct {
		Op     string    `json:"op"`
		Stream string    `json:"stream"`
		Epoch  string    `json:"epoch"`
		First  uint64    `json:"first"`
		Last   uint64    `json:"last"`
		Next   uint64    `json:"next"`
		Lost   *lostInfo `json:"lost,omitempty"`
	}
	lostInfo struct {
		Code   string `json:"code"`
		Missed uint64 `json:"missed"` // the first offset the client wanted
		Reason string `json:"reason"`
	}
	lostMsg struct {
		Op     string `json:"op"`
		Stream string `json:"stream"`
		Code   string `json:"code"`
		Epoch  string `json:"epoch"`
		Next   uint64 `json:"next"`
		Missed uint64 `json:"missed"`
		Reason string `json:"reason"`
	}
	refusedMsg struct {
		Op      string `json:"op"`
		Stream  string `json:"stream"`
		Code    string `json:"code"`
		Message string `json:"message"`
	}
)

func (s *Session) sendStreamControl(v any) error {
	b, _ := json.Marshal(v)
	return s.c.Enqueue(frame.KindControl, 0, b)
}

// subscribe handles a client's sub: it opens the stream, works out where
// to start (after the position the client names, or the position it last
// acknowledged on this server, or after the last message), says so, and
// replays from there.
func (ss *streams) subscribe(s *Session, m *controlMsg) {
	name := m.Stream
	refuse := func(code, msg string) {
		s.sendStreamControl(refusedMsg{Op: "refused", Stream: name, Code: code, Message: msg})
	}
	_, client, ok := ss.validStream(name)
	if !ok {
		refuse(CodeBadStream, "a stream is group:<group> or client:<client id>")
		return
	}
	if client != "" && client != s.ClientID() {
		refuse(CodeBadStream, "a session may subscribe only to its own client id's stream")
		return
	}
	for !ss.trySubscribe(s, m, client) {
		// reclaim dropped the stream between looking it up and locking it
	}
}

// trySubscribe is subscribe once the stream's name is checked; it reports
// false if the stream it found was reclaimed before it could subscribe.
func (ss *streams) trySubscribe(s *Session, m *controlMsg, client string) bool {
	name := m.Stream
	refuse := func(code, msg string) {
		s.sendStreamControl(refusedMsg{Op: "refused", Stream: name, Code: code, Message: msg})
	}
	st, err := ss.get(name, true)
	var (
		se *storeError
		pe *ProtocolError
	)
	switch {
	case errors.As(err, &se):
		s.storeFailed(err)
		return true
	case errors.As(err, &pe):
		refuse(pe.Code, pe.Message)
		return true
	case err != nil:
		refuse(CodeBadStream, err.Error())
		return true
	}
	e := s.x()
	e.subMu.Lock()
	defer e.subMu.Unlock()
	if e.subsClosed {
		return true
	}
	if len(e.subs) >= ss.srv.lim().MaxGroupsPerSession && e.subs[name] == nil {
		refuse(CodeTooManyGroups, "too many subscriptions for one session")
		return true
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return false
	}
	epoch, first, last := st.log.Bounds()
	sub := e.subs[name]
	if sub == nil {
		if e.subs == nil {
			e.subs = map[string]*subscription{}
		}
		sub = &subscription{s: s, st: st}
		e.subs[name] = sub
		st.addSub(sub)
	}
	sub.epoch = epoch
	reply := subscribedMsg{Op: "subscribed", Stream: name, Epoch: epochText(epoch), First: first, Last: last}
	switch {
	case m.After != nil && m.Epoch == epochText(epoch) && *m.After >= first-1:
		sub.next = min(*m.After, last) + 1 // where the client left off (After+1 would wrap at 2^64-1)
	case m.After != nil:
		missed := *m.After + 1
		reason := "the messages after its position have left retention"
		if m.Epoch != epochText(epoch) {
			reason, missed = "the stream's epoch changed: its log was lost (a restart without a durable store)", 0
		}
		reply.Lost = &lostInfo{Code: CodeContinuityLost, Missed: missed, Reason: reason}
		sub.next = first
	case client != "":
		sub.next = first // a client's own messages: everything kept for it while it was away
	default:
		sub.next = last + 1 // a group's: from now on
	}
	sub.acked = sub.next - 1
	reply.Next = sub.next
	s.sendStreamControl(reply)
	sub.pump()
	return true
}

// unsubscribe ends a session's subscription to a stream.
func (ss *streams) unsubscribe(s *Session, name string) {
	e := s.ext.Load()
	if e == nil {
		return
	}
	e.subMu.Lock()
	sub := e.subs[name]
	delete(e.subs, name)
	e.subMu.Unlock()
	if sub != nil {
		sub.st.mu.Lock()
		sub.st.removeSub(sub)
		sub.st.mu.Unlock()
	}
}

// addSub adds a subscription. A group stream's first subscription on this
// node, in a cluster without a shared store, makes the node receive the
// group's messages from the other nodes (Bus.GroupUp): each node appends
// them to its own log. Stream lock must be held.
func (st *stream) addSub(sub *subscription) {
	st.subs[sub] = struct{}{}
	if len(st.subs) == 1 && st.group != "" && !st.shared && st.ss.srv.bus != nil {
		st.ss.srv.bus.GroupUp(st.group)
	}
}

// removeSub removes a subscription. Stream lock must be held.
func (st *stream) removeSub(sub *subscription) {
	if _, ok := st.subs[sub]; !ok {
		return
	}
	delete(st.subs, sub)
	if len(st.subs) == 0 && st.group != "" && !st.shared && st.ss.srv.bus != nil {
		st.ss.srv.bus.GroupDown(st.group)
	}
}

// dropSubscriptions ends every subscription of an ending session, and
// forgets its publisher if it had no id of its own.
func (ss *streams) dropSubscriptions(s *Session) {
	e := s.ext.Load()
	if e == nil {
		return
	}
	e.subMu.Lock()
	subs := e.subs
	e.subs, e.subsClosed = nil, true
	e.subMu.Unlock()
	for _, sub := range subs {
		sub.st.mu.Lock()
		sub.st.removeSub(sub)
		sub.st.mu.Unlock()
	}
	if e.publisher == "" {
		// Its publishes were numbered for this session alone (publish):
		// nothing can retry them now.
		ss.mu.Lock()
		delete(ss.pubs, pubKey{client: s.ClientID(), publisher: "session:" + s.id})
		ss.mu.Unlock()
	}
}

// ack handles a client's acknowledgement of a stream's messages up to an
// offset, and sends it more.
func (ss *streams) ack(s *Session, p []byte) error {
	name, rest, ok := cutName(p)
	if !ok || len(rest) != 8 {
		return &ProtocolError{Code: CodeBadStream, Message: "an acknowledgement is a stream name and an offset"}
	}
	off := binary.BigEndian.Uint64(rest)
	e := s.ext.Load()
	if e == nil {
		return nil
	}
	e.subMu.Lock()
	sub := e.subs[string(name)]
	e.subMu.Unlock()
	if sub == nil {
		return nil // unsubscribed meanwhile
	}
	sub.st.mu.Lock()
	if off >= sub.next {
		off = sub.next - 1 // never past what was sent
	}
	if off > sub.acked {
		sub.acked = off
	}
	sub.pump()
	sub.st.mu.Unlock()
	return nil
}

// cutName splits a payload that starts with a one-byte length and a stream
// name.
func cutName(p []byte) (name, rest []byte, ok bool) {
	if len(p) < 1 || len(p) < 1+int(p[0]) {
		return nil, nil, false
	}
	n := int(p[0])
	return p[1 : 1+n], p[1+n:], n > 0
}

// publish handles a client's publish: it de-duplicates by the publisher's
// sequence number, appends the message to its stream, delivers it, and
// acknowledges it. A stream whose log is a BatchLog takes the publishes
// of a burst together: they are staged here and appended when the burst
// ends, or before anything else the session sends is handled
// (flushStaged), so that the answers keep their order.
func (ss *streams) publish(s *Session, p []byte) {
	if len(p) < 8 {
		ss.flushStaged(s)
		s.queuePubAck(0, &ProtocolError{Code: CodeBadStream, Message: "a publish starts with its 8-byte sequence number"})
		return
	}
	seq := binary.BigEndian.Uint64(p)
	if seq == 0 {
		// Not a number a publisher uses (they count from 1), and one a
		// pending run of answers cannot hold: refused at once.
		s.queuePubAck(0, &ProtocolError{Code: CodeBadStream, Message: "sequence numbers count from 1"})
		return
	}
	name, body, ok := cutName(p[8:])
	if !ok {
		ss.flushStaged(s)
		s.queuePubAck(seq, &ProtocolError{Code: CodeBadStream, Message: "a publish names its stream"})
		return
	}
	e := s.x()
	if e.pubHalted {
		return // the client sends it again after reconnecting
	}
	relay, relayIsBody := body, true
	if h := ss.srv.handlers.Load().publish; h != nil {
		r, err := h(s, string(name), body)
		if err != nil {
			ss.flushStaged(s)
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				err = &ProtocolError{Code: CodeBadStream, Message: err.Error()}
			}
			s.queuePubAck(seq, err)
			return
		}
		relay, relayIsBody = r, false
	}
	key := pubKey{client: s.ClientID(), publisher: e.publisher}
	if key.publisher == "" {
		// No publisher id in the hello: its numbers are this session's
		// alone, so that they never collide with another's.
		key.publisher = "session:" + s.id
	}
	now := time.Now().UnixNano()
	ss.mu.Lock()
	ps := ss.pubs[key]
	if ps == nil {
		ps = &pubState{}
		ss.pubs[key] = ps
	}
	ps.seen = now
	ss.mu.Unlock()
	if ss.stage(s, e, ps, key, seq, name, body, relay, relayIsBody) {
		return
	}
	ss.flushStaged(s)
	if e.pubHalted {
		return
	}
	ps.mu.Lock()
	if seq <= ps.last {
		ps.mu.Unlock()
		s.queuePubAck(seq, nil) // a retry of what was accepted: acknowledged again, not added again
		return
	}
	_, err := ss.srv.publishStream(string(name), body, relay, pubKeyText(key, seq))
	if err == nil {
		ps.last = seq
	}
	ps.mu.Unlock()
	var se *storeError
	if errors.As(err, &se) {
		e.flushPubAcks(s)
		s.storeFailed(err)
		return
	}
	s.queuePubAck(seq, err)
}

// pubKeyText is the store's de-duplication key of a publish.
func pubKeyText(key pubKey, seq uint64) string {
	return key.client + "/" + key.publisher + "/" + strconv.FormatUint(seq, 10)
}

// stagedPubs is a session's run of publishes to one stream whose log is a
// BatchLog, from one publisher, in increasing sequence numbers, waiting
// for the end of the burst they arrived in. Reader-owned.
type stagedPubs struct {
	st            *stream
	ps            *pubState
	group, client string
	seqs          []uint64
	msgs          []BatchMessage
	relays        [][]byte // what members that did not subscribe get; nil: nothing
	copied        []byte   // payloads, when the frame's buffer does not outlive the frame
}

// maxStaged bounds a run of staged publishes.
const maxStaged = 256

// stage adds a publish to the session's staged run, if its stream's log
// is a BatchLog; it reports whether it did.
func (ss *streams) stage(s *Session, e *sessionExt, ps *pubState, key pubKey, seq uint64, name, body, relay []byte, relayIsBody bool) bool {
	b := e.staged
	if b != nil && len(b.seqs) > 0 {
		if b.st.name == string(name) && b.ps == ps && seq > b.seqs[len(b.seqs)-1] && len(b.seqs) < maxStaged {
			b.add(s, key, seq, body, relay, relayIsBody)
			return true
		}
		ss.flushStaged(s)
		if e.pubHalted {
			return true // ignored, as publish ignores it
		}
	}
	group, client, ok := ss.validStream(string(name))
	if !ok {
		return false
	}
	ss.mu.Lock()
	st := ss.m[string(name)]
	ss.mu.Unlock()
	if st == nil {
		return false // opened by the plain path, which reports its errors
	}
	if _, ok := st.log.(BatchLog); !ok {
		return false
	}
	if b == nil {
		b = &stagedPubs{}
		e.staged = b
	}
	b.st, b.ps, b.group, b.client = st, ps, group, client
	b.add(s, key, seq, body, relay, relayIsBody)
	s.staged = true
	return true
}

func (b *stagedPubs) add(s *Session, key pubKey, seq uint64, body, relay []byte, relayIsBody bool) {
	if s.c.Pipe() != nil {
		// The pipeline's output is reused for the next frame.
		at := len(b.copied)
		b.copied = append(b.copied, body...)
		body = b.copied[at:len(b.copied):len(b.copied)]
	}
	if relayIsBody {
		relay = body
	}
	b.seqs = append(b.seqs, seq)
	b.msgs = append(b.msgs, BatchMessage{Payload: body, Key: pubKeyText(key, seq)})
	b.relays = append(b.relays, relay)
}

// flushStaged appends the session's staged publishes, delivers and
// acknowledges them.
func (ss *streams) flushStaged(s *Session) {
	if !s.staged {
		return
	}
	s.staged = false
	e := s.x()
	b := e.staged
	defer func() {
		clear(b.msgs)
		clear(b.relays)
		b.st, b.ps, b.seqs, b.msgs, b.relays, b.copied = nil, nil, b.seqs[:0], b.msgs[:0], b.relays[:0], b.copied[:0]
	}()
	ps := b.ps
	ps.mu.Lock()
	// Those another session of this publisher appended meanwhile (an old
	// connection still draining) are acknowledged, not added again.
	i := 0
	for i < len(b.seqs) && b.seqs[i] <= ps.last {
		i++
	}
	res, err := b.st.appendBatch(b.msgs[i:])
	if err == errReclaimed {
		var st *stream
		if st, err = ss.get(b.st.name, true); err == nil {
			res, err = st.appendBatch(b.msgs[i:]) // a fresh stream: not reclaimed yet
		}
	}
	if len(res) > 0 {
		ps.last = b.seqs[i+len(res)-1]
	}
	ps.mu.Unlock()
	for _, seq := range b.seqs[:i] {
		s.queuePubAck(seq, nil)
	}
	for k, r := range res {
		if relay := b.relays[i+k]; !r.Dup && relay != nil {
			switch {
			case b.group != "":
				ss.srv.sendGroupPlain(b.group, relay, true)
			case b.client != "":
				ss.srv.sendToPlain(b.client, relay, true)
			}
		}
		s.queuePubAck(b.seqs[i+k], nil)
	}
	if err != nil {
		e.flushPubAcks(s)
		s.storeFailed(err)
	}
}

// appendBatch appends a run of messages to st's BatchLog and sends them
// to the subscriptions that are caught up (unless a watch does).
func (st *stream) appendBatch(msgs []BatchMessage) ([]Appended, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return nil, errReclaimed
	}
	res, err := st.log.(BatchLog).AppendBatch(msgs)
	if !st.watched {
		epoch, _, _ := st.log.Bounds()
		for k, r := range res {
			if !r.Dup {
				st.fanOut(epoch, r.Offset, msgs[k].Payload)
			}
		}
	}
	if err != nil {
		err = &storeError{err}
	}
	return res, err
}

// expire drops what retention says has expired and forgets idle
// publishers; the sweeper calls it.
func (ss *streams) expire(now time.Time) {
	ss.mu.Lock()
	list := make([]*stream, 0, len(ss.m))
	for _, st := range ss.m {
		list = append(list, st)
	}
	limit := now.Add(-pubMemory).UnixNano()
	for k, ps := range ss.pubs {
		if ps.seen < limit {
			delete(ss.pubs, k)
		}
	}
	ss.mu.Unlock()
	failed := false
	for _, st := range list {
		select {
		case <-ss.srv.stopCh:
			return // the server is stopping: a slow store must not hold it one call per stream
		default:
		}
		st.mu.Lock()
		retry := st.shared && !st.watched && !st.closed && !st.noWatch
		st.mu.Unlock()
		if retry && !failed {
			// Until the first failure: after an election every stream's
			// watch comes back in one sweep, while a store that still
			// fails costs one timeout a sweep, not one per stream. The
			// map's random order gives each stream its turn over sweeps.
			failed = !st.watch()
		}
		st.mu.Lock()
		st.log.Expire(now) // a shared log learns what other nodes appended
		for sub := range st.subs {
			sub.pump() // a subscription the queue refused earlier goes on
		}
		st.mu.Unlock()
	}
}

// publishStream appends a message to the named stream and delivers it:
// to the stream's subscriptions, and, for a group, to the group's other
// members as a plain message, here and on the other nodes; for a client
// id, to its session when it is connected without a subscription.
// relay is what members (or the client id's session) that did not
// subscribe get as a plain message; nil: nothing.
func (srv *Server) publishStream(name string, body, relay []byte, key string) (Position, error) {
	ss := srv.streams
	if ss == nil {
		return Position{}, ErrNotNegotiated
	}
	group, client, ok := ss.validStream(name)
	if !ok {
		return Position{}, &ProtocolError{Code: CodeBadStream, Message: "a stream is group:<group> or client:<client id>"}
	}
	pos, dup, err := ss.append(name, body, key)
	if err != nil || dup || relay == nil {
		return pos, err
	}
	switch {
	case group != "":
		srv.sendGroupPlain(group, relay, true)
	case client != "":
		srv.sendToPlain(client, relay, true) // ErrNoSession is no error here: the stream keeps it
	}
	return pos, nil
}

// append appends to the named stream, opening it if need be, and looking
// it up again if reclaim dropped it meanwhile.
func (ss *streams) append(name string, body []byte, key string) (Position, bool, error) {
	for {
		st, err := ss.get(name, true)
		if err != nil {
			return Position{}, false, err
		}
		pos, dup, err := st.append(body, key)
		if err != errReclaimed {
			return pos, dup, err
		}
	}
}

// Publish appends msg to a stream ("group:<name>" or "client:<id>";
// GroupStream, ClientStream) and delivers it: to the stream's subscribers,
// exactly once and in order even across their reconnections, within the
// stream's retention; to a group's members that did not subscribe, as
// SendGroup does; to a client id's session that did not subscribe, as
// SendTo does. It returns the message's position.
func (srv *Server) Publish(stream string, msg []byte) (Position, error) {
	return srv.publishStream(stream, msg, msg, "")
}

// queuePubAck records the answer to a publish; the answers of one burst
// go out together (flushPubAcks).
func (s *Session) queuePubAck(seq uint64, err error) {
	e := s.x()
	if err != nil {
		e.flushPubAcks(s)
		code, msg := CodeBadStream, err.Error()
		var pe *ProtocolError
		if errors.As(err, &pe) {
			code, msg = pe.Code, pe.Message
		}
		b := binary.BigEndian.AppendUint64(nil, seq)
		b = binary.BigEndian.AppendUint64(b, seq)
		b = append(b, 1)
		b = append(b, code+": "+msg...)
		s.sendRefusal(b)
		return
	}
	if e.ackFirst != 0 && seq == e.ackLast+1 {
		e.ackLast = seq
		return
	}
	e.flushPubAcks(s)
	e.ackFirst, e.ackLast = seq, seq
}

// flushPubAcks sends the pending run of successful publish answers.
func (e *sessionExt) flushPubAcks(s *Session) {
	if e.ackFirst == 0 {
		return
	}
	b := binary.BigEndian.AppendUint64(nil, e.ackFirst)
	b = binary.BigEndian.AppendUint64(b, e.ackLast)
	b = append(b, 0)
	e.ackFirst, e.ackLast = 0, 0
	// One that the queue refuses is counted and dropped: a later answer
	// covers it, or the client's resend gets it again.
	s.c.Enqueue(frame.KindData, frame.FlagAck, b)
}

// sendRefusal queues the answer to a refused publish. One that cannot be
// queued (the publisher does not read, and its queue is full) must not be
// lost: the client takes an answer for a later publish as covering the
// earlier ones, and would count the refused one as stored. The session
// ends instead, and the client resends what it has not seen answered.
func (s *Session) sendRefusal(b []byte) {
	err := s.c.Enqueue(frame.KindData, frame.FlagAck, b)
	if err == nil || errors.Is(err, ErrSessionClosed) {
		return
	}
	s.x().pubHalted = true // no later answer may go out past the lost one
	s.close(err, false)
}

// subscribed reports whether s subscribed to the named stream.
func (s *Session) subscribed(name string) bool {
	e := s.ext.Load()
	if e == nil {
		return false
	}
	e.subMu.Lock()
	defer e.subMu.Unlock()
	return e.subs[name] != nil
}
