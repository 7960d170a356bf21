package natsbus

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/internal/flock"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A Store keeps msgnet's streams (msgnet.WithStore) in NATS JetStream: one
// JetStream stream per msgnet stream, its sequence numbers the offsets and
// its creation time the epoch. On disk it survives the process's death; in
// a cluster, replicated, it survives a node's, and every node reads and
// watches the same log, so a client resumes on any node (msgnet.SharedStore).
//
//	st, err := natsbus.OpenStore("/var/lib/msgnet", natsbus.StoreOptions{})
//	srv := msgnet.NewServer("node", msgnet.WithStore(st))
//
// Publishers' retries are de-duplicated by JetStream (Nats-Msg-Id) within
// StoreOptions.Duplicates, across restarts and nodes.
type Store struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	ns   *server.Server // owned embedded server (OpenStore), or nil
	lock *os.File       // OpenStore's lock on its directory
	cfg  StoreOptions
	log  *slog.Logger
	once sync.Once
	// absence remembers streams found not to exist (store_absent.go).
	absence absence
}

// StoreOptions configures a Store. GetDefaultStoreOptions gives the
// defaults; zero fields take them.
type StoreOptions struct {
	// Replicas is how many servers hold each stream: 1 alone, 3 in a
	// cluster of three or more (default 1).
	Replicas int
	// Memory keeps the streams in the servers' memory instead of files:
	// replicated, they survive a node's death, not the cluster's.
	Memory bool
	// Duplicates is how long a publisher's message id is remembered for
	// de-duplication (default 2 minutes, twice a msgnet client's default
	// ReliableOptions.MaxAge). JetStream keeps about 100 bytes per id.
	Duplicates time.Duration
	// Prefix starts every JetStream stream's name and subject (default
	// "MSGNET"); servers sharing a JetStream domain need distinct ones.
	Prefix string
	// Timeout bounds each request to JetStream (default 5s).
	Timeout time.Duration
	// Logger receives the store's warnings (default: none).
	Logger *slog.Logger
}

// GetDefaultStoreOptions returns the default StoreOptions.
func GetDefaultStoreOptions() StoreOptions {
	return StoreOptions{Replicas: 1, Duplicates: 2 * time.Minute, Prefix: "MSGNET", Timeout: 5 * time.Second,
		Logger: slog.New(slog.DiscardHandler)}
}

func (o StoreOptions) withDefaults() StoreOptions {
	d := GetDefaultStoreOptions()
	if o.Replicas <= 0 {
		o.Replicas = d.Replicas
	}
	if o.Duplicates <= 0 {
		o.Duplicates = d.Duplicates
	}
	if o.Prefix == "" {
		o.Prefix = d.Prefix
	}
	if o.Timeout <= 0 {
		o.Timeout = d.Timeout
	}
	if o.Logger == nil {
		o.Logger = d.Logger
	}
	return o
}

// OpenStore starts a JetStream server inside the process, with no port,
// keeping its files in dir, and returns a store on it: msgnet serve
// --store DIR on a single node. Closing the store stops the server.
func OpenStore(dir string, o StoreOptions) (*Store, error) {
	if dir == "" {
		return nil, errors.New("natsbus: OpenStore needs a directory")
	}
	o = o.withDefaults()
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	ns, err := startEmbedded(Embedded{StoreDir: dir}, o.Logger)
	if err != nil {
		lock.Close()
		return nil, err
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns), nats.Name("msgnet-store"), nats.MaxReconnects(-1))
	if err != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
		lock.Close()
		return nil, fmt.Errorf("natsbus: connect to the store's server: %w", err)
	}
	st, err := NewStore(nc, o)
	if err != nil {
		nc.Close()
		ns.Shutdown()
		ns.WaitForShutdown()
		lock.Close()
		return nil, err
	}
	st.ns, st.lock = ns, lock
	return st, nil
}

