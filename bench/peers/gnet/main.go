// Command gnet is the benchmark's event-loop peer: an echo server on
// github.com/panjf2000/gnet/v2 that speaks msgnet's framing. Each event-loop
// wake-up parses every complete frame in the connection's inbound buffer
// and answers them all with one Write (hello gets a welcome, DATA is echoed
// unchanged, PING gets PONG).
//
//	gnet --addr 127.0.0.1:9001
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/msgnet/msgnet/bench/internal/echoproto"
	"github.com/msgnet/msgnet/frame"
	"github.com/panjf2000/gnet/v2"
	"github.com/panjf2000/gnet/v2/pkg/logging"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9001", "address to listen on")
	multicore := flag.Bool("multicore", true, "one event loop per CPU the process may use")
	flag.Parse()

	srv := &echoServer{addr: "tcp://" + *addr}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		if eng := srv.eng.Load(); eng != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			eng.Stop(sctx)
		}
	}()
	if err := gnet.Run(srv, srv.addr, options(*multicore)...); err != nil {
		fmt.Fprintln(os.Stderr, "gnet peer:", err)
		os.Exit(1)
	}
}

// options are the engine's settings.
func options(multicore bool) []gnet.Option {
	return []gnet.Option{
		gnet.WithMulticore(multicore),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithReuseAddr(true),
		gnet.WithLogLevel(logging.WarnLevel),
	}
}

// echoServer is the gnet event handler.
type echoServer struct {
	gnet.BuiltinEventEngine
	addr string
	eng  atomic.Pointer[gnet.Engine]
}

// connState is a connection's protocol state and its reusable reply buffer.
type connState struct {
	sess *echoproto.Session
	out  []byte
}

// OnBoot keeps the engine so that a signal can stop it.
func (s *echoServer) OnBoot(eng gnet.Engine) gnet.Action {
	s.eng.Store(&eng)
	fmt.Fprintln(os.Stderr, "gnet peer listening on", s.addr)
	return gnet.None
}

// OnOpen gives the connection its state.
func (s *echoServer) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	c.SetContext(&connState{sess: echoproto.NewSession("gnet-peer")})
	return nil, gnet.None
}

// OnTraffic answers every complete frame buffered, with one Write.
func (s *echoServer) OnTraffic(c gnet.Conn) gnet.Action {
	st := c.Context().(*connState)
	out := st.out[:0]
	action := gnet.None
	for action == gnet.None {
		n := c.InboundBuffered()
		if n < frame.HeaderLen {
			break
		}
		hdr, err := c.Peek(frame.HeaderLen)
		if err != nil {
			break
		}
		h, err := frame.ParseHeader(hdr, echoproto.MaxPayload)
		if err != nil {
			out = echoproto.AppendFatal(out, err)
			action = gnet.Close
			break
		}
		total := int(h.Length)
		if n < total {
			break // the rest of the frame has not arrived yet
		}
		fr, err := c.Peek(total)
		if err != nil {
			break
		}
		var closeAfter bool
		out, closeAfter = st.sess.Handle(out, fr)
		c.Discard(total)
		if closeAfter {
			action = gnet.Close
		}
	}
	if len(out) > 0 {
		// gnet copies what the socket does not take at once.
		if _, err := c.Write(out); err != nil {
			action = gnet.Close
		}
	}
	if cap(out) <= 1<<20 {
		st.out = out
	}
	return action
}
