package msgnet_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

// The hostile-client suite: what a careful attacker would try against
// msgnet serve, in both of its modes. For every case an honest client
// beside the attacker must get every answer it is due, in order, within a
// bound measured in the same run (see honest), and the attacker must get
// the answer the protocol documents. Helpers: hostile_helpers_test.go.

// floodQueueBytes is the send queue bound of the flood cases (msgnet serve
// --send-queue-bytes 1MiB), a quarter of the default, so that a peer that
// does not read overflows it within a fraction of a second under -race.
const floodQueueBytes = 1 << 20

// stageLimit is what an event loop's turn may queue beyond the bound (see
// WithSendQueueBytes).
const stageLimit = 256 << 10

// floodKind is one kind of frame an attacker sends without pause.
type floodKind struct {
	name  string
	cheap bool   // few frames per byte: cheap enough for every engine
	extra string // hello fields
	// frame is flood frame number seq. Frames that carry their number
	// (at seqAt, 8 bytes big-endian) are all one size, so that a batch is
	// built once and renumbered.
	frame   func(seq uint64) []byte
	seqAt   int    // -1: the frames carry no number
	seqMark uint64 // or'ed into the number
	// answer reports whether f answers a flood frame, and the frame's
	// number when the answer carries one (-1 otherwise). nil: the protocol
	// answers nothing. It is called for every answer: cheap, so that the
	// attacker takes little of the CPU the server and the honest client
	// share with it.
	answer func(tg target, f frame.Frame) (ok bool, seq int64)
	// check tests the server's counters once every frame was handled.
	check func(t *testing.T, st msgnet.Stats, sent uint64)
}

// seqPayload is prefix, seq (8 bytes) and padding up to size.
func seqPayload(prefix string, seq uint64, size int) []byte {
	p := binary.BigEndian.AppendUint64([]byte(prefix), seq)
	for len(p) < size {
		p = append(p, '.')
	}
	return p
}

func seqAfter(p []byte, prefix string) (bool, int64) {
	if len(p) < len(prefix)+8 || string(p[:len(prefix)]) != prefix {
		return false, -1
	}
	return true, int64(binary.BigEndian.Uint64(p[len(prefix):]))
}

var badControls = []string{
	`not json`, `{}`, `{"op":1}`, `{"op":"nope"}`, `[]`, `{"op":"hello","client_id":"again"}`,
	`{"op":"welcome"}`, `{"op":"auth","mac":"AAAA"}`, `{"op":`, `"hello"`, `null`, `{"op":null}`,
}

func errorCode(code string) func(target, frame.Frame) (bool, int64) {
	want := []byte(`"code":"` + code + `"`)
	return func(_ target, f frame.Frame) (bool, int64) {
		return f.Kind == frame.KindError && bytes.Contains(f.Payload, want), -1
	}
}

