package msgnet_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/msgnet/msgnet"
)

// A store whose upkeep answers slowly (each call up to its timeout) does
// not hold a stopping server for one call per stream: once the server
// stops, the upkeep pass under way makes no further call.
func TestSlowStoreUpkeepDoesNotHoldShutdown(t *testing.T) {
	const streams = 10
	var calls atomic.Int32
	release := make(chan struct{})
	st := &hookedStore{Store: msgnet.MemoryStore(), beforeExpire: func() {
		calls.Add(1)
		<-release // a request to a store that does not answer
	}}
	srv := msgnet.NewServer("slow-store", msgnet.WithStore(st))
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	for i := range streams {
		if _, err := srv.Publish(fmt.Sprint("group:g", i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the upkeep under way", func() bool { return calls.Load() > 0 })
	atStop := calls.Load()
	srv.Shutdown(canceled())
	close(release) // the call under way returns; no other may start
	recv(t, srv.Done(), "the server done")
	if n := calls.Load(); n != atStop {
		t.Fatalf("%d upkeep calls to the store after the server stopped (%d before)", n-atStop, atStop)
	}
}

// canceled is a context already done: Shutdown gives up at once.
func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// watchCountingStore is a shared store on a memory store whose logs
// count watches started and stopped; Open waits for gate when set.
type watchCountingStore struct {
	msgnet.Store
	gate             chan struct{}
	entered, closed  chan struct{}
	started, stopped atomic.Int32
}

func (s *watchCountingStore) Exists(string) (bool, error) { return true, nil }

func (s *watchCountingStore) Open(name string, r msgnet.Retention) (msgnet.StreamLog, error) {
	if s.gate != nil {
		close(s.entered)
		<-s.gate
	}
	l, err := s.Store.Open(name, r)
	if err != nil {
		return nil, err
	}
	return &countedLog{StreamLog: l, s: s}, nil
}

func (s *watchCountingStore) Close() error {
	close(s.closed)
	return s.Store.Close()
}

type countedLog struct {
	msgnet.StreamLog
	s *watchCountingStore
}

func (l *countedLog) Watch(func(uint64, []byte)) (func(), error) {
	l.s.started.Add(1)
	var once sync.Once
	return func() { once.Do(func() { l.s.stopped.Add(1) }) }, nil
}

// A stream a Publish opens while the server stops (after the streams'
// watches were told to stop) has its watch stopped all the same.
func TestStreamOpenedDuringShutdownStopsItsWatch(t *testing.T) {
	st := &watchCountingStore{Store: msgnet.MemoryStore(), gate: make(chan struct{}), entered: make(chan struct{}), closed: make(chan struct{})}
	srv := msgnet.NewServer("closing", msgnet.WithStore(st))
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	published := make(chan error, 1)
	go func() {
		_, err := srv.Publish("group:late", []byte("x"))
		published <- err
	}()
	recv(t, st.entered, "the publish opening its stream")
	srv.Shutdown(context.Background())
	go func() { <-st.closed; close(st.gate) }() // Open returns once the store is closing
	<-srv.Done()
	if err := recv(t, published, "the publish"); err != nil {
		t.Logf("publish during shutdown: %v", err)
	}
	if a, b := st.started.Load(), st.stopped.Load(); a == 0 || a != b {
		t.Fatalf("%d watches started, %d stopped", a, b)
	}
}
