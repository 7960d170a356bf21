//go:build !linux

package netpoll

// Supported reports whether this platform can park connections.
const Supported = false

// Poller is not available on this platform; New always fails.
type Poller struct {
	// Local is for the owners' use on the poller's goroutine (unused here).
	Local any
}

// New fails: connections keep a goroutine each on this platform.
func New(blocking bool) (*Poller, error) { return nil, ErrClosed }

// Add is never reached on this platform.
func (p *Poller) Add(fd int, r Readable, gen uint32) error { return ErrClosed }

// AddEdge is never reached on this platform.
func (p *Poller) AddEdge(fd int, r Readable, gen uint32) error { return ErrClosed }

// Forget is never reached on this platform.
func (p *Poller) Forget(fd int) {}

// Rearm is never reached on this platform.
func (p *Poller) Rearm(fd int, gen uint32) error { return ErrClosed }

// Run is never reached on this platform.
func (p *Poller) Run() error { return ErrClosed }

// Owner is 0: there is no poller goroutine.
func (p *Poller) Owner() uintptr { return 0 }

// Close is never reached on this platform.
func (p *Poller) Close() error { return nil }

// Release is never reached on this platform.
func (p *Poller) Release() {}
