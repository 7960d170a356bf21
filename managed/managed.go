// Package managed is the message handler behind `msgnet serve --mode
// managed` (the default): a small chat protocol of text commands over the
// server's registry and groups. It is what the live page's chat box and
// `msgnet chat` speak, and a worked example of the session management API.
package managed

import (
	"errors"
	"slices"
	"strings"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

// Install makes srv a managed-mode server, the seed's "Session Management"
// example built on the server's registry and groups:
//
//	BROADCAST                 every session gets "Broadcast from <client id>"
//	PRIVATE:<id>:<text>       the session or client id gets "Private from <client id>: <text>"
//	JOIN:<group>              join a group
//	LEAVE:<group>             leave it
//	GROUP:<group>:<text>      the group's other members get "[<group>] <client id>: <text>"
//	anything else             comes back as "Echo: <message>"
//
// A relayed text has its control characters escaped (frame.AppendEscaped):
// it reaches a text-mode peer (nc) as one line, so that no sender can
// write a line that reads as if someone else had sent it. A reliable
// client's publish to a stream (msgnet pub) is relayed the same way to
// the members that did not subscribe: "[<group>] <client id>: <text>" for
// group:<group>, "Private from <client id>: <text>" for client:<id>; its
// subscribers get it as published.
func Install(srv *msgnet.Server) {
	srv.OnPublish(func(s *msgnet.Session, stream string, msg []byte) ([]byte, error) {
		if group, ok := strings.CutPrefix(stream, "group:"); ok {
			return relay("["+group+"] "+s.ClientID()+": ", string(msg)), nil
		}
		return relay("Private from "+s.ClientID()+": ", string(msg)), nil
	})
	srv.OnMessage(func(s *msgnet.Session, msg []byte) {
		text := string(msg)
		cmd, rest, _ := strings.Cut(text, ":")
		switch {
		case text == "BROADCAST":
			srv.Broadcast([]byte("Broadcast from " + s.ClientID()))
		case cmd == "PRIVATE":
			target, body, ok := strings.Cut(rest, ":")
			if !ok {
				s.SendString("ERROR: usage PRIVATE:<id>:<message>")
				return
			}
			err := srv.SendTo(target, relay("Private from "+s.ClientID()+": ", body))
			switch {
			case errors.Is(err, msgnet.ErrNoSession):
				s.SendString("ERROR: Session " + target + " not found")
			case err != nil:
				s.SendString("ERROR: " + target + ": " + err.Error())
			}
		case cmd == "JOIN" && rest != "":
			var pe *msgnet.ProtocolError
			switch err := srv.Join(s, rest); {
			case err == nil:
				s.SendString("Joined " + rest)
			case errors.As(err, &pe):
				s.SendError(pe.Code, pe.Message)
			}
		case cmd == "LEAVE" && rest != "":
			srv.Leave(s, rest)
			s.SendString("Left " + rest)
		case cmd == "GROUP":
			group, body, ok := strings.Cut(rest, ":")
			if !ok || group == "" {
				s.SendString("ERROR: usage GROUP:<group>:<message>")
				return
			}
			if !slices.Contains(s.Groups(), group) {
				s.SendString("ERROR: not a member of " + group)
				return
			}
			srv.SendGroup(group, relay("["+group+"] "+s.ClientID()+": ", body), s)
		default:
			s.SendString("Echo: " + text)
		}
	})
}

// relay is prefix, written by the server, followed by body, one peer's
// words, escaped.
func relay(prefix, body string) []byte {
	return frame.AppendEscaped([]byte(prefix), []byte(body))
}
