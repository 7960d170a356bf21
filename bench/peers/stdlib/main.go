// Command stdlib is the benchmark's standard-library peer: an echo server
// with a goroutine per connection that speaks msgnet's framing.
//
// By default it is tuned: a 64 KiB bufio.Reader and bufio.Writer per
// connection, replies collected in the writer and flushed only when no
// further complete frame is waiting in the reader (in particular when the
// reader's buffer is empty), so a burst of pipelined frames is answered
// with one write.
//
// With --naive it is the straightforward version: no buffering at all, two
// reads per frame (header, then payload) and one Write per reply.
//
//	stdlib --addr 127.0.0.1:9002 [--naive]
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/msgnet/msgnet/bench/internal/echoproto"
	"github.com/msgnet/msgnet/frame"
)

// bufSize is the tuned peer's reader and writer buffer per connection.
const bufSize = 64 << 10

func main() {
	addr := flag.String("addr", "127.0.0.1:9002", "address to listen on")
	naive := flag.Bool("naive", false, "unbuffered: two reads per frame and a Write per reply")
	flag.Parse()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "stdlib peer:", err)
		os.Exit(1)
	}
	name := "stdlib-peer"
	serve := serveTuned
	if *naive {
		name, serve = "stdlib-naive-peer", serveNaive
	}
	fmt.Fprintf(os.Stderr, "%s listening on %s\n", name, ln.Addr())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		ln.Close()
	}()

	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	var wg sync.WaitGroup
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				break
			}
			continue // EMFILE and the like: keep serving the others
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			defer func() {
				c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
			serve(c, echoproto.NewSession(name))
		})
	}
	mu.Lock()
	for c := range conns {
		c.Close()
	}
	mu.Unlock()
	wg.Wait()
}

// serveTuned is the buffered connection loop.
func serveTuned(c net.Conn, sess *echoproto.Session) {
	r := bufio.NewReaderSize(c, bufSize)
	w := bufio.NewWriterSize(c, bufSize)
	defer w.Flush()
	var big, out []byte // a frame larger than the reader's buffer; the replies to one frame
	for {
		hdr, err := r.Peek(frame.HeaderLen)
		if err != nil {
			return
		}
		h, err := frame.ParseHeader(hdr, echoproto.MaxPayload)
		if err != nil {
			w.Write(echoproto.AppendFatal(nil, err))
			return
		}
		total := int(h.Length)
		var fr []byte
		if total <= r.Size() {
			if fr, err = r.Peek(total); err != nil {
				return
			}
		} else {
			if cap(big) < total {
				big = make([]byte, total)
			}
			fr = big[:total]
			if _, err := io.ReadFull(r, fr); err != nil {
				return
			}
		}
		var closeAfter bool
		out, closeAfter = sess.Handle(out[:0], fr)
		if len(out) > 0 {
			if _, err := w.Write(out); err != nil {
				return
			}
		}
		if total <= r.Size() {
			r.Discard(total)
		}
		if closeAfter {
			return
		}
		if !completeFrameBuffered(r) {
			if err := w.Flush(); err != nil {
				return
			}
		}
	}
}

// completeFrameBuffered reports whether r holds a whole frame, so that the
// next frame can be answered without waiting for the network.
func completeFrameBuffered(r *bufio.Reader) bool {
	n := r.Buffered()
	if n < frame.HeaderLen {
		return false
	}
	b, _ := r.Peek(n)
	total, err := frame.Split(b, echoproto.MaxPayload)
	return err != nil || (total > 0 && total <= n)
}

// serveNaive is the unbuffered connection loop.
func serveNaive(c net.Conn, sess *echoproto.Session) {
	var hdr [frame.HeaderLen]byte
	var fr, out []byte
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		h, err := frame.ParseHeader(hdr[:], echoproto.MaxPayload)
		if err != nil {
			c.Write(echoproto.AppendFatal(nil, err))
			return
		}
		total := int(h.Length)
		if cap(fr) < total {
			fr = make([]byte, total)
		}
		fr = fr[:total]
		copy(fr, hdr[:])
		if _, err := io.ReadFull(c, fr[frame.HeaderLen:]); err != nil {
			return
		}
		var closeAfter bool
		out, closeAfter = sess.Handle(out[:0], fr)
		if len(out) > 0 {
			if _, err := c.Write(out); err != nil {
				return
			}
		}
		if closeAfter {
			return
		}
	}
}
