package testenv

import (
	"net/http"
	"sync"
)

// Gate holds HTTP requests (a WebSocket client's reconnections) while it
// is shut, and lets them through when it opens: a client kept away for as
// long as a test needs, which then comes back by itself, with no refused
// connection to show in a browser's console. The zero Gate is open. A
// held request keeps its server from closing: register t.Cleanup(g.Open)
// after the server's own cleanup, so that it runs first.
type Gate struct {
	mu   sync.Mutex
	shut chan struct{} // closed when the gate opens; nil while open
}

// Shut holds the requests that come from now on.
func (g *Gate) Shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shut == nil {
		g.shut = make(chan struct{})
	}
}

// Open lets the held requests, and those to come, through.
func (g *Gate) Open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shut != nil {
		close(g.shut)
		g.shut = nil
	}
}

// Handler passes requests to h, holding each while the gate is shut (or
// until its client gives up).
func (g *Gate) Handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		shut := g.shut
		g.mu.Unlock()
		if shut != nil {
			select {
			case <-shut:
			case <-r.Context().Done():
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}
