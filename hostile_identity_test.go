package msgnet_test

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

// Hostile clients that play with client ids (docs/PROTOCOL.md, section 3).

// Client-id churn: connections that each say hello with a fresh random
// client id and leave at once (with DISCONNECT, a FIN or a reset) leave
// nothing behind: no session, no registry entry, no memory beyond a
// constant; every end is counted by its reason; the honest client stays
// within its bound meanwhile.
func TestHostileClientIDChurn(t *testing.T) {
	forServeTargets(t, func(t *testing.T, tg target) {
		srv, addr := tg.start(t)
		h := newHonest(t, tg, addr)
		const workers, each = 4, 60
		ids := make([][]string, workers)
		before := heapInuse()
		a := newAttack(t)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			a.goDo(func(stop <-chan struct{}) {
				defer wg.Done()
				for i := 0; i < each && !stopped(stop); i++ {
					var b [8]byte
					rand.Read(b[:])
					id := hex.EncodeToString(b[:])
					ids[w] = append(ids[w], id)
					nc, err := net.Dial("tcp", addr)
					if err != nil {
						t.Errorf("churn: %v", err)
						return
					}
					if _, err := handshake(nc, id, ""); err != nil {
						t.Errorf("churn %s: %v", id, err)
						nc.Close()
						return
					}
					switch i % 3 {
					case 0:
						nc.Write(frame.Append(nil, frame.KindDisconnect, 0, []byte("bye")))
						nc.Close()
					case 1:
						nc.Close()
					case 2:
						rst(nc)
					}
				}
			})
		}
		churning := make(chan struct{})
		go func() { wg.Wait(); close(churning) }()
		h.during(30, 30*time.Second, func() bool { return stopped(churning) })
		waitFor(t, "only the honest session left", func() bool { return srv.ConnectionCount() == 1 })
		for _, list := range ids {
			for _, id := range list {
				if _, ok := srv.SessionByClientID(id); ok {
					t.Errorf("client id %s still names a session", id)
				}
			}
		}
		held := heldSince(before)
		t.Logf("%d connections came and went; the process holds %+d KiB", workers*each, held>>10)
		if held > 1<<20 {
			t.Errorf("the process holds %d KiB more after %d connections came and went", held>>10, workers*each)
		}
		st := srv.Stats()
		if d := st.Disconnects; d["peer_disconnect"] != workers*each/3 || d["peer_closed"] != workers*each*2/3 {
			t.Errorf("ends counted %v; want %d peer_disconnect and %d peer_closed", d, workers*each/3, workers*each*2/3)
		}
	})
}

// claim is one connection that claimed a client id.
type claim struct {
	nc      net.Conn
	rd      *frame.Reader
	session string // from its welcome; "" if replaced before it
}

// dialClaim connects and says hello with client id id.
func dialClaim(addr, id string) (*claim, error) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	nc.Write(helloFrame(id, ""))
	return &claim{nc: nc, rd: frame.NewReader(nc, 1<<20)}, nil
}

// welcome reads the welcome (or what came instead).
func (c *claim) welcome() error {
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := c.rd.ReadFrame()
	if err != nil {
		return err
	}
	if op, _ := frame.ControlOp(f.Payload); f.Kind != frame.KindControl || op != "welcome" {
		return fmt.Errorf("got %v %q, want the welcome", f.Kind, f.Payload)
	}
	c.session = controlField(f.Payload, "session_id")
	return nil
}

// replaced checks that the server ends c with DISCONNECT "replaced" and
// nothing after it.
func (c *claim) replaced() error {
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := c.rd.ReadFrame()
	if err != nil || f.Kind != frame.KindDisconnect || string(f.Payload) != msgnet.ErrReplaced.Error() {
		return fmt.Errorf("got %v %q (%v), want DISCONNECT %q", f.Kind, f.Payload, err, msgnet.ErrReplaced)
	}
	return c.closed()
}

// closed checks that the server closes c without another word.
func (c *claim) closed() error {
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if f, err := c.rd.ReadFrame(); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		return fmt.Errorf("got %v %q (%v), want the close", f.Kind, f.Payload, err)
	}
	return nil
}

func controlField(p []byte, key string) string {
	var m map[string]any
	json.Unmarshal(p, &m)
	s, _ := m[key].(string)
	return s
}

