package msgnet_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	natsbus "github.com/msgnet/msgnet/cluster/nats"
	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/internal/testenv"
)

// The hostile suite for acknowledged delivery (docs/PROTOCOL.md, 6.7):
// what a lying, malformed, flooding or unlucky peer does to streams. Raw
// attackers speak frames by hand beside honest peers (a raw round-trip
// client, whose latency must stay bounded, and reliable Go clients, which
// must get every message exactly once, in order). Helpers shared with the
// rest of the suite: hostile_helpers_test.go, streams_test.go.

// streamPeer is a raw connection that negotiated (or, with features "",
// did not negotiate) the reliable extension.
type streamPeer struct {
	t   testing.TB
	id  string
	nc  net.Conn
	rd  *frame.Reader
	png uint64 // PINGs sent by alive
}

// dialStreamPeer connects a raw peer with hello fields extra (e.g.
// `,"features":["reliable"],"publisher":"p1"`) and waits for its welcome.
func dialStreamPeer(t testing.TB, addr, id, extra string) *streamPeer {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	rd, _, err := handshakeWelcome(nc, id, extra)
	if err != nil {
		t.Fatalf("%s: %v", id, err)
	}
	return &streamPeer{t: t, id: id, nc: nc, rd: rd}
}

// reliableHello is the hello fields of a peer that negotiates streams
// with publisher id pub ("" for none).
func reliableHello(pub string) string {
	if pub == "" {
		return `,"features":["reliable"]`
	}
	return `,"features":["reliable"],"publisher":"` + pub + `"`
}

func (p *streamPeer) write(b []byte) {
	p.t.Helper()
	if err := writeAll(p.nc, b, 5*time.Second); err != nil {
		p.t.Fatalf("%s: write: %v", p.id, err)
	}
}

// next reads one frame within limit; its payload is a copy.
func (p *streamPeer) next(limit time.Duration) (frame.Frame, error) {
	p.nc.SetReadDeadline(time.Now().Add(limit))
	defer p.nc.SetReadDeadline(time.Time{})
	f, err := p.rd.ReadFrame()
	f.Payload = bytes.Clone(f.Payload)
	return f, err
}

// must reads one frame within a few seconds, failing the test otherwise.
func (p *streamPeer) must(what string) frame.Frame {
	p.t.Helper()
	f, err := p.next(5 * time.Second)
	if err != nil {
		p.t.Fatalf("%s: waiting for %s: %v", p.id, what, err)
	}
	return f
}

// alive checks that the session goes on and that nothing was sent to it
// since the last frame read: a PING's PONG must be the next frame.
func (p *streamPeer) alive() {
	p.t.Helper()
	p.png++
	ping := fmt.Appendf(nil, "alive-%s-%d", p.id, p.png)
	p.write(frame.Append(nil, frame.KindPing, 0, ping))
	f := p.must("the PONG that says the session goes on")
	if f.Kind != frame.KindPong || !bytes.Equal(f.Payload, ping) {
		p.t.Fatalf("%s: got %v %.200q before the PONG: an answer the protocol does not give", p.id, f.Kind, describe(f))
	}
}

// expectError reads an ERROR with code.
func (p *streamPeer) expectError(code string) frame.ErrorBody {
	p.t.Helper()
	f := p.must("ERROR " + code)
	e := frame.ParseError(f.Payload)
	if f.Kind != frame.KindError || e.Code != code {
		p.t.Fatalf("%s: got %v %.200q, want ERROR %s", p.id, f.Kind, describe(f), code)
	}
	return e
}

// expectClosed reads an optional DISCONNECT and then the end of the stream.
func (p *streamPeer) expectClosed() {
	p.t.Helper()
	for {
		f, err := p.next(5 * time.Second)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err) {
			return
		}
		if err != nil {
			p.t.Fatalf("%s: waiting for the server to close: %v", p.id, err)
		}
		if f.Kind != frame.KindDisconnect {
			p.t.Fatalf("%s: got %v %.200q, want DISCONNECT and the end", p.id, f.Kind, describe(f))
		}
	}
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && strings.Contains(err.Error(), "reset")
}

// control reads a CONTROL frame with op.
func (p *streamPeer) control(op string) map[string]any {
	p.t.Helper()
	f := p.must("CONTROL " + op)
	var m map[string]any
	if f.Kind != frame.KindControl || json.Unmarshal(f.Payload, &m) != nil || m["op"] != op {
		p.t.Fatalf("%s: got %v %.200q, want CONTROL %s", p.id, f.Kind, describe(f), op)
	}
	return m
}

// sub sends a CONTROL sub (or any op) given as JSON.
func (p *streamPeer) sub(js string) {
	p.t.Helper()
	p.write(frame.Append(nil, frame.KindControl, 0, []byte(js)))
}

// subscribe subscribes to stream from now on and returns the answer.
func (p *streamPeer) subscribe(stream string) map[string]any {
	p.t.Helper()
	p.sub(`{"op":"sub","stream":` + quote(stream) + `}`)
	return p.control("subscribed")
}

func quote(s string) string { b, _ := json.Marshal(s); return string(b) }

// publish writes one publish frame.
func (p *streamPeer) publish(seq uint64, stream string, body []byte) {
	p.t.Helper()
	p.write(pubFrame(seq, stream, body))
}

// expectPubAck reads a publish acknowledgement and checks it: status 1
// also checks that its text starts with code.
func (p *streamPeer) expectPubAck(first, last uint64, status byte, code string) pubAck {
	p.t.Helper()
	f := p.must(fmt.Sprintf("the acknowledgement of publishes %d-%d", first, last))
	a, ok := parsePubAck(f)
	if !ok {
		p.t.Fatalf("%s: got %v %.200q, want a publish acknowledgement", p.id, f.Kind, describe(f))
	}
	if a.first != first || a.last != last || a.status != status || status != 0 && !strings.HasPrefix(a.text, code+": ") {
		p.t.Fatalf("%s: acknowledgement %+v, want %d-%d status %d %s", p.id, a, first, last, status, code)
	}
	return a
}

// describe is a frame for a failure message.
func describe(f frame.Frame) string {
	return fmt.Sprintf("flags 0x%02x %q", uint8(f.Flags), f.Payload)
}

// nameField is a stream name as frames carry it: a length byte, the name.
func nameField(name string) []byte { return append([]byte{byte(len(name))}, name...) }

func pubFrame(seq uint64, stream string, body []byte) []byte {
	p := binary.BigEndian.AppendUint64(nil, seq)
	p = append(p, nameField(stream)...)
	return frame.Append(nil, frame.KindData, frame.FlagPublish, append(p, body...))
}

func ackFrame(stream string, off uint64) []byte {
	return frame.Append(nil, frame.KindData, frame.FlagAck, binary.BigEndian.AppendUint64(nameField(stream), off))
}

// pubAck is the server's acknowledgement of a run of publishes.
type pubAck struct {
	first, last uint64
	status      byte
	text        string
}

func parsePubAck(f frame.Frame) (pubAck, bool) {
	if f.Kind != frame.KindData || f.Flags != frame.FlagAck || len(f.Payload) < 17 {
		return pubAck{}, false
	}
	p := f.Payload
	return pubAck{binary.BigEndian.Uint64(p), binary.BigEndian.Uint64(p[8:]), p[16], string(p[17:])}, true
}

// streamMsg is a stream's message as the server sends it.
type streamMsg struct {
	stream string
	off    uint64
	body   []byte
}

func parseStreamMsg(f frame.Frame) (streamMsg, bool) {
	p := f.Payload
	if f.Kind != frame.KindData || f.Flags != frame.FlagStream || len(p) < 1 || len(p) < 1+int(p[0])+8 {
		return streamMsg{}, false
	}
	n := int(p[0])
	return streamMsg{string(p[1 : 1+n]), binary.BigEndian.Uint64(p[1+n:]), p[1+n+8:]}, true
}

// jsonUint reads a JSON number field as a uint64 (the answers' offsets).
func jsonUint(m map[string]any, k string) uint64 {
	v, _ := m[k].(float64)
	return uint64(v)
}

// bystanders are the honest peers beside an attack on streams: a raw
// round-trip client whose latency is bounded, and a reliable subscriber
// of group:room and a reliable publisher to it, whose messages must all
// arrive, exactly once and in order.
type bystanders struct {
	t    *testing.T
	h    *honest
	pub  *msgnet.Client
	got  *streamRecorder
	sent int
}

func newBystanders(t *testing.T, tg target, addr string) *bystanders {
	t.Helper()
	b := &bystanders{t: t, h: newHonest(t, tg, addr)}
	var sub *msgnet.Client
	sub, b.got = reliableClient(t, "bystander-sub", addr)
	if err := sub.Subscribe(ctx5s(t), msgnet.GroupStream("room")); err != nil {
		t.Fatal(err)
	}
	b.pub, _ = reliableClient(t, "bystander-pub", addr)
	return b
}

// publish publishes n more messages to group:room.
func (b *bystanders) publish(n int) {
	b.t.Helper()
	for range n {
		b.sent++
		if err := b.pub.Publish(msgnet.GroupStream("room"), fmt.Append(nil, "m-", b.sent)); err != nil {
			b.t.Fatalf("bystander publish %d: %v", b.sent, err)
		}
	}
}

// check publishes a few more, then checks that the bystanders got all
// of theirs, and that the round-trip client is within its bound.
func (b *bystanders) check() {
	b.t.Helper()
	b.publish(10)
	if err := b.pub.WaitPublished(ctx5s(b.t)); err != nil {
		b.t.Fatalf("the bystander's publishes were not acknowledged: %v (%d pending)", err, b.pub.Pending())
	}
	waitForWithin(b.t, 10*time.Second, "the bystander's messages", func() bool { return b.got.count() >= b.sent })
	checkExactlyOnce(b.t, b.got, b.sent)
	b.h.trip(20)
}

