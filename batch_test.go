package msgnet_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/internal/testenv"
)

// batchStore is the memory store with logs that are BatchLogs, recording
// the runs they were given; failAt, when set, fails the batch append that
// reaches that message (once), before appending it.
type batchStore struct {
	msgnet.Store
	mu     sync.Mutex
	runs   []int
	total  int
	failAt int
	failed bool
}

type batchLog struct {
	msgnet.StreamLog
	s *batchStore
}

func (s *batchStore) Open(name string, r msgnet.Retention) (msgnet.StreamLog, error) {
	l, err := s.Store.Open(name, r)
	return &batchLog{l, s}, err
}

func (l *batchLog) AppendBatch(msgs []msgnet.BatchMessage) ([]msgnet.Appended, error) {
	l.s.mu.Lock()
	l.s.runs = append(l.s.runs, len(msgs))
	l.s.mu.Unlock()
	var out []msgnet.Appended
	for _, m := range msgs {
		l.s.mu.Lock()
		fail := l.s.failAt > 0 && !l.s.failed && l.s.total+1 == l.s.failAt
		if fail {
			l.s.failed = true
		} else {
			l.s.total++
		}
		l.s.mu.Unlock()
		if fail {
			return out, errors.New("the store is away")
		}
		off, dup, err := l.Append(m.Payload, m.Key)
		if err != nil {
			return out, err
		}
		out = append(out, msgnet.Appended{Offset: off, Dup: dup})
	}
	return out, nil
}

// largest is the longest run a batch append was given.
func (s *batchStore) largest() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.runs {
		n = max(n, r)
	}
	return n
}

// A store whose logs are BatchLogs takes a burst of publishes as one run;
// across cut connections, and a store failure in the middle of a run, the
// subscriber still gets every message once, in order.
func TestBatchLogExactlyOnce(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		st := &batchStore{Store: msgnet.MemoryStore(), failAt: 1500}
		_, addr := startServer(t, append(opts, msgnet.WithStore(st))...)
		proxy := testenv.NewCutProxy(t, addr)
		sub, got := reliableClient(t, "subscriber", proxy.Addr())
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := sub.Subscribe(ctx, msgnet.GroupStream("room")); err != nil {
			t.Fatal(err)
		}
		pub, _ := reliableClient(t, "publisher", proxy.Addr())
		const n = 4000
		for i := 1; i <= n; i++ {
			if err := pub.WaitPending(ctx, 255); err != nil {
				t.Fatal(err)
			}
			if err := pub.Publish(msgnet.GroupStream("room"), []byte(fmt.Sprint("m-", i))); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
			if i%1000 == 0 {
				proxy.Cut()
			}
		}
		if err := pub.WaitPublished(ctx); err != nil {
			t.Fatalf("publishes not acknowledged: %v (%d pending)", err, pub.Pending())
		}
		waitFor(t, "every message", func() bool { return got.count() >= n })
		checkExactlyOnce(t, got, n)
		if st.largest() < 2 || !st.failed {
			t.Errorf("runs of at most %d, failed %v: the batch path was not taken", st.largest(), st.failed)
		}
		t.Logf("%d runs, the longest %d", len(st.runs), st.largest())
	})
}
