package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// The client side of the NATS text protocol, as much as fanout needs to
// measure a NATS server (bench/peers/nats) the way it measures msgnet: the
// handshake (INFO, then CONNECT and a PING whose PONG says the server took
// it), SUB for the receivers, PUB for the sender, MSG in, and PONG for the
// server's PING. Written here rather than taken from nats.go so that the
// load tool stays small; no TLS, no authentication, no headers.
//
// Wire format (https://docs.nats.io/reference/reference-protocols/nats-protocol):
// every operation is a line ending in CRLF; MSG is followed by its payload
// and another CRLF:
//
//	INFO {...}                       server, first thing on a connection
//	CONNECT {...}                    client, after INFO
//	SUB <subject> <sid>              client
//	PUB <subject> <#bytes>\r\n<payload>
//	MSG <subject> <sid> [reply-to] <#bytes>\r\n<payload>
//	PING / PONG / +OK / -ERR '<message>'

// Wire protocols of fanout (Config.Proto).
const (
	ProtoMsgnet = "msgnet" // msgnet frames: JOIN / GROUP to a managed-mode server
	ProtoNATS   = "nats"   // the NATS text protocol: SUB / PUB on subject Group
)

// validateProto checks Config.Proto against the rest of the configuration.
func (c Config) validateProto() error {
	switch c.Proto {
	case "", ProtoMsgnet:
		return nil
	case ProtoNATS:
	default:
		return fmt.Errorf("loadgen: unknown protocol %q (msgnet or nats)", c.Proto)
	}
	switch {
	case c.Mode != ModeFanout:
		return fmt.Errorf("loadgen: protocol nats is for fanout only, not %s", c.Mode)
	case c.TLS != nil:
		return errors.New("loadgen: protocol nats has no TLS here")
	case !validSubject(c.Group):
		return fmt.Errorf("loadgen: group %q is not a NATS subject without wildcards", c.Group)
	}
	return nil
}

// validSubject reports whether s is a NATS subject fit to publish to: dot
// separated non-empty tokens, no white space or wildcards.
func validSubject(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || bytes.Contains([]byte(s), []byte("..")) {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ' ', '\t', '\r', '\n', '*', '>':
			return false
		}
	}
	return true
}

// natsOp is a protocol operation the server sends.
type natsOp uint8

const (
	natsMSG natsOp = iota + 1
	natsPING
	natsPONG
	natsOK
	natsERR
	natsINFO
)

// natsMaxLine bounds a control line (INFO can be long in a cluster).
const natsMaxLine = 64 << 10

// natsConn is the NATS side of a client: its reader, and the lock that
// orders writes once two goroutines may write (the sender's PUBs and the
// PONG its reader answers with).
type natsConn struct {
	rd  natsReader
	wmu sync.Mutex
}

// natsReader splits what a NATS server sends into operations, with one
// buffer that grows only for a MSG larger than it (up to max). In steady
// state it allocates nothing: a payload aliases the buffer until the next
// call, like frame.Reader's.
type natsReader struct {
	r          io.Reader
	buf        []byte
	start, end int
	max        int
}

func newNATSReader(r io.Reader, maxPayload int) natsReader {
	return natsReader{r: r, buf: make([]byte, minNATSBuf), max: maxPayload}
}

// minNATSBuf is the reader's initial buffer, the size of frame.Reader's, so
// that both protocols read the same bytes per system call.
const minNATSBuf = 16 << 10

// errNATSProto is a server's bytes that are not the NATS protocol.
var errNATSProto = errors.New("loadgen: not the NATS protocol")

// next returns the next operation. For MSG, arg is the payload; for INFO
// and -ERR, the rest of the line. arg is valid until the next call.
func (r *natsReader) next() (natsOp, []byte, error) {
	for {
		op, arg, n, need, err := natsSplit(r.buf[r.start:r.end], r.max)
		if err != nil {
			return 0, nil, err
		}
		if n > 0 {
			r.start += n
			return op, arg, nil
		}
		if err := r.fill(need); err != nil {
			if op == natsMSG && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, nil, err
		}
	}
}