var floodKinds = []floodKind{
	{
		name:  "ping",
		cheap: true,
		frame: func(seq uint64) []byte { return frame.Append(nil, frame.KindPing, 0, seqPayload("ping-", seq, 1024)) },
		seqAt: frame.HeaderLen + len("ping-"),
		answer: func(_ target, f frame.Frame) (bool, int64) {
			if f.Kind != frame.KindPong {
				return false, -1
			}
			return seqAfter(f.Payload, "ping-")
		},
	},
	{
		name:  "data",
		cheap: true,
		frame: func(seq uint64) []byte { return frame.Append(nil, frame.KindData, 0, seqPayload("flood-", seq, 1024)) },
		seqAt: frame.HeaderLen + len("flood-"),
		answer: func(tg target, f frame.Frame) (bool, int64) {
			if f.Kind != frame.KindData || f.Flags != 0 {
				return false, -1
			}
			return seqAfter(f.Payload, tg.reply("flood-"))
		},
	},
	{
		name:  "request",
		extra: `,"features":["request"]`,
		frame: func(seq uint64) []byte {
			return frame.Append(nil, frame.KindData, frame.FlagRequest, binary.BigEndian.AppendUint64(nil, seq))
		},
		seqAt: frame.HeaderLen,
		answer: func(_ target, f frame.Frame) (bool, int64) {
			// No request handler in either mode: status 1 and its message.
			ok := f.Kind == frame.KindData && f.Flags == frame.FlagReply && len(f.Payload) >= 9 &&
				f.Payload[8] == 1 && string(f.Payload[9:]) == msgnet.ErrNoRequestHandler.Error()
			if !ok {
				return false, -1
			}
			return true, int64(binary.BigEndian.Uint64(f.Payload))
		},
	},
	{
		name: "control",
		frame: func(seq uint64) []byte {
			return frame.Append(nil, frame.KindControl, 0, []byte(badControls[seq%uint64(len(badControls))]))
		},
		seqAt:  -1,
		answer: errorCode(frame.CodeBadControl),
	},
	{
		// Unknown kinds and flags that were not negotiated, alternately.
		name: "unknown-type",
		frame: func(seq uint64) []byte {
			if seq%2 == 0 {
				return frame.Append(nil, frame.Kind(0x7e), 0, []byte("?"))
			}
			return frame.Append(nil, frame.KindData, frame.FlagCompressed, []byte("?"))
		},
		seqAt:  -1,
		answer: errorCode(frame.CodeUnknownType),
	},
	{
		// Frames the protocol does not answer, in turn: HEARTBEAT, ERROR
		// with codes a peer made up, and replies to requests never made.
		name:  "unanswered",
		cheap: true,
		extra: `,"features":["request"]`,
		frame: func(seq uint64) []byte {
			switch seq % 3 {
			case 0:
				return frame.Append(nil, frame.KindHeartbeat, 0, make([]byte, 64))
			case 1:
				return frame.Append(nil, frame.KindError, 0, fmt.Appendf(nil, `{"code":"made-up-%d","message":"flood"}`, seq))
			}
			p := binary.BigEndian.AppendUint64(nil, seq|1<<63) // an id the server never used
			return frame.Append(nil, frame.KindData, frame.FlagReply, append(p, 0, 'x'))
		},
		seqAt: -1,
		check: func(t *testing.T, st msgnet.Stats, sent uint64) {
			each := sent / 3 // batches hold whole rounds of the three
			if st.FramesIn["HEARTBEAT"] != each {
				t.Errorf("%d HEARTBEAT frames counted, %d sent", st.FramesIn["HEARTBEAT"], each)
			}
			// A peer's made-up codes are folded, or they would grow the
			// counters (and the metrics' label sets) without bound.
			for code := range st.ErrorsReceived {
				if code != "other" && !slices.Contains(msgnet.ErrorCodes, code) {
					t.Errorf("a made-up code %q became a counter", code)
				}
			}
			if st.ErrorsReceived["other"] != each {
				t.Errorf("%d ERROR frames counted as other, %d sent", st.ErrorsReceived["other"], each)
			}
			if st.LateReplies != each {
				t.Errorf("%d late replies counted, %d sent", st.LateReplies, each)
			}
		},
	},
}

// flooder is an attacker connection that writes one kind of frame without
// pause. A reading one reads everything it is sent; a silent one reads
// nothing until the flood is over.
type flooder struct {
	id      string
	nc      net.Conn
	rd      *frame.Reader
	bytes   atomic.Uint64 // written, the hello included
	sent    atomic.Uint64 // flood frames written whole
	answers atomic.Uint64
	marker  chan struct{}
	reading atomic.Bool
	done    chan struct{} // closed when the reader has ended
}

