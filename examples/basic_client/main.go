// Basic client: the seed's "Basic Client Usage", in Go. Start
// examples/basic_server (or `go run ./cmd/msgnet serve`) first.
//
//	go run ./examples/basic_client
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/msgnet/msgnet"
)

func main() {
	client := msgnet.NewClient("client_01")

	client.OnMessage(func(msg []byte) {
		fmt.Printf("Received from server: %s\n", msg)
	})
	client.OnConnect(func() {
		fmt.Println("Connected to server")
	})
	client.OnDisconnect(func(reason error) {
		fmt.Printf("Disconnected from server: %v\n", reason)
	})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := client.Connect(ctx, "127.0.0.1:8080"); err != nil {
		fmt.Fprintln(os.Stderr, "Failed to connect to server:", err)
		os.Exit(1)
	}

	for i := 0; i < 10; i++ {
		if err := client.SendString(fmt.Sprintf("Hello from client %d", i)); err != nil {
			fmt.Fprintln(os.Stderr, "send:", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A round trip makes sure every reply has arrived before closing.
	if rtt, err := client.Ping(ctx); err == nil {
		fmt.Printf("Round trip: %v\n", rtt)
	}
	client.Close()
}
