package conn

// State is where a connection is in its life. It only moves forward:
//
//	          Close (Drain or Notify)             last word written
//	StateOpen ───────────────────────► StateClosing ─────────────────► StateLingering
//	    │                                   │  queue written, no last word     │
//	    │ Close (Abort)                     ▼                                  │ peer closed, 1 s
//	    └─────────────────────────────► StateClosed ◄────────────────────────┘  or 256 KiB
//	                                        │
//	                                        │ no reader or writer left
//	                                        ▼
//	                                    StateEnded: Handler.Ended runs, once
//
// An abort (a write error, a hard stop) goes from any state before
// StateClosed straight to it, dropping what is queued; in StateLingering it
// cuts the linger short.
type State uint8

const (
	// StateOpen: input is dispatched and sends are accepted.
	StateOpen State = iota
	// StateClosing: no more input is dispatched and no sends are accepted;
	// what was queued (and the last word, if any) is being written.
	StateClosing
	// StateLingering: the last word is written and the write side shut;
	// input is read and dropped until the peer closes, so that closing
	// does not send RST over the last word (docs/PROTOCOL.md, section 2).
	StateLingering
	// StateClosed: the descriptor is closed (or will be when the event
	// loop's turn ends); a reader or writer may still be returning.
	StateClosed
	// StateEnded: no reader or writer is left and Handler.Ended has been
	// called. Nothing more happens.
	StateEnded
)

var stateNames = [...]string{"open", "closing", "lingering", "closed", "ended"}

func (s State) String() string { return stateNames[s] }

// flags are a connection's roles and modes, guarded by Conn.mu. Every bit
// is one fact.
type flags uint16

const (
	writerActive   flags = 1 << iota // a writer owns the queue's head: a writer goroutine, or the loop ending its turn
	readerActive                     // a reader owns the input: a reader goroutine, or the loop during its turn
	flushAfter                       // the loop's turn: what handlers queue is written when they return, by the loop
	parked                           // the descriptor is registered with a poller (so it must be forgotten before closing)
	fdClosePending                   // close the descriptor when the loop's turn ends: the loop is using its number
	lingerOnEnd                      // a last word was queued: close by lingering, not at once
	held                             // the handshake is not done: DATA waits in the early queue
)

func (f flags) has(b flags) bool { return f&b != 0 }