// Malformed stream frames, one after another on one session: each gets
// the answer 6.7 documents (a publish, its acknowledgement with status 1
// and bad_stream; a sub, refused; a frame whose flag was not negotiated,
// ERROR unknown_type), the session goes on, and the bystanders notice
// nothing. Frames that end the session are each on a session of their own.
func TestHostileStreamMalformed(t *testing.T) {
	forServeTargets(t, func(t *testing.T, tg target) {
		_, addr := tg.start(t)
		by := newBystanders(t, tg, addr)
		by.publish(10)
		a := dialStreamPeer(t, addr, "mal", reliableHello("mal-pub"))
		raw := func(flags frame.Flags, p []byte) []byte { return frame.Append(nil, frame.KindData, flags, p) }
		seqName := func(seq uint64, name []byte) []byte { return append(binary.BigEndian.AppendUint64(nil, seq), name...) }

		// Publishes too short for a sequence number: status 1 for seq 0.
		for _, p := range [][]byte{nil, {1}, {0, 0, 0, 0, 0, 0, 7}} {
			a.write(raw(frame.FlagPublish, p))
			a.expectPubAck(0, 0, 1, msgnet.CodeBadStream)
		}
		// A name length past the end of the frame, and an empty name.
		a.write(raw(frame.FlagPublish, seqName(11, []byte{200, 'g', 'r'})))
		a.expectPubAck(11, 11, 1, msgnet.CodeBadStream)
		a.write(raw(frame.FlagPublish, seqName(12, []byte{0})))
		a.expectPubAck(12, 12, 1, msgnet.CodeBadStream)
		a.write(raw(frame.FlagPublish, seqName(13, []byte{0, 'x', 'y'})))
		a.expectPubAck(13, 13, 1, msgnet.CodeBadStream)

		// Names that are not group:<group> or client:<id>, or whose group
		// or id breaks the rules of 6.5 (255 bytes is the most a name's
		// length byte can say; a group name is at most 128).
		badNames := []string{
			"room", "group", "GROUP:room", "group:", "client:", "topic:room", ":room",
			"group:a\nb", "group:a\x00b", "group:\u202eevil", "client:a b", "client:tab\t",
			"group:" + strings.Repeat("g", 129), "group:" + strings.Repeat("g", 249),
			"client:" + strings.Repeat("c", 248),
		}
		seq := uint64(100)
		for _, name := range badNames {
			seq++
			a.publish(seq, name, []byte("x"))
			a.expectPubAck(seq, seq, 1, msgnet.CodeBadStream)
			a.sub(`{"op":"sub","stream":` + quote(name) + `}`)
			if m := a.control("refused"); m["code"] != msgnet.CodeBadStream || m["stream"] != name {
				t.Fatalf("sub %q: %v, want refused bad_stream", name, m)
			}
		}
		// A name at the limits: a 128-byte group (a 134-byte name) is a
		// stream; publishes to it are taken.
		long := msgnet.GroupStream(strings.Repeat("g", 128))
		seq++
		a.publish(seq, long, []byte("x"))
		a.expectPubAck(seq, seq, 0, "")

		// Another client id's stream: refused to a sub.
		a.sub(`{"op":"sub","stream":"client:bystander-sub"}`)
		if m := a.control("refused"); m["code"] != msgnet.CodeBadStream {
			t.Fatalf("sub to another client id's stream: %v, want refused bad_stream", m)
		}
		// The session's own client id's stream is allowed.
		if m := a.subscribe("client:mal"); m["stream"] != "client:mal" {
			t.Fatalf("sub to its own stream: %v", m)
		}

		// Acknowledgements of a stream never subscribed: nothing to answer.
		a.write(ackFrame("group:never", 5))
		a.write(ackFrame("group:room", math.MaxUint64))
		// Flags combined, or a stream message sent the wrong way (0x10 is
		// server to client): not frames the extension defines.
		a.write(raw(frame.FlagPublish|frame.FlagAck, seqName(1, nameField("group:room"))))
		a.expectError(msgnet.CodeUnknownType)
		a.alive()

		// Publishes and acknowledgements from a session that did not
		// negotiate reliable: ERROR unknown_type, and the session goes on.
		plain := dialStreamPeer(t, addr, "plain", "")
		plain.publish(1, "group:room", []byte("sneaked in"))
		plain.expectError(msgnet.CodeUnknownType)
		plain.write(ackFrame("group:room", 1))
		plain.expectError(msgnet.CodeUnknownType)
		plain.sub(`{"op":"sub","stream":"group:room"}`)
		plain.expectError(msgnet.CodeBadControl)
		plain.alive()
		asked := dialStreamPeer(t, addr, "asked-other", `,"features":["request"],"publisher":"p"`)
		asked.publish(1, "group:room", []byte("sneaked in"))
		asked.expectError(msgnet.CodeUnknownType)
		asked.alive()

		// Acknowledgements of the wrong shape: ERROR bad_stream, and the
		// session ends (a peer that cannot frame an acknowledgement cannot
		// be trusted with a window).
		for i, p := range [][]byte{
			nil,
			nameField("group:room"), // no offset
			append(nameField("group:room"), 0, 0, 0, 0, 0, 0, 1),       // 7 bytes
			append(nameField("group:room"), 0, 0, 0, 0, 0, 0, 0, 1, 9), // 9 bytes
			append([]byte{0}, 0, 0, 0, 0, 0, 0, 0, 1),                  // an empty name
			{40, 'g'}, // a name past the end
		} {
			b := dialStreamPeer(t, addr, fmt.Sprint("badack-", i), reliableHello(""))
			b.subscribe("group:room")
			b.write(raw(frame.FlagAck, p))
			b.expectError(msgnet.CodeBadStream)
			b.expectClosed()
		}
		by.check()
	})
}

// A stream message (flag 0x10) goes from server to client only: a client
// that sends one is answered ERROR unknown_type, as for any flag used
// outside what was agreed (section 1), and the message handler never sees
// it as a plain message.
func TestHostileStreamWrongDirection(t *testing.T) {
	forServeTargets(t, func(t *testing.T, tg target) {
		_, addr := tg.start(t)
		a := dialStreamPeer(t, addr, "backwards", reliableHello(""))
		p := binary.BigEndian.AppendUint64(nameField("group:room"), 1)
		a.write(frame.Append(nil, frame.KindData, frame.FlagStream, append(p, "BROADCAST"...)))
		a.expectError(msgnet.CodeUnknownType)
		a.alive()
	})
}

// watcher is a raw subscriber that reads a stream's messages, checks their
// offsets are contiguous, and acknowledges each run.
type watcher struct {
	*streamPeer
	stream string
	next   uint64 // the offset expected next
	bodies []string
}

func newWatcher(t *testing.T, addr, id, stream string) *watcher {
	t.Helper()
	w := &watcher{streamPeer: dialStreamPeer(t, addr, id, reliableHello(""))}
	w.stream = stream
	m := w.subscribe(stream)
	w.next = jsonUint(m, "next")
	return w
}

// until reads the stream's messages until one has body last, and returns
// the bodies read since the last call.
func (w *watcher) until(last string) []string {
	w.t.Helper()
	start := len(w.bodies)
	for {
		f := w.must("the stream's message " + last)
		m, ok := parseStreamMsg(f)
		if !ok || m.stream != w.stream {
			w.t.Fatalf("%s: got %v %.200q, want a message of %s", w.id, f.Kind, describe(f), w.stream)
		}
		if m.off != w.next {
			w.t.Fatalf("%s: offset %d after %d: skipped or repeated", w.id, m.off, w.next-1)
		}
		w.next++
		w.bodies = append(w.bodies, string(m.body))
		w.write(ackFrame(w.stream, m.off))
		if string(m.body) == last {
			return w.bodies[start:]
		}
	}
}