// lockDir takes an exclusive lock on a file in dir, so that two processes
// never run JetStream on one directory (each would append, and their
// de-duplication would not see the other's messages). The kernel lets go
// of it when the process dies, kill -9 included.
func lockDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("natsbus: store directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "msgnet.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("natsbus: store directory: %w", err)
	}
	if err := flock.TryLock(f); err != nil {
		f.Close()
		if errors.Is(err, flock.ErrLocked) {
			return nil, fmt.Errorf("natsbus: store directory %s is in use by another process", dir)
		}
		return nil, fmt.Errorf("natsbus: store directory %s: lock: %w", dir, err)
	}
	return f, nil
}

// Store returns a store on the bus's NATS server or cluster, through a
// connection of its own: the embedded servers' JetStream (Embedded.StoreDir
// on every node), or the external NATS's. Replicated (StoreOptions.Replicas
// 3), it is shared by the cluster's nodes. It does not wait for JetStream:
// a clustered JetStream is available once a majority of its servers are
// up, and until then opening a stream fails (the server tells its client
// store_unavailable, and the client tries again).
func (b *Bus) Store(o StoreOptions) (*Store, error) {
	nc, err := b.connect("msgnet-store")
	if err != nil {
		return nil, fmt.Errorf("natsbus: connect the store: %w", err)
	}
	o = o.withDefaults()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(maxAsyncAppends))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("natsbus: JetStream: %w", err)
	}
	st := &Store{nc: nc, js: js, cfg: o, log: o.Logger}
	st.adviseCreations()
	return st, nil
}

// NewStore returns a store on a NATS connection to a server with
// JetStream. The store takes the connection over and closes it on Close.
func NewStore(nc *nats.Conn, o StoreOptions) (*Store, error) {
	o = o.withDefaults()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(maxAsyncAppends))
	if err != nil {
		return nil, fmt.Errorf("natsbus: JetStream: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		return nil, fmt.Errorf("natsbus: JetStream is not available: %w", err)
	}
	st := &Store{nc: nc, js: js, cfg: o, log: o.Logger}
	st.adviseCreations()
	return st, nil
}

// streamName is the JetStream stream (and subject token) of a msgnet
// stream: the prefix, then the name in base32 (JetStream names allow
// letters, digits, '-' and '_'); a name whose encoding would be too long
// is hashed.
func (st *Store) streamName(name string) string {
	enc := base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString([]byte(name))
	if len(enc) > 200 {
		h := sha256.Sum256([]byte(name))
		enc = "H" + base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(h[:])
	}
	return st.cfg.Prefix + "_" + enc
}

func (st *Store) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), st.cfg.Timeout)
}

// Exists implements msgnet.SharedStore. A "no" is remembered until a
// stream is created (store_absent.go).
func (st *Store) Exists(name string) (bool, error) {
	jsName := st.streamName(name)
	absent, gen := st.absence.known(jsName)
	if absent {
		return false, nil
	}
	ctx, cancel := st.ctx()
	defer cancel()
	_, err := st.js.Stream(ctx, jsName)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrStreamNotFound):
		st.absence.remember(jsName, gen)
		return false, nil
	}
	return false, err
}

// Open implements msgnet.Store: it creates the JetStream stream, or
// updates its limits.
func (st *Store) Open(name string, r msgnet.Retention) (msgnet.StreamLog, error) {
	jsName := st.streamName(name)
	dup := st.cfg.Duplicates
	if r.MaxAge > 0 && dup > r.MaxAge {
		dup = r.MaxAge // JetStream requires it
	}
	cfg := jetstream.StreamConfig{
		Name:        jsName,
		Description: name,
		Subjects:    []string{jsName},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxMsgs:     int64(r.MaxMessages),
		MaxBytes:    r.MaxBytes,
		MaxAge:      r.MaxAge,
		Replicas:    st.cfg.Replicas,
		Duplicates:  dup,
		AllowDirect: true,
		Storage:     jetstream.FileStorage,
	}
	if st.cfg.Memory {
		cfg.Storage = jetstream.MemoryStorage
	}
	ctx, cancel := st.ctx()
	defer cancel()
	s, err := st.js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("natsbus: stream %q: %w", name, err)
	}
	st.absence.opened(jsName)
	info := s.CachedInfo()
	l := &jsLog{st: st, name: name, jsName: jsName, stream: s,
		epoch: uint64(info.Created.UnixNano()) | 1, first: info.State.FirstSeq, last: info.State.LastSeq}
	if l.last == 0 {
		l.first = 1
	}
	return l, nil
}

