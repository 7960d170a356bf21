package msgnet_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/managed"
)

// writeInPieces writes b cut at the given offsets, waiting after each piece
// until the server has received it, so that each piece is a read (a burst)
// of its own and the rest of the line is carried over between them.
func writeInPieces(t *testing.T, srv *msgnet.Server, nc net.Conn, b []byte, cuts ...int) {
	t.Helper()
	base := srv.Stats().BytesIn
	at := 0
	for _, c := range append(cuts, len(b)) {
		if _, err := nc.Write(b[at:c]); err != nil {
			t.Fatal(err)
		}
		want := base + uint64(c)
		waitFor(t, fmt.Sprintf("the server to receive %d bytes", c), func() bool { return srv.Stats().BytesIn >= want })
		at = c
	}
}

// readLine reads one line with a deadline.
func readLine(t *testing.T, nc net.Conn, br *bufio.Reader) string {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("reading a line: %v (got %d bytes)", err, len(line))
	}
	return line
}

// A long line that arrives in several reads comes back whole. It did not
// when the rest of a line carried over from one read to the next was
// copied into a buffer too small for it: a 10,240-byte line came back as
// 6,151 bytes.
func TestTextLongLineAcrossReads(t *testing.T) {
	cases := []struct {
		size int
		cuts []int
	}{
		{10240, []int{8192}},
		{75000, []int{70000}},
		{300000, []int{4096, 70000, 140001, 299999}},
		{1<<20 - 6, []int{1, 65536, 65537, 1<<20 - 7}}, // the reply is exactly the limit
	}
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, opts...)
		srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.SendString("Echo: " + string(msg)) })
		for _, c := range cases {
			t.Run(fmt.Sprint(c.size), func(t *testing.T) {
				nc, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
				br := bufio.NewReader(nc)
				line := bytes.Repeat([]byte("0123456789abcdef"), c.size/16+1)[:c.size]
				line[0] = 'x' // text mode from the first byte
				writeInPieces(t, srv, nc, append(line, '\n'), c.cuts...)
				got := readLine(t, nc, br)
				if want := "Echo: " + string(line) + "\n"; got != want {
					t.Fatalf("got %d bytes back, want %d", len(got), len(want))
				}
				// The session goes on with short lines.
				nc.Write([]byte("after\n"))
				if got := readLine(t, nc, br); got != "Echo: after\n" {
					t.Fatalf("got %q after the long line", got)
				}
			})
		}
	})
}

// A line longer than the limit is refused even when it arrives in pieces,
// and the refusal comes as soon as limit+2 bytes are in, not at its end.
func TestTextOverlongLineAcrossReads(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, append(opts, msgnet.WithMessageSizeLimit(100_000))...)
		srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.Send(msg) })
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		line := bytes.Repeat([]byte("y"), 100_002)
		writeInPieces(t, srv, nc, line, 50_000, 99_000)
		if got := readLine(t, nc, bufio.NewReader(nc)); got != "ERROR "+frame.CodeMessageTooLarge+"\n" {
			t.Fatalf("got %q", got)
		}
	})
}

// A large message trickled in small pieces costs the server allocations in
// proportion to its size. It cost hundreds of times its size when each
// piece's read allocated a buffer for the whole frame and copied what had
// come so far: 800 KiB of a 1 MiB frame in 4 KiB pieces made 199 MiB of
// allocations.
func TestTrickledMessageAllocatesInProportion(t *testing.T) {
	const size = 1 << 20
	const piece = 8 << 10
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		for _, kind := range []string{"frame", "line"} {
			t.Run(kind, func(t *testing.T) {
				srv, addr := startServer(t, opts...)
				got := make(chan int, 1)
				srv.OnMessage(func(s *msgnet.Session, msg []byte) { got <- len(msg) })
				nc, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
				var msg []byte
				if kind == "frame" {
					msg = frame.Append(nil, frame.KindData, 0, bytes.Repeat([]byte("z"), size))
				} else {
					msg = append(bytes.Repeat([]byte("z"), size), '\n')
				}
				var cuts []int
				for c := piece; c < len(msg); c += piece {
					cuts = append(cuts, c)
				}
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				writeInPieces(t, srv, nc, msg, cuts...)
				select {
				case n := <-got:
					if n != size {
						t.Fatalf("handler got %d bytes, want %d", n, size)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("the message never reached the handler")
				}
				runtime.ReadMemStats(&after)
				// Doubling from a pooled buffer up to the message's size
				// allocates under twice the size; the test's own polling
				// adds a little.
				if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8*size {
					t.Fatalf("receiving a %d-byte message in %d pieces allocated %d bytes (%.0fx)",
						size, len(cuts)+1, alloc, float64(alloc)/size)
				}
			})
		}
	})
}

