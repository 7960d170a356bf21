// Pipeline client: talks to examples/pipeline_server through the same
// pipeline: the checksum filter, zstd compression, encryption with the
// shared key. Start the server first.
//
//	go run ./examples/pipeline_client
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/examples/internal/checksum"
)

func main() {
	psk := os.Getenv("MSGNET_PSK")
	if psk == "" {
		psk = "an example key, not for production use"
	}
	var checked atomic.Uint64
	client := msgnet.NewClient("pipeline_client",
		msgnet.WithFilters(checksum.Filter(&checked)),
		msgnet.WithCompression("zstd"),
		msgnet.WithEncryption([]byte(psk)))
	replies := make(chan string, 2)
	client.OnMessage(func(msg []byte) { replies <- string(msg) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := client.Connect(ctx, "127.0.0.1:8080"); err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	defer client.Close()
	for _, m := range []string{"hello through the pipeline", strings.Repeat("compressible text ", 100)} {
		if err := client.SendString(m); err != nil {
			fmt.Fprintln(os.Stderr, "send:", err)
			os.Exit(1)
		}
		select {
		case r := <-replies:
			fmt.Printf("sent %d bytes, got back %d: %.40s...\n", len(m), len(r), r)
		case <-ctx.Done():
			fmt.Fprintln(os.Stderr, "no reply")
			os.Exit(1)
		}
	}
	fmt.Printf("%d replies' checksums verified\n", checked.Load())
}