// Close implements msgnet.Store: it closes the connection, and the
// embedded server OpenStore started.
func (st *Store) Close() error {
	st.once.Do(func() {
		st.nc.Drain()
		st.nc.Close()
		if st.ns != nil {
			st.ns.Shutdown()
			st.ns.WaitForShutdown()
		}
		if st.lock != nil {
			st.lock.Close()
		}
	})
	return nil
}

// jsLog is one msgnet stream's log in JetStream. Bounds are cached: last
// moves with each append and watched message, first with Expire, so that
// the server's many calls cost no round trip.
type jsLog struct {
	st     *Store
	name   string
	jsName string
	stream jetstream.Stream
	epoch  uint64

	mu          sync.Mutex
	first, last uint64
}

// Append implements msgnet.StreamLog. key becomes the message's
// Nats-Msg-Id, so JetStream de-duplicates retries within its window.
func (l *jsLog) Append(payload []byte, key string) (uint64, bool, error) {
	m := nats.NewMsg(l.jsName)
	m.Data = payload
	if key != "" {
		m.Header.Set(jetstream.MsgIDHeader, key)
	}
	ctx, cancel := l.st.ctx()
	defer cancel()
	ack, err := l.st.js.PublishMsg(ctx, m, jetstream.WithExpectStream(l.jsName))
	if err != nil {
		return 0, false, fmt.Errorf("natsbus: append to %q: %w", l.name, err)
	}
	if !ack.Duplicate {
		l.advance(ack.Sequence)
	}
	return ack.Sequence, ack.Duplicate, nil
}

// AppendBatch implements msgnet.BatchLog: the messages are published to
// JetStream at once (PublishMsgAsync), then their acknowledgements are
// awaited in order, so a run costs about one round trip instead of one
// each. Each message expects the log's stream, as Append's do, and is not
// retried by nats.go (its payload is the caller's only during the call).
func (l *jsLog) AppendBatch(msgs []msgnet.BatchMessage) ([]msgnet.Appended, error) {
	futs := make([]jetstream.PubAckFuture, 0, len(msgs))
	var perr error
	for _, bm := range msgs {
		m := &nats.Msg{Subject: l.jsName, Data: bm.Payload, Header: nats.Header{jetstream.ExpectedStreamHeader: []string{l.jsName}}}
		if bm.Key != "" {
			m.Header[jetstream.MsgIDHeader] = []string{bm.Key}
		}
		f, err := l.st.js.PublishMsgAsync(m, noRetry)
		if err != nil {
			perr = err
			break
		}
		futs = append(futs, f)
	}
	out := make([]msgnet.Appended, 0, len(futs))
	timer := time.NewTimer(l.st.cfg.Timeout)
	defer timer.Stop()
	for _, f := range futs {
		select {
		case ack := <-f.Ok():
			if !ack.Duplicate {
				l.advance(ack.Sequence)
			}
			out = append(out, msgnet.Appended{Offset: ack.Sequence, Dup: ack.Duplicate})
		case err := <-f.Err():
			return out, fmt.Errorf("natsbus: append to %q: %w", l.name, err)
		case <-timer.C:
			return out, fmt.Errorf("natsbus: append to %q: no acknowledgement within %s", l.name, l.st.cfg.Timeout)
		}
	}
	if perr != nil {
		return out, fmt.Errorf("natsbus: append to %q: %w", l.name, perr)
	}
	return out, nil
}

var noRetry = jetstream.WithRetryAttempts(0)

// maxAsyncAppends bounds the store's appends in flight (AppendBatch's);
// nats.go's default, 4,000, is 16 sessions' runs.
const maxAsyncAppends = 1 << 16

