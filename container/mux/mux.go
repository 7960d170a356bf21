// Package mux routes msgnet messages that carry containers (package
// container) to handlers by message type, like an http.ServeMux for
// containers. It sits beside the core: msgnet itself knows nothing of
// payload formats.
//
//	m := mux.New()
//	m.Handle("user_login", login)
//	m.Handle("data_update", update)
//	srv.OnMessage(m.ServeMessage)
//
// A payload may be in any of the container encodings: binary (what Send
// writes by default), the C++ original's text form, or JSON (what web
// clients send). One that does not decode, or has no route, is answered
// with ERROR bad_container, and the error handler, if set, is told; the
// session goes on. Replies go out in the encoding the peer spoke (Reply),
// so a C++ peer that sends the text form gets the text form back.
package mux

import (
	"bytes"
	"errors"
	"sync"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/container"
)

// Handler receives one decoded container. The container is the handler's
// to keep.
type Handler func(s *msgnet.Session, c *container.Container)

// ErrorHandler is told of a DATA payload that is not a container, or has
// no route.
type ErrorHandler func(s *msgnet.Session, payload []byte, err error)

// ErrNoRoute is reported when a container's message type has no handler.
var ErrNoRoute = errors.New("msgnet: no handler for message type")

// Mux decodes DATA payloads as containers and routes them by message type.
// Its ServeMessage method is a msgnet.MessageHandler. It is safe for
// concurrent use.
type Mux struct {
	mu       sync.RWMutex
	routes   map[string]Handler
	fallback Handler
	onError  ErrorHandler
	limits   container.DecodeOptions
}

// New returns an empty mux.
func New() *Mux { return &Mux{routes: make(map[string]Handler)} }

// Handle routes containers whose message type is messageType to h.
func (m *Mux) Handle(messageType string, h Handler) {
	m.mu.Lock()
	m.routes[messageType] = h
	m.mu.Unlock()
}

// HandleDefault receives the containers no route matches. Without it they
// are answered with ERROR bad_container "no handler for message type".
func (m *Mux) HandleDefault(h Handler) {
	m.mu.Lock()
	m.fallback = h
	m.mu.Unlock()
}

// OnError is told of payloads that do not decode or have no route.
func (m *Mux) OnError(h ErrorHandler) {
	m.mu.Lock()
	m.onError = h
	m.mu.Unlock()
}

// SetLimits bounds decoding (nesting depth, values, size); the defaults are
// container.DecodeOptions' defaults.
func (m *Mux) SetLimits(o container.DecodeOptions) {
	m.mu.Lock()
	m.limits = o
	m.mu.Unlock()
}

// ServeMessage decodes msg and calls the handler for its message type.
func (m *Mux) ServeMessage(s *msgnet.Session, msg []byte) {
	m.mu.RLock()
	limits, onError := m.limits, m.onError
	m.mu.RUnlock()
	c, f, err := Decode(msg, limits)
	if err == nil {
		s.SetData(formatKey, f.String())
		m.mu.RLock()
		h, ok := m.routes[c.MessageType]
		if !ok {
			h = m.fallback
		}
		m.mu.RUnlock()
		if h != nil {
			h(s, c)
			return
		}
		err = &routeError{c.MessageType}
	}
	s.SendError(msgnet.CodeBadContainer, err.Error())
	if onError != nil {
		onError(s, msg, err)
	}
}

type routeError struct{ messageType string }

func (e *routeError) Error() string { return ErrNoRoute.Error() + " " + `"` + e.messageType + `"` }
func (e *routeError) Unwrap() error { return ErrNoRoute }

// Decode decodes a payload in whichever container encoding it is, and says
// which: JSON if it starts with '{', the C++ text form if it starts with
// "@header", else binary.
func Decode(p []byte, limits container.DecodeOptions) (*container.Container, container.Format, error) {
	t := bytes.TrimLeft(p, " \t\r\n")
	f := container.Binary
	switch {
	case len(t) > 0 && t[0] == '{':
		f = container.JSON
	case bytes.HasPrefix(t, []byte("@header")):
		f = container.Text
	}
	c, err := limits.Decode(p, f)
	return c, f, err
}

// formatKey is the session data key under which ServeMessage keeps the
// encoding the peer last sent a container in.
const formatKey = "msgnet.container.format"

// Send queues c on s as one DATA message in the binary encoding, with
// Session.Send's guarantees.
func Send(s *msgnet.Session, c *container.Container) error { return SendAs(s, c, container.Binary) }

// SendAs queues c on s in encoding f: container.Text for a C++ peer that
// reads the original's text form (serialize()), container.JSON for a web
// client.
func SendAs(s *msgnet.Session, c *container.Container, f container.Format) error {
	b, err := c.Encode(f)
	if err != nil {
		return err
	}
	return s.Send(b)
}

// Reply queues c on s in the encoding s last sent a container in (binary
// if it never did): a peer is answered in its own form.
func Reply(s *msgnet.Session, c *container.Container) error {
	f := container.Binary
	if name, ok := s.Data(formatKey); ok {
		f, _ = container.ParseFormat(name)
	}
	return SendAs(s, c, f)
}

// SendClient queues c on the client's connection in the binary encoding,
// with Client.Send's guarantees.
func SendClient(cl *msgnet.Client, c *container.Container) error {
	b, err := c.Marshal()
	if err != nil {
		return err
	}
	return cl.Send(b)
}

// ClientHandler returns a message handler for Client.OnMessage that decodes
// containers and hands them to h; a payload that does not decode goes to
// onError (which may be nil).
func ClientHandler(h func(c *container.Container), onError func(payload []byte, err error)) func(msg []byte) {
	return func(msg []byte) {
		c, _, err := Decode(msg, container.DecodeOptions{})
		if err != nil {
			if onError != nil {
				onError(msg, err)
			}
			return
		}
		h(c)
	}
}