func newFlooder(t *testing.T, addr, id string, k floodKind, rcvbuf int) *flooder {
	t.Helper()
	nc, err := dialAttacker(addr, rcvbuf)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := handshake(nc, id, k.extra)
	if err != nil {
		nc.Close()
		t.Fatalf("%s: %v", id, err)
	}
	f := &flooder{id: id, nc: nc, rd: rd, marker: make(chan struct{}, 1), done: make(chan struct{})}
	f.bytes.Store(uint64(len(helloFrame(id, k.extra))))
	t.Cleanup(func() {
		nc.Close()
		if f.reading.Load() {
			<-f.done // the reader ends when the connection is closed
		}
	})
	return f
}

// startReading reads everything the server sends: answers to the flood,
// checked to come in order, and the marker PONG.
func (f *flooder) startReading(t *testing.T, tg target, k floodKind) {
	f.reading.Store(true)
	go func() {
		defer close(f.done)
		last := int64(-1)
		for {
			fr, err := f.rd.ReadFrame()
			if err != nil {
				return
			}
			if fr.Kind == frame.KindPong && string(fr.Payload) == "marker" {
				f.marker <- struct{}{}
				continue
			}
			if k.answer != nil {
				if ok, seq := k.answer(tg, fr); ok {
					if seq != -1 && seq <= last {
						t.Errorf("%s: answer to frame %d after the answer to %d", f.id, seq, last)
					}
					last = seq
					f.answers.Add(1)
					continue
				}
			}
			t.Errorf("%s: unexpected %v %.200q", f.id, fr.Kind, fr.Payload)
		}
	}()
}

// flood writes frames in batches of whole frames until stop, or until
// enough reports true.
func (f *flooder) flood(t *testing.T, k floodKind, stop <-chan struct{}, enough func() bool) {
	var batch []byte
	var n, size uint64
	for len(batch) < 32<<10 || n%6 != 0 { // whole rounds of kinds that take turns
		fr := k.frame(n)
		size = uint64(len(fr))
		batch = append(batch, fr...)
		n++
	}
	for seq := uint64(0); !stopped(stop) && !enough(); seq += n {
		if k.seqAt >= 0 && seq > 0 {
			if size*n != uint64(len(batch)) {
				panic("numbered flood frames must be of one size")
			}
			for i := range n {
				binary.BigEndian.PutUint64(batch[i*size+uint64(k.seqAt):], (seq+i)|k.seqMark)
			}
		}
		if err := writeAll(f.nc, batch, 10*time.Second); err != nil {
			t.Errorf("%s: %v", f.id, err)
			return
		}
		f.sent.Add(n)
		f.bytes.Add(uint64(len(batch)))
	}
}

// Floods of every kind of frame, from one attacker that reads what it is
// sent and one that never reads. The honest client stays within its bound;
// every flood frame that has an answer gets exactly one, in order, unless
// the attacker's queue was full, and then the drop is counted:
// answers received + Stats().Dropped["queue_full"] = frames sent, exactly.
// The silent attacker's queue stays within its bound, and so does the
// memory the server holds.
func TestHostileFlood(t *testing.T) {
	for _, k := range floodKinds {
		t.Run(k.name, func(t *testing.T) {
			if k.cheap {
				forEngines(t, func(t *testing.T, tg target) { floodCase(t, tg, k) })
			} else {
				forServeTargets(t, func(t *testing.T, tg target) { floodCase(t, tg, k) })
			}
		})
	}
}

