package testenv

import (
	"io"
	"net"
	"sync"
	"testing"
)

// CutProxy forwards TCP connections to a server and cuts them all on
// demand: both directions are reset at once, whatever is in flight, as a
// failing network would. Its upstream can be changed, for a server that
// comes back on another port.
type CutProxy struct {
	l        net.Listener
	mu       sync.Mutex
	upstream string
	conns    map[net.Conn]bool
	cuts     int
	wg       sync.WaitGroup
}

// NewCutProxy listens on a loopback port and forwards to upstream until
// the test ends.
func NewCutProxy(t testing.TB, upstream string) *CutProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &CutProxy{l: l, upstream: upstream, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is the address clients dial.
func (p *CutProxy) Addr() string { return p.l.Addr().String() }

// Cuts is how many times Cut ran.
func (p *CutProxy) Cuts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cuts
}

func (p *CutProxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		upstream := p.upstream
		p.mu.Unlock()
		out, err := net.Dial("tcp", upstream)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns[in], p.conns[out] = true, true
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(out, in)
		go p.pipe(in, out)
	}
}

func (p *CutProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// Cut resets every connection through the proxy now.
func (p *CutProxy) Cut() {
	p.mu.Lock()
	for c := range p.conns {
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	p.conns = map[net.Conn]bool{}
	p.cuts++
	p.mu.Unlock()
}

func (p *CutProxy) close() {
	p.l.Close()
	p.Cut()
	p.wg.Wait()
}
