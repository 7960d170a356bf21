package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/msgnet/msgnet"
)

func clientFlags(name string, stderr io.Writer) (*flag.FlagSet, *string, *string, *time.Duration, *clientSecurity) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8080", "server address")
	id := fs.String("id", "msgnet-cli", "client id sent in the hello")
	timeout := fs.Duration("timeout", 5*time.Second, "connect timeout; for send, also how long to wait for replies")
	return fs, addr, id, timeout, addClientSecurityFlags(fs)
}

// send sends each argument as a message and prints what comes back, until
// as many replies as messages arrived or the timeout passes without one.
func send(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, addr, id, timeout, sec := clientFlags("send", stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	opts, err := sec.options()
	if err != nil {
		fmt.Fprintf(stderr, "msgnet send: %v\n", err)
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "msgnet send: no message given")
		return 2
	}
	replies := make(chan string, 64)
	c := msgnet.NewClient(*id, opts...)
	c.OnMessage(func(msg []byte) { replies <- string(msg) })
	cctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := c.Connect(cctx, *addr); err != nil {
		fmt.Fprintf(stderr, "msgnet send: %v\n", err)
		return 1
	}
	defer c.Close()
	for _, m := range fs.Args() {
		if err := c.SendString(m); err != nil {
			fmt.Fprintf(stderr, "msgnet send: %v\n", err)
			return 1
		}
	}
	for got := 0; got < fs.NArg(); got++ {
		select {
		case r := <-replies:
			fmt.Fprintln(stdout, r)
		case <-time.After(*timeout):
			fmt.Fprintf(stderr, "msgnet send: %d of %d replies before the timeout\n", got, fs.NArg())
			return 1
		case <-ctx.Done():
			return 1
		}
	}
	return 0
}

// chat sends each line of stdin and prints every message that arrives.
func chat(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs, addr, id, timeout, sec := clientFlags("chat", stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	opts, err := sec.options()
	if err != nil {
		fmt.Fprintf(stderr, "msgnet chat: %v\n", err)
		return 2
	}
	var outMu sync.Mutex
	c := msgnet.NewClient(*id, opts...)
	c.OnMessage(func(msg []byte) {
		outMu.Lock()
		fmt.Fprintf(stdout, "%s\n", msg)
		outMu.Unlock()
	})
	gone := make(chan error, 1)
	c.OnDisconnect(func(reason error) { gone <- reason })
	cctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := c.Connect(cctx, *addr); err != nil {
		fmt.Fprintf(stderr, "msgnet chat: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "connected to %s as %s (session %s); type messages, Ctrl-D to quit\n", *addr, *id, c.SessionID())
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				// The server answers in order, so once a PING comes back
				// every reply to the lines before it has arrived.
				pctx, cancel := context.WithTimeout(ctx, *timeout)
				c.Ping(pctx)
				cancel()
				c.Close()
				return 0
			}
			if err := c.SendString(l); err != nil {
				fmt.Fprintf(stderr, "msgnet chat: %v\n", err)
			}
		case reason := <-gone:
			fmt.Fprintf(stderr, "disconnected: %v\n", reason)
			return 1
		case <-ctx.Done():
			c.Close()
			return 0
		}
	}
}
