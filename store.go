package msgnet

import (
	"crypto/rand"
	"encoding/binary"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Streams (docs/PROTOCOL.md, section 6.7) are kept in a Store: an
// append-only log per stream, its messages numbered from 1 (offsets),
// under an epoch that names the log's incarnation, trimmed by retention
// limits. The default store keeps them in memory: they survive the
// clients' disconnects, not the server's restart. Package cluster/nats
// provides one on NATS JetStream, on disk and replicated across a cluster.

// Store keeps the server's streams.
type Store interface {
	// Open returns the log of the named stream, creating it empty if it
	// does not exist, with limits as its retention.
	Open(name string, limits Retention) (StreamLog, error)
	// Close releases the store; the logs are not used afterwards.
	Close() error
}

// StreamLog is one stream's log. It is safe for concurrent use.
type StreamLog interface {
	// Append adds a message and returns its offset. key, when not empty,
	// identifies the message for de-duplication: a store that sees the
	// same key again within its window returns the first offset and
	// dup true instead of adding it (a store without a window of its own
	// may leave de-duplication to the server and always return false).
	Append(payload []byte, key string) (offset uint64, dup bool, err error)
	// Read calls f for each retained message from offset from on, in
	// order, until f returns false, max messages have been read, or the
	// log ends.
	Read(from uint64, max int, f func(offset uint64, payload []byte) bool) error
	// Bounds reports the log's epoch, its first retained offset and its
	// last offset (first is last+1 when nothing is retained).
	Bounds() (epoch uint64, first, last uint64)
	// Expire drops what retention says has expired by now.
	Expire(now time.Time)
}

// BatchLog is a StreamLog that appends a run of messages in one exchange
// with its store, pipelined, rather than a round trip each: the server
// appends a burst of one session's publishes to one stream with it.
type BatchLog interface {
	StreamLog
	// AppendBatch appends msgs in order, as Append would one by one, and
	// returns what Append would have returned for each. On an error it
	// returns the results of the messages before the one that failed;
	// that one and those after it may or may not have been appended (a
	// retry with the same keys is de-duplicated).
	AppendBatch(msgs []BatchMessage) ([]Appended, error)
}

// BatchMessage is one message of BatchLog.AppendBatch; Payload is valid
// only during the call.
type BatchMessage struct {
	Payload []byte
	Key     string
}

// Appended is where BatchLog.AppendBatch put a message: its offset, and
// whether it was a duplicate of one its key names.
type Appended struct {
	Offset uint64
	Dup    bool
}

// SharedStore is a Store that the servers of a cluster share (a replicated
// log such as JetStream's): a message appended on one node is in the log
// on every node. The server then fans out what each log's Watch reports,
// its own appends included, rather than its own appends, and leaves
// appending to the node a message was published on.
type SharedStore interface {
	Store
	// Exists reports whether the named stream exists, on any node.
	Exists(name string) (bool, error)
}

// WatchedLog is the StreamLog of a SharedStore.
type WatchedLog interface {
	StreamLog
	// Watch calls f for each message appended to the log from now on, on
	// any node, in offset order, from one goroutine, until stop is called.
	Watch(f func(offset uint64, payload []byte)) (stop func(), err error)
}

// Retention bounds what a stream keeps. Zero fields take the defaults of
// DefaultRetention.
type Retention struct {
	MaxMessages int           // messages kept
	MaxBytes    int64         // payload bytes kept
	MaxAge      time.Duration // how long a message is kept
}

// DefaultRetention is what a stream keeps unless told otherwise
// (WithRetention): enough for a client that is away for a minute or two
// under moderate traffic, bounded in memory.
func DefaultRetention() Retention {
	return Retention{MaxMessages: 10_000, MaxBytes: 16 << 20, MaxAge: 10 * time.Minute}
}

func (r Retention) orDefaults() Retention {
	d := DefaultRetention()
	if r.MaxMessages <= 0 {
		r.MaxMessages = d.MaxMessages
	}
	if r.MaxBytes <= 0 {
		r.MaxBytes = d.MaxBytes
	}
	if r.MaxAge <= 0 {
		r.MaxAge = d.MaxAge
	}
	return r
}

// WithStore sets where the server keeps its streams (default:
// MemoryStore()). Server only.
func WithStore(st Store) Option { return func(c *config) { c.store, c.noStreams = st, false } }

// WithoutStreams turns streams off: the server does not offer the
// reliable extension, and SendGroup and SendTo keep nothing. Server only.
func WithoutStreams() Option { return func(c *config) { c.noStreams = true } }

// WithRetention sets what every stream keeps, unless WithGroupRetention
// says otherwise for a group (default: DefaultRetention). Server only.
func WithRetention(r Retention) Option { return func(c *config) { c.retention = r } }

// WithGroupRetention sets what the streams of the groups whose names match
// pattern keep ('*' stands for any run of characters, as in AuthKey's
// client ids); the first matching pattern given wins. Server only.
func WithGroupRetention(pattern string, r Retention) Option {
	return func(c *config) { c.groupRet = append(c.groupRet, patternRetention{pattern, r}) }
}

type patternRetention struct {
	pattern string
	r       Retention
}

// retentionFor is what the named stream keeps.
func (srv *Server) retentionFor(name string) Retention {
	if g, ok := strings.CutPrefix(name, groupPrefix); ok {
		for _, pr := range srv.cfg.groupRet {
			if matchID(pr.pattern, g) {
				return pr.r.orDefaults()
			}
		}
	}
	return srv.cfg.retention.orDefaults()
}

// DefaultMemoryStoreBytes bounds what MemoryStore keeps, all streams
// together.
const DefaultMemoryStoreBytes = 256 << 20

// memEntryCost is what the memory store charges a message beyond its
// payload: its ring slot and the allocation's rounding (measured by
// BenchmarkRetainedMessageMemory: 32 bytes).
const memEntryCost = 48

// MemoryStore returns a store that keeps streams in memory, at most
// DefaultMemoryStoreBytes of them.
func MemoryStore() Store { return NewMemoryStore(DefaultMemoryStoreBytes) }

// NewMemoryStore returns a store that keeps streams in memory, all of
// them together at most maxBytes: each message counts its payload and 48
// bytes. A stream that would go past it drops its own oldest messages to
// make room; when it has none left to drop, the append fails with
// ErrStoreFull, and the publisher is told.
func NewMemoryStore(maxBytes int64) Store {
	return &memStore{logs: map[string]*memLog{}, max: maxBytes}
}

type memStore struct {
	mu    sync.Mutex
	logs  map[string]*memLog
	max   int64
	bytes atomic.Int64 // charged by every log
}

func (m *memStore) Open(name string, limits Retention) (StreamLog, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.logs[name]; ok {
		l.setLimits(limits)
		return l, nil
	}
	var e [8]byte
	rand.Read(e[:])
	l := &memLog{store: m, epoch: binary.BigEndian.Uint64(e[:]) | 1, next: 1}
	l.setLimits(limits)
	m.logs[name] = l
	return l, nil
}

func (m *memStore) Close() error { return nil }

// forget lets go of an empty log (streams.reclaim). Opening the name again
// makes a new log, with a new epoch.
func (m *memStore) forget(name string, log StreamLog) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.logs[name] == log {
		delete(m.logs, name)
	}
}