// advance records that the log holds offset off.
func (l *jsLog) advance(off uint64) {
	l.mu.Lock()
	l.last = max(l.last, off)
	l.mu.Unlock()
}

// Read implements msgnet.StreamLog with JetStream's batched direct get:
// one request, then the messages as they stream in.
func (l *jsLog) Read(from uint64, max int, f func(uint64, []byte) bool) error {
	if max <= 0 {
		return nil
	}
	nc := l.st.nc
	sub, err := nc.SubscribeSync(nc.NewRespInbox())
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	req := `{"seq":` + strconv.FormatUint(from, 10) + `,"batch":` + strconv.Itoa(max) + `}`
	if err := nc.PublishRequest("$JS.API.DIRECT.GET."+l.jsName, sub.Subject, []byte(req)); err != nil {
		return err
	}
	deadline := time.Now().Add(l.st.cfg.Timeout)
	for {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			return fmt.Errorf("natsbus: read %q: %w", l.name, err)
		}
		if status := m.Header.Get("Status"); status != "" {
			if status == "204" || status == "404" { // end of batch, or nothing from there on
				return nil
			}
			return fmt.Errorf("natsbus: read %q: %s %s", l.name, status, m.Header.Get("Description"))
		}
		seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil {
			return fmt.Errorf("natsbus: read %q: a message without its sequence", l.name)
		}
		l.advance(seq)
		if !f(seq, m.Data) {
			return nil
		}
	}
}

// Bounds implements msgnet.StreamLog.
func (l *jsLog) Bounds() (uint64, uint64, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.epoch, max(l.first, 1), l.last
}

// Expire implements msgnet.StreamLog: JetStream applies the limits itself;
// this learns where the log now starts.
func (l *jsLog) Expire(time.Time) {
	ctx, cancel := l.st.ctx()
	defer cancel()
	info, err := l.stream.Info(ctx)
	if err != nil {
		l.st.log.Warn("stream store: refreshing a stream's bounds", "stream", l.name, "err", err)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if epoch := uint64(info.Created.UnixNano()) | 1; epoch != l.epoch {
		// The stream was deleted and made again: a new log.
		l.epoch, l.first, l.last = epoch, info.State.FirstSeq, info.State.LastSeq
		if l.last == 0 {
			l.first = 1
		}
		return
	}
	l.first, l.last = refreshBounds(l.first, l.last, info.State)
}

// refreshBounds is a log's first and last offsets after JetStream reports
// its state. The report may be older than what this node has seen appended
// since (last, moved by appends and the watch): first comes from the
// report alone, and neither moves back.
func refreshBounds(first, last uint64, st jetstream.StreamState) (uint64, uint64) {
	f := st.FirstSeq
	if st.Msgs == 0 {
		f = st.LastSeq + 1
	}
	return max(first, f, 1), max(last, st.LastSeq)
}

// Watch implements msgnet.WatchedLog with an ordered consumer from the
// log's end: it sees every message appended from now on, by any node.
func (l *jsLog) Watch(f func(offset uint64, payload []byte)) (func(), error) {
	l.mu.Lock()
	start := l.last + 1
	l.mu.Unlock()
	ctx, cancel := l.st.ctx()
	defer cancel()
	c, err := l.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: start,
	})
	if err != nil {
		return nil, fmt.Errorf("natsbus: watch %q: %w", l.name, err)
	}
	cc, err := c.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			return
		}
		l.advance(md.Sequence.Stream)
		f(md.Sequence.Stream, m.Data())
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		l.st.log.Debug("stream store: watch", "stream", l.name, "err", err)
	}))
	if err != nil {
		return nil, fmt.Errorf("natsbus: watch %q: %w", l.name, err)
	}
	return cc.Stop, nil
}

var (
	_ msgnet.SharedStore = (*Store)(nil)
	_ msgnet.WatchedLog  = (*jsLog)(nil)
	_ msgnet.BatchLog    = (*jsLog)(nil)
)
