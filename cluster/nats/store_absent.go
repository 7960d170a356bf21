package natsbus

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// A server asks its SharedStore whether a stream exists before each
// message to a client id or group without an open stream (msgnet's
// streams.get): in a cluster with --store, that was one JetStream API
// request per private message to a client without an inbox. The store
// remembers JetStream's "no" instead, and forgets all of it when
// JetStream advises that a stream was created, by any node, or after
// absentTTL. A message sent in the milliseconds an advisory takes to
// arrive is delivered, to a connected client, without being kept: the
// same as one sent just before the stream was created.

// absentTTL bounds how long a "no" is trusted without an advisory: a
// store's connection that reconnected may have missed one.
const absentTTL = 10 * time.Second

// maxAbsent bounds the memory: a peer naming random ids fills it, and it
// starts again empty.
const maxAbsent = 10_000

// createdSubject is JetStream's advisory of a stream created, the last
// token its name.
const createdSubject = "$JS.EVENT.ADVISORY.STREAM.CREATED.*"

// absence is a Store's memory of streams that do not exist.
type absence struct {
	// advised: an advisory has arrived, so they reach this connection
	// (a subscription can succeed and receive none: JetStream in another
	// account); until one does, nothing is remembered.
	advised atomic.Bool
	// created counts the creations advised: a "no" asked for before the
	// latest one may be stale, and is not remembered.
	created atomic.Uint64

	mu sync.Mutex
	m  map[string]time.Time // JetStream stream name -> when JetStream said no
}

// adviseCreations subscribes nc to the advisories of streams created with
// the store's prefix. Absence is remembered once the first of them has
// arrived (the store's own first Open brings one): a user without the
// permission to subscribe, or in another account than JetStream's, gets
// none, and the store then asks JetStream each time, as without it.
func (st *Store) adviseCreations() {
	prefix := st.cfg.Prefix + "_"
	_, err := st.nc.Subscribe(createdSubject, func(m *nats.Msg) {
		if strings.HasPrefix(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:], prefix) {
			st.absence.forget()
			st.absence.advised.Store(true)
		}
	})
	if err != nil {
		st.log.Debug("store: no stream-creation advisories; JetStream is asked each time", "err", err)
	}
}

// known reports whether jsName is remembered as absent, and the count of
// creations to give remember.
func (a *absence) known(jsName string) (bool, uint64) {
	gen := a.created.Load()
	if !a.advised.Load() {
		return false, gen
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	at, ok := a.m[jsName]
	if ok && time.Since(at) > absentTTL {
		delete(a.m, jsName)
		ok = false
	}
	return ok, gen
}

// remember records JetStream's "no" for jsName, asked for when gen
// creations had been advised: unless another came since.
func (a *absence) remember(jsName string, gen uint64) {
	if !a.advised.Load() {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.created.Load() != gen {
		return
	}
	if a.m == nil || len(a.m) >= maxAbsent {
		a.m = make(map[string]time.Time)
	}
	a.m[jsName] = time.Now()
}

// opened drops what is remembered of jsName: this store opened it. Like
// an advised creation, it also makes every "no" asked for before it
// stale, so that one in flight for jsName is not remembered after it.
func (a *absence) opened(jsName string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.created.Add(1)
	delete(a.m, jsName)
}

// forget drops everything remembered: a stream was created.
func (a *absence) forget() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.created.Add(1)
	clear(a.m)
}