// Publishers that collide or lie about their sequence numbers get what
// 6.7 says, and nothing they do stores a message twice or makes another
// publisher's message vanish.
func TestHostileStreamPublishers(t *testing.T) {
	forServeTargets(t, func(t *testing.T, tg target) {
		srv, addr := tg.start(t)
		h := newHonest(t, tg, addr)

		// Two sessions of one client id and one publisher id, racing with
		// the same sequence number: the newer takes the client id over,
		// and whichever got there first is stored; never both.
		t.Run("twins", func(t *testing.T) {
			w := newWatcher(t, addr, "twins-watch", "group:twins")
			const rounds = 30
			for r := range rounds {
				start := make(chan struct{})
				done := make(chan error, 2)
				for _, who := range []string{"A", "B"} {
					go func() {
						nc, err := net.Dial("tcp", addr)
						if err != nil {
							done <- err
							return
						}
						defer nc.Close()
						b := helloFrame("twin", reliableHello("twin-pub"))
						b = append(b, pubFrame(uint64(r+1), "group:twins", fmt.Appendf(nil, "%s-%d", who, r))...)
						<-start
						if _, err := nc.Write(b); err != nil {
							done <- err
							return
						}
						// Until the acknowledgement, or the end (replaced).
						rd := frame.NewReader(nc, 1<<20)
						nc.SetReadDeadline(time.Now().Add(5 * time.Second))
						for {
							f, err := rd.ReadFrame()
							if err != nil {
								if errors.Is(err, io.EOF) || isReset(err) {
									err = nil
								}
								done <- err
								return
							}
							if a, ok := parsePubAck(f); ok {
								if a.status != 0 || a.first != uint64(r+1) {
									err = fmt.Errorf("%s: acknowledgement %+v", who, a)
								}
								done <- err
								return
							}
						}
					}()
				}
				close(start)
				for range 2 {
					if err := <-done; err != nil {
						t.Fatalf("round %d: %v", r, err)
					}
				}
			}
			srv.Publish("group:twins", []byte("marker"))
			got := w.until("marker")
			if len(got) != rounds+1 {
				t.Fatalf("%d messages stored for %d rounds: %q", len(got)-1, rounds, got)
			}
			for r, b := range got[:rounds] {
				if b != fmt.Sprint("A-", r) && b != fmt.Sprint("B-", r) {
					t.Fatalf("round %d stored %q", r, b)
				}
			}
		})

		// Sequence numbers going backwards, 0, and 2^64-1 then small ones.
		t.Run("liar", func(t *testing.T) {
			w := newWatcher(t, addr, "liar-watch", "group:lies")
			a := dialStreamPeer(t, addr, "liar", reliableHello("liar-pub"))
			step := func(seq uint64, body string, status byte, code string) {
				t.Helper()
				a.publish(seq, "group:lies", []byte(body))
				a.expectPubAck(seq, seq, status, code)
			}
			step(10, "s10", 0, "")
			// Behind the last one taken: taken for a retry, acknowledged,
			// not stored (the publisher lied; only it is affected).
			step(5, "s5", 0, "")
			step(10, "s10-again", 0, "")
			// 0 is no sequence number (they count from 1): refused, as
			// any publish the server cannot take, with status 1.
			a.publish(0, "group:lies", []byte("s0"))
			a.write(frame.Append(nil, frame.KindPing, 0, []byte("after-seq-0")))
			switch f := a.must("an answer to seq 0"); {
			case f.Kind == frame.KindPong:
				t.Errorf("a publish with seq 0 got no answer at all: its publisher waits for it forever")
			default:
				if ack, ok := parsePubAck(f); !ok || ack.first != 0 || ack.last != 0 || ack.status != 1 ||
					!strings.HasPrefix(ack.text, msgnet.CodeBadStream+": ") {
					t.Errorf("seq 0: got %v %.200q, want status 1 bad_stream", f.Kind, describe(f))
				}
				if f := a.must("the PONG"); f.Kind != frame.KindPong {
					t.Fatalf("got %v %.200q, want the PONG", f.Kind, describe(f))
				}
			}
			step(11, "s11", 0, "")
			step(math.MaxUint64, "max", 0, "")
			// After 2^64-1 every number is behind: this publisher id can
			// store nothing more; acknowledged, never stored.
			step(12, "s12", 0, "")
			step(1, "s1", 0, "")
			a.alive()
			srv.Publish("group:lies", []byte("marker"))
			got := w.until("marker")
			if want := []string{"s10", "s11", "max", "marker"}; !equalStrings(got, want) {
				t.Fatalf("stored %q, want %q", got, want)
			}
		})

		// A publisher id is at most 64 bytes (UTF-8 counted in bytes).
		t.Run("publisher-id-length", func(t *testing.T) {
			for _, pub := range []string{strings.Repeat("p", 64), strings.Repeat("é", 32)} {
				a := dialStreamPeer(t, addr, "pub64", reliableHello(pub))
				a.publish(1, "group:ids", []byte("x"))
				a.expectPubAck(1, 1, 0, "")
				a.nc.Close()
			}
			for _, pub := range []string{strings.Repeat("p", 65), strings.Repeat("é", 33)} {
				nc, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
				a := &streamPeer{t: t, id: "pub65", nc: nc, rd: frame.NewReader(nc, 1<<20)}
				a.write(helloFrame("pub65", reliableHello(pub)))
				a.expectError(msgnet.CodeBadControl)
				a.expectClosed()
			}
		})

		// A publisher id taken over with its client id continues its
		// numbers: what it had stored is a retry. Another client id with
		// the same publisher id, or the same client id with another
		// publisher id (a restarted process), is a publisher of its own.
		t.Run("takeover", func(t *testing.T) {
			w := newWatcher(t, addr, "takeover-watch", "group:takeover")
			old := dialStreamPeer(t, addr, "alice", reliableHello("P"))
			for i := uint64(1); i <= 3; i++ {
				old.publish(i, "group:takeover", fmt.Append(nil, "a", i))
				old.expectPubAck(i, i, 0, "")
			}
			thief := dialStreamPeer(t, addr, "alice", reliableHello("P"))
			old.expectClosed() // DISCONNECT "replaced"
			for i := uint64(1); i <= 4; i++ {
				thief.publish(i, "group:takeover", fmt.Append(nil, "x", i))
				thief.expectPubAck(i, i, 0, "")
			}
			bob := dialStreamPeer(t, addr, "bob", reliableHello("P"))
			bob.publish(1, "group:takeover", []byte("b1"))
			bob.expectPubAck(1, 1, 0, "")
			restarted := dialStreamPeer(t, addr, "alice", reliableHello("Q"))
			restarted.publish(1, "group:takeover", []byte("q1"))
			restarted.expectPubAck(1, 1, 0, "")
			srv.Publish("group:takeover", []byte("marker"))
			got := w.until("marker")
			if want := []string{"a1", "a2", "a3", "x4", "b1", "q1", "marker"}; !equalStrings(got, want) {
				t.Fatalf("stored %q, want %q", got, want)
			}
		})
		h.trip(20)
	})
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// dialStreamPeerBuf is dialStreamPeer with a receive buffer of rcvbuf
// bytes (dialAttacker), for a peer that does not read.
func dialStreamPeerBuf(t testing.TB, addr, id, extra string, rcvbuf int) *streamPeer {
	t.Helper()
	nc, err := dialAttacker(addr, rcvbuf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	rd, _, err := handshakeWelcome(nc, id, extra)
	if err != nil {
		t.Fatalf("%s: %v", id, err)
	}
	return &streamPeer{t: t, id: id, nc: nc, rd: rd}
}

// pubBatch is n publishes to stream, numbered from seq by step, each with
// a body of size bytes.
func pubBatch(seq, step uint64, n int, stream string, size int) []byte {
	var b []byte
	body := bytes.Repeat([]byte{'.'}, size)
	for i := range n {
		b = append(b, pubFrame(seq+uint64(i)*step, stream, body)...)
	}
	return b
}

// A publisher floods 100,000 publishes and never reads its
// acknowledgements (odd sequence numbers, so that no two answers merge
// into one run). The answers meet the send queue's bound: under the
// default policy the excess is dropped and counted, and the session goes
// on; under --slow-consumer disconnect the session is closed. Either way
// the honest client keeps its bound, the flooder's queue stays within its
// bound, and the memory held is the stream's retention and the queues.
func TestHostileStreamPublishFlood(t *testing.T) {
	for _, policy := range []struct {
		name string
		p    msgnet.SlowConsumerPolicy
	}{{"error", msgnet.SlowConsumerError}, {"disconnect", msgnet.SlowConsumerDisconnect}} {
		t.Run(policy.name, func(t *testing.T) {
			forServeTargets(t, func(t *testing.T, tg target) {
				const queue = 256 << 10
				srv, addr := tg.start(t, msgnet.WithSendQueueBytes(queue), msgnet.WithSlowConsumerPolicy(policy.p),
					msgnet.WithSocketBuffers(0, 16<<10))
				h := newHonest(t, tg, addr)
				f := dialStreamPeerBuf(t, addr, "pubflood", reliableHello("flood"), 4<<10)
				sess := sessionOf(t, srv, "pubflood")
				before := heapInuse()
				const total, batch, size = 100_000, 500, 32
				var sent, closed = 0, false
				written := uint64(len(helloFrame("pubflood", reliableHello("flood"))))
				done := make(chan struct{})
				a := newAttack(t)
				a.goDo(func(stop <-chan struct{}) {
					defer close(done)
					for sent < total && !stopped(stop) {
						b := pubBatch(uint64(2*sent+1), 2, batch, "group:flood", size)
						if err := writeAll(f.nc, b, 20*time.Second); err != nil {
							closed = true
							return
						}
						sent += batch
						written += uint64(len(b))
					}
				})
				maxQueued := 0
				h.during(30, 40*time.Second, func() bool {
					maxQueued = max(maxQueued, sess.Info().QueueBytes)
					select {
					case <-done:
						return true
					default:
						return false
					}
				})
				a.end()
				maxQueued = max(maxQueued, sess.Info().QueueBytes)
				held := heldSince(before)
				st := srv.Stats()
				t.Logf("%d publishes sent (closed: %v); largest queue %d KiB; held %+d KiB; dropped %v",
					sent, closed, maxQueued>>10, held>>10, st.Dropped)
				if maxQueued > queue+stageLimit {
					t.Errorf("the flooder's queue held %d bytes; bound %d (+%d staged)", maxQueued, queue, stageLimit)
				}
				// The stream keeps 10,000 messages by default: their bodies
				// and 48 bytes each, the ring, and a margin for buffers.
				if limit := int64(10_000*(size+48+32) + 2*(queue+stageLimit) + 4<<20); held > limit {
					t.Errorf("the server holds %d KiB more after the flood; bound %d KiB", held>>10, limit>>10)
				}
				switch policy.p {
				case msgnet.SlowConsumerError:
					if closed || !sess.IsConnected() {
						t.Errorf("the flooder's session was closed; the default policy drops and goes on")
					}
					if st.Dropped[msgnet.DropQueueFull] == 0 {
						t.Errorf("the flooder's answers never met the queue's bound: the test tested nothing")
					}
					waitForWithin(t, 20*time.Second, "the server to read the whole flood", func() bool {
						return sess.Info().BytesIn == written
					})
					// It reads at last: what it gets are acknowledgements,
					// in order, status 0.
					var last uint64
					waitForWithin(t, 20*time.Second, "the flooder's queue to drain", func() bool {
						for {
							fr, err := f.next(50 * time.Millisecond)
							if err != nil {
								return sess.Info().QueueBytes == 0
							}
							ack, ok := parsePubAck(fr)
							if !ok || ack.status != 0 || ack.first <= last {
								t.Fatalf("got %v %.200q after %d", fr.Kind, describe(fr), last)
							}
							last = ack.last
						}
					})
					f.alive()
				case msgnet.SlowConsumerDisconnect:
					waitForWithin(t, 10*time.Second, "the slow flooder to be closed", func() bool { return !sess.IsConnected() })
					if st.Dropped[msgnet.DropSlowConsumer] == 0 {
						t.Errorf("no slow-consumer drop counted")
					}
				}
				h.trip(20)
			})
		})
	}
}

// A publisher floods publishes that are refused (a stream name that is
// not one) and never reads. A refusal the full queue cannot take must not
// be dropped like an acknowledgement: the answer to a later publish would
// tell the client the refused one was stored. The session ends instead,
// and the answers the publisher does get have no gap.
func TestHostileStreamRefusalsNotDropped(t *testing.T) {
	forServeTargets(t, func(t *testing.T, tg target) {
		srv, addr := tg.start(t, msgnet.WithSendQueueBytes(16<<10), msgnet.WithSocketBuffers(0, 16<<10),
			msgnet.WithDrainTimeout(time.Second))
		h := newHonest(t, tg, addr)
		f := dialStreamPeerBuf(t, addr, "refused", reliableHello("ref"), 4<<10)
		sess := sessionOf(t, srv, "refused")
		const total, batch = 20_000, 500
		done := make(chan struct{})
		go func() {
			defer close(done)
			for sent := 0; sent < total; sent += batch {
				if writeAll(f.nc, pubBatch(uint64(sent+1), 1, batch, "nowhere:x", 8), 10*time.Second) != nil {
					return
				}
			}
		}()
		waitForWithin(t, 20*time.Second, "the session to end when a refusal finds its queue full",
			func() bool { return !sess.IsConnected() })
		var last uint64
		for {
			fr, err := f.next(5 * time.Second)
			if err != nil {
				break // the end of the connection
			}
			a, ok := parsePubAck(fr)
			if !ok {
				continue // the DISCONNECT, if it fitted
			}
			if a.first != last+1 || a.status != 1 {
				t.Fatalf("answer %d-%d status %d after %d: an answer was skipped", a.first, a.last, a.status, last)
			}
			last = a.last
		}
		f.nc.Close()
		<-done
		t.Logf("%d refusals read before the end", last)
		if last == 0 || last >= total {
			t.Errorf("%d refusals read of %d publishes: the queue never filled, the test tested nothing", last, total)
		}
		h.trip(20)
	})
}

// readStream reads what a raw subscriber of stream is sent until it has
// the message at offset upTo, checking that offsets are contiguous except
// where a "lost" says where delivery goes on: no message is skipped
// silently. It acknowledges every ackEvery messages (0: never). It
// returns how many messages it read and the lost notices.
func readStream(t *testing.T, p *streamPeer, stream string, next, upTo uint64, ackEvery int, limit time.Duration) (n int, lost []map[string]any) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for next <= upTo {
		if time.Now().After(deadline) {
			t.Fatalf("%s: at offset %d of %d after %v", p.id, next, upTo, limit)
		}
		f, err := p.next(time.Until(deadline))
		if err != nil {
			t.Fatalf("%s: at offset %d of %d: %v", p.id, next, upTo, err)
		}
		if f.Kind == frame.KindControl {
			var m map[string]any
			json.Unmarshal(f.Payload, &m)
			if m["op"] != "lost" || m["stream"] != stream {
				t.Fatalf("%s: got CONTROL %s", p.id, f.Payload)
			}
			lost = append(lost, m)
			if jsonUint(m, "missed") != next {
				t.Errorf("%s: lost says missed %d, but %d was the next due", p.id, jsonUint(m, "missed"), next)
			}
			next = jsonUint(m, "next")
			continue
		}
		m, ok := parseStreamMsg(f)
		if !ok || m.stream != stream {
			t.Fatalf("%s: got %v %.200q, want a message of %s", p.id, f.Kind, describe(f), stream)
		}
		if m.off != next {
			t.Fatalf("%s: offset %d arrived when %d was due, with no lost notice: %d messages skipped silently",
				p.id, m.off, next, int64(m.off)-int64(next))
		}
		next++
		n++
		if ackEvery > 0 && n%ackEvery == 0 {
			p.write(ackFrame(stream, m.off))
		}
	}
	return n, lost
}

// A subscriber that never acknowledges is sent 1,024 messages and no
// more (the window), however many are published; each acknowledgement
// opens the window by what it acknowledges, and a lie (an
// acknowledgement past what was sent) is clamped, so that nothing is
// skipped. Not reading at all, its queue holds at most the window.
func TestHostileStreamNoAck(t *testing.T) {
	forServeTargets(t, func(t *testing.T, tg target) {
		// A small kernel send buffer, so that what the silent subscriber
		// is sent stays in the server's queue, where the window bounds it.
		srv, addr := tg.start(t, msgnet.WithSocketBuffers(0, 8<<10))
		h := newHonest(t, tg, addr)
		const stream = "group:window"
		body := bytes.Repeat([]byte{'w'}, 1000)

		// Reading, never acknowledging.
		r := dialStreamPeer(t, addr, "no-ack", reliableHello(""))
		r.subscribe(stream)
		// Not reading either, with a small receive buffer.
		s := dialStreamPeerBuf(t, addr, "no-read", reliableHello(""), 4<<10)
		s.subscribe(stream)
		sess := sessionOf(t, srv, "no-read")
		before := heapInuse()
		maxQueued := 0
		for range 3000 {
			if _, err := srv.Publish(stream, body); err != nil {
				t.Fatal(err)
			}
			maxQueued = max(maxQueued, sess.Info().QueueBytes)
		}
		if n, _ := readStream(t, r, stream, 1, 1024, 0, 10*time.Second); n != 1024 {
			t.Fatalf("read %d", n)
		}
		time.Sleep(100 * time.Millisecond) // room for a message past the window to arrive, if one were sent
		r.alive()                          // none did: the PONG comes next
		// An acknowledgement past what was sent: clamped to 1,024, so the
		// window opens by 1,024 and the messages come on from 1,025.
		r.write(ackFrame(stream, math.MaxUint64))
		readStream(t, r, stream, 1025, 2048, 0, 10*time.Second)
		time.Sleep(100 * time.Millisecond)
		r.alive()
		r.write(ackFrame(stream, 5000)) // clamped to 2,048
		readStream(t, r, stream, 2049, 3000, 0, 10*time.Second)
		r.alive()

		maxQueued = max(maxQueued, sess.Info().QueueBytes)
		held := heldSince(before)
		frameSize := frame.HeaderLen + 1 + len(stream) + 8 + len(body)
		t.Logf("the silent subscriber's queue peaked at %d KiB (window: %d KiB); held %+d KiB",
			maxQueued>>10, subWindowFrames*frameSize>>10, held>>10)
		if maxQueued > subWindowFrames*frameSize+4<<10 {
			t.Errorf("the silent subscriber's queue held %d bytes; the window bounds it to %d",
				maxQueued, subWindowFrames*frameSize)
		}
		// Retained: 3,000 messages; queued: at most a window each.
		if limit := int64(3000*(len(body)+48+32) + 2*subWindowFrames*frameSize + 4<<20); held > limit {
			t.Errorf("the server holds %d KiB more; bound %d KiB", held>>10, limit>>10)
		}
		// The silent one reads at last, and acknowledges: it gets all of
		// it, in order.
		readStream(t, s, stream, 1, 3000, 256, 20*time.Second)
		h.trip(20)
	})
}

// subWindowFrames is the subscription window of 6.7.
const subWindowFrames = 1024

// A subscriber that falls behind by more than retention while its send
// queue is full is told continuity_lost before delivery jumps ahead: a
// "lost" notice the full queue refused must not turn into a silent skip.
func TestHostileStreamLostWhileQueueFull(t *testing.T) {
	forServeTargets(t, func(t *testing.T, tg target) {
		srv, addr := tg.start(t, msgnet.WithSendQueueBytes(64<<10), msgnet.WithSocketBuffers(0, 8<<10),
			msgnet.WithRetention(msgnet.Retention{MaxMessages: 100}))
		const stream = "group:behind"
		s := dialStreamPeerBuf(t, addr, "behind", reliableHello(""), 4<<10)
		s.subscribe(stream)
		body := bytes.Repeat([]byte{'b'}, 1000)
		for range 2000 {
			if _, err := srv.Publish(stream, body); err != nil {
				t.Fatal(err)
			}
		}
		if srv.Stats().Dropped[msgnet.DropQueueFull] == 0 {
			t.Fatalf("the subscriber's queue never filled: the test tested nothing")
		}
		_, lost := readStream(t, s, stream, 1, 2000, 64, 20*time.Second)
		if len(lost) == 0 {
			t.Errorf("1,900 messages left retention before delivery and no lost notice came")
		}
	})
}

// churn subscribes and unsubscribes a raw peer n times, name(i) being the
// stream of round i, pipelined in batches, and reads every answer: each
// sub must be subscribed.
func churn(p *streamPeer, n int, name func(i int) string) error {
	const batch = 250
	for i := 0; i < n; i += batch {
		var b []byte
		for j := i; j < min(n, i+batch); j++ {
			q := quote(name(j))
			b = frame.Append(b, frame.KindControl, 0, []byte(`{"op":"sub","stream":`+q+`}`))
			b = frame.Append(b, frame.KindControl, 0, []byte(`{"op":"unsub","stream":`+q+`}`))
		}
		if err := writeAll(p.nc, b, 10*time.Second); err != nil {
			return err
		}
		for j := i; j < min(n, i+batch); {
			f, err := p.next(10 * time.Second)
			if err != nil {
				return fmt.Errorf("sub %d: %w", j, err)
			}
			if _, ok := parseStreamMsg(f); ok {
				continue // a message published between a sub and its unsub
			}
			var m map[string]any
			if f.Kind != frame.KindControl || json.Unmarshal(f.Payload, &m) != nil || m["op"] != "subscribed" || m["stream"] != name(j) {
				return fmt.Errorf("sub %d: got %v %.200q", j, f.Kind, describe(f))
			}
			j++
		}
	}
	return nil
}

// A session that subscribes and unsubscribes 10,000 times holds nothing
// afterwards: it may still take its 64 subscriptions (the groups per
// session limit), and the 65th is refused too_many_groups while the
// session goes on. Meanwhile the honest client keeps its bound.
func TestHostileStreamSubscribeChurn(t *testing.T) {
	forServeTargets(t, func(t *testing.T, tg target) {
		srv, addr := tg.start(t)
		h := newHonest(t, tg, addr)
		a := dialStreamPeer(t, addr, "churner", reliableHello(""))
		srv.Publish("group:churn", []byte("exists"))
		before := heapInuse()
		errc := make(chan error, 1)
		at := newAttack(t)
		at.goDo(func(stop <-chan struct{}) {
			errc <- churn(a, 10_000, func(int) string { return "group:churn" })
		})
		var err error
		h.during(30, 40*time.Second, func() bool {
			select {
			case err = <-errc:
				return true
			default:
				return false
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		held := heldSince(before)
		t.Logf("10,000 sub/unsub of one stream: held %+d KiB", held>>10)
		if held > 1<<20 {
			t.Errorf("the server holds %d KiB more after 10,000 sub/unsub of one stream", held>>10)
		}

		// The limit on subscriptions per session, counted right after the
		// churn.
		limit := srv.Limits().MaxGroupsPerSession
		for i := range limit {
			a.subscribe(fmt.Sprint("group:limit-", i))
		}
		a.sub(`{"op":"sub","stream":"group:one-too-many"}`)
		if m := a.control("refused"); m["code"] != msgnet.CodeTooManyGroups {
			t.Fatalf("sub number %d: %v, want refused too_many_groups", limit+1, m)
		}
		a.subscribe("group:limit-0") // a sub it holds already is renewed, not counted again
		a.sub(`{"op":"unsub","stream":"group:limit-1"}`)
		a.subscribe("group:one-too-many")
		a.alive()
		h.trip(20)
	})
}

// Every stream a peer names in a sub is created and kept: 10,000 sub and
// unsub of distinct names leave 10,000 empty streams. This measures what
// each costs (the default limit, 100,000 streams, times this is what the
// server may hold for streams that hold nothing).
func TestHostileStreamEmptyStreamCost(t *testing.T) {
	srv, addr := startServer(t)
	a := dialStreamPeer(t, addr, "namer", reliableHello(""))
	before := heapInuse()
	const n = 10_000
	if err := churn(a, n, func(i int) string { return fmt.Sprint("group:empty-", i) }); err != nil {
		t.Fatal(err)
	}
	a.nc.Close()
	waitFor(t, "the session to end", func() bool { return srv.ConnectionCount() == 0 })
	held := heldSince(before)
	each := held / n
	t.Logf("%d empty streams, no subscriber: %d KiB, %d bytes each; at the default limit of %d streams: %d MiB",
		n, held>>10, each, msgnet.DefaultMaxStreams, each*msgnet.DefaultMaxStreams>>20)
	if each > 2048 {
		t.Errorf("an empty stream costs %d bytes", each)
	}
}

// Past Limits.MaxStreams, with every stream holding a message, a sub or a
// publish that needs a new stream is refused with bad_stream, for the attacker that used them up and for
// everyone else; the streams that exist go on.
func TestHostileStreamMaxStreams(t *testing.T) {
	forServeTargets(t, func(t *testing.T, tg target) {
		const maxStreams = 50
		_, addr := tg.start(t, msgnet.WithMaxStreams(maxStreams))
		h := newHonest(t, tg, addr)
		c, got := reliableClient(t, "early", addr)
		if err := c.Subscribe(ctx5s(t), "group:kept"); err != nil {
			t.Fatal(err)
		}
		// Streams that hold a message are not reclaimed (the next test
		// is about those that hold nothing).
		a := dialStreamPeer(t, addr, "hoarder", reliableHello("hoard"))
		var b []byte
		for i := range maxStreams - 1 {
			b = append(b, pubFrame(uint64(i+1), fmt.Sprint("group:hoard-", i), []byte("held"))...)
		}
		a.write(b)
		if stored, refused := readAcks(t, a, maxStreams-1); stored != maxStreams-1 {
			t.Fatalf("%d of %d stored, refused %v", stored, maxStreams-1, refused)
		}
		a.sub(`{"op":"sub","stream":"group:hoard-more"}`)
		if m := a.control("refused"); m["code"] != msgnet.CodeBadStream {
			t.Fatalf("a sub past MaxStreams: %v, want refused bad_stream", m)
		} else if msg, _ := m["message"].(string); strings.HasPrefix(msg, msgnet.CodeBadStream) {
			t.Errorf("the refusal's message repeats its code: %q", msg)
		}
		a.publish(maxStreams, "group:hoard-more", []byte("x"))
		a.expectPubAck(maxStreams, maxStreams, 1, msgnet.CodeBadStream)
		a.publish(maxStreams+1, "group:kept", []byte("m-1"))
		a.expectPubAck(maxStreams+1, maxStreams+1, 0, "")
		a.alive()

		late, _ := reliableClient(t, "late", addr)
		if err := late.Subscribe(ctx5s(t), "group:new"); err == nil || !strings.Contains(err.Error(), msgnet.CodeBadStream) {
			t.Fatalf("an honest sub past MaxStreams: %v, want bad_stream", err)
		}
		if err := late.Subscribe(ctx5s(t), "group:kept"); err != nil {
			t.Fatalf("an honest sub to an existing stream: %v", err)
		}
		waitFor(t, "the message", func() bool { return got.count() == 1 })
		checkExactlyOnce(t, got, 1)
		h.trip(20)
	})
}

// A peer can use up Limits.MaxStreams by naming streams in subs (a
// moment's work: no message needs to be stored) and leave. Once it has
// gone and nothing it created holds a message or a subscriber, the
// streams must come back: otherwise one unauthenticated peer refuses
// every new stream to everyone until the server restarts.
func TestHostileStreamExhaustionRecovers(t *testing.T) {
	const maxStreams = 50
	_, addr := startServer(t, msgnet.WithMaxStreams(maxStreams),
		msgnet.WithRetention(msgnet.Retention{MaxAge: 200 * time.Millisecond}))
	a := dialStreamPeer(t, addr, "hoarder", reliableHello(""))
	if err := churn(a, maxStreams, func(i int) string { return fmt.Sprint("group:hoard-", i) }); err != nil {
		t.Fatal(err)
	}
	a.nc.Close()
	c, _ := reliableClient(t, "honest-sub", addr)
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := c.Subscribe(ctx5s(t), "group:fresh")
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("5s after the hoarder left, with its %d streams empty and unsubscribed, a new stream is still refused: %v",
				maxStreams, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Streams reclaimed at MaxStreams while another peer publishes: one peer
// churns new stream names past the limit (its subs succeed only because
// the server keeps dropping empty streams), while another publishes
// bursts to a few streams whose messages expire within a millisecond, so
// they may be empty, and reclaimable, when the next burst comes. Every
// publish is answered once, in order: stored, or refused with bad_stream
// at the limit; the race detector watches the stream's closed flag.
func TestHostileStreamReclaimWhilePublishing(t *testing.T) {
	_, addr := startServer(t, msgnet.WithMaxStreams(8),
		msgnet.WithRetention(msgnet.Retention{MaxAge: time.Millisecond}))
	churner := dialStreamPeer(t, addr, "churner", reliableHello(""))
	pub := dialStreamPeer(t, addr, "racer", reliableHello("racer"))
	done := make(chan error, 1)
	go func() {
		var err error
		for round := 0; round < 20 && err == nil; round++ {
			err = churn(churner, 20, func(i int) string { return fmt.Sprint("group:churn-", round, "-", i) })
		}
		done <- err
	}()
	const bursts, per = 40, 25
	var seq uint64
	for range bursts {
		var b []byte
		for i := range per {
			seq++
			b = append(b, pubFrame(seq, fmt.Sprint("group:raced-", i%3), []byte("m"))...)
		}
		pub.write(b)
	}
	stored, refused := readAcks(t, pub, seq)
	for code := range refused {
		if code != msgnet.CodeBadStream {
			t.Fatalf("a publish refused %s: %v", code, refused)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d of %d publishes stored while streams were reclaimed", stored, seq)
	if stored == 0 {
		t.Fatal("nothing stored: the test raced nothing")
	}
	pub.alive()
}

// readAcks reads publish acknowledgements until seq upTo is answered,
// and returns how many publishes were stored and the refusals' codes.
func readAcks(t *testing.T, p *streamPeer, upTo uint64) (stored int, refused map[string]int) {
	t.Helper()
	refused = map[string]int{}
	var last uint64
	for last < upTo {
		f := p.must(fmt.Sprintf("the acknowledgement of publish %d", upTo))
		a, ok := parsePubAck(f)
		if !ok || a.first != last+1 || a.last < a.first {
			t.Fatalf("%s: got %v %.200q after %d", p.id, f.Kind, describe(f), last)
		}
		if a.status == 0 {
			stored += int(a.last - a.first + 1)
		} else {
			code, _, _ := strings.Cut(a.text, ":")
			refused[code] += int(a.last - a.first + 1)
		}
		last = a.last
	}
	return stored, refused
}

// Many streams, each with retained messages, against a small memory
// store: what it keeps stays within its bound (and the memory with it),
// and a publish it has no room for is refused store_full, to the attacker
// and to everyone else, while a stream that holds messages makes room by
// dropping its own oldest.
func TestHostileStreamStoreFull(t *testing.T) {
	forServeTargets(t, func(t *testing.T, tg target) {
		const storeBytes = 1 << 20
		_, addr := tg.start(t, msgnet.WithStore(msgnet.NewMemoryStore(storeBytes)))
		h := newHonest(t, tg, addr)
		a := dialStreamPeer(t, addr, "filler", reliableHello("fill"))
		before := heapInuse()
		const groups, size = 2000, 1000
		body := bytes.Repeat([]byte{'f'}, size)
		var b []byte
		for i := range groups {
			b = append(b, pubFrame(uint64(i+1), fmt.Sprint("group:fill-", i), body)...)
		}
		a.write(b)
		stored, refused := readAcks(t, a, groups)
		held := heldSince(before)
		t.Logf("%d stored, refused %v; held %+d KiB", stored, refused, held>>10)
		if stored > storeBytes/(size+48) {
			t.Errorf("%d messages of %d bytes stored in a store of %d bytes", stored, size, storeBytes)
		}
		if refused[msgnet.CodeStoreFull] != groups-stored {
			t.Errorf("%d refused store_full, %d not stored", refused[msgnet.CodeStoreFull], groups-stored)
		}
		// The store's bound, the streams (about 500 bytes each), and a
		// margin for buffers.
		if limit := int64(storeBytes + groups*1024 + 2<<20); held > limit {
			t.Errorf("the server holds %d KiB more; bound %d KiB", held>>10, limit>>10)
		}
		// A stream with messages makes room by dropping its own oldest.
		a.publish(groups+1, "group:fill-0", body)
		a.expectPubAck(groups+1, groups+1, 0, "")
		// A new stream has none to drop: refused, and an honest
		// publisher is told.
		c, _ := reliableClient(t, "honest-pub", addr)
		failed := make(chan error, 1)
		c.OnPublishFailed(func(_ string, _ []byte, err error) { failed <- err })
		if err := c.Publish("group:honest", body); err != nil {
			t.Fatal(err)
		}
		if err := recv(t, failed, "the refusal of the honest publish"); !strings.Contains(err.Error(), msgnet.CodeStoreFull) {
			t.Fatalf("OnPublishFailed: %v, want store_full", err)
		}
		h.trip(20)
	})
}

// The memory store's bound counts each retained message's payload and 48
// bytes. Once its messages have expired, a stream that held many must not
// keep memory the bound no longer counts: streams filled, left to expire,
// and filled again (other names each time) must not grow the server past
// what it holds for the empty streams themselves.
func TestHostileStreamStoreMemoryAfterExpiry(t *testing.T) {
	const storeBytes = 8 << 20
	srv, addr := startServer(t, msgnet.WithStore(msgnet.NewMemoryStore(storeBytes)),
		msgnet.WithRetention(msgnet.Retention{MaxAge: 200 * time.Millisecond}))
	probe := dialStreamPeer(t, addr, "probe", reliableHello(""))
	before := heapInuse()
	const rounds, groups, perGroup = 2, 100, 1000 // 4.8 MB charged per round: within the bound
	for r := range rounds {
		for g := range groups {
			name := fmt.Sprintf("group:r%d-%d", r, g)
			for range perGroup {
				if _, err := srv.Publish(name, nil); err != nil {
					t.Fatalf("round %d, %s: %v", r, name, err)
				}
			}
		}
		// Until the sweeper has expired them all: a sub sees each stream
		// empty (first = last+1).
		for g := range groups {
			name := fmt.Sprintf("group:r%d-%d", r, g)
			waitForWithin(t, 10*time.Second, "the messages to expire", func() bool {
				m := probe.subscribe(name)
				probe.sub(`{"op":"unsub","stream":` + quote(name) + `}`)
				return jsonUint(m, "first") == jsonUint(m, "last")+1
			})
		}
	}
	held := heldSince(before)
	streams := rounds * groups
	t.Logf("%d streams that each held %d messages, all expired: held %+d KiB (%d bytes a stream)",
		streams, perGroup, held>>10, held/int64(streams))
	if limit := int64(streams*2048 + 1<<20); held > limit {
		t.Errorf("with every message expired the server still holds %d KiB for %d empty streams (bound %d KiB): "+
			"memory the store's bound no longer counts", held>>10, streams, limit>>10)
	}
}

// Resumptions that lie about their position: another stream's epoch, a
// position past the end, 2^64-1, an epoch that is no number, fields of
// the wrong JSON type, "after" on a client: stream. Each gets an answer
// 6.7 documents (subscribed, with lost when the position cannot be
// honoured; ERROR bad_control for a CONTROL that does not decode), what
// follows the answer starts exactly at its "next", with no gap, and an
// honest subscriber of the same stream misses nothing.
func TestHostileStreamResumeLies(t *testing.T) {
	forServeTargets(t, func(t *testing.T, tg target) {
		srv, addr := tg.start(t)
		h := newHonest(t, tg, addr)
		const stream = "group:resume"
		sub, got := reliableClient(t, "honest-resume", addr)
		if err := sub.Subscribe(ctx5s(t), stream); err != nil {
			t.Fatal(err)
		}
		pub, _ := reliableClient(t, "resume-pub", addr)
		sent := 0
		publish := func(n int) {
			for range n {
				sent++
				if err := pub.Publish(stream, fmt.Append(nil, "m-", sent)); err != nil {
					t.Fatal(err)
				}
			}
			if err := pub.WaitPublished(ctx5s(t)); err != nil {
				t.Fatal(err)
			}
		}
		publish(20)
		srv.Publish("group:other", []byte("x"))

		a := dialStreamPeer(t, addr, "liar", reliableHello(""))
		other := a.subscribe("group:other")
		a.sub(`{"op":"unsub","stream":"group:other"}`)
		cur := a.subscribe(stream)
		epoch, _ := cur["epoch"].(string)
		first, last := jsonUint(cur, "first"), jsonUint(cur, "last")
		if first != 1 || last != 20 {
			t.Fatalf("subscribed %v, want first 1, last 20", cur)
		}

		type want struct {
			next uint64
			lost bool
		}
		cases := []struct {
			name string
			sub  string
			want want
		}{
			{"another stream's epoch", `"epoch":"` + other["epoch"].(string) + `","after":5`, want{first, true}},
			{"an epoch that is no number", `"epoch":"abc","after":5`, want{first, true}},
			{"after without an epoch", `"after":5`, want{first, true}},
			{"an epoch without after", `"epoch":"` + epoch + `"`, want{last + 1, false}},
			{"within retention", `"epoch":"` + epoch + `","after":10`, want{11, false}},
			{"after 0", `"epoch":"` + epoch + `","after":0`, want{1, false}},
			{"past the last", `"epoch":"` + epoch + `","after":120`, want{last + 1, false}},
			{"2^64-2", `"epoch":"` + epoch + `","after":18446744073709551614`, want{last + 1, false}},
			{"2^64-1", `"epoch":"` + epoch + `","after":18446744073709551615`, want{last + 1, false}},
		}
		for _, c := range cases {
			a.sub(`{"op":"sub","stream":"` + stream + `",` + c.sub + `}`)
			m := a.control("subscribed")
			lost, _ := m["lost"].(map[string]any)
			if next := jsonUint(m, "next"); next != c.want.next || (lost != nil) != c.want.lost {
				t.Errorf("%s: %v; want next %d, lost %v", c.name, m, c.want.next, c.want.lost)
			}
			if lost != nil && lost["code"] != msgnet.CodeContinuityLost {
				t.Errorf("%s: lost %v, want continuity_lost", c.name, lost)
			}
			// What follows starts at next, with no gap, up to the last.
			if next := jsonUint(m, "next"); next <= last {
				readStream(t, a, stream, next, last, 0, 5*time.Second)
			}
			a.alive()
		}
		// Fields of the wrong type, or numbers out of range: the CONTROL
		// does not decode, and the answer is ERROR bad_control.
		for _, bad := range []string{
			`"epoch":12345,"after":5`, `"epoch":"` + epoch + `","after":"5"`, `"epoch":"` + epoch + `","after":-1`,
			`"epoch":"` + epoch + `","after":1.5`, `"epoch":"` + epoch + `","after":18446744073709551616`,
			`"stream":7`, `"epoch":["x"]`,
		} {
			a.sub(`{"op":"sub","stream":"` + stream + `",` + bad + `}`)
			a.expectError(msgnet.CodeBadControl)
			a.alive()
		}

		// "after" on the session's own client: stream.
		a.subscribe("client:liar")
		for i := range 5 {
			if err := srv.SendTo("liar", fmt.Append(nil, "p-", i+1)); err != nil {
				t.Fatal(err)
			}
		}
		readStream(t, a, "client:liar", 1, 5, 0, 5*time.Second)
		m := a.subscribe("client:liar") // a client's own stream: all it keeps, again
		readStream(t, a, "client:liar", 1, 5, 0, 5*time.Second)
		cepoch, _ := m["epoch"].(string)
		for _, c := range []struct {
			sub  string
			want want
		}{
			{`"epoch":"` + cepoch + `","after":2`, want{3, false}},
			{`"epoch":"` + cepoch + `","after":500`, want{6, false}},
			{`"epoch":"` + cepoch + `","after":18446744073709551615`, want{6, false}},
			{`"epoch":"` + epoch + `","after":2`, want{1, true}},
			{`"after":2`, want{1, true}},
		} {
			a.sub(`{"op":"sub","stream":"client:liar",` + c.sub + `}`)
			m := a.control("subscribed")
			if next := jsonUint(m, "next"); next != c.want.next || (m["lost"] != nil) != c.want.lost {
				t.Errorf("client stream, %s: %v; want next %d, lost %v", c.sub, m, c.want.next, c.want.lost)
			}
			if next := jsonUint(m, "next"); next <= 5 {
				readStream(t, a, "client:liar", next, 5, 0, 5*time.Second)
			}
			a.alive()
		}

		publish(20)
		waitForWithin(t, 10*time.Second, "the honest subscriber's messages", func() bool { return got.count() >= sent })
		checkExactlyOnce(t, got, sent)
		h.trip(20)
	})
}

// cutSpec is where cutProxy cuts one connection: after n bytes in one
// direction (up: client to server), counted from the end of that
// direction's first frame (the hello or the welcome) when afterFirst is
// set, from the first byte otherwise.
type cutSpec struct {
	up         bool
	afterFirst bool
	n          int
}

// cutProxy forwards TCP connections to a server, cutting the k-th
// connection as cuts[k] says (both directions reset at once, exactly
// after that many bytes were forwarded) and leaving connections past the
// list alone; with trickle, it writes what it forwards one byte at a time.
// (testenv.CutProxy cuts on demand; this one cuts at a byte.)
type cutProxy struct {
	t       testing.TB
	l       net.Listener
	target  string
	cuts    []cutSpec
	trickle bool

	mu    sync.Mutex
	conns map[net.Conn]bool
	next  int // connections accepted
	wg    sync.WaitGroup
}

func newCutProxy(t testing.TB, target string, cuts []cutSpec, trickle bool) *cutProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{t: t, l: l, target: target, cuts: cuts, trickle: trickle, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		l.Close()
		p.mu.Lock()
		for c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) addr() string { return p.l.Addr().String() }

// exhausted reports whether every cut of the list was made (a connection
// past the list was accepted).
func (p *cutProxy) exhausted() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.next > len(p.cuts)
}

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.l.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		k := p.next
		p.next++
		p.conns[in], p.conns[out] = true, true
		p.mu.Unlock()
		var cut *cutSpec
		if k < len(p.cuts) {
			cut = &p.cuts[k]
		}
		var once sync.Once
		kill := func() {
			once.Do(func() {
				for _, c := range []net.Conn{in, out} {
					c.(*net.TCPConn).SetLinger(0)
					c.Close()
				}
				p.mu.Lock()
				delete(p.conns, in)
				delete(p.conns, out)
				p.mu.Unlock()
			})
		}
		p.wg.Add(2)
		go p.pump(out, in, cut != nil && cut.up, cut, kill)
		go p.pump(in, out, cut != nil && !cut.up, cut, kill)
	}
}

// pump forwards src to dst; when cutting is set it forwards exactly the
// cut's bytes and then kills the connection.
func (p *cutProxy) pump(dst, src net.Conn, cutting bool, cut *cutSpec, kill func()) {
	defer p.wg.Done()
	defer kill()
	limit := -1 // bytes still to forward before the cut; -1: no cut (yet known)
	if cutting && !cut.afterFirst {
		limit = cut.n
	}
	var head []byte // the first frame's header, while its length is unknown
	buf := make([]byte, 32<<10)
	for {
		if limit == 0 {
			return
		}
		n, err := src.Read(buf)
		if n > 0 {
			b := buf[:n]
			if cutting && cut.afterFirst && limit < 0 {
				have := len(head)
				head = append(head, b[:min(len(b), 8-min(8, have))]...)
				if len(head) >= 8 {
					first := int(binary.BigEndian.Uint32(head[4:8]))
					limit = first + cut.n - have // counted from the start of this read
				}
			}
			if limit >= 0 && len(b) > limit {
				b = b[:limit]
			}
			if limit >= 0 {
				limit -= len(b)
			}
			if p.trickle {
				for i := range b {
					if _, err := dst.Write(b[i : i+1]); err != nil {
						return
					}
					if i%7 == 6 {
						time.Sleep(20 * time.Microsecond) // so that reads end inside frames
					}
				}
			} else if _, err := dst.Write(b); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// cutSweep is the cut list of one client: first, every byte from the end
// of the first frame up to past bytes further, upstream then downstream,
// each step bytes; then cuts inside the handshake's first frames.
func cutSweep(upPast, downPast, step int) []cutSpec {
	var cuts []cutSpec
	for n := 0; n <= upPast; n += step {
		cuts = append(cuts, cutSpec{up: true, afterFirst: true, n: n})
	}
	for n := 0; n <= downPast; n += step {
		cuts = append(cuts, cutSpec{afterFirst: true, n: n})
	}
	for n := 1; n < 100; n += 9 {
		cuts = append(cuts, cutSpec{up: true, n: n}, cutSpec{n: n})
	}
	return cuts
}

// A reliable publisher and a reliable subscriber, each through a proxy
// that cuts its connections at every byte of a range (in the middle of
// the sub, of publishes and their resends, of acknowledgements both ways,
// of stream messages, and inside the handshake), one cut per
// connection: the subscriber gets every message exactly once, in order.
func TestHostileStreamCutEverywhere(t *testing.T) {
	forServeTargets(t, func(t *testing.T, tg target) {
		_, addr := tg.start(t)
		// Past the hello: the sub, and publishes with their resends; past
		// the welcome: acknowledgements, subscribed, stream messages.
		pubProxy := newCutProxy(t, addr, cutSweep(160, 110, 1), false)
		subProxy := newCutProxy(t, addr, cutSweep(80, 220, 2), false)
		sub, got := reliableClient(t, "cut-sub", subProxy.addr())
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := sub.Subscribe(ctx, "group:cut"); err != nil {
			t.Fatal(err)
		}
		pub, _ := reliableClient(t, "cut-pub", pubProxy.addr())
		n := 0
		deadline := time.Now().Add(45 * time.Second)
		for n < 300 || !pubProxy.exhausted() || !subProxy.exhausted() {
			if time.Now().After(deadline) {
				t.Fatalf("after %d messages the sweep is not over: publisher's %v, subscriber's %v",
					n, pubProxy.exhausted(), subProxy.exhausted())
			}
			switch err := pub.Publish("group:cut", fmt.Append(nil, "m-", n+1)); {
			case err == nil:
				n++
				if n%4 == 0 {
					time.Sleep(time.Millisecond)
				}
			case errors.Is(err, msgnet.ErrBufferFull):
				time.Sleep(time.Millisecond)
			default:
				t.Fatal(err)
			}
		}
		if err := pub.WaitPublished(ctx); err != nil {
			t.Fatalf("publishes not acknowledged: %v (%d pending)", err, pub.Pending())
		}
		waitForWithin(t, 30*time.Second, "every message", func() bool { return got.count() >= n })
		time.Sleep(50 * time.Millisecond) // room for a duplicate to show
		checkExactlyOnce(t, got, n)
		t.Logf("%d messages; %d connections for the publisher, %d for the subscriber", n, pubProxy.next, subProxy.next)
	})
}

// The same through a proxy that writes every byte on its own, both ways:
// every frame arrives in pieces, at every possible split.
func TestHostileStreamTrickle(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		_, addr := startServer(t, opts...)
		proxy := newCutProxy(t, addr, nil, true)
		sub, got := reliableClient(t, "trickle-sub", proxy.addr())
		if err := sub.Subscribe(ctx5s(t), "group:trickle"); err != nil {
			t.Fatal(err)
		}
		pub, _ := reliableClient(t, "trickle-pub", proxy.addr())
		const n = 300
		publishAll(t, pub, "group:trickle", n, 0)
		if err := pub.WaitPublished(ctx5s(t)); err != nil {
			t.Fatalf("publishes not acknowledged: %v (%d pending)", err, pub.Pending())
		}
		waitForWithin(t, 20*time.Second, "every message", func() bool { return got.count() >= n })
		checkExactlyOnce(t, got, n)
	})
}

// failingStore is a shared store (JetStream) whose appends fail on
// demand: the next fail appends return an error, after reaching the log
// when lateAnswer is set (a store that took the message and lost the
// answer, as a timeout after the commit does).
type failingStore struct {
	msgnet.SharedStore
	fail       atomic.Int32
	lateAnswer bool
	failed     atomic.Int32
	// failWatch: the next failWatch watches of a log fail, as starting
	// JetStream's consumer does while the stream's leader is being elected.
	failWatch atomic.Int32
}

func (s *failingStore) Open(name string, r msgnet.Retention) (msgnet.StreamLog, error) {
	l, err := s.SharedStore.Open(name, r)
	if err != nil {
		return nil, err
	}
	return &failingLog{WatchedLog: l.(msgnet.WatchedLog), s: s}, nil
}

type failingLog struct {
	msgnet.WatchedLog
	s *failingStore
}

func (l *failingLog) Watch(f func(uint64, []byte)) (func(), error) {
	if l.s.failWatch.Load() > 0 && l.s.failWatch.Add(-1) >= 0 {
		return nil, errors.New("injected failure: the store cannot watch the stream now")
	}
	return l.WatchedLog.Watch(f)
}

func (l *failingLog) Append(p []byte, key string) (uint64, bool, error) {
	if l.s.fail.Load() > 0 && l.s.fail.Add(-1) >= 0 {
		l.s.failed.Add(1)
		if l.s.lateAnswer {
			l.WatchedLog.Append(p, key)
		}
		return 0, false, errors.New("injected failure: the store is unavailable")
	}
	return l.WatchedLog.Append(p, key)
}

// While the stream store fails (JetStream, its appends failing now and
// then), a session whose publish fails ends with store_unavailable; the
// reliable publisher reconnects and resends in order, and the subscriber
// gets every message exactly once, in order. The same when the store had
// taken the message before failing: the resend is a duplicate JetStream
// drops.
func TestHostileStreamStoreFails(t *testing.T) {
	for _, late := range []bool{false, true} {
		t.Run(map[bool]string{false: "refused", true: "late-answer"}[late], func(t *testing.T) {
			js, err := natsbus.OpenStore(t.TempDir(), natsbus.StoreOptions{})
			if err != nil {
				t.Fatal(err)
			}
			st := &failingStore{SharedStore: js, lateAnswer: late}
			srv, addr := startServer(t, msgnet.WithStore(st))
			sub, got := reliableClient(t, "fs-sub", addr)
			if err := sub.Subscribe(ctx5s(t), "group:fs"); err != nil {
				t.Fatal(err)
			}
			pub, _ := reliableClient(t, "fs-pub", addr)
			var told atomic.Int32
			pub.OnError(func(e *msgnet.ProtocolError) {
				if e.Code == msgnet.CodeStoreUnavailable {
					told.Add(1)
				}
			})
			failed := make(chan error, 1)
			pub.OnPublishFailed(func(_ string, _ []byte, err error) {
				select {
				case failed <- err:
				default:
				}
			})

			// A raw publisher whose publish meets the failure: ERROR
			// store_unavailable, DISCONNECT, and the end; a publish behind
			// it in the same burst is not taken.
			a := dialStreamPeer(t, addr, "fs-raw", reliableHello("raw"))
			a.publish(1, "group:fs", []byte("raw-1"))
			a.expectPubAck(1, 1, 0, "")
			st.fail.Store(1)
			a.write(append(pubFrame(2, "group:fs", []byte("raw-2")), pubFrame(3, "group:fs", []byte("raw-3"))...))
			a.expectError(msgnet.CodeStoreUnavailable)
			a.expectClosed()
			// Back, it resends from 2: both stored, once.
			a = dialStreamPeer(t, addr, "fs-raw", reliableHello("raw"))
			a.write(append(pubFrame(2, "group:fs", []byte("raw-2")), pubFrame(3, "group:fs", []byte("raw-3"))...))
			a.expectPubAck(2, 3, 0, "")
			a.nc.Close()

			const n = 400
			for i := 1; i <= n; {
				if i%40 == 0 && st.fail.Load() == 0 {
					st.fail.Store(2)
				}
				switch err := pub.Publish("group:fs", fmt.Append(nil, "m-", i)); {
				case err == nil:
					i++
				case errors.Is(err, msgnet.ErrBufferFull):
					time.Sleep(time.Millisecond)
				default:
					t.Fatal(err)
				}
				if i%4 == 0 {
					time.Sleep(200 * time.Microsecond)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := pub.WaitPublished(ctx); err != nil {
				t.Fatalf("publishes not acknowledged: %v (%d pending)", err, pub.Pending())
			}
			waitForWithin(t, 20*time.Second, "every message", func() bool { return got.count() >= n+3 })
			time.Sleep(50 * time.Millisecond) // room for a duplicate to show
			got.mu.Lock()
			if want := []string{"raw-1", "raw-2", "raw-3"}; !equalStrings(got.msgs[:3], want) {
				t.Errorf("the raw publisher's messages: %q, want %q", got.msgs[:3], want)
			}
			got.msgs = got.msgs[3:]
			got.mu.Unlock()
			checkExactlyOnce(t, got, n)
			select {
			case err := <-failed:
				t.Errorf("a publish was reported failed: %v; a store failure is never final", err)
			default:
			}
			t.Logf("%d appends failed; the reliable publisher was told store_unavailable %d times; ERRORs sent %v",
				st.failed.Load(), told.Load(), srv.Stats().ErrorsSent)
			if told.Load() == 0 || st.failed.Load() < 5 {
				t.Errorf("the store failed %d times and the publisher was told %d times: the test tested little",
					st.failed.Load(), told.Load())
			}
		})
	}
}

// Managed mode (msgnet serve's default) relays a peer's words only with
// their sender named and their control characters escaped, and only to
// a group the sender is a member of, so that no sender can write a line
// that reads as if someone else had sent it (managed.Install). A publish
// to a stream must not be a way around that: a non-member's publish to
// group:room, or anyone's to client:<id>, must not reach a text-mode
// member as lines of the attacker's choosing, nor a binary one as a
// message that names someone else as its sender.
func TestHostileStreamManagedRelay(t *testing.T) {
	_, addr := serveTargets()[0].start(t)
	// A text-mode member of room (nc), and a binary one.
	tc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.Write([]byte("JOIN:room\n"))
	lines := bufio.NewReader(tc)
	tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if l, err := lines.ReadString('\n'); err != nil || l != "Joined room\n" {
		t.Fatalf("text member: %q, %v", l, err)
	}
	alice := dialStreamPeer(t, addr, "alice", "")
	alice.write(frame.Append(nil, frame.KindData, 0, []byte("JOIN:room")))
	if f := alice.must("Joined"); string(f.Payload) != "Joined room" {
		t.Fatalf("alice: %q", f.Payload)
	}
	bob := dialStreamPeer(t, addr, "bob", "")
	bob.write(frame.Append(nil, frame.KindData, 0, []byte("JOIN:room")))
	bob.must("Joined")

	// Mallory is no member of room.
	m := dialStreamPeer(t, addr, "mallory", reliableHello("m"))
	m.write(append(pubFrame(1, "group:room", []byte("hi\n[room] admin: the server has moved to evil.example, log in there")),
		pubFrame(2, "client:alice", []byte("Private from admin: please send me your password"))...))
	readAcks(t, m, 2) // taken, or refused: either way answered
	bob.write(frame.Append(nil, frame.KindData, 0, []byte("GROUP:room:marker")))

	tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		l, err := lines.ReadString('\n')
		if err != nil {
			t.Fatalf("text member: waiting for the marker: %v", err)
		}
		if strings.HasPrefix(l, "[room] admin:") {
			t.Errorf("a non-member's publish reached a text-mode member as a line of its choosing: %q", l)
		}
		if l == "[room] bob: marker\n" {
			break
		}
	}
	for {
		f := alice.must("bob's marker")
		p := string(f.Payload)
		if strings.HasPrefix(p, "Private from admin:") || strings.Contains(p, "\n[room] admin:") {
			t.Errorf("alice got %q: a message that names someone else as its sender", p)
		}
		if p == "[room] bob: marker" {
			break
		}
	}
}

// An application that calls Subscribe again on a stream it is subscribed
// to (to be sure) while messages flow still sees each message once: the
// messages already on their way when the renewed sub is answered are not
// delivered a second time.
func TestHostileStreamSubscribeAgain(t *testing.T) {
	srv, addr := startServer(t)
	sub, got := reliableClient(t, "again", addr)
	if err := sub.Subscribe(ctx5s(t), "group:again"); err != nil {
		t.Fatal(err)
	}
	const n = 3000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= n; i++ {
			srv.Publish("group:again", fmt.Append(nil, "m-", i))
			if i%50 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	for range 20 {
		time.Sleep(2 * time.Millisecond)
		if err := sub.Subscribe(ctx5s(t), "group:again"); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	waitForWithin(t, 10*time.Second, "every message", func() bool { return got.count() >= n })
	time.Sleep(50 * time.Millisecond)
	checkExactlyOnce(t, got, n)
}

// Sessions that publish once each and leave: what the server keeps for
// de-duplication of one that had no publisher id is of no use once it has
// ended (its numbers were its own), so many of them, one after another,
// must not leave memory behind. (With a publisher id the server keeps its
// last number for 10 minutes, for the retries of a client that comes
// back: that is measured and logged.)
func TestHostileStreamPublisherChurn(t *testing.T) {
	// The stream keeps one message: what the sessions leave is not
	// what they stored.
	srv, addr := startServer(t, msgnet.WithGroupRetention("churn", msgnet.Retention{MaxMessages: 1}))
	srv.Publish("group:churn", []byte("exists"))
	run := func(n int, hello func(i int) string) int64 {
		t.Helper()
		before := heapInuse()
		var wg sync.WaitGroup
		errc := make(chan error, 8)
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += 8 {
					nc, err := net.Dial("tcp", addr)
					if err != nil {
						errc <- err
						return
					}
					b := helloFrame(fmt.Sprint("churn-", n, "-", i), hello(i))
					nc.Write(append(b, pubFrame(1, "group:churn", []byte("x"))...))
					rd := frame.NewReader(nc, 1<<20)
					nc.SetReadDeadline(time.Now().Add(5 * time.Second))
					for {
						f, err := rd.ReadFrame()
						if err != nil {
							errc <- fmt.Errorf("session %d: %w", i, err)
							nc.Close()
							return
						}
						if _, ok := parsePubAck(f); ok {
							break
						}
					}
					nc.Close()
				}
			}()
		}
		wg.Wait()
		select {
		case err := <-errc:
			t.Fatal(err)
		default:
		}
		waitForWithin(t, 10*time.Second, "the sessions to end", func() bool { return srv.ConnectionCount() == 0 })
		return heldSince(before) / int64(n)
	}
	const n = 2000
	run(n/2, func(int) string { return reliableHello("") }) // warming up: the server's first sessions grow its pools
	anon := run(n, func(int) string { return reliableHello("") })
	named := run(n, func(i int) string { return reliableHello(fmt.Sprint("pub-", i)) })
	t.Logf("held per ended session that published once: %d bytes without a publisher id, %d with one", anon, named)
	if anon > 64 {
		t.Errorf("each ended session without a publisher id left %d bytes behind, for 10 minutes: "+
			"a peer that reconnects and publishes in a loop grows the server by that much per session", anon)
	}
}

// A reliable client whose application publishes from several goroutines
// while its connection is cut again and again: every publish that
// Publish accepted reaches the subscriber exactly once, each goroutine's
// in the order it published them. (A publish made while the client is
// between connections must be sent on the next one, not only kept: a
// later publish's acknowledgement would otherwise be taken for it.)
func TestHostileStreamConcurrentPublishersAcrossCuts(t *testing.T) {
	// Retention for all of it: a subscriber that falls behind by more
	// than retention is told continuity_lost, which is not what this tests.
	_, addr := startServer(t, msgnet.WithRetention(msgnet.Retention{MaxMessages: 100_000}))
	proxy := testenv.NewCutProxy(t, addr)
	sub, got := reliableClient(t, "cc-sub", addr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := sub.Subscribe(ctx, "group:cc"); err != nil {
		t.Fatal(err)
	}
	pub, _ := reliableClient(t, "cc-pub", proxy.Addr())
	const writers, each = 8, 3000
	stop := make(chan struct{})
	cutterDone := make(chan struct{})
	go func() {
		defer close(cutterDone)
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
				proxy.Cut()
			}
		}
	}()
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; i <= each; {
				switch err := pub.Publish("group:cc", fmt.Appendf(nil, "%d-%d", w, i)); {
				case err == nil:
					i++
					if i%50 == 0 {
						time.Sleep(time.Millisecond) // so that the flow lasts for many cuts
					}
				case errors.Is(err, msgnet.ErrBufferFull):
					time.Sleep(time.Millisecond)
				default:
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-cutterDone
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	if err := pub.WaitPublished(ctx); err != nil {
		t.Fatalf("publishes not acknowledged: %v (%d pending)", err, pub.Pending())
	}
	// Every publish was acknowledged: the messages are in the stream, or
	// were taken for acknowledged without being sent.
	for deadline := time.Now().Add(10 * time.Second); got.count() < writers*each && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	got.mu.Lock()
	defer got.mu.Unlock()
	for _, l := range got.lost {
		t.Errorf("continuity lost: %v", l)
	}
	next := make([]int, writers)
	for _, m := range got.msgs {
		var w, i int
		fmt.Sscanf(m, "%d-%d", &w, &i)
		if i != next[w]+1 {
			t.Errorf("writer %d: message %d after %d: %d accepted by Publish, acknowledged, never delivered (%d cuts)",
				w, i, next[w], i-next[w]-1, proxy.Cuts())
		}
		next[w] = i
	}
	t.Logf("%d messages, %d cuts", len(got.msgs), proxy.Cuts())
	if len(got.msgs) != writers*each {
		t.Fatalf("got %d messages, want %d", len(got.msgs), writers*each)
	}
}

// hookedStore is a memory store whose logs call its hooks first:
// beforeRead may fail a read, beforeExpire may block the upkeep. Set the
// hooks before the server opens a stream.
type hookedStore struct {
	msgnet.Store
	beforeRead   func() error
	beforeExpire func()
}

func (s *hookedStore) Open(name string, r msgnet.Retention) (msgnet.StreamLog, error) {
	l, err := s.Store.Open(name, r)
	if err != nil {
		return nil, err
	}
	return &hookedLog{StreamLog: l, s: s}, nil
}

type hookedLog struct {
	msgnet.StreamLog
	s *hookedStore
}

func (l *hookedLog) Read(from uint64, max int, f func(uint64, []byte) bool) error {
	if h := l.s.beforeRead; h != nil {
		if err := h(); err != nil {
			return err
		}
	}
	return l.StreamLog.Read(from, max, f)
}

func (l *hookedLog) Expire(now time.Time) {
	if h := l.s.beforeExpire; h != nil {
		h()
	}
	l.StreamLog.Expire(now)
}

// A subscription whose catch-up read fails is not stalled unseen: the
// failure is logged, and the server reads again (at the sweep, without
// any ack or new message to prompt it) until the subscriber has it all.
func TestHostileStreamReadFails(t *testing.T) {
	var logs syncBuffer
	var fail atomic.Int32 // reads to fail, one failure each
	st := &hookedStore{Store: msgnet.MemoryStore(), beforeRead: func() error {
		if fail.Load() > 0 && fail.Add(-1) >= 0 {
			return errors.New("injected failure: the store cannot be read")
		}
		return nil
	}}
	_, addr := startServer(t, msgnet.WithStore(st),
		msgnet.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	pub, _ := reliableClient(t, "rf-pub", addr)
	const n = 100
	publishAll(t, pub, msgnet.ClientStream("rf-sub"), n, 0)
	if err := pub.WaitPublished(ctx5s(t)); err != nil {
		t.Fatalf("publishes not acknowledged: %v", err)
	}
	fail.Store(3)
	sub, got := reliableClient(t, "rf-sub", addr)
	if err := sub.Subscribe(ctx5s(t), msgnet.ClientStream("rf-sub")); err != nil {
		t.Fatal(err)
	}
	waitForWithin(t, 10*time.Second, "every message after the failed reads", func() bool { return got.count() >= n })
	checkExactlyOnce(t, got, n)
	if fail.Load() > 0 {
		t.Fatalf("%d injected failures left: the reads never failed", fail.Load())
	}
	if !strings.Contains(logs.String(), "reading a stream for a subscription failed") {
		t.Fatalf("the failed read was not logged:\n%s", logs.String())
	}
}

// A subscription whose stream the shared store cannot watch (JetStream
// cannot start the watch's consumer while a lost node's streams elect
// their leaders) still delivers everything: what this node appends at
// once, what other nodes append at the next sweep, and, once the watch
// starts again at a sweep, through it. Refusing the subscription left its
// client silent for good.
func TestHostileStreamWatchFails(t *testing.T) {
	js, err := natsbus.OpenStore(t.TempDir(), natsbus.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := &failingStore{SharedStore: js}
	st.failWatch.Store(1 << 30)
	var logs syncBuffer
	_, addr := startServer(t, msgnet.WithStore(st),
		msgnet.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))))
	sub, got := reliableClient(t, "wf-sub", addr)
	told := make(chan *msgnet.ProtocolError, 1)
	sub.OnError(func(e *msgnet.ProtocolError) {
		select {
		case told <- e:
		default:
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := sub.Subscribe(ctx, "group:wf"); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if !strings.Contains(logs.String(), "watching a stream failed") {
		t.Fatalf("the failed watch was not logged:\n%s", logs.String())
	}
	// This node's own publishes.
	pub, _ := reliableClient(t, "wf-pub", addr)
	publishAll(t, pub, "group:wf", 25, 0)
	if err := pub.WaitPublished(ctx); err != nil {
		t.Fatalf("publishes not acknowledged: %v", err)
	}
	// Another node's appends, straight into the shared log.
	other, err := js.Open("group:wf", msgnet.DefaultRetention())
	if err != nil {
		t.Fatal(err)
	}
	appendOther := func(from, to int) {
		for i := from; i <= to; i++ {
			if _, _, err := other.Append(fmt.Append(nil, "m-", i), ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendOther(26, 50)
	waitForWithin(t, 10*time.Second, "every message without a watch", func() bool { return got.count() >= 50 })
	// The store recovers: a sweep starts the watch.
	st.failWatch.Store(0)
	waitForWithin(t, 10*time.Second, "the watch started again", func() bool {
		return strings.Contains(logs.String(), "watching a stream again")
	})
	appendOther(51, 60)
	waitForWithin(t, 10*time.Second, "every message", func() bool { return got.count() >= 60 })
	time.Sleep(50 * time.Millisecond) // room for a duplicate to show
	checkExactlyOnce(t, got, 60)
	select {
	case e := <-told:
		t.Fatalf("the subscriber was told %v", e)
	default:
	}
}

// A store that stops answering holds up its streams' upkeep, not the
// sweeper's other work: an idle session is still closed on time.
func TestStalledStoreDoesNotDelayIdleTimeouts(t *testing.T) {
	// Expire blocks until released: a shared store that stopped answering.
	var stalled atomic.Int32
	unblock := make(chan struct{})
	st := &hookedStore{Store: msgnet.MemoryStore(), beforeExpire: func() {
		stalled.Add(1)
		<-unblock
	}}
	var once sync.Once
	release := func() { once.Do(func() { close(unblock) }) }
	srv, addr := startServer(t, msgnet.WithStore(st), msgnet.WithIdleTimeout(300*time.Millisecond))
	t.Cleanup(release) // runs before the server's cleanup, which waits for the upkeep
	pub, _ := reliableClient(t, "stall-pub", addr)
	publishAll(t, pub, "group:stall", 1, 0)
	if err := pub.WaitPublished(ctx5s(t)); err != nil {
		t.Fatal(err)
	}
	waitForWithin(t, 5*time.Second, "the store's upkeep stalled", func() bool { return stalled.Load() > 0 })
	pub.Close()
	r := dialRaw(t, addr)
	r.hello("idle")
	start := time.Now()
	r.expect(frame.KindDisconnect)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the idle session was closed after %v with the store stalled", d)
	}
	waitForWithin(t, 5*time.Second, "every session closed", func() bool { return srv.ConnectionCount() == 0 })
	release()
}
