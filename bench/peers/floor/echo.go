//go:build linux

package main

import (
	"github.com/msgnet/msgnet/bench/internal/echoproto"
	"github.com/msgnet/msgnet/frame"
)

// echo answers the hello with a welcome (echoproto, as every echo peer),
// then writes back every complete frame it has read, as it came, without
// looking past each header's length: the load's throughput and latency
// tests send only DATA, which an echo server returns unchanged. A frame
// cut by a read waits for its rest, as in every peer, so that replies
// leave in as few writes as theirs.
type echo struct{}

func (echo) open(c *conn) { c.state = echoproto.NewSession("floor-peer") }

func (echo) input(c *conn, b []byte) bool {
	if len(c.in) == 0 && c.state == nil {
		// The usual case: b holds whole frames, perhaps a cut one last.
		n, err := whole(b)
		c.out = append(c.out, b[:n]...)
		c.in = append(c.in, b[n:]...)
		return err != nil
	}
	c.in = append(c.in, b...)
	if sess, _ := c.state.(*echoproto.Session); sess != nil { // the hello
		if len(c.in) < frame.HeaderLen {
			return false
		}
		h, err := frame.ParseHeader(c.in, echoproto.MaxPayload)
		if err != nil {
			c.out = echoproto.AppendFatal(c.out, err)
			return true
		}
		if len(c.in) < int(h.Length) {
			return false
		}
		var closeAfter bool
		c.out, closeAfter = sess.Handle(c.out, c.in[:h.Length])
		c.in, c.state = c.in[h.Length:], nil
		if closeAfter {
			return true
		}
	}
	n, err := whole(c.in)
	c.out = append(c.out, c.in[:n]...)
	c.in = c.in[:copy(c.in, c.in[n:])]
	return err != nil
}

// whole returns the length of the complete frames at the start of b.
func whole(b []byte) (int, error) {
	n := 0
	for len(b)-n >= frame.HeaderLen {
		h, err := frame.ParseHeader(b[n:], echoproto.MaxPayload)
		if err != nil {
			return n, err
		}
		if len(b)-n < int(h.Length) {
			break
		}
		n += int(h.Length)
	}
	return n, nil
}
