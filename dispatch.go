package msgnet

import (
	"errors"
	"math"
	"strconv"
	"time"

	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/pipeline"
)

// Dispatch: what a session does with the bytes its engine reads, the same
// on a server and in a client. The engine (internal/conn) calls Ingest with
// what a read brought; dispatch splits it into frames (or text lines),
// undoes the payload pipeline, handles the kinds every peer handles alike
// (PING, PONG, HEARTBEAT, ERROR, DISCONNECT, flags not negotiated), and
// hands DATA and CONTROL to the side it works for (peer).

// sessionHandler is a Session as its engine sees it: a separate type, so
// that the engine's callbacks are not part of Session's API.
type sessionHandler Session

// Ingest dispatches the complete frames or lines at the start of b.
func (h *sessionHandler) Ingest(b []byte) (used, need int) {
	s := (*Session)(h)
	used, need, err := s.dispatch(b)
	if err != nil {
		s.fail(err)
	}
	return used, need
}

// Flush handles what the end of the stream left: an unterminated last line
// in text mode is still one message.
func (h *sessionHandler) Flush(rest []byte) {
	s := (*Session)(h)
	if s.c.ReaderMode() != frame.ModeText {
		return
	}
	line := frame.TrimLine(rest)
	if len(line) > s.c.MaxPayload() {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			s.fail(&HandlerPanicError{Value: r})
		}
	}()
	s.c.AddMsgsIn(1)
	s.peer.handleLine(s, line)
}

// Ended is the session's last step.
func (h *sessionHandler) Ended(reason error) {
	s := (*Session)(h)
	if e := s.ext.Load(); e != nil && e.authTimer != nil {
		e.authTimer.Stop()
	}
	s.failRequests()
	s.peer.sessionEnded(s, reason)
}

// Ident names the session in the engine's logs.
func (h *sessionHandler) Ident() (session, client string) {
	s := (*Session)(h)
	return s.id, s.ClientID()
}

// dispatch hands the complete frames (or lines) at the start of b to the
// peer, in order, and returns the bytes used and, when what is left is the
// start of a frame, its length. A panic in a handler is caught here and
// ends only this session.
func (s *Session) dispatch(b []byte) (used, need int, err error) {
	// A message is counted before its handler runs, so that whoever sees
	// a reply also sees its request counted. On an event loop the replies
	// go out only after dispatch returns, so there the count is added once
	// per burst: an atomic add per message costs more than the rest of
	// dispatching it.
	start := s.seq
	perBurst := s.c.CountsPerBurst()
	defer func() {
		if perBurst {
			s.c.AddMsgsIn(s.seq - start)
		}
		if s.staged {
			s.flushStaged() // the burst's publishes to a BatchLog
		}
		if e := s.ext.Load(); e != nil && e.ackFirst != 0 {
			e.flushPubAcks(s) // the burst's publish answers, together
		}
		if r := recover(); r != nil {
			err = &HandlerPanicError{Value: r}
		}
	}()
	mode := s.c.ReaderMode()
	if mode == frame.ModeUnknown {
		if mode = frame.Sniff(b); mode == frame.ModeUnknown {
			return 0, 0, nil
		}
		s.c.SetMode(mode)
	}
	maxPayload := s.c.MaxPayload()
	var plain MessageHandler
	if mode == frame.ModeBinary {
		plain = s.peer.plainHandler(s)
	}
	for used < len(b) && !s.c.Stopping() {
		rest := b[used:]
		if mode == frame.ModeText {
			line, k, err := frame.SplitLineFrom(rest, int(s.scanned), maxPayload)
			if err != nil {
				return used, 0, err
			}
			if k == 0 {
				s.scanned = int32(min(len(rest), math.MaxInt32)) // fewer is safe: they are scanned again
				return used, 0, nil
			}
			s.scanned = 0
			used += k
			s.seq++
			if !perBurst {
				s.c.AddMsgsIn(1)
			}
			s.peer.handleLine(s, line)
			continue
		}
		// The common case first: a plain message that is only its
		// handler's call, with no call through the peer.
		total := 0
		if plain != nil {
			total = frame.SplitPlain(rest, maxPayload)
		}
		isPlain := total > 0
		if !isPlain {
			var err error
			if total, err = frame.Split(rest, maxPayload); err != nil {
				return used, 0, err
			}
			if total == 0 || total > len(rest) {
				return used, total, nil
			}
		}
		used += total
		if s.frames < 2 {
			s.frames++
		}
		s.seq++
		if !perBurst {
			s.c.AddMsgsIn(1)
		}
		if s.staged && isPlain {
			s.flushStaged() // staged publishes go first
		}
		switch msg := rest[frame.HeaderLen:total]; {
		case !isPlain:
			if err := s.handleFrame(frame.Decode(rest[:total])); err != nil {
				return used, 0, err
			}
		case s.seq&latencySampleMask != 0:
			plain(s, msg)
		default:
			s.callMessage(plain, msg) // timed
		}
	}
	return used, 0, nil
}

