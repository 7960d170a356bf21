package msgnet_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

func TestStatsCountExactly(t *testing.T) {
	srv, addr := echoServer(t, msgnet.WithMaxConnections(1))
	srv.OnRequest(func(s *msgnet.Session, req []byte) ([]byte, error) { return req, nil })
	r := dialRaw(t, addr)
	r.hello("counted")
	for i := 0; i < 10; i++ {
		r.send(frame.KindData, "0123456789") // 20 bytes a frame
		r.expect(frame.KindData)
	}
	r.send(frame.KindPing, "p")
	r.expect(frame.KindPong)
	r.send(frame.Kind(0x77), "")
	r.expectError(frame.CodeUnknownType)
	// A second connection is refused: max connections is 1.
	refused := dialRaw(t, addr)
	refused.expectError(frame.CodeServerFull)

	// Bytes out are counted once the write returns, and an ERROR once its
	// Enqueue returns, both of which can be after the peer has read the
	// frame: wait for the counts to settle.
	var st msgnet.Stats
	waitFor(t, "DATA bytes out and the ERROR counted", func() bool {
		st = srv.Stats()
		return st.KindBytesOut["DATA"] >= 200 && st.ErrorsSent["unknown_type"] >= 1
	})
	if st.Sessions != 1 || st.Accepted != 1 || st.Refused["server_full"] != 1 {
		t.Fatalf("sessions %d accepted %d refused %v", st.Sessions, st.Accepted, st.Refused)
	}
	if st.FramesIn["DATA"] != 10 || st.FramesIn["PING"] != 1 || st.FramesIn["CONTROL"] != 1 || st.FramesIn["KIND(0x77)"] != 1 {
		t.Fatalf("frames in %v", st.FramesIn)
	}
	if st.FramesOut["DATA"] != 10 || st.FramesOut["PONG"] != 1 || st.FramesOut["CONTROL"] != 1 || st.FramesOut["ERROR"] != 1 {
		t.Fatalf("frames out %v", st.FramesOut)
	}
	if st.KindBytesIn["DATA"] != 200 || st.KindBytesOut["DATA"] != 200 {
		t.Fatalf("DATA bytes in %d out %d, want 200", st.KindBytesIn["DATA"], st.KindBytesOut["DATA"])
	}
	if st.ErrorsSent["unknown_type"] != 1 {
		t.Fatalf("errors sent %v", st.ErrorsSent)
	}
	sessions := srv.Sessions()
	if len(sessions) != 1 {
		t.Fatalf("%d sessions", len(sessions))
	}
	info := sessions[0].Info()
	if info.ClientID != "counted" || info.MsgsIn != 13 || info.Transport != "tcp" || info.Mode != "binary" {
		t.Fatalf("session info %+v", info)
	}

	// The counts of an ended session stay in the totals.
	r.nc.Close()
	waitFor(t, "session ended", func() bool { return srv.ConnectionCount() == 0 })
	st = srv.Stats()
	if st.FramesIn["DATA"] != 10 || st.Disconnects["peer_closed"] != 1 {
		t.Fatalf("after the end: frames in %v, disconnects %v", st.FramesIn, st.Disconnects)
	}

	// Requests and the sampled handler latency histogram.
	c := msgnet.NewClient("req")
	if err := c.Connect(context.Background(), addr); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 5; i++ {
		if _, err := c.Request(context.Background(), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 128; i++ {
		c.SendString("sampled")
	}
	c.Ping(context.Background())
	st = srv.Stats()
	if st.RequestsHandled != 5 || st.RequestHandlerErrors != 0 {
		t.Fatalf("requests handled %d errors %d", st.RequestsHandled, st.RequestHandlerErrors)
	}
	if st.HandlerLatency.Count < 1 {
		t.Fatalf("no handler latency sample after %d messages", 138)
	}
}

// ReasonClass names every kind of reason, wrapped or not, the same way.
func TestReasonClass(t *testing.T) {
	for _, tc := range []struct {
		reason error
		want   string
	}{
		{msgnet.ErrPeerClosed, "peer_closed"},
		{fmt.Errorf("read: %w", msgnet.ErrPeerClosed), "peer_closed"},
		{msgnet.ErrIdleTimeout, "idle_timeout"},
		{msgnet.ErrServerShutdown, "shutdown"},
		{msgnet.ErrServerClosed, "closed"},
		{msgnet.ErrSlowConsumer, "slow_consumer"},
		{msgnet.ErrHeartbeatTimeout, "heartbeat_timeout"},
		{msgnet.ErrHandshakeTimeout, "handshake_timeout"},
		{msgnet.ErrClientClosed, "client_closed"},
		{msgnet.ErrReplaced, "replaced"},
		{&msgnet.HandlerPanicError{Value: "boom"}, "handler_panic"},
		{fmt.Errorf("x: %w", &msgnet.HandlerPanicError{Value: 1}), "handler_panic"},
		{&msgnet.ProtocolError{Code: "bad_frame"}, "protocol:bad_frame"},
		{fmt.Errorf("x: %w", msgnet.ErrTooLarge), "protocol:message_too_large"},
		{&msgnet.DisconnectError{Reason: "bye", Remote: true}, "peer_disconnect"},
		{&msgnet.DisconnectError{Reason: "kicked"}, "disconnect"},
		{fmt.Errorf("x: %w", &msgnet.DisconnectError{Reason: "bye", Remote: true}), "peer_disconnect"},
		{errors.New("something else"), "error"},
	} {
		if got := msgnet.ReasonClass(tc.reason); got != tc.want {
			t.Errorf("ReasonClass(%v) = %q, want %q", tc.reason, got, tc.want)
		}
	}
}

// BenchmarkReasonClassPeerDisconnect is the class of a peer's DISCONNECT,
// taken once per connection that ends so.
func BenchmarkReasonClassPeerDisconnect(b *testing.B) {
	reason := error(&msgnet.DisconnectError{Reason: "bye", Remote: true})
	for b.Loop() {
		msgnet.ReasonClass(reason)
	}
}