// natsSplit looks at the start of avail for one operation. When it is
// complete it returns it with n, the bytes it takes; for MSG, arg is the
// payload, for INFO and -ERR the rest of the line, aliasing avail. When it
// is not complete yet n is 0 and need says how many bytes from the start
// to wait for (at least), with op natsMSG once the MSG line is whole.
func natsSplit(avail []byte, maxPayload int) (op natsOp, arg []byte, n, need int, err error) {
	nl := bytes.IndexByte(avail, '\n')
	if nl < 0 {
		if len(avail) >= natsMaxLine {
			return 0, nil, 0, 0, fmt.Errorf("%w: a line longer than %d bytes", errNATSProto, natsMaxLine)
		}
		return 0, nil, 0, len(avail) + 1, nil
	}
	line := avail[:nl]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	name, rest, _ := bytes.Cut(line, []byte{' '})
	switch string(name) {
	case "MSG", "msg":
		size, ok := lastNumber(rest)
		if !ok {
			return 0, nil, 0, 0, fmt.Errorf("%w: %.80q", errNATSProto, line)
		}
		if size > maxPayload {
			return 0, nil, 0, 0, fmt.Errorf("loadgen: NATS message of %d bytes, above the limit %d", size, maxPayload)
		}
		need := nl + 1 + size + 2
		if len(avail) < need {
			return natsMSG, nil, 0, need, nil
		}
		if avail[need-2] != '\r' || avail[need-1] != '\n' {
			return 0, nil, 0, 0, fmt.Errorf("%w: MSG of %d bytes not followed by CRLF", errNATSProto, size)
		}
		return natsMSG, avail[nl+1 : nl+1+size], need, 0, nil
	case "PING", "ping":
		return natsPING, nil, nl + 1, 0, nil
	case "PONG", "pong":
		return natsPONG, nil, nl + 1, 0, nil
	case "+OK", "+ok":
		return natsOK, nil, nl + 1, 0, nil
	case "-ERR", "-err":
		return natsERR, bytes.TrimSpace(rest), nl + 1, 0, nil
	case "INFO", "info":
		return natsINFO, rest, nl + 1, 0, nil
	}
	return 0, nil, 0, 0, fmt.Errorf("%w: %.80q", errNATSProto, line)
}

// lastNumber parses the last space-separated field of b as a byte count.
func lastNumber(b []byte) (int, bool) {
	b = bytes.TrimRight(b, " \t")
	i := len(b)
	for i > 0 && b[i-1] >= '0' && b[i-1] <= '9' {
		i--
	}
	if i == len(b) || len(b)-i > 9 || (i > 0 && b[i-1] != ' ' && b[i-1] != '\t') {
		return 0, false
	}
	n := 0
	for _, c := range b[i:] {
		n = n*10 + int(c-'0')
	}
	return n, true
}

// fill reads until at least need bytes are buffered from start, moving
// them to the front or growing the buffer first when they would not fit.
func (r *natsReader) fill(need int) error {
	if r.start+need > len(r.buf) {
		n := copy(r.buf, r.buf[r.start:r.end])
		r.start, r.end = 0, n
		if need > len(r.buf) {
			nb := make([]byte, max(need, 2*len(r.buf)))
			copy(nb, r.buf[:n])
			r.buf = nb
		}
	}
	for r.end-r.start < need {
		n, err := r.r.Read(r.buf[r.end:])
		r.end += n
		if err != nil {
			if r.end-r.start >= need {
				return nil
			}
			return err
		}
	}
	return nil
}

// natsInfo is the part of the server's INFO that the load tool checks.
type natsInfo struct {
	ServerID     string `json:"server_id"`
	MaxPayload   int64  `json:"max_payload"`
	AuthRequired bool   `json:"auth_required"`
	TLSRequired  bool   `json:"tls_required"`
}

// ErrNotNATS is returned when the server does not open with INFO.
var ErrNotNATS = errors.New("loadgen: the server did not open with NATS INFO (is it a NATS server?)")

