//go:build linux

package main

import (
	"github.com/msgnet/msgnet/bench/internal/echoproto"
	"github.com/msgnet/msgnet/frame"
)

// echo answers the hello with a welcome (echoproto, as every echo peer),
// then writes back every byte it reads, unparsed: the load's DATA frames
// come back unchanged, which is all its throughput and latency tests send.
type echo struct{}

func (echo) open(c *conn) { c.state = echoproto.NewSession("floor-peer") }

func (echo) input(c *conn, b []byte) bool {
	sess, _ := c.state.(*echoproto.Session)
	if sess == nil { // past the hello
		c.out = append(c.out, b...)
		return false
	}
	c.in = append(c.in, b...)
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
	c.out = append(c.out, c.in[h.Length:]...)
	c.in, c.state = nil, nil
	return closeAfter
}
