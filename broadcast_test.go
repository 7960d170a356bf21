package msgnet_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

// The client farm runs in a child process (this test binary, re-executed),
// because one process cannot hold both ends of 10,000 connections within
// the 20,000 open files it is allowed.
const farmEnv = "MSGNET_TEST_FARM"

// runFarm opens N connections to the address in farmEnv ("addr,N,expect"),
// says "ready", and then waits until every connection but the first has
// received expect DATA frames. Connection 0 ("farm-0") never reads. It
// prints "done K" with K the connections that got everything.
func runFarm() int {
	parts := strings.Split(os.Getenv(farmEnv), ",")
	addr := parts[0]
	n, _ := strconv.Atoi(parts[1])
	expect, _ := strconv.Atoi(parts[2])
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 128)
	var failed atomic.Int32
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				failed.Add(1)
				return
			}
			if i == 0 {
				c.(*net.TCPConn).SetReadBuffer(4096)
			}
			frame.WriteFrame(c, frame.KindControl, 0, []byte(fmt.Sprintf(`{"op":"hello","client_id":"farm-%d"}`, i)))
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := frame.NewReader(c, 1024).ReadFrame(); err != nil { // the welcome
				failed.Add(1)
			}
			conns[i] = c
		}(i)
	}
	wg.Wait()
	if failed.Load() > 0 {
		fmt.Printf("failed %d\n", failed.Load())
		return 1
	}
	fmt.Println("ready")
	var complete atomic.Int32
	for i := 1; i < n; i++ {
		wg.Add(1)
		go func(c net.Conn) {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			var hdr [frame.HeaderLen]byte
			payload := make([]byte, 256)
			for got := 0; got < expect; {
				if _, err := io.ReadFull(c, hdr[:]); err != nil {
					return
				}
				h, err := frame.ParseHeader(hdr[:], len(payload))
				if err != nil {
					return
				}
				if _, err := io.ReadFull(c, payload[:h.PayloadLen()]); err != nil {
					return
				}
				if h.Kind == frame.KindData {
					got++
				}
			}
			complete.Add(1)
		}(conns[i])
	}
	wg.Wait()
	fmt.Printf("done %d\n", complete.Load())
	for _, c := range conns {
		c.Close()
	}
	return 0
}

// 10,000 sessions, one of which never reads: a broadcast still reaches
// every other session, without waiting on the slow one, and the slow one is
// handled by the configured policy.
func TestBroadcast10000WithSlowSession(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 10,000 connections")
	}
	for _, policy := range []msgnet.SlowConsumerPolicy{msgnet.SlowConsumerError, msgnet.SlowConsumerDisconnect} {
		name := map[msgnet.SlowConsumerPolicy]string{msgnet.SlowConsumerError: "error", msgnet.SlowConsumerDisconnect: "disconnect"}[policy]
		t.Run(name, func(t *testing.T) { broadcastFarm(t, policy) })
	}
}