// Takeover storms: one client id claimed again and again. In turn, each
// newer connection takes the id over and the older one gets DISCONNECT
// "replaced" and is closed; at once, from many connections, exactly one
// survives, the one the registry names, and every other gets
// DISCONNECT "replaced" (after its welcome, or instead of it) and nothing
// after. The honest client stays within its bound throughout.
func TestHostileTakeoverStorm(t *testing.T) {
	forServeTargets(t, func(t *testing.T, tg target) {
		srv, addr := tg.start(t)
		h := newHonest(t, tg, addr)
		// Connections are closed when the test ends: the survivors must
		// stay open until they are counted.
		var mu sync.Mutex
		var open []net.Conn
		t.Cleanup(func() {
			for _, nc := range open {
				nc.Close()
			}
		})
		keep := func(nc net.Conn) {
			mu.Lock()
			open = append(open, nc)
			mu.Unlock()
		}
		a := newAttack(t)
		storming := make(chan struct{})
		a.goDo(func(stop <-chan struct{}) {
			defer close(storming)
			// In turn.
			var prev *claim
			for i := 0; i < 20 && !stopped(stop); i++ {
				c, err := dialClaim(addr, "contested")
				if err != nil {
					t.Error(err)
					return
				}
				keep(c.nc)
				if err := c.welcome(); err != nil {
					t.Errorf("claim %d: %v", i, err)
					return
				}
				if s, ok := srv.SessionByClientID("contested"); !ok || s.ID() != c.session {
					t.Errorf("claim %d: the registry does not name the newest session %s", i, c.session)
				}
				if prev != nil {
					if err := prev.replaced(); err != nil {
						t.Errorf("claim %d: the older connection: %v", i, err)
					}
					prev.nc.Close() // or the server lingers over its close for a second
				}
				prev = c
			}
			// At once.
			const claimers, each = 10, 4
			var all []*claim
			var wg sync.WaitGroup
			for range claimers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range each {
						c, err := dialClaim(addr, "storm")
						if err != nil {
							t.Error(err)
							return
						}
						keep(c.nc)
						mu.Lock()
						all = append(all, c)
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			// Each claim gets its welcome or, replaced before it, DISCONNECT;
			// once all have, every hello has been handled.
			first := make([]frame.Frame, len(all))
			for i, c := range all {
				c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
				f, err := c.rd.ReadFrame()
				if err != nil {
					t.Errorf("storm claim %d: %v", i, err)
					return
				}
				first[i] = frame.Frame{Kind: f.Kind, Payload: append([]byte(nil), f.Payload...)}
			}
			owner, ok := srv.SessionByClientID("storm")
			if !ok {
				t.Error("no session holds client id storm")
				return
			}
			survivors := 0
			for i, c := range all {
				f := first[i]
				switch op, _ := frame.ControlOp(f.Payload); {
				case f.Kind == frame.KindControl && op == "welcome":
					if controlField(f.Payload, "session_id") == owner.ID() {
						survivors++
						continue
					}
					if err := c.replaced(); err != nil {
						t.Errorf("storm claim %d: %v", i, err)
					}
				case f.Kind == frame.KindDisconnect && string(f.Payload) == msgnet.ErrReplaced.Error():
					// DISCONNECT is the last word: nothing may follow it,
					// not even the welcome it came instead of.
					if err := c.closed(); err != nil {
						t.Errorf("storm claim %d: a frame after DISCONNECT replaced: %v", i, err)
					}
				default:
					t.Errorf("storm claim %d: got %v %q, want its welcome or DISCONNECT replaced", i, f.Kind, f.Payload)
				}
				c.nc.Close()
			}
			if survivors != 1 {
				t.Errorf("%d connections still hold client id storm, want exactly 1", survivors)
			}
		})
		h.during(30, 30*time.Second, func() bool { return stopped(storming) })
		a.end()
		if t.Failed() {
			return
		}
		for deadline := time.Now().Add(5 * time.Second); srv.ConnectionCount() != 3; time.Sleep(2 * time.Millisecond) {
			if time.Now().After(deadline) {
				for _, s := range srv.Sessions() {
					t.Logf("left: %+v connected %v", s.Info(), s.IsConnected())
				}
				t.Fatalf("%d sessions left, want the honest one and one of each client id", srv.ConnectionCount())
			}
		}
		// The survivor is served.
		owner, _ := srv.SessionByClientID("storm")
		if err := owner.SendString("still yours"); err != nil {
			t.Errorf("the surviving session: %v", err)
		}
		// A takeover is an end the protocol defines (ErrReplaced), like an
		// idle timeout: it must not be counted as an unexpected error, or a
		// takeover storm reads as failures on the dashboard.
		if d := srv.Stats().Disconnects; d["error"] != 0 {
			t.Errorf("sessions ended by takeover are counted as unexpected errors: Disconnects %v", d)
		}
	})
}

// Bad client ids are refused with ERROR bad_client_id, DISCONNECT and the
// close: control, format and white-space characters, and ids over the
// limit up to nearly the largest hello. An id of the wrong JSON type is a
// hello that is not one (bad_control; the session goes on, with the
// session id as its client id), and an empty or null one is no client id.
func TestHostileBadClientIDs(t *testing.T) {
	refused := map[string]string{
		"NUL":                 `"a\u0000b"`,
		"tab":                 `"tab\tx"`,
		"newline":             `"nl\nx"`,
		"carriage return":     `"cr\rx"`,
		"escape sequence":     `"\u001b[2Jadmin"`,
		"space":               `"sp x"`,
		"bidi override":       `"\u202eevil"`,
		"zero-width space":    `"zw\u200bsp"`,
		"DEL":                 `"del\u007f"`,
		"line separator":      `"ls\u2028x"`,
		"no-break space":      `"nb\u00a0sp"`,
		"one over the limit":  `"` + strings.Repeat("x", msgnet.DefaultMaxClientIDLength+1) + `"`,
		"64 KiB":              `"` + strings.Repeat("x", 64<<10) + `"`,
		"nearly a whole MiB":  `"` + strings.Repeat("y", 1<<20-64) + `"`,
		"long in multi-bytes": `"` + strings.Repeat("é", msgnet.DefaultMaxClientIDLength/2+1) + `"`,
	}
	forEngines(t, func(t *testing.T, tg target) {
		srv, addr := tg.start(t)
		h := newHonest(t, tg, addr)
		for name, id := range refused {
			r := dialRaw(t, addr)
			r.write(frame.Append(nil, frame.KindControl, 0, []byte(`{"op":"hello","client_id":`+id+`}`)))
			b, _, err := readUntilClosed(r.nc, 5*time.Second)
			fs, ferr := frames(b)
			if err != nil || ferr != nil || len(fs) != 2 || fs[0].Kind != frame.KindError ||
				frame.ParseError(fs[0].Payload).Code != msgnet.CodeBadClientID || fs[1].Kind != frame.KindDisconnect {
				t.Errorf("%s: got %.300q (%v), want ERROR %s, DISCONNECT and the close", name, b, err, msgnet.CodeBadClientID)
			}
			r.nc.Close()
		}
		// Accepted: the limit itself, nothing at all, and invalid UTF-8,
		// which JSON decoding turns into U+FFFD.
		for name, id := range map[string]string{
			"at the limit":  `"` + strings.Repeat("x", msgnet.DefaultMaxClientIDLength) + `"`,
			"empty":         `""`,
			"null":          `null`,
			"invalid UTF-8": "\"a\xff\xfeb\"",
		} {
			r := dialRaw(t, addr)
			r.write(frame.Append(nil, frame.KindControl, 0, []byte(`{"op":"hello","client_id":`+id+`}`)))
			w := r.expect(frame.KindControl)
			sid := controlField(w, "session_id")
			s, ok := srv.Session(sid)
			if !ok {
				t.Fatalf("%s: no session %s", name, sid)
			}
			if cid := s.ClientID(); !utf8.ValidString(cid) || (id == `""` || id == "null") && cid != sid {
				t.Errorf("%s: client id %q", name, cid)
			}
			r.nc.Close()
		}
		// A client id that is no string: the hello is no hello.
		for _, id := range []string{`123`, `{"x":1}`, `["a"]`, `true`} {
			r := dialRaw(t, addr)
			r.write(frame.Append(nil, frame.KindControl, 0, []byte(`{"op":"hello","client_id":`+id+`}`)))
			r.expectError(frame.CodeBadControl)
			r.send(frame.KindData, "still here")
			if got := r.expect(frame.KindData); string(got) != tg.reply("still here") {
				t.Errorf("client id %s: got %q", id, got)
			}
			r.nc.Close()
		}
		if n := srv.Stats().ErrorsSent[msgnet.CodeBadClientID]; n != uint64(len(refused)) {
			t.Errorf("%d bad_client_id errors counted for %d bad ids", n, len(refused))
		}
		h.trip(20)
	})
}
