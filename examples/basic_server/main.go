// Basic server: the seed's "Basic Server Setup", in Go. It echoes every
// message back as "Echo: <message>" and logs connects and disconnects.
//
//	go run ./examples/basic_server
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/msgnet/msgnet"
)

func main() {
	server := msgnet.NewServer("main_server",
		msgnet.WithMaxConnections(1000),
		msgnet.WithMessageSizeLimit(1024*1024), // 1MB max message
		msgnet.WithIdleTimeout(30*time.Second),
	)

	server.OnMessage(func(s *msgnet.Session, msg []byte) {
		fmt.Printf("Received message from %s: %d bytes\n", s.ClientID(), len(msg))
		s.SendString("Echo: " + string(msg))
	})
	server.OnConnect(func(s *msgnet.Session) {
		fmt.Printf("Client connected: %s\n", s.ClientID())
	})
	server.OnDisconnect(func(s *msgnet.Session, reason error) {
		fmt.Printf("Client disconnected: %s (%v)\n", s.ClientID(), reason)
	})

	if err := server.Start("127.0.0.1:8080"); err != nil {
		fmt.Fprintln(os.Stderr, "Failed to start server:", err)
		os.Exit(1)
	}
	fmt.Println("Server started on port 8080")

	// Wait for a shutdown signal, then stop gracefully.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	server.Shutdown(ctx)
}