// dialNATS connects to a NATS server and makes the handshake: INFO read,
// CONNECT sent without verbose acknowledgements and without echo, and a
// PING whose PONG says the server accepted it; all within DialTimeout.
func (r *runner) dialNATS(ctx context.Context, id int) (*client, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", r.cfg.Addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	c := &client{nc: nc, nats: &natsConn{rd: newNATSReader(nc, r.cfg.MaxPayload)}}
	if err := c.natsHandshake(r.cfg.ClientID + "-" + strconv.Itoa(id)); err != nil {
		nc.Close()
		if ctx.Err() != nil || isTimeout(err) {
			return nil, fmt.Errorf("NATS handshake: no answer within the dial timeout: %w", err)
		}
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	return c, nil
}

func (c *client) natsHandshake(name string) error {
	op, arg, err := c.nats.rd.next()
	if err != nil && !errors.Is(err, errNATSProto) {
		return fmt.Errorf("wait for INFO: %w", err)
	}
	if op != natsINFO {
		return ErrNotNATS
	}
	var info natsInfo
	if err := json.Unmarshal(arg, &info); err != nil {
		return fmt.Errorf("%w: INFO: %v", ErrNotNATS, err)
	}
	switch {
	case info.TLSRequired:
		return errors.New("loadgen: the NATS server requires TLS, which the load tool does not speak")
	case info.AuthRequired:
		return errors.New("loadgen: the NATS server requires authentication, which the load tool does not do")
	}
	nameJSON, _ := json.Marshal(name)
	msg := `CONNECT {"verbose":false,"pedantic":false,"echo":false,"lang":"go","version":"msgnet-bench","name":` +
		string(nameJSON) + "}\r\nPING\r\n"
	if _, err := io.WriteString(c.nc, msg); err != nil {
		return fmt.Errorf("send CONNECT: %w", err)
	}
	return c.natsAwaitPONG()
}

// natsAwaitPONG reads until the PONG that answers the client's last PING,
// answering the server's PINGs meanwhile; a -ERR fails it. It is for the
// setup, before a reader goroutine owns the connection.
func (c *client) natsAwaitPONG() error {
	for {
		op, arg, err := c.nats.rd.next()
		if err != nil {
			return fmt.Errorf("wait for PONG: %w", err)
		}
		switch op {
		case natsPONG:
			return nil
		case natsERR:
			return fmt.Errorf("server sent -ERR %s", arg)
		case natsPING:
			if err := c.natsWrite([]byte("PONG\r\n")); err != nil {
				return err
			}
		}
	}
}

// natsWrite writes b under the connection's write lock.
func (c *client) natsWrite(b []byte) error {
	c.nats.wmu.Lock()
	defer c.nats.wmu.Unlock()
	_, err := c.nc.Write(b)
	return err
}

// natsSubscribe subscribes every receiver to subject and waits, within the
// dial timeout, for each one's PONG: once it has come the server has
// registered the SUB sent before the PING. A receiver that fails is counted
// as an error and closed, so that it shows as missing deliveries.
func (r *runner) natsSubscribe(ctx context.Context, cs []*client, subject string) {
	sub := []byte("SUB " + subject + " 1\r\nPING\r\n")
	ok := make([]bool, len(cs))
	for i, c := range cs {
		if err := c.natsWrite(sub); err != nil {
			r.errs.add(fmt.Errorf("send SUB: %w", err))
			c.nc.Close()
			continue
		}
		ok[i] = true
	}
	deadline := time.Now().Add(r.cfg.DialTimeout)
	for i, c := range cs {
		if !ok[i] || ctx.Err() != nil {
			continue
		}
		c.nc.SetReadDeadline(deadline)
		if err := c.natsAwaitPONG(); err != nil {
			r.errs.add(fmt.Errorf("SUB %s: %w", subject, err))
			c.nc.Close()
			continue
		}
		c.nc.SetReadDeadline(time.Time{})
	}
}

// natsNextMsg returns the next MSG's payload, answering PING with PONG on
// the way; -ERR ends it.
func (c *client) natsNextMsg() ([]byte, error) {
	for {
		op, arg, err := c.nats.rd.next()
		if err != nil {
			return nil, err
		}
		switch op {
		case natsMSG:
			return arg, nil
		case natsPING:
			if err := c.natsWrite([]byte("PONG\r\n")); err != nil {
				return nil, err
			}
		case natsERR:
			return nil, fmt.Errorf("server sent -ERR %s", arg)
		}
	}
}

// appendNATSPub appends a PUB of payload to subject.
func appendNATSPub(buf []byte, subject string, payload []byte) []byte {
	buf = append(buf, "PUB "...)
	buf = append(buf, subject...)
	buf = append(buf, ' ')
	buf = strconv.AppendInt(buf, int64(len(payload)), 10)
	buf = append(buf, "\r\n"...)
	buf = append(buf, payload...)
	return append(buf, "\r\n"...)
}