func floodCase(t *testing.T, tg target, k floodKind) {
	srv, addr := tg.start(t, msgnet.WithSendQueueBytes(floodQueueBytes))
	h := newHonest(t, tg, addr)
	reader := newFlooder(t, addr, "flood-reader", k, 0)
	silent := newFlooder(t, addr, "flood-silent", k, 16<<10)
	reader.startReading(t, tg, k)
	sReader, sSilent := sessionOf(t, srv, "flood-reader"), sessionOf(t, srv, "flood-silent")
	before := heapInuse()

	// Frames with large answers flood until the silent attacker's queue
	// has overflowed, and each attacker has sent twice its bound. Small
	// answers would take hundreds of thousands of frames to fill the
	// queue and the kernel's buffers under it: those floods stop at
	// smallVolume and need not overflow.
	const volume, smallVolume, maxVolume = 2 * floodQueueBytes, 512 << 10, 64 << 20
	enough := func(f *flooder) func() bool {
		return func() bool {
			n := f.bytes.Load()
			switch {
			case n >= maxVolume:
				return true
			case !k.cheap:
				return n >= smallVolume
			case k.answer != nil && srv.Stats().Dropped[msgnet.DropQueueFull] == 0:
				return false
			}
			return n >= volume
		}
	}
	a := newAttack(t)
	var flooding atomic.Int32
	for _, f := range []*flooder{reader, silent} {
		flooding.Add(1)
		a.goDo(func(stop <-chan struct{}) {
			defer flooding.Add(-1)
			f.flood(t, k, stop, enough(f))
		})
	}
	maxQueued := 0
	h.during(30, 30*time.Second, func() bool {
		for _, s := range []*msgnet.Session{sReader, sSilent} {
			maxQueued = max(maxQueued, s.Info().QueueBytes)
		}
		return flooding.Load() == 0
	})
	a.end()
	// Every byte written is handled before the counts are taken.
	waitForWithin(t, 10*time.Second, "the server to read the whole flood", func() bool {
		return sReader.Info().BytesIn == reader.bytes.Load() && sSilent.Info().BytesIn == silent.bytes.Load()
	})
	for _, s := range []*msgnet.Session{sReader, sSilent} {
		maxQueued = max(maxQueued, s.Info().QueueBytes)
	}
	held := heldSince(before)
	sent := reader.sent.Load() + silent.sent.Load()
	t.Logf("%d frames (%d MiB) sent; the process holds %+d KiB; largest queue seen %d KiB; dropped %v",
		sent, (reader.bytes.Load()+silent.bytes.Load())>>20, held>>10, maxQueued>>10, srv.Stats().Dropped)
	if maxQueued > floodQueueBytes+stageLimit {
		t.Errorf("a flooder's queue held %d bytes; bound %d (+%d staged)", maxQueued, floodQueueBytes, stageLimit)
	}
	// Two queues at their bound, each with what a turn stages, and a
	// constant for buffers and bookkeeping: far less than the flood.
	if limit := int64(2*(floodQueueBytes+stageLimit) + 4<<20); held > limit {
		t.Errorf("the server holds %d KiB more after the flood; bound %d KiB", held>>10, limit>>10)
	}

	// The silent attacker reads at last; the queues drain; a marker PING
	// on each, answered after everything else, tells that all is read.
	silent.startReading(t, tg, k)
	waitForWithin(t, 10*time.Second, "the queues to drain", func() bool {
		return sReader.Info().QueueBytes == 0 && sSilent.Info().QueueBytes == 0
	})
	for _, f := range []*flooder{reader, silent} {
		if err := writeAll(f.nc, frame.Append(nil, frame.KindPing, 0, []byte("marker")), 5*time.Second); err != nil {
			t.Fatal(err)
		}
		recv(t, f.marker, f.id+"'s marker PONG")
	}
	st := srv.Stats()
	t.Logf("answers: the reader %d of %d, the silent one %d of %d",
		reader.answers.Load(), reader.sent.Load(), silent.answers.Load(), silent.sent.Load())
	answered := reader.answers.Load() + silent.answers.Load()
	dropped := st.Dropped[msgnet.DropQueueFull]
	if k.answer != nil {
		if answered+dropped != sent {
			t.Errorf("%d frames sent, %d answered, %d drops counted: %d unaccounted for",
				sent, answered, dropped, int64(sent)-int64(answered+dropped))
		}
		if dropped == 0 && k.cheap {
			t.Errorf("the silent attacker's queue never overflowed")
		}
		if st.SlowConsumers != dropped {
			t.Errorf("%d slow-consumer refusals counted, %d drops", st.SlowConsumers, dropped)
		}
	} else if answered != 0 || dropped != 0 {
		t.Errorf("%d answers and %d drops for frames the protocol does not answer", answered, dropped)
	}
	if k.check != nil {
		k.check(t, st, sent)
	}
	if !sReader.IsConnected() || !sSilent.IsConnected() {
		t.Errorf("a flood closed the session; the protocol drops what it cannot send and goes on")
	}
	h.trip(20) // and the honest client is still served
}

