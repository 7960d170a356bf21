package msgnet_test

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
)

func TestRequestReplyConcurrent(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, opts...)
		srv.OnRequest(func(s *msgnet.Session, req []byte) ([]byte, error) {
			if string(req) == "fail" {
				return nil, errors.New("asked to fail")
			}
			return append([]byte("re:"), req...), nil
		})
		c := msgnet.NewClient("rr")
		if err := c.Connect(context.Background(), addr); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		const workers, each = 100, 1000
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; i < each; i++ {
					req := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, uint32(w)), uint32(i))
					rep, err := c.Request(context.Background(), req)
					if err != nil {
						errs <- err
						return
					}
					if string(rep) != "re:"+string(req) {
						errs <- errors.New("reply does not match its request")
						return
					}
				}
			}(w)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		var re *msgnet.RemoteError
		if _, err := c.Request(context.Background(), []byte("fail")); !errors.As(err, &re) || re.Message != "asked to fail" {
			t.Fatalf("failing handler: %v", err)
		}
	})
}

func TestRequestTimeoutAndLateReply(t *testing.T) {
	srv, addr := startServer(t)
	release := make(chan struct{})
	srv.OnRequest(func(s *msgnet.Session, req []byte) ([]byte, error) {
		if string(req) == "slow" {
			<-release
		}
		return req, nil
	})
	c := msgnet.NewClient("rr")
	if err := c.Connect(context.Background(), addr); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Request(ctx, []byte("slow")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want context.DeadlineExceeded", err)
	}
	close(release)
	// The late reply is dropped and counted; the next request gets its own.
	if rep, err := c.Request(context.Background(), []byte("next")); err != nil || string(rep) != "next" {
		t.Fatalf("next request: %q %v", rep, err)
	}
	if n := c.LateReplies(); n != 1 {
		t.Fatalf("LateReplies = %d, want 1", n)
	}
}

// The server can ask a client, and never asks a peer that did not
// negotiate request/reply.
func TestServerRequestsClient(t *testing.T) {
	srv, addr := startServer(t)
	sessions := make(chan *msgnet.Session, 2)
	srv.OnConnect(func(s *msgnet.Session) { sessions <- s })
	c := msgnet.NewClient("answerer")
	c.OnRequest(func(req []byte) ([]byte, error) { return append(req, '!'), nil })
	if err := c.Connect(context.Background(), addr); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-sessions
	rep, err := s.Request(context.Background(), []byte("ping"))
	if err != nil || string(rep) != "ping!" {
		t.Fatalf("server request: %q %v", rep, err)
	}

	r := dialRaw(t, addr) // a core-only peer
	r.hello("core")
	core := <-sessions
	if _, err := core.Request(context.Background(), []byte("x")); !errors.Is(err, msgnet.ErrNotNegotiated) {
		t.Fatalf("request to a core-only peer: %v", err)
	}
	core.SendString("only data")
	if got := r.expect(0x10); string(got) != "only data" {
		t.Fatalf("core peer got %q", got)
	}
}

func TestRequestFailsWhenConnectionLost(t *testing.T) {
	srv, addr := startServer(t)
	entered := make(chan struct{})
	srv.OnRequest(func(s *msgnet.Session, req []byte) ([]byte, error) {
		close(entered)
		s.Disconnect("going away")
		return nil, nil
	})
	c := msgnet.NewClient("c")
	if err := c.Connect(context.Background(), addr); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err := c.Request(context.Background(), []byte("x"))
	<-entered
	if !errors.Is(err, msgnet.ErrConnectionLost) {
		t.Fatalf("got %v, want ErrConnectionLost", err)
	}
}
