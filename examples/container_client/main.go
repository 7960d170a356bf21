// Container client: sends the container server a user_login and a
// data_update and prints the responses. Start examples/container_server
// first.
//
//	go run ./examples/container_client
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/container"
	"github.com/msgnet/msgnet/container/mux"
)

func main() {
	client := msgnet.NewClient("client_01")
	responses := make(chan *container.Container, 2)
	client.OnMessage(mux.ClientHandler(func(c *container.Container) { responses <- c }, func(p []byte, err error) {
		fmt.Printf("not a container (%d bytes): %v\n", len(p), err)
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := client.Connect(ctx, "127.0.0.1:8080"); err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	defer client.Close()

	login := &container.Container{SourceID: "client_01", SourceSubID: "app", TargetID: "server", MessageType: "user_login", Version: "1.0.0.0"}
	login.Add(container.String("username", "alice"), container.String("password", "wonderland"))
	update := &container.Container{SourceID: "client_01", SourceSubID: "app", TargetID: "server", MessageType: "data_update", Version: "1.0.0.0"}
	update.Add(container.String("user_id", "alice"), container.String("data", "the rabbit hole goes deeper"))

	for _, req := range []*container.Container{login, update} {
		if err := mux.SendClient(client, req); err != nil {
			fmt.Fprintln(os.Stderr, "send:", err)
			os.Exit(1)
		}
		select {
		case resp := <-responses:
			status, _ := resp.GetString("status")
			ts, _ := resp.GetInt64("timestamp")
			fmt.Printf("%s -> %s to %s/%s: status=%s timestamp=%d\n",
				req.MessageType, resp.MessageType, resp.TargetID, resp.TargetSubID, status, ts)
		case <-ctx.Done():
			fmt.Fprintln(os.Stderr, "no response")
			os.Exit(1)
		}
	}
}
