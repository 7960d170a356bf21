package natsbus

import (
	"encoding/base64"
	"encoding/binary"
	"errors"

	"github.com/msgnet/msgnet"
)

// The encoding of every message the bus publishes (docs/CLUSTER.md,
// "Wire format"):
//
//	offset  size  field
//	0       1     version, 1
//	1       1     kind (below)
//	2       1     n, length of the origin node id (1..255)
//	3       n     origin node id
//	3+n     2     m, length of the target, big-endian
//	5+n     m     target: group name, session or client id; empty otherwise
//	5+n+m   rest  body: the application payload for data kinds, a JSON
//	              object for control kinds
const wireVersion = 1

// Kinds on the wire. Data kinds carry application payloads and equal
// msgnet.ClusterMessageKind; control kinds carry JSON.
const (
	kindBroadcast = byte(msgnet.ClusterBroadcast) // 1
	kindGroup     = byte(msgnet.ClusterGroup)     // 2
	kindDirect    = byte(msgnet.ClusterDirect)    // 3
	kindUp        = 16                            // directory: a client id connected on origin
	kindDown      = 17                            // directory: that session ended
	kindSync      = 18                            // directory: origin's whole table, to one node
	kindLoad      = 19                            // heartbeat with origin's load
	kindBye       = 20                            // origin is leaving the cluster
	kindBatch     = 32                            // data messages to one subject: body is records (batch.go)

	// flagStored, on a group or direct kind: the origin appended the
	// message to its stream (msgnet.ClusterMessage.Stored).
	flagStored = 0x40
)

// isData reports whether kind is a data kind, with or without flagStored.
func isData(kind byte) bool {
	switch kind {
	case kindBroadcast, kindGroup, kindDirect, kindGroup | flagStored, kindDirect | flagStored:
		return true
	}
	return false
}

var errBadMessage = errors.New("natsbus: malformed cluster message")

type wireMsg struct {
	kind   byte
	origin string
	target string
	body   []byte
}

// appendMsg encodes a message at the end of b.
func appendMsg(b []byte, kind byte, origin, target string, body []byte) []byte {
	b = append(b, wireVersion, kind, byte(len(origin)))
	b = append(b, origin...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(target)))
	b = append(b, target...)
	return append(b, body...)
}

// msgLen is the length of the message appendMsg appends.
func msgLen(origin, target string, body []byte) int {
	return 5 + len(origin) + len(target) + len(body)
}

// parseMsg decodes a message; body aliases data.
func parseMsg(data []byte) (wireMsg, error) {
	kind, origin, target, body, ok := splitMsg(data)
	if !ok {
		return wireMsg{}, errBadMessage
	}
	// One string holds both ids: one allocation per message, not two.
	ids := string(data[3 : 3+len(origin)+2+len(target)])
	return wireMsg{kind: kind, origin: ids[:len(origin)], target: ids[len(origin)+2:], body: body}, nil
}

// splitMsg finds a message's fields in data, all aliasing it; ok is false
// when data is not a message.
func splitMsg(data []byte) (kind byte, origin, target, body []byte, ok bool) {
	if len(data) < 3 || data[0] != wireVersion {
		return 0, nil, nil, nil, false
	}
	n := int(data[2])
	if n == 0 || len(data) < 3+n+2 {
		return 0, nil, nil, nil, false
	}
	tl := int(binary.BigEndian.Uint16(data[3+n:]))
	if len(data) < 3+n+2+tl {
		return 0, nil, nil, nil, false
	}
	return data[1], data[3 : 3+n], data[3+n+2 : 3+n+2+tl], data[3+n+2+tl:], true
}

// token turns a node id or group name into one subject token: itself when
// it is made only of letters, digits, '-' and '_', otherwise '~' followed
// by its unpadded base64url encoding (so '.', '*', '>' and spaces, which
// NATS gives a meaning, never reach a subject).
func token(s string) string {
	if s != "" && plain(s) {
		return s
	}
	return "~" + base64.RawURLEncoding.EncodeToString([]byte(s))
}

func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// looksLikeSessionID reports whether id has the form msgnet gives session
// ids: 8 lowercase hex digits, '-', a decimal counter.
func looksLikeSessionID(id string) bool {
	if len(id) < 10 || id[8] != '-' {
		return false
	}
	for i := 0; i < 8; i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	for i := 9; i < len(id); i++ {
		if id[i] < '0' || id[i] > '9' {
			return false
		}
	}
	return true
}

// Control bodies, JSON.

// dirEvent is the body of kindUp and kindDown (target: the client id).
type dirEvent struct {
	Instance string `json:"instance"`
	Session  string `json:"session"`
	Stamp    uint64 `json:"stamp"`
}

// syncBody is the body of kindSync: every client id the origin holds.
type syncBody struct {
	Instance string      `json:"instance"`
	Reply    bool        `json:"reply"` // an answer to a sync: do not answer it
	Entries  []syncEntry `json:"entries"`
	Batch    bool        `json:"batch,omitempty"` // the origin reads kindBatch
}

type syncEntry struct {
	Client  string `json:"client"`
	Session string `json:"session"`
	Stamp   uint64 `json:"stamp"`
}

// loadBody is the body of kindLoad.
type loadBody struct {
	Instance   string `json:"instance"`
	Addr       string `json:"addr,omitempty"`
	Sessions   int    `json:"sessions"`
	MsgsIn     uint64 `json:"msgs_in"`
	MsgsOut    uint64 `json:"msgs_out"`
	At         int64  `json:"at"`          // sender's clock, Unix ns: rates come from differences
	IntervalMS int64  `json:"interval_ms"` // the sender's heartbeat interval
	Batch      bool   `json:"batch,omitempty"`
}

// byeBody is the body of kindBye.
type byeBody struct {
	Instance string `json:"instance"`
}