// memLog is a stream's log in memory: a ring of its retained messages.
type memLog struct {
	store  *memStore
	mu     sync.Mutex
	epoch  uint64
	limits Retention
	ring   []memEntry // ring[(head+i)%len(ring)], i < n
	head   int
	n      int
	bytes  int64
	next   uint64 // offset of the next message
}

type memEntry struct {
	at      int64 // unix nanoseconds
	payload []byte
}

func (l *memLog) setLimits(r Retention) {
	l.mu.Lock()
	l.limits = r.orDefaults()
	l.mu.Unlock()
}

// errTooLargeToRetain refuses a message larger than its stream may keep.
var errTooLargeToRetain = &ProtocolError{Code: CodeBadStream, Message: "message larger than the stream's retention"}

func (l *memLog) Append(payload []byte, _ string) (uint64, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if int64(len(payload)) > l.limits.MaxBytes {
		return 0, false, errTooLargeToRetain
	}
	for l.n > 0 && (l.n >= l.limits.MaxMessages || l.bytes+int64(len(payload)) > l.limits.MaxBytes) {
		l.dropOldest()
	}
	cost := int64(len(payload)) + memEntryCost
	for l.store.bytes.Add(cost) > l.store.max {
		l.store.bytes.Add(-cost)
		if l.n == 0 {
			l.shrink()
			return 0, false, ErrStoreFull
		}
		l.dropOldest()
	}
	l.shrink()
	if l.n == len(l.ring) {
		l.grow()
	}
	l.ring[(l.head+l.n)%len(l.ring)] = memEntry{at: time.Now().UnixNano(), payload: append([]byte(nil), payload...)}
	l.n++
	l.bytes += int64(len(payload))
	off := l.next
	l.next++
	return off, false, nil
}

func (l *memLog) grow() {
	size := max(16, 2*len(l.ring))
	size = min(size, max(l.limits.MaxMessages, l.n+1))
	ring := make([]memEntry, size)
	for i := 0; i < l.n; i++ {
		ring[i] = l.ring[(l.head+i)%len(l.ring)]
	}
	l.ring, l.head = ring, 0
}

// shrink gives back the ring's room when it holds a quarter of it or
// less: the store's bound counts the messages kept, not the slots they
// once took, so a stream that held many and holds few now must not keep
// them. Halving at a quarter keeps growing and shrinking amortized.
func (l *memLog) shrink() {
	if len(l.ring) <= 16 || l.n > len(l.ring)/4 {
		return
	}
	if l.n == 0 {
		l.ring, l.head = nil, 0
		return
	}
	ring := make([]memEntry, max(16, 2*l.n))
	for i := 0; i < l.n; i++ {
		ring[i] = l.ring[(l.head+i)%len(l.ring)]
	}
	l.ring, l.head = ring, 0
}

func (l *memLog) dropOldest() {
	e := &l.ring[l.head]
	l.bytes -= int64(len(e.payload))
	l.store.bytes.Add(-int64(len(e.payload)) - memEntryCost)
	*e = memEntry{}
	l.head = (l.head + 1) % len(l.ring)
	l.n--
}

func (l *memLog) Read(from uint64, max int, f func(uint64, []byte) bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	first := l.next - uint64(l.n)
	if from < first {
		from = first
	}
	for off := from; off < l.next && max > 0; off, max = off+1, max-1 {
		e := l.ring[(l.head+int(off-first))%len(l.ring)]
		if !f(off, e.payload) {
			return nil
		}
	}
	return nil
}

func (l *memLog) Bounds() (uint64, uint64, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.epoch, l.next - uint64(l.n), l.next - 1
}

func (l *memLog) Expire(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	limit := now.Add(-l.limits.MaxAge).UnixNano()
	for l.n > 0 && l.ring[l.head].at < limit {
		l.dropOldest()
	}
	l.shrink()
}