// slowPeer is a slowloris connection: it sends first at once, then one
// byte of trickle every every, and never completes a handshake in time.
type slowPeer struct {
	name    string
	first   string
	trickle string
	every   time.Duration
	// disconnect: the peer has chosen binary mode by the deadline, so it
	// gets DISCONNECT "handshake timeout"; otherwise nothing is written.
	disconnect bool
}

// Slowloris variants are cut at the handshake deadline (WithHandshakeTimeout,
// short here) however they trickle: half a header then nothing, a hello
// one byte per 50 ms, a text line one byte per 50 ms, nothing at all, and
// many connections each sending a byte now and then. Each is closed
// between the deadline and the deadline plus a second (the sweeper's tick
// and a loaded machine), binary ones after DISCONNECT "handshake timeout"
// and nothing else, text ones without a byte; each is counted once in
// Stats().Disconnects["handshake_timeout"]; the honest client stays within
// its bound meanwhile.
func TestHostileSlowloris(t *testing.T) {
	forEngines(t, func(t *testing.T, tg target) {
		const deadline = 300 * time.Millisecond
		srv, addr := tg.start(t, msgnet.WithHandshakeTimeout(deadline))
		h := newHonest(t, tg, addr)
		hello := string(helloFrame("slowpoke", ""))
		peers := []slowPeer{
			{name: "half a header", first: "MSGI\x00\x00", disconnect: true},
			{name: "trickled hello", trickle: hello, every: 50 * time.Millisecond, disconnect: true},
			{name: "trickled text line", trickle: "a line that never ends, one byte at a time", every: 50 * time.Millisecond},
			{name: "nothing"},
		}
		for i := range 30 { // a byte now and then, binary or text from the first
			p := slowPeer{name: fmt.Sprint("byte now and then ", i), every: time.Duration(100+i%5*20) * time.Millisecond}
			if i%2 == 0 {
				p.first, p.trickle, p.disconnect = hello[:4], hello[4:], true
			} else {
				p.first, p.trickle = "G", "ET / HTTP/1.1"
			}
			peers = append(peers, p)
		}
		type result struct {
			got    []byte
			after  time.Duration
			err    error
			writes int
		}
		results := make([]chan result, len(peers))
		a := newAttack(t)
		for i, p := range peers {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { nc.Close() })
			dialed := time.Now()
			results[i] = make(chan result, 1)
			a.goDo(func(stop <-chan struct{}) {
				closed := make(chan struct{})
				var writes atomic.Int64
				go func() {
					defer close(closed)
					b, at, err := readUntilClosed(nc, deadline+5*time.Second)
					results[i] <- result{got: b, after: at.Sub(dialed), err: err, writes: int(writes.Load())}
				}()
				if p.first != "" {
					nc.Write([]byte(p.first))
				}
				if p.every > 0 {
					tick := time.NewTicker(p.every)
					defer tick.Stop()
				trickle:
					for j := 0; j < len(p.trickle); j++ {
						select {
						case <-closed:
							break trickle
						case <-stop:
							break trickle
						case <-tick.C:
						}
						if _, err := nc.Write([]byte{p.trickle[j]}); err != nil {
							break
						}
						writes.Add(1)
					}
				}
				<-closed   // the reader has its own deadline
				nc.Close() // the server lingers over its close until the peer's
			})
		}
		var got []result
		h.during(20, 10*time.Second, func() bool {
			for len(got) < len(peers) {
				select {
				case r := <-results[len(got)]:
					got = append(got, r)
					continue
				default:
				}
				return false
			}
			return true
		})
		for i, r := range got {
			p := peers[i]
			if r.err != nil {
				t.Errorf("%s: not closed: %v (got %q after %v)", p.name, r.err, r.got, r.after)
				continue
			}
			if r.after < deadline*9/10 || r.after > deadline+time.Second {
				t.Errorf("%s: closed after %v; the deadline is %v", p.name, r.after, deadline)
			}
			if p.trickle != "" && r.writes >= len(p.trickle) {
				t.Errorf("%s: the whole trickle was written before the close", p.name)
			}
			fs, err := frames(r.got)
			switch {
			case !p.disconnect && len(r.got) > 0:
				t.Errorf("%s: got %q; a peer that has not chosen binary mode is closed without a word", p.name, r.got)
			case p.disconnect && (err != nil || len(fs) != 1 || fs[0].Kind != frame.KindDisconnect ||
				string(fs[0].Payload) != msgnet.ErrHandshakeTimeout.Error()):
				t.Errorf("%s: got %q, want only DISCONNECT %q", p.name, r.got, msgnet.ErrHandshakeTimeout)
			}
		}
		waitFor(t, "only the honest session left", func() bool { return srv.ConnectionCount() == 1 })
		if n := srv.Stats().Disconnects["handshake_timeout"]; n != uint64(len(peers)) {
			t.Errorf("%d handshake timeouts counted for %d slowloris peers", n, len(peers))
		}
	})
}

