// Chat with groups: a server with rooms, and three clients that join them
// and talk, all in one program so it runs by itself.
//
//	go run ./examples/chat
//
// The server is what `msgnet serve` runs in managed mode; against a running
// `msgnet serve`, `msgnet chat` speaks the same commands interactively:
// JOIN:<room>, LEAVE:<room>, GROUP:<room>:<text>, PRIVATE:<id>:<text>,
// BROADCAST.
package main

import (
	"context"
	"fmt"
	"log"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/msgnet/msgnet"
)

// chatServer routes the chat commands with the server's registry and groups.
func chatServer() *msgnet.Server {
	srv := msgnet.NewServer("chat_server")
	srv.OnMessage(func(s *msgnet.Session, msg []byte) {
		cmd, rest, _ := strings.Cut(string(msg), ":")
		switch cmd {
		case "JOIN":
			srv.Join(s, rest)
			srv.SendGroup(rest, []byte(fmt.Sprintf("[%s] %s joined", rest, s.ClientID())))
		case "LEAVE":
			srv.SendGroup(rest, []byte(fmt.Sprintf("[%s] %s left", rest, s.ClientID())))
			srv.Leave(s, rest)
		case "GROUP":
			room, text, _ := strings.Cut(rest, ":")
			if !slices.Contains(s.Groups(), room) {
				s.SendString("not in " + room)
				return
			}
			srv.SendGroup(room, []byte(fmt.Sprintf("[%s] %s: %s", room, s.ClientID(), text)), s)
		case "PRIVATE":
			to, text, _ := strings.Cut(rest, ":")
			if err := srv.SendTo(to, []byte(fmt.Sprintf("(private) %s: %s", s.ClientID(), text))); err != nil {
				s.SendString("cannot reach " + to + ": " + err.Error())
			}
		}
	})
	srv.OnDisconnect(func(s *msgnet.Session, reason error) {
		for _, room := range s.Groups() {
			srv.SendGroup(room, []byte(fmt.Sprintf("[%s] %s disconnected", room, s.ClientID())), s)
		}
	})
	return srv
}

func main() {
	srv := chatServer()
	if err := srv.Start("127.0.0.1:0"); err != nil {
		log.Fatal(err)
	}
	addr := srv.Addr().String()

	var out sync.Mutex
	users := map[string]*msgnet.Client{}
	for _, name := range []string{"alice", "bob", "carol"} {
		c := msgnet.NewClient(name)
		c.OnMessage(func(msg []byte) {
			out.Lock()
			fmt.Printf("%-6s| %s\n", name, msg)
			out.Unlock()
		})
		if err := c.Connect(context.Background(), addr); err != nil {
			log.Fatal(err)
		}
		users[name] = c
	}
	say := func(who, what string) {
		users[who].SendString(what)
		// A round trip lets the conversation settle before the next line,
		// so the transcript reads in order.
		users[who].Ping(context.Background())
		time.Sleep(20 * time.Millisecond)
	}

	say("alice", "JOIN:general")
	say("bob", "JOIN:general")
	say("carol", "JOIN:random")
	say("alice", "GROUP:general:hi bob!")
	say("bob", "GROUP:general:hello alice")
	say("carol", "GROUP:general:can anyone hear me?")
	say("bob", "PRIVATE:carol:join general, carol")
	say("carol", "JOIN:general")
	say("carol", "GROUP:general:hi both")
	say("alice", "LEAVE:general")

	for _, c := range users {
		c.Close()
	}
	srv.Shutdown(context.Background())
}