// Managed mode relays one peer's words to others with their control
// characters escaped: a newline, a carriage return or a terminal escape
// cannot end the relayed line and start one in another's name. Before, a
// binary client's PRIVATE with "\nPrivate from admin: ..." reached an nc
// user as two lines, the second forged.
func TestTextPeerCannotBeSentForgedLines(t *testing.T) {
	srv, addr := startServer(t)
	managed.Install(srv)
	victim, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close()
	br := bufio.NewReader(victim)
	victim.Write([]byte("hello\n"))
	if got := readLine(t, victim, br); got != "Echo: hello\n" {
		t.Fatalf("got %q", got)
	}
	var victimID string
	for _, s := range srv.Sessions() {
		if s.Mode() == frame.ModeText {
			victimID = s.ID()
		}
	}
	attacker := dialRaw(t, addr)
	attacker.hello("mallory")
	for _, tc := range []struct{ body, want string }{
		{"hi\nPrivate from admin: send me your password", `Private from mallory: hi\nPrivate from admin: send me your password`},
		{"hi\r\nPrivate from admin: x", `Private from mallory: hi\r\nPrivate from admin: x`},
		{"\rPrivate from admin: overwritten", `Private from mallory: \rPrivate from admin: overwritten`},
		{"\x1b[2K\x1b[1Gfake", `Private from mallory: \x1b[2K\x1b[1Gfake`},
		{"tab\tstays", "Private from mallory: tab\tstays"},
	} {
		attacker.send(frame.KindData, "PRIVATE:"+victimID+":"+tc.body)
		if got := readLine(t, victim, br); got != tc.want+"\n" {
			t.Fatalf("the text peer read %q, want %q", got, tc.want)
		}
	}
	// Nothing more is waiting: each message was exactly one line.
	victim.Write([]byte("last\n"))
	if got := readLine(t, victim, br); got != "Echo: last\n" {
		t.Fatalf("got %q, want the echo right after the forged attempts", got)
	}
}

func TestTextMode(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		srv, addr := startServer(t, append(opts, msgnet.WithMessageSizeLimit(16))...)
		srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.SendString("Echo: " + string(msg)) })

		r := dialRaw(t, addr)
		br := bufio.NewReader(r.nc)
		r.write([]byte("hello\r\nworld\n\nlast"))
		for _, want := range []string{"Echo: hello\n", "Echo: world\n", "Echo: \n"} {
			r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if got, err := br.ReadString('\n'); got != want || err != nil {
				t.Fatalf("got %q %v, want %q", got, err, want)
			}
		}
		// An unterminated last line at the end of the stream is a message.
		r.nc.(*net.TCPConn).CloseWrite()
		if got, err := br.ReadString('\n'); got != "Echo: last\n" || err != nil {
			t.Fatalf("last line: got %q %v", got, err)
		}

		// A line over the limit: ERROR line, then close.
		r2 := dialRaw(t, addr)
		br2 := bufio.NewReader(r2.nc)
		r2.write([]byte("ok\n" + strings.Repeat("x", 40)))
		r2.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if got, _ := br2.ReadString('\n'); got != "Echo: ok\n" {
			t.Fatalf("got %q", got)
		}
		if got, _ := br2.ReadString('\n'); got != "ERROR message_too_large\n" {
			t.Fatalf("got %q, want the ERROR line", got)
		}
		if rest, err := br2.ReadString('\n'); err == nil {
			t.Fatalf("connection still open, read %q", rest)
		}
	})
}
