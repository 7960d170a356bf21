package msgnet

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/msgnet/msgnet/frame"
	"github.com/msgnet/msgnet/pipeline"
)

// The client's side of the handshake (handshake.go): it sends the hello,
// meets a challenge, and checks the welcome against what it asked for.

// handshake sends the hello, meets a challenge if the server sends one,
// and reads frames until the welcome; it returns the negotiated pipeline.
func (c *Client) handshake(ctx context.Context, nc net.Conn) (welcome, *frame.Reader, *pipeline.Pipeline, error) {
	var w welcome
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		stop()
		nc.SetDeadline(time.Time{})
	}()

	h := hello{Op: "hello", ClientID: c.id, Features: []string{featureRequest, featureReliable},
		Compression: c.cfg.compression, Publisher: c.streams.publisher}
	var clientNonce []byte
	if c.cfg.psk != nil {
		n, err := pipeline.NewNonce()
		if err != nil {
			return w, nil, nil, err
		}
		clientNonce = n
		suites := c.cfg.suites
		if len(suites) == 0 {
			suites = pipeline.Suites()
		}
		h.Encryption = &helloSeal{Suites: suites, Nonce: n}
	}
	keyID, key := c.cfg.auth.clientKey()
	if key != nil {
		h.Auth = "hmac-sha256"
		h.KeyID = keyID
	}
	hb, _ := json.Marshal(h)
	if err := frame.WriteFrame(nc, frame.KindControl, 0, hb); err != nil {
		return w, nil, nil, c.ctxErr(ctx, err)
	}
	// The handshake's frames may be larger than a small message size limit.
	r := frame.NewReader(nc, max(c.cfg.maxPayload, 64<<10))
	var refusal *ProtocolError
	for {
		f, err := r.ReadFrame()
		if err != nil {
			if refusal != nil {
				return w, nil, nil, refusal
			}
			return w, nil, nil, fmt.Errorf("%w: %w", ErrHandshake, c.ctxErr(ctx, err))
		}
		switch f.Kind {
		case frame.KindControl:
			switch op, _ := frame.ControlOp(f.Payload); op {
			case "challenge":
				var ch challenge
				if json.Unmarshal(f.Payload, &ch) != nil || len(ch.Nonce) == 0 {
					return w, nil, nil, fmt.Errorf("%w: bad challenge", ErrHandshake)
				}
				if key == nil {
					return w, nil, nil, fmt.Errorf("%w: the server requires authentication and no key is set (WithAuthKey)", ErrHandshake)
				}
				a, _ := json.Marshal(authAnswer{Op: "auth", MAC: pipeline.AuthResponse(key, ch.Nonce, c.id)})
				if err := frame.WriteFrame(nc, frame.KindControl, 0, a); err != nil {
					return w, nil, nil, c.ctxErr(ctx, err)
				}
			case "welcome":
				if err := json.Unmarshal(f.Payload, &w); err != nil {
					return w, nil, nil, fmt.Errorf("%w: bad welcome: %v", ErrHandshake, err)
				}
				pipe, err := c.pipelineFor(&w, clientNonce)
				if err != nil {
					return w, nil, nil, err
				}
				return w, r, pipe, nil
			}
		case frame.KindError:
			e := frame.ParseError(f.Payload)
			refusal = &ProtocolError{Code: e.Code, Message: e.Message, Remote: true}
		case frame.KindDisconnect:
			if refusal != nil {
				return w, nil, nil, refusal
			}
			return w, nil, nil, &DisconnectError{Reason: string(f.Payload), Remote: true}
		}
	}
}

// pipelineFor builds the payload stages the welcome granted. It refuses a
// welcome that grants what was not asked for, or drops encryption that was:
// a man in the middle must not be able to downgrade the connection.
func (c *Client) pipelineFor(w *welcome, clientNonce []byte) (*pipeline.Pipeline, error) {
	if w.Compression != "" {
		if _, ok := pipeline.CompressorByName(w.Compression); !ok || !slices.Contains(c.cfg.compression, w.Compression) {
			return nil, fmt.Errorf("%w: server chose compression %q, which was not offered", ErrHandshake, w.Compression)
		}
	}
	var sealer *pipeline.Sealer
	var opener *pipeline.Opener
	switch {
	case c.cfg.psk != nil && w.Encryption == nil:
		return nil, fmt.Errorf("%w: the server did not agree to encryption", ErrHandshake)
	case c.cfg.psk == nil && w.Encryption != nil:
		return nil, fmt.Errorf("%w: the server chose encryption, which was not asked for", ErrHandshake)
	case c.cfg.psk != nil:
		var err error
		sealer, opener, err = pipeline.NewSessionKeys(c.cfg.psk, clientNonce, w.Encryption.Nonce, w.Encryption.Suite, pipeline.RoleClient)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrHandshake, err)
		}
	}
	return c.cfg.negotiatedPipe(w.Compression, sealer, opener), nil
}
