package loadgen

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgnet/msgnet/frame"
)

// testServer is a small msgnet-speaking server for the tests: a goroutine
// per connection that answers hello with welcome, echoes DATA, answers PING
// with PONG, and handles "JOIN:<group>" and "GROUP:<group>:<text>" like a
// managed-mode server (delivering "[<group>] c<id>: <text>" to members).
type testServer struct {
	t    *testing.T
	ln   net.Listener
	opts serverOpts
	wg   sync.WaitGroup

	mu     sync.Mutex
	conns  map[*srvConn]struct{}
	groups map[string]map[*srvConn]struct{}
	closed bool

	accepted   atomic.Int64
	echoed     atomic.Int64
	heartbeats atomic.Int64
	hellos     atomic.Int64
	welcomed   atomic.Int64 // welcomes written
	dataFrames atomic.Int64
	groupMsgs  atomic.Int64
	stalled    atomic.Bool
}

type serverOpts struct {
	tls        *tls.Config
	noWelcome  bool  // ignore hello
	stallAt    int64 // sleep stallFor when the stallAt-th DATA frame arrives
	stallFor   time.Duration
	joinNotice bool // answer JOIN with a DATA notice, like a chatty server
	// GROUP is accepted only from a member and reaches the other members,
	// as in msgnet's managed mode; with groupToAll it reaches the sender too.
	groupToAll bool
	noGroups   bool // ignore JOIN, so GROUP is always refused
	// groupDrop, when > 0, leaves one member out of every groupDrop-th
	// GROUP message, as a server that drops for a full queue would.
	groupDrop int64
}

type srvConn struct {
	id int64
	nc net.Conn
	mu sync.Mutex
	w  *bufio.Writer
}

// send writes b, flushing at once when flush is set.
func (c *srvConn) send(b []byte, flush bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.w.Write(b)
	if flush {
		c.w.Flush()
	}
}

func (c *srvConn) flush() {
	c.mu.Lock()
	c.w.Flush()
	c.mu.Unlock()
}

func startServer(t *testing.T, opts serverOpts) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if opts.tls != nil {
		ln = tls.NewListener(ln, opts.tls)
	}
	s := &testServer{t: t, ln: ln, opts: opts, conns: map[*srvConn]struct{}{}, groups: map[string]map[*srvConn]struct{}{}}
	s.wg.Go(s.acceptLoop)
	t.Cleanup(s.close)
	return s
}

func (s *testServer) addr() string { return s.ln.Addr().String() }

// dropAll closes every connection the server has.
func (s *testServer) dropAll() {
	s.mu.Lock()
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
}

func (s *testServer) close() {
	s.ln.Close()
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *testServer) acceptLoop() {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		c := &srvConn{id: s.accepted.Add(1), nc: nc, w: bufio.NewWriterSize(nc, 16<<10)}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Go(func() { s.serve(c) })
	}
}

func (s *testServer) serve(c *srvConn) {
	defer func() {
		c.nc.Close()
		s.mu.Lock()
		delete(s.conns, c)
		for _, g := range s.groups {
			delete(g, c)
		}
		s.mu.Unlock()
	}()
	rd := frame.NewReader(c.nc, frame.DefaultMaxPayload)
	var out []byte
	for {
		f, err := rd.ReadFrame()
		if err != nil {
			return
		}
		out = out[:0]
		switch f.Kind {
		case frame.KindControl:
			op, _ := frame.ControlOp(f.Payload)
			if op == "hello" && !s.opts.noWelcome {
				s.hellos.Add(1)
				w, _ := json.Marshal(map[string]any{"op": "welcome", "session_id": fmt.Sprintf("s%d", c.id),
					"server_id": "test", "max_message_size": frame.DefaultMaxPayload, "idle_timeout_ms": 30000})
				out = frame.Append(out, frame.KindControl, 0, w)
			}
		case frame.KindPing:
			out = frame.Append(out, frame.KindPong, 0, f.Payload)
		case frame.KindHeartbeat:
			s.heartbeats.Add(1)
		case frame.KindData:
			if n := s.dataFrames.Add(1); s.opts.stallAt > 0 && n >= s.opts.stallAt && s.stalled.CompareAndSwap(false, true) {
				c.flush()
				time.Sleep(s.opts.stallFor)
			}
			switch {
			case bytes.HasPrefix(f.Payload, []byte("JOIN:")) && !s.opts.noGroups:
				g := string(f.Payload[5:])
				s.mu.Lock()
				if s.groups[g] == nil {
					s.groups[g] = map[*srvConn]struct{}{}
				}
				s.groups[g][c] = struct{}{}
				s.mu.Unlock()
				if s.opts.joinNotice {
					out = frame.Append(out, frame.KindData, 0, []byte("joined "+g))
				}
			case bytes.HasPrefix(f.Payload, []byte("GROUP:")):
				rest := f.Payload[6:]
				i := bytes.IndexByte(rest, ':')
				if i < 0 {
					break
				}
				g, text := string(rest[:i]), rest[i+1:]
				msg := frame.Append(nil, frame.KindData, 0, fmt.Appendf(nil, "[%s] c%d: %s", g, c.id, text))
				s.mu.Lock()
				_, member := s.groups[g][c]
				members := make([]*srvConn, 0, len(s.groups[g]))
				for m := range s.groups[g] {
					if m != c || s.opts.groupToAll {
						members = append(members, m)
					}
				}
				s.mu.Unlock()
				if !member {
					out = frame.Append(out, frame.KindData, 0, []byte("ERROR: not a member of "+g))
					break
				}
				if n := s.groupMsgs.Add(1); s.opts.groupDrop > 0 && n%s.opts.groupDrop == 0 && len(members) > 0 {
					members = members[1:]
				}
				for _, m := range members {
					m.send(msg, true)
				}
			default:
				s.echoed.Add(1)
				out = frame.Append(out, frame.KindData, f.Flags, f.Payload)
			}
		}
		// Flush when no complete frame is waiting: batched replies.
		c.send(out, !frameBuffered(rd, frame.DefaultMaxPayload))
		if f.Kind == frame.KindControl && len(out) > 0 {
			s.welcomed.Add(1)
		}
	}
}

// selfSignedTLS makes a server certificate for 127.0.0.1 and returns the
// server config and the certificate in PEM.
func selfSignedTLS(t *testing.T) (*tls.Config, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "loadgen test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"msgnet.test"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return &tls.Config{Certificates: []tls.Certificate{cert}}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