func broadcastFarm(t *testing.T, policy msgnet.SlowConsumerPolicy) {
	const n, rounds = 10000, 5
	srv, addr := startServer(t, msgnet.WithMaxConnections(n+10), msgnet.WithSendQueueBytes(64<<10),
		msgnet.WithSlowConsumerPolicy(policy))
	reasons := make(chan error, n)
	srv.OnDisconnect(func(s *msgnet.Session, reason error) {
		if s.ClientID() == "farm-0" {
			reasons <- reason
		}
	})

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d,%d", farmEnv, addr, n, rounds))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(out)
	if !lines.Scan() || lines.Text() != "ready" {
		t.Fatalf("farm: %q", lines.Text())
	}
	if got := srv.ConnectionCount(); got != n {
		t.Fatalf("%d sessions, want %d", got, n)
	}

	// Make farm-0 a slow consumer: fill its socket and then its queue.
	slow, ok := srv.SessionByClientID("farm-0")
	if !ok {
		t.Fatal("farm-0 not registered")
	}
	// The kernel keeps taking bytes while its buffers grow, so fill until
	// the queue is still full after a pause: the writer is then stuck.
	var fillErr error
	for stuck := 0; stuck < 3 && fillErr == nil || errors.Is(fillErr, msgnet.ErrQueueFull) && stuck < 3; {
		fillErr = nil
		for i := 0; i < 1e6 && fillErr == nil; i++ {
			fillErr = slow.Send(make([]byte, 1024))
		}
		// Top it up with one-byte messages: then not even a small
		// broadcast fits.
		for i := 0; i < 1e6 && errors.Is(fillErr, msgnet.ErrQueueFull); i++ {
			if err := slow.Send([]byte{0}); err != nil {
				fillErr = err
				break
			}
		}
		if errors.Is(fillErr, msgnet.ErrSlowConsumer) {
			break
		}
		time.Sleep(20 * time.Millisecond)
		if err := slow.Send([]byte{0}); errors.Is(err, msgnet.ErrQueueFull) {
			stuck++
		} else {
			stuck = 0
		}
	}
	switch policy {
	case msgnet.SlowConsumerError:
		if !errors.Is(fillErr, msgnet.ErrQueueFull) {
			t.Fatalf("filling the slow session: %v", fillErr)
		}
	case msgnet.SlowConsumerDisconnect:
		if !errors.Is(fillErr, msgnet.ErrSlowConsumer) {
			t.Fatalf("filling the slow session: %v", fillErr)
		}
		if reason := <-reasons; !errors.Is(reason, msgnet.ErrSlowConsumer) {
			t.Fatalf("slow session ended with %v", reason)
		}
	}

	start := time.Now()
	for r := 0; r < rounds; r++ {
		d := srv.Broadcast([]byte(fmt.Sprintf("broadcast %d", r)))
		switch policy {
		case msgnet.SlowConsumerError:
			if d.Queued != n-1 || len(d.Failed) != 1 || d.Failed[0].Session != slow || !errors.Is(d.Failed[0].Err, msgnet.ErrQueueFull) {
				t.Fatalf("round %d: queued %d, failed %v", r, d.Queued, d.Failed)
			}
		case msgnet.SlowConsumerDisconnect:
			if d.Queued != n-1 || len(d.Failed) != 0 {
				t.Fatalf("round %d: queued %d, failed %v", r, d.Queued, d.Failed)
			}
		}
	}
	queuedIn := time.Since(start)
	if !lines.Scan() {
		t.Fatal("farm ended without a report")
	}
	t.Logf("%d broadcasts to %d sessions queued in %v, delivered in %v", rounds, n, queuedIn, time.Since(start))
	if got := lines.Text(); got != fmt.Sprintf("done %d", n-1) {
		t.Fatalf("farm: %q, want every reading session to get all %d broadcasts", got, rounds)
	}
}

func TestGroups(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, opts...)
		sessions := make(chan *msgnet.Session, 3)
		srv.OnConnect(func(s *msgnet.Session) { sessions <- s })
		got := make([]chan string, 3)
		var clients []*msgnet.Client
		for i := range got {
			got[i] = make(chan string, 10)
			c := msgnet.NewClient(fmt.Sprint("member-", i))
			ch := got[i]
			c.OnMessage(func(msg []byte) { ch <- string(msg) })
			if err := c.Connect(context.Background(), addr); err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			clients = append(clients, c)
		}
		byClient := map[string]*msgnet.Session{}
		for range got {
			s := <-sessions
			byClient[s.ClientID()] = s
		}
		s0, s1, s2 := byClient["member-0"], byClient["member-1"], byClient["member-2"]
		srv.Join(s0, "room")
		srv.Join(s1, "room")
		srv.Join(s1, "room") // twice is once
		srv.Join(s2, "other")
		if d := srv.SendGroup("room", []byte("hello room"), s0); d.Queued != 1 || d.Failed != nil {
			t.Fatalf("group send: %+v", d)
		}
		if m := <-got[1]; m != "hello room" {
			t.Fatalf("member-1 got %q", m)
		}
		if d := srv.SendGroup("room", []byte("all")); d.Queued != 2 {
			t.Fatalf("group send to all: %+v", d)
		}
		if <-got[0] != "all" || <-got[1] != "all" {
			t.Fatal("group message missing")
		}
		if g := s1.Groups(); len(g) != 1 || g[0] != "room" {
			t.Fatalf("member-1 groups %v", g)
		}
		srv.Leave(s0, "room")
		if n := len(srv.GroupMembers("room")); n != 1 {
			t.Fatalf("%d members after leave", n)
		}
		clients[1].Close()
		waitFor(t, "a closed session leaves its groups", func() bool { return len(srv.GroupMembers("room")) == 0 })
		if err := srv.Join(s1, "room"); !errors.Is(err, msgnet.ErrSessionClosed) {
			t.Fatalf("join after end: %v", err)
		}
		select {
		case m := <-got[2]:
			t.Fatalf("member of another group got %q", m)
		default:
		}
		if err := srv.SendTo("member-2", []byte("direct")); err != nil || <-got[2] != "direct" {
			t.Fatalf("SendTo by client id: %v", err)
		}
		if err := srv.SendTo(s2.ID(), []byte("by id")); err != nil || <-got[2] != "by id" {
			t.Fatalf("SendTo by session id: %v", err)
		}
		if err := srv.SendTo("nobody", []byte("x")); !errors.Is(err, msgnet.ErrNoSession) {
			t.Fatalf("SendTo nobody: %v", err)
		}
	})
}