// Large frames trickled after the handshake, and many sessions holding
// only a header that announces the largest frame, cost the server memory
// in proportion to what it received, not to what the headers announce:
// the heap it holds is at most twice what arrived (buffers grow by
// doubling) plus a constant. (What it allocates is not bounded here: under
// -race sync.Pool drops a quarter of what is put back, so the honest
// client's replies alone allocate megabytes; TestTrickledMessageAllocatesInProportion
// bounds it without traffic beside.) Completed, each trickled frame is
// echoed whole.
func TestHostileTrickledFrames(t *testing.T) {
	forEngines(t, func(t *testing.T, tg target) {
		srv, addr := tg.start(t)
		h := newHonest(t, tg, addr)
		const (
			tricklers = 8
			size      = 1<<20 - 64 // the reply fits the limit in managed mode too
			partial   = 64 << 10   // trickled before the memory is measured
			piece     = 1 << 10
			headers   = 64 // sessions that send a header and one byte
		)
		type conn struct {
			nc net.Conn
			rd *frame.Reader
			s  *msgnet.Session
		}
		var trick, idle []conn
		for i := range tricklers + headers {
			id := fmt.Sprint("trickle-", i)
			nc := dialRaw(t, addr).nc
			rd, err := handshake(nc, id, "")
			if err != nil {
				t.Fatal(err)
			}
			c := conn{nc: nc, rd: rd, s: sessionOf(t, srv, id)}
			if i < tricklers {
				trick = append(trick, c)
			} else {
				idle = append(idle, c)
			}
		}
		payload := make([]byte, size)
		for i := range payload {
			payload[i] = byte('a' + i%26)
		}
		msg := frame.Append(nil, frame.KindData, 0, payload)
		before := heapInuse()
		var m0 runtime.MemStats
		runtime.ReadMemStats(&m0)
		for _, c := range idle {
			c.nc.Write(msg[:frame.HeaderLen+1])
		}
		a := newAttack(t)
		var trickling atomic.Int32
		for _, c := range trick {
			trickling.Add(1)
			a.goDo(func(stop <-chan struct{}) {
				defer trickling.Add(-1)
				tick := time.NewTicker(2 * time.Millisecond)
				defer tick.Stop()
				const end = frame.HeaderLen + partial
				for at := 0; at < end && !stopped(stop); at += piece {
					<-tick.C
					if _, err := c.nc.Write(msg[at:min(at+piece, end)]); err != nil {
						t.Errorf("trickle: %v", err)
						return
					}
				}
			})
		}
		h.during(20, 20*time.Second, func() bool { return trickling.Load() == 0 })
		a.end()
		helloLen := func(i int) uint64 { return uint64(len(helloFrame(fmt.Sprint("trickle-", i), ""))) }
		waitFor(t, "the server to read what was trickled", func() bool {
			for i, c := range trick {
				if c.s.Info().BytesIn != helloLen(i)+frame.HeaderLen+partial {
					return false
				}
			}
			for i, c := range idle {
				if c.s.Info().BytesIn != helloLen(tricklers+i)+frame.HeaderLen+1 {
					return false
				}
			}
			return true
		})
		var m1 runtime.MemStats
		runtime.ReadMemStats(&m1)
		held := heldSince(before)
		received := int64(tricklers*(frame.HeaderLen+partial) + headers*(frame.HeaderLen+1))
		announced := int64((tricklers + headers) * size)
		alloc := int64(m1.TotalAlloc - m0.TotalAlloc)
		t.Logf("received %d KiB, headers announced %d MiB; the process holds %+d KiB, allocated %d KiB meanwhile",
			received>>10, announced>>20, held>>10, alloc>>10)
		if limit := 2*received + 1<<20; held > limit {
			t.Errorf("the server holds %d KiB for %d KiB received; bound %d KiB", held>>10, received>>10, limit>>10)
		}
		// The rest of each trickled frame, at once: the handler gets it whole.
		want := []byte(tg.reply(string(payload)))
		for _, c := range trick {
			if _, err := c.nc.Write(msg[frame.HeaderLen+partial:]); err != nil {
				t.Fatal(err)
			}
		}
		for i, c := range trick {
			c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			f, err := c.rd.ReadFrame()
			if err != nil || f.Kind != frame.KindData || !bytes.Equal(f.Payload, want) {
				t.Fatalf("trickler %d: got %v %d bytes, %v; want its frame echoed", i, f.Kind, len(f.Payload), err)
			}
		}
		h.trip(20)
	})
}

