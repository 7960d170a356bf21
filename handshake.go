package msgnet

import (
	"encoding/base64"
	"encoding/json"
	"strconv"

	"github.com/msgnet/msgnet/pipeline"
)

// The handshake (docs/PROTOCOL.md, sections 3 and 6): the client's hello
// names what it would like; with authentication on, the server answers a
// challenge that the client must meet; the server's welcome says what was
// granted. Until then a server's session is held: DATA sent to it waits
// (conn.Config.Held). The server's side is in handshake_server.go, the
// client's in handshake_client.go; what both build from the outcome, the
// payload pipeline, is here.

// hello is the client's first CONTROL frame.
type hello struct {
	Op          string     `json:"op"`
	ClientID    string     `json:"client_id"`
	Features    []string   `json:"features,omitempty"`    // extensions asked for
	Compression []string   `json:"compression,omitempty"` // codecs, in the client's order of preference
	Encryption  *helloSeal `json:"encryption,omitempty"`
	Auth        string     `json:"auth,omitempty"`      // "hmac-sha256" when the client holds a key
	KeyID       string     `json:"key_id,omitempty"`    // which of the server's keys (WithAuth)
	Publisher   string     `json:"publisher,omitempty"` // with reliable: this process's publisher id
}

type helloSeal struct {
	Suites []string `json:"suites"`
	Nonce  []byte   `json:"nonce"` // 32 random bytes, base64 in JSON
}

// welcome is the server's answer to hello.
type welcome struct {
	Op             string       `json:"op"`
	SessionID      string       `json:"session_id"`
	ServerID       string       `json:"server_id"`
	MaxMessageSize int          `json:"max_message_size"`
	IdleTimeoutMS  int64        `json:"idle_timeout_ms"`
	Features       []string     `json:"features,omitempty"`    // extensions granted
	Compression    string       `json:"compression,omitempty"` // the codec chosen
	Encryption     *welcomeSeal `json:"encryption,omitempty"`
}

type welcomeSeal struct {
	Suite string `json:"suite"`
	Nonce []byte `json:"nonce"`
}

// challenge asks the client to prove it holds its key.
type challenge struct {
	Op     string `json:"op"`
	Method string `json:"method"`
	Nonce  []byte `json:"nonce"`
}

// authAnswer meets a challenge.
type authAnswer struct {
	Op  string `json:"op"`
	MAC []byte `json:"mac"`
}

// negotiatedPipe is the payload pipeline a session gets once its handshake
// settled the codec (none: "") and the session keys (none: nil), on
// either side: the user's filters, compression, encryption, in that
// order. Nil when there is nothing to do.
func (cfg *config) negotiatedPipe(codec string, sealer *pipeline.Sealer, opener *pipeline.Opener) *pipeline.Pipeline {
	c, ok := pipeline.CompressorByName(codec)
	compress := ok && codec != ""
	if len(cfg.filters) == 0 && !compress && sealer == nil {
		return nil // no allocation: every plain connection comes here
	}
	p := &pipeline.Pipeline{Filters: cfg.filters, MaxPayload: cfg.maxPayload, Sealer: sealer, Opener: opener}
	if compress {
		p.Compressor, p.Threshold = c, cfg.compressThreshold
	}
	return p
}

// appendJSON appends w as json.Marshal would write it (a test holds the two
// to the same bytes). A welcome goes out on every connection, and
// reflection is a measurable part of what a short connection costs.
func (w *welcome) appendJSON(b []byte) []byte {
	b = append(b, `{"op":`...)
	b = appendJSONString(b, w.Op)
	b = append(b, `,"session_id":`...)
	b = appendJSONString(b, w.SessionID)
	b = append(b, `,"server_id":`...)
	b = appendJSONString(b, w.ServerID)
	b = append(b, `,"max_message_size":`...)
	b = strconv.AppendInt(b, int64(w.MaxMessageSize), 10)
	b = append(b, `,"idle_timeout_ms":`...)
	b = strconv.AppendInt(b, w.IdleTimeoutMS, 10)
	if len(w.Features) > 0 {
		b = append(b, `,"features":[`...)
		for i, f := range w.Features {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, f)
		}
		b = append(b, ']')
	}
	if w.Compression != "" {
		b = append(b, `,"compression":`...)
		b = appendJSONString(b, w.Compression)
	}
	if e := w.Encryption; e != nil {
		b = append(b, `,"encryption":{"suite":`...)
		b = appendJSONString(b, e.Suite)
		b = append(b, `,"nonce":`...)
		if e.Nonce == nil {
			b = append(b, "null"...)
		} else {
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, e.Nonce)
			b = append(b, '"')
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

// appendJSONString appends s quoted as encoding/json quotes it: plain
// ASCII is copied, and anything else is left to encoding/json, which knows
// its escapes (HTML characters, control bytes, invalid UTF-8, U+2028).
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
