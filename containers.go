package msgnet

import (
	"bytes"
	"errors"
	"sync"

	"github.com/msgnet/msgnet/container"
)

// ContainerHandler receives one decoded container. The container is the
// handler's to keep.
type ContainerHandler func(s *Session, c *container.Container)

// ContainerErrorHandler is told of a DATA payload that is not a container.
type ContainerErrorHandler func(s *Session, payload []byte, err error)

// ContainerMux decodes DATA payloads as containers and routes them by
// message type, like an http.ServeMux for containers. Its ServeMessage
// method is a MessageHandler:
//
//	mux := msgnet.NewContainerMux()
//	mux.Handle("user_login", login)
//	mux.Handle("data_update", update)
//	srv.OnMessage(mux.ServeMessage)
//
// Server.Handle and Server.OnContainer do this for the common case.
//
// A payload may be any of the container encodings: binary (the default on
// the wire), the C++ original's text form, or JSON (what web clients send).
// One that does not decode is answered with ERROR bad_container, and the
// error handler, if set, is told; the session goes on.
type ContainerMux struct {
	mu       sync.RWMutex
	routes   map[string]ContainerHandler
	fallback ContainerHandler
	onError  ContainerErrorHandler
	limits   container.DecodeOptions
}

// NewContainerMux returns an empty mux.
func NewContainerMux() *ContainerMux {
	return &ContainerMux{routes: make(map[string]ContainerHandler)}
}

// Handle routes containers whose message type is messageType to h.
func (m *ContainerMux) Handle(messageType string, h ContainerHandler) {
	m.mu.Lock()
	m.routes[messageType] = h
	m.mu.Unlock()
}

// HandleDefault receives the containers no route matches. Without it they
// are answered with ERROR bad_container "no handler for message type".
func (m *ContainerMux) HandleDefault(h ContainerHandler) {
	m.mu.Lock()
	m.fallback = h
	m.mu.Unlock()
}

// OnError is told of payloads that do not decode or have no route.
func (m *ContainerMux) OnError(h ContainerErrorHandler) {
	m.mu.Lock()
	m.onError = h
	m.mu.Unlock()
}

// SetLimits bounds decoding (nesting depth, values, size); the defaults are
// container.DecodeOptions' defaults.
func (m *ContainerMux) SetLimits(o container.DecodeOptions) {
	m.mu.Lock()
	m.limits = o
	m.mu.Unlock()
}

// ErrNoRoute is reported when a container's message type has no handler.
var ErrNoRoute = errors.New("msgnet: no handler for message type")

// ServeMessage decodes msg and calls the handler for its message type.
func (m *ContainerMux) ServeMessage(s *Session, msg []byte) {
	m.mu.RLock()
	limits, onError := m.limits, m.onError
	m.mu.RUnlock()
	c, err := DecodeContainer(msg, limits)
	if err == nil {
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
	s.sendError(CodeBadContainer, err.Error())
	if onError != nil {
		onError(s, msg, err)
	}
}

type routeError struct{ messageType string }

func (e *routeError) Error() string { return ErrNoRoute.Error() + " " + `"` + e.messageType + `"` }
func (e *routeError) Unwrap() error { return ErrNoRoute }

// DecodeContainer decodes a payload in whichever container encoding it is:
// JSON if it starts with '{', the C++ text form if it starts with
// "@header", else binary.
func DecodeContainer(p []byte, limits container.DecodeOptions) (*container.Container, error) {
	t := bytes.TrimLeft(p, " \t\r\n")
	switch {
	case len(t) > 0 && t[0] == '{':
		return limits.Decode(p, container.JSON)
	case bytes.HasPrefix(t, []byte("@header")):
		return limits.Decode(p, container.Text)
	}
	return limits.Decode(p, container.Binary)
}

// SendContainer queues c in the binary container encoding as one DATA
// message, with Send's guarantees.
func (s *Session) SendContainer(c *container.Container) error {
	b, err := c.Marshal()
	if err != nil {
		return err
	}
	return s.Send(b)
}

// containerMux returns the server's mux, installing it as the message
// handler on first use.
func (srv *Server) containerMux() *ContainerMux {
	srv.muxOnce.Do(func() {
		srv.mux = NewContainerMux()
		srv.OnMessage(srv.mux.ServeMessage)
	})
	return srv.mux
}

// Handle routes containers of one message type to h: DATA payloads are
// decoded as containers from then on (this replaces OnMessage).
func (srv *Server) Handle(messageType string, h ContainerHandler) {
	srv.containerMux().Handle(messageType, h)
}

// OnContainer receives every decoded container that Handle has no route
// for (all of them, if there are no routes). Like Handle, it replaces
// OnMessage.
func (srv *Server) OnContainer(h ContainerHandler) { srv.containerMux().HandleDefault(h) }

// OnContainerError is told of DATA payloads that are not containers (they
// are also answered with ERROR bad_container).
func (srv *Server) OnContainerError(h ContainerErrorHandler) { srv.containerMux().OnError(h) }

// SendContainer queues c in the binary container encoding.
func (c *Client) SendContainer(ct *container.Container) error {
	b, err := ct.Marshal()
	if err != nil {
		return err
	}
	return c.Send(b)
}

// OnContainer sets the client's message handler to decode containers. A
// payload that does not decode goes to onError (which may be nil).
func (c *Client) OnContainer(h func(ct *container.Container), onError func(payload []byte, err error)) {
	c.OnMessage(func(msg []byte) {
		ct, err := DecodeContainer(msg, container.DecodeOptions{})
		if err != nil {
			if onError != nil {
				onError(msg, err)
			}
			return
		}
		h(ct)
	})
}
