//go:build linux

package main

import (
	"bytes"
	"strconv"
)

// fanout is the NATS text protocol as far as `msgnet bench fanout --proto
// nats` uses it. Every SUB joins the one list of subscribers whatever its
// subject; every PUB goes to all of them.
type fanout struct {
	subs []*conn
}

// natsSub is a subscriber's state: its sid, as MSG repeats it.
type natsSub struct{ sid []byte }

// natsMaxPayload is the largest PUB taken, as INFO says; a larger one ends
// the connection rather than being waited for.
const natsMaxPayload = 1 << 20

var natsInfo = []byte(`INFO {"server_id":"floor","version":"0","max_payload":` + strconv.Itoa(natsMaxPayload) + `}` + "\r\n")

func (f *fanout) open(c *conn) { c.out = append(c.out, natsInfo...) }

func (f *fanout) input(c *conn, b []byte) bool {
	c.in = append(c.in, b...)
	for {
		nl := bytes.IndexByte(c.in, '\n')
		if nl < 0 {
			return len(c.in) > 64<<10
		}
		fields := bytes.Fields(c.in[:nl])
		if len(fields) == 0 {
			c.in = c.in[nl+1:]
			continue
		}
		switch string(fields[0]) {
		case "PING":
			c.out = append(c.out, "PONG\r\n"...)
		case "SUB":
			if len(fields) < 3 {
				return true
			}
			if c.state == nil {
				f.subs = append(f.subs, c)
			}
			c.state = &natsSub{sid: bytes.Clone(fields[len(fields)-1])}
		case "PUB":
			size, err := strconv.Atoi(string(fields[len(fields)-1]))
			if err != nil || size < 0 || size > natsMaxPayload || len(fields) < 3 {
				return true
			}
			end := nl + 1 + size + 2
			if len(c.in) < end {
				return false // the payload has not all come yet
			}
			f.publish(fields[1], c.in[nl+1:nl+1+size])
			c.in = c.in[end:]
			continue
		}
		c.in = c.in[nl+1:]
	}
}

// publish appends one MSG to each live subscriber's output.
func (f *fanout) publish(subject, payload []byte) {
	live := f.subs[:0]
	for _, s := range f.subs {
		if s.closed {
			continue
		}
		live = append(live, s)
		s.out = append(s.out, "MSG "...)
		s.out = append(s.out, subject...)
		s.out = append(s.out, ' ')
		s.out = append(s.out, s.state.(*natsSub).sid...)
		s.out = append(s.out, ' ')
		s.out = strconv.AppendInt(s.out, int64(len(payload)), 10)
		s.out = append(s.out, "\r\n"...)
		s.out = append(s.out, payload...)
		s.out = append(s.out, "\r\n"...)
	}
	clear(f.subs[len(live):])
	f.subs = live
}