// flushStaged appends a server session's staged publishes (streams.go).
func (s *Session) flushStaged() {
	if srv, ok := s.peer.(*Server); ok && srv.streams != nil {
		srv.streams.flushStaged(s)
		return
	}
	s.staged = false
}

// handleFrame acts on one frame: the kinds every peer handles alike here,
// DATA and CONTROL by the peer.
func (s *Session) handleFrame(f frame.Frame) error {
	if s.staged && (f.Kind != frame.KindData || f.Flags != frame.FlagPublish) {
		s.flushStaged() // staged publishes go first
	}
	if f.Kind != frame.KindData {
		s.ctr.countIn(f.Kind, frame.HeaderLen+len(f.Payload))
	}
	if f.Kind == frame.KindData && f.Flags == 0 && s.established && s.c.Pipe() == nil {
		return s.peer.handleData(s, f) // a plain message: nothing to check
	}
	if !s.peer.admit(s, f) {
		return nil
	}
	if f.Kind == frame.KindData && s.c.Pipe() != nil {
		if err := s.inbound(&f); err != nil {
			return s.pipelineError(err)
		}
	}
	if f.Flags != 0 && (f.Kind != frame.KindData || !s.dataFlagsOK(f.Flags)) {
		s.sendError(CodeUnknownType, "flags 0x"+strconv.FormatUint(uint64(f.Flags), 16)+" were not negotiated")
		return nil
	}
	switch f.Kind {
	case frame.KindData:
		return s.peer.handleData(s, f)
	case frame.KindControl:
		s.peer.handleControl(s, f.Payload)
	case frame.KindPing:
		s.c.Enqueue(frame.KindPong, 0, f.Payload)
	case frame.KindPong:
		s.peer.handlePong(s, f.Payload)
	case frame.KindHeartbeat:
	case frame.KindError:
		e := frame.ParseError(f.Payload)
		s.ctr.errorsRecv.Add(knownCode(e.Code))
		s.peer.handleError(s, e)
	case frame.KindDisconnect:
		return &DisconnectError{Reason: string(f.Payload), Remote: true}
	default:
		s.sendError(CodeUnknownType, "unknown message kind "+f.Kind.String())
	}
	return nil
}

// inbound undoes the negotiated stages on a received DATA frame. The
// result aliases a reader-owned buffer, valid until the next frame.
func (s *Session) inbound(f *frame.Frame) error {
	e := s.x()
	out, err := s.c.Pipe().Inbound(e.inbuf[:0], f.Kind, f.Flags, f.Payload)
	if err != nil {
		return err
	}
	if cap(out) <= 64<<10 {
		e.inbuf = out[:0]
	} else {
		e.inbuf = nil // one large message must not stay with an idle session
	}
	f.Payload = out
	f.Flags &^= frame.FlagCompressed | frame.FlagEncrypted
	return nil
}

// pipelineError decides what a failure to undo the payload stages means.
// Errors that break the stream's security end the session; the others
// drop the message and say so.
func (s *Session) pipelineError(err error) error {
	switch {
	case errors.Is(err, pipeline.ErrNotNegotiated):
		s.sendError(CodeUnknownType, err.Error())
		return nil
	case errors.Is(err, pipeline.ErrDecrypt), errors.Is(err, pipeline.ErrNotEncrypted):
		return &ProtocolError{Code: CodeDecryptFailed, Message: err.Error()}
	case errors.Is(err, pipeline.ErrTooLarge):
		return &ProtocolError{Code: CodeMessageTooLarge, Message: "decompressed payload exceeds the size limit"}
	case errors.Is(err, pipeline.ErrCorrupt):
		s.sendError(CodeBadCompression, err.Error())
		return nil
	}
	s.sendError(CodeFilterFailed, err.Error())
	return nil
}

// fail ends the session after a protocol error or a handler's panic.
func (s *Session) fail(err error) {
	var (
		hp *HandlerPanicError
		de *DisconnectError
		pe *ProtocolError
	)
	switch {
	case errors.Is(err, frame.ErrBadMagic), errors.Is(err, frame.ErrShortLength):
		s.close(&ProtocolError{Code: CodeBadFrame, Message: err.Error()}, true)
	case errors.Is(err, frame.ErrTooLarge):
		s.close(&ProtocolError{Code: CodeMessageTooLarge,
			Message: "message exceeds the size limit of " + strconv.Itoa(s.c.MaxPayload()) + " bytes"}, true)
	case errors.As(err, &de) && de.Remote && s.c.Salvages():
		s.abort(err) // the server said goodbye: keep what is queued for the next connection
	case errors.As(err, &hp), errors.As(err, &de) && !de.Remote, errors.As(err, &pe) && !pe.Remote:
		s.close(err, true)
	default:
		s.close(err, false)
	}
}

// callMessage runs the message handler, timing one call in 64 for the
// handler latency histogram.
func (s *Session) callMessage(h MessageHandler, msg []byte) {
	if s.seq&latencySampleMask != 0 {
		h(s, msg)
		return
	}
	start := nanotime()
	h(s, msg)
	s.ctr.latency.observe(time.Duration(nanotime() - start))
}