// A flood of text lines (the nc-like mode, no hello) from an attacker that
// reads and one that never does: the same rules as for frames. Every line
// is echoed once, in order, or its drop is counted, exactly; the silent
// attacker's queue and the server's heap stay within the bound.
func TestHostileTextFlood(t *testing.T) {
	forEngines(t, func(t *testing.T, tg target) {
		srv, addr := tg.start(t, msgnet.WithSendQueueBytes(floodQueueBytes))
		h := newHonest(t, tg, addr)
		type liner struct {
			nc       net.Conn
			br       *bufio.Reader
			s        *msgnet.Session
			sent     atomic.Uint64
			bytes    atomic.Uint64
			answers  atomic.Uint64
			marker   chan error
			firstOut string
		}
		line := func(seq uint64) []byte { return fmt.Appendf(nil, "line-%016d-%s\n", seq, strings.Repeat("t", 1000)) }
		newLiner := func(rcvbuf int) *liner {
			nc, err := dialAttacker(addr, rcvbuf)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { nc.Close() })
			l := &liner{nc: nc, br: bufio.NewReaderSize(nc, 64<<10), marker: make(chan error, 1)}
			// The first line makes the session; it is echoed like the rest.
			nc.Write([]byte("first\n"))
			nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if got, err := l.br.ReadString('\n'); err != nil || got != tg.reply("first")+"\n" {
				t.Fatalf("text attacker: %q %v", got, err)
			}
			var found *msgnet.Session
			waitFor(t, "the text session", func() bool {
				srv.Range(func(s *msgnet.Session) bool {
					if s.Mode() == frame.ModeText && s.Info().BytesIn == uint64(len("first\n")) && s.RemotePort() == nc.LocalAddr().(*net.TCPAddr).Port {
						found = s
					}
					return true
				})
				return found != nil
			})
			l.s = found
			l.bytes.Store(uint64(len("first\n")))
			return l
		}
		read := func(l *liner) {
			go func() {
				last := int64(-1)
				prefix := tg.reply("line-")
				for {
					l.nc.SetReadDeadline(time.Now().Add(20 * time.Second))
					got, err := l.br.ReadString('\n')
					if err != nil {
						l.marker <- err
						return
					}
					if got == tg.reply("END")+"\n" {
						l.marker <- nil
						return
					}
					var seq int64
					if _, err := fmt.Sscanf(strings.TrimPrefix(got, prefix), "%016d-", &seq); err != nil || !strings.HasPrefix(got, prefix) || seq <= last {
						l.marker <- fmt.Errorf("got %.60q after line %d", got, last)
						return
					}
					last = seq
					l.answers.Add(1)
				}
			}()
		}
		reader, silent := newLiner(0), newLiner(16<<10)
		read(reader)
		before := heapInuse()
		a := newAttack(t)
		var flooding atomic.Int32
		for _, l := range []*liner{reader, silent} {
			flooding.Add(1)
			a.goDo(func(stop <-chan struct{}) {
				defer flooding.Add(-1)
				for seq := uint64(0); !stopped(stop) && l.bytes.Load() < 2*floodQueueBytes+8<<20; {
					var b []byte
					n := uint64(0)
					for len(b) < 32<<10 {
						b = append(b, line(seq)...)
						seq++
						n++
					}
					if err := writeAll(l.nc, b, 10*time.Second); err != nil {
						t.Errorf("text flood: %v", err)
						return
					}
					l.sent.Add(n)
					l.bytes.Add(uint64(len(b)))
				}
			})
		}
		maxQueued := 0
		h.during(30, 30*time.Second, func() bool {
			maxQueued = max(maxQueued, silent.s.Info().QueueBytes, reader.s.Info().QueueBytes)
			return flooding.Load() == 0
		})
		a.end()
		waitForWithin(t, 10*time.Second, "the server to read the whole flood", func() bool {
			return reader.s.Info().BytesIn == reader.bytes.Load() && silent.s.Info().BytesIn == silent.bytes.Load()
		})
		maxQueued = max(maxQueued, silent.s.Info().QueueBytes)
		held := heldSince(before)
		if maxQueued > floodQueueBytes+stageLimit {
			t.Errorf("a text flooder's queue held %d bytes; bound %d", maxQueued, floodQueueBytes)
		}
		if limit := int64(2*(floodQueueBytes+stageLimit) + 4<<20); held > limit {
			t.Errorf("the server holds %d KiB more after the flood; bound %d KiB", held>>10, limit>>10)
		}
		read(silent)
		waitForWithin(t, 10*time.Second, "the queues to drain", func() bool {
			return reader.s.Info().QueueBytes == 0 && silent.s.Info().QueueBytes == 0
		})
		for _, l := range []*liner{reader, silent} {
			l.nc.Write([]byte("END\n"))
			if err := recv(t, l.marker, "the END line's echo"); err != nil {
				t.Fatal(err)
			}
		}
		sent := reader.sent.Load() + silent.sent.Load()
		answered := reader.answers.Load() + silent.answers.Load()
		dropped := srv.Stats().Dropped[msgnet.DropQueueFull]
		t.Logf("%d lines sent, %d echoed, %d dropped; largest queue %d KiB; the process holds %+d KiB",
			sent, answered, dropped, maxQueued>>10, held>>10)
		if answered+dropped != sent || dropped == 0 {
			t.Errorf("%d lines sent, %d echoed, %d drops counted; want every line echoed or counted, some dropped", sent, answered, dropped)
		}
		h.trip(20)
	})
}
