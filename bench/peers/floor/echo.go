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
// leave in as few writes as theirs. A bad header gets ERROR and DISCONNECT
// (echoproto.AppendFatal) and ends the connection.
type echo struct{}

func (echo) open(c *conn) { c.state = echoproto.NewSession("floor-peer") }

func (echo) input(c *conn, b []byte) bool {
	if len(c.in) == 0 && c.state == nil {
		// The usual case: b holds whole frames, perhaps a cut one last.
		n, err := whole(b)
		c.out = append(c.out, b[:n]...)
		c.in = append(c.in, b[n:]...)
		return fatal(c, err)
	}
	c.in = append(c.in, b...)
	if sess, _ := c.state.(*echoproto.Session); sess != nil { // the hello
		total, err := frame.Split(c.in, echoproto.MaxPayload)
		if err != nil || total == 0 || total > len(c.in) {
			return fatal(c, err)
		}
		var closeAfter bool
		c.out, closeAfter = sess.Handle(c.out, c.in[:total])
		c.in, c.state = c.in[total:], nil
		if closeAfter {
			return true
		}
	}
	n, err := whole(c.in)
	c.out = append(c.out, c.in[:n]...)
	c.in = c.in[:copy(c.in, c.in[n:])]
	return fatal(c, err)
}

// whole returns the length of the complete frames at the start of b, and
// the error of the header after them, if it is bad.
func whole(b []byte) (int, error) {
	n := 0
	for {
		total, err := frame.Split(b[n:], echoproto.MaxPayload)
		if err != nil || total == 0 || total > len(b)-n {
			return n, err
		}
		n += total
	}
}

// fatal appends the answer to a bad header, if err is one, and says
// whether the connection ends.
func fatal(c *conn, err error) bool {
	if err != nil {
		c.out = echoproto.AppendFatal(c.out, err)
	}
	return err != nil
}
