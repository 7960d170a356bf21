package msgnet_test

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

// Broadcasting to a silent session until its queue is full under
// SlowConsumerDisconnect must not deadlock the server: the session's end
// takes the registry locks the broadcast holds.
func TestSlowConsumerDisconnectDuringBroadcast(t *testing.T) {
	srv, addr := startServer(t, msgnet.WithSendQueueBytes(1000),
		msgnet.WithSlowConsumerPolicy(msgnet.SlowConsumerDisconnect))
	nc, err := net.Dial("tcp", addr) // says nothing: its queue only grows
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	waitFor(t, "session registered", func() bool { return srv.ConnectionCount() == 1 })
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 20; i++ {
			srv.Broadcast(bytes.Repeat([]byte{'x'}, 100))
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("broadcast deadlocked")
	}
	waitFor(t, "slow session closed", func() bool { return srv.ConnectionCount() == 0 })
	if st := srv.Stats(); st.Disconnects["slow_consumer"] != 1 {
		t.Fatalf("disconnects %v", st.Disconnects)
	}
}

// A peer that stops reading cannot keep a closing session (and Shutdown)
// waiting forever: the drain timeout bounds the blocked write.
func TestCloseDoesNotWaitForeverOnAStuckPeer(t *testing.T) {
	srv := msgnet.NewServer("s", msgnet.WithDrainTimeout(200*time.Millisecond), msgnet.WithSendQueueBytes(64<<20))
	sessions := make(chan *msgnet.Session, 1)
	srv.OnConnect(func(s *msgnet.Session) { sessions <- s })
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	r := dialRaw(t, srv.Addr().String())
	r.nc.(*net.TCPConn).SetReadBuffer(4096)
	r.hello("stuck")
	s := <-sessions
	for i := 0; i < 4000; i++ { // far more than the socket buffers hold
		s.Send(make([]byte, 4096))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown waited on a peer that never reads: %v", err)
	}
	t.Logf("shutdown took %v with a 200ms drain timeout", time.Since(start))
}

// DATA held for a session whose handshake fails is never written to it: a
// server that requires encryption must not leak a broadcast in clear.
func TestHeldDataNotLeakedToRefusedPeer(t *testing.T) {
	srv, addr := startServer(t, msgnet.WithEncryption([]byte("0123456789abcdef0123456789abcdef")))
	r := dialRaw(t, addr)
	r.write(frame.Append(nil, frame.KindControl, 0, nil)[:4]) // "MSGI": binary mode, handshake not done
	waitFor(t, "session registered", func() bool { return srv.ConnectionCount() == 1 })
	srv.Broadcast([]byte("SECRET-BROADCAST"))
	r.write(frame.Append(nil, frame.KindControl, 0, []byte(`{"op":"hello","client_id":"plain"}`))[4:])
	r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var all bytes.Buffer
	buf := make([]byte, 4096)
	for {
		n, err := r.nc.Read(buf)
		all.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if bytes.Contains(all.Bytes(), []byte("SECRET")) {
		t.Fatalf("a refused peer received held DATA: %q", all.Bytes())
	}
	if !bytes.Contains(all.Bytes(), []byte(msgnet.CodeEncryptionRequired)) {
		t.Fatalf("no encryption_required: %q", all.Bytes())
	}
}
