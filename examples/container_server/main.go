// Container server: the seed's "Container Integration" example. Messages
// are containers; user_login and data_update are routed by message type,
// and each gets a response addressed back to its source with a status and
// a timestamp.
//
//	go run ./examples/container_server      # then: go run ./examples/container_client
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/container"
	"github.com/msgnet/msgnet/container/mux"
)

func main() {
	server := msgnet.NewServer("container_server")
	routes := mux.New()
	server.OnMessage(routes.ServeMessage)

	routes.Handle("user_login", func(s *msgnet.Session, c *container.Container) {
		printReceived(c)
		username, errU := c.GetString("username")
		password, errP := c.GetString("password")
		status := "success"
		if errU != nil || errP != nil || !authenticateUser(username, password) {
			status = "denied"
			fmt.Printf("Authentication failed for user %s\n", username)
		} else {
			fmt.Printf("User %s authenticated successfully\n", username)
		}
		respond(s, c, status)
	})
	routes.Handle("data_update", func(s *msgnet.Session, c *container.Container) {
		printReceived(c)
		data, _ := c.GetString("data")
		userID, _ := c.GetString("user_id")
		fmt.Printf("Processing data update for user %s: %d bytes\n", userID, len(data))
		respond(s, c, "success")
	})
	routes.OnError(func(s *msgnet.Session, payload []byte, err error) {
		fmt.Printf("Error processing container from %s: %v\n", s.ClientID(), err)
	})

	if err := server.Start("127.0.0.1:8080"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("Container server on 127.0.0.1:8080")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	<-sig
	server.Shutdown(context.Background())
}

func printReceived(c *container.Container) {
	fmt.Println("Received container message:")
	fmt.Println("  Type:", c.MessageType)
	fmt.Println("  Source:", c.SourceID)
	fmt.Println("  Target:", c.TargetID)
}

// respond sends the seed's response container: addressed back to the
// source, with a status and a timestamp.
func respond(s *msgnet.Session, req *container.Container, status string) {
	resp := req.Reply("response")
	resp.SourceID, resp.SourceSubID = "server", "main"
	resp.Add(
		container.String("status", status),
		container.Int64("timestamp", time.Now().Unix()),
	)
	mux.Reply(s, resp) // in the encoding the client spoke: binary, or a C++ peer's text form
}

// authenticateUser stands in for a real user store.
func authenticateUser(username, password string) bool {
	return username == "alice" && password == "wonderland"
}
