// Pipeline server: the seed's "Advanced Pipeline Processing" example. Every
// DATA payload passes through a pipeline negotiated in the handshake:
// a user filter (a CRC-32C checksum, examples/internal/checksum), then
// compression (the codec the client asks for), then encryption (keys
// derived from a pre-shared key and the handshake's nonces); the reverse
// on the way in. The handler sees plain payloads and echoes them.
//
//	go run ./examples/pipeline_server      # then: go run ./examples/pipeline_client
//
// The pre-shared key comes from MSGNET_PSK (at least 16 bytes), or is the
// example's own.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/examples/internal/checksum"
)

func main() {
	psk := os.Getenv("MSGNET_PSK")
	if psk == "" {
		psk = "an example key, not for production use"
	}
	var checked atomic.Uint64
	server := msgnet.NewServer("pipeline_server",
		msgnet.WithFilters(checksum.Filter(&checked)), // the user filter
		msgnet.WithCompression("zstd", "s2"),          // codecs granted to clients that ask
		msgnet.WithCompressionThreshold(64),
		msgnet.WithEncryption([]byte(psk)), // every client must encrypt
	)
	server.OnConnect(func(s *msgnet.Session) { fmt.Printf("%s connected\n", s.ClientID()) })
	server.OnMessage(func(s *msgnet.Session, msg []byte) {
		fmt.Printf("%s: %d bytes after the pipeline (%d checksums verified so far)\n", s.ClientID(), len(msg), checked.Load())
		s.SendString("processed: " + strings.ToUpper(string(msg)))
	})
	if err := server.Start("127.0.0.1:8080"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("Pipeline server on 127.0.0.1:8080: checksum, compression, encryption")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	<-sig
	server.Shutdown(context.Background())
}
