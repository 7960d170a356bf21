package loadgen

import (
	"bytes"
	"context"
	"fmt"

	"github.com/msgnet/msgnet/frame"
)

// What fanout does differently for each wire protocol (Config.Proto); the
// schedule, the timestamps, the window and the histogram are the same.

// fanoutJoin puts the receivers in the group. msgnet: each receiver, and
// the sender (a managed-mode server takes GROUP only from a member; what
// the sender gets back is not counted), sends DATA "JOIN:<group>"; the
// JoinWait that follows gives the server time to process them. NATS: each
// receiver sends SUB and a PING, and the PONGs are awaited, so the server
// has every subscription before the JoinWait starts.
func (r *runner) fanoutJoin(ctx context.Context, cs []*client, sender *client) {
	if r.cfg.Proto == ProtoNATS {
		r.natsSubscribe(ctx, cs, r.cfg.Group)
		return
	}
	join := frame.Append(nil, frame.KindData, 0, []byte("JOIN:"+r.cfg.Group))
	for _, c := range append(cs, sender) {
		if _, err := c.nc.Write(join); err != nil {
			r.errs.add(fmt.Errorf("send JOIN: %w", err))
		}
	}
}

// nextDelivery returns the payload of the next message the server
// delivered to c: a DATA frame, or a NATS MSG. An ERROR or DISCONNECT
// frame, or a NATS -ERR, ends the connection's run with an error.
func (c *client) nextDelivery() ([]byte, error) {
	if c.nats != nil {
		return c.natsNextMsg()
	}
	for {
		f, err := c.r.ReadFrame()
		if err != nil {
			return nil, err
		}
		switch f.Kind {
		case frame.KindData:
			return f.Payload, nil
		case frame.KindError, frame.KindDisconnect:
			return nil, frameError(f)
		}
	}
}

// drainSender reads the sender's connection until it ends, reporting what
// the server refused.
func (r *runner) drainSender(cw *connWorker) {
	c := cw.c
	if c.nats != nil {
		for {
			op, arg, err := c.nats.rd.next()
			if err != nil {
				cw.fail(err)
				return
			}
			switch op {
			case natsERR:
				r.errs.add(fmt.Errorf("server to the sender: -ERR %.120s", arg))
			case natsPING:
				if err := c.natsWrite([]byte("PONG\r\n")); err != nil {
					cw.fail(err)
					return
				}
			}
		}
	}
	for {
		f, err := c.r.ReadFrame()
		if err != nil {
			cw.fail(err)
			return
		}
		switch {
		case f.Kind == frame.KindError || f.Kind == frame.KindDisconnect:
			cw.fail(frameError(f))
			return
		case f.Kind == frame.KindData && bytes.HasPrefix(f.Payload, []byte("ERROR")):
			r.errs.add(fmt.Errorf("server to the sender: %.120s", f.Payload))
		}
	}
}
