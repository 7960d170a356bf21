package msgnet

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"

	"github.com/msgnet/msgnet/frame"
)

// Protocol extensions a peer can ask for in its hello ("features") and the
// server grants in its welcome. An extension's frames are only ever sent to
// a peer that was granted it.
const (
	featureRequest  = "request"  // request/reply correlation, docs/PROTOCOL.md §6.1
	featureReliable = "reliable" // streams: acknowledged delivery, docs/PROTOCOL.md §6.7
)

const (
	featRequest uint32 = 1 << iota
	featReliable
)

// RemoteError is a request's failure as reported by the peer's handler.
type RemoteError struct{ Message string }

func (e *RemoteError) Error() string { return "remote: " + e.Message }

// RequestHandler answers a request. req is valid only until it returns.
// Returning an error sends the error's text back as a *RemoteError.
type RequestHandler func(s *Session, req []byte) ([]byte, error)

// replyStatus is the byte after the request id in a reply.
const (
	replyOK    byte = 0
	replyError byte = 1
)

type reply struct {
	data []byte
	err  error
}

// requests correlates outstanding requests with their replies.
type requests struct {
	mu      sync.Mutex
	next    uint64
	pending map[uint64]chan reply
	closed  bool
}

// Request sends msg as a request and waits for the reply or for ctx to end.
// A reply that arrives after ctx ended is dropped and counted (LateReplies);
// it is never delivered to another request.
//
// The reply is read by the goroutine that runs this session's handlers: do
// not call Request on a session from its own message handler, or it waits
// for itself until ctx ends.
func (s *Session) Request(ctx context.Context, msg []byte) ([]byte, error) {
	if s.features.Load()&featRequest == 0 {
		return nil, ErrNotNegotiated
	}
	if len(msg)+8 > s.c.MaxPayload() {
		return nil, ErrMessageTooLarge
	}
	ch := make(chan reply, 1)
	r := &s.x().reqs
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, ErrSessionClosed
	}
	if r.pending == nil {
		r.pending = make(map[uint64]chan reply)
	}
	r.next++
	id := r.next
	r.pending[id] = ch
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.pending, id)
		r.mu.Unlock()
	}()

	payload := make([]byte, 8, 8+len(msg))
	binary.BigEndian.PutUint64(payload, id)
	if err := s.c.Enqueue(frame.KindData, frame.FlagRequest, append(payload, msg...)); err != nil {
		return nil, err
	}
	s.ctr.reqSent.Add(1)
	select {
	case rep := <-ch:
		var re *RemoteError
		switch {
		case rep.err == nil:
			s.ctr.reqOK.Add(1)
		case errors.As(rep.err, &re):
			s.ctr.reqRemoteErr.Add(1)
		default:
			s.ctr.reqLost.Add(1)
		}
		return rep.data, rep.err
	case <-ctx.Done():
		s.ctr.reqTimeout.Add(1)
		return nil, ctx.Err()
	}
}

// LateReplies counts replies that arrived after their request had given up.
func (s *Session) LateReplies() uint64 {
	if e := s.ext.Load(); e != nil {
		return e.lateReplies.Load()
	}
	return 0
}

// handleReply delivers a reply frame's payload to its waiting request.
func (s *Session) handleReply(p []byte) {
	if len(p) < 9 {
		s.sendError(CodeBadRequest, "reply shorter than its header")
		return
	}
	id := binary.BigEndian.Uint64(p)
	e := s.x()
	e.reqs.mu.Lock()
	ch := e.reqs.pending[id]
	delete(e.reqs.pending, id)
	e.reqs.mu.Unlock()
	if ch == nil {
		e.lateReplies.Add(1)
		s.ctr.lateReplies.Add(1)
		return
	}
	body := p[9:]
	if p[8] == replyError {
		ch <- reply{err: &RemoteError{Message: string(body)}}
		return
	}
	ch <- reply{data: append([]byte(nil), body...)}
}

// handleRequest runs h on a request frame's payload and queues the reply.
func (s *Session) handleRequest(p []byte, h func(req []byte) ([]byte, error)) {
	if len(p) < 8 {
		s.sendError(CodeBadRequest, "request shorter than its id")
		return
	}
	var out []byte
	err := ErrNoRequestHandler
	if h != nil {
		out, err = h(p[8:])
	}
	s.ctr.reqHandled.Add(1)
	if err != nil {
		s.ctr.reqHandlerErr.Add(1)
	}
	rep := make([]byte, 9, 9+len(out))
	copy(rep, p[:8])
	if err != nil {
		rep[8] = replyError
		rep = append(rep, err.Error()...)
	} else {
		rep = append(rep, out...)
	}
	if len(rep) > s.c.SendLimit() {
		rep = append(rep[:8], replyError)
		rep = append(rep, "reply exceeds the message size limit"...)
	}
	s.c.Enqueue(frame.KindData, frame.FlagReply, rep)
}

// failRequests ends every outstanding request when the session ends.
func (s *Session) failRequests() {
	e := s.ext.Load()
	if e == nil {
		if s.features.Load()&featRequest == 0 {
			return // no request can ever be made on this session
		}
		e = s.x()
	}
	e.reqs.mu.Lock()
	e.reqs.closed = true
	for id, ch := range e.reqs.pending {
		ch <- reply{err: ErrConnectionLost}
		delete(e.reqs.pending, id)
	}
	e.reqs.mu.Unlock()
}

// dataFlagsOK reports whether a DATA frame's flags are ones this session
// negotiated.
func (s *Session) dataFlagsOK(f frame.Flags) bool {
	switch f {
	case 0:
		return true
	case frame.FlagRequest, frame.FlagReply:
		return s.features.Load()&featRequest != 0
	case frame.FlagStream, frame.FlagAck, frame.FlagPublish:
		return s.features.Load()&featReliable != 0
	}
	return false
}

// grantFeatures returns the extensions granted from a hello's list, of
// those offered (a server without streams does not offer reliable).
func grantFeatures(asked []string, offered uint32) (granted []string, mask uint32) {
	for _, f := range asked {
		var bit uint32
		switch f {
		case featureRequest:
			bit = featRequest
		case featureReliable:
			bit = featReliable
		}
		if bit != 0 && offered&bit != 0 && mask&bit == 0 {
			granted = append(granted, f)
			mask |= bit
		}
	}
	return granted, mask
}
