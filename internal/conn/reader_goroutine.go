package conn

// The goroutine reader: one goroutine for the connection's life, with its
// own buffer, in blocking reads on the Go runtime's poller. It serves every
// connection that cannot be parked: TLS (crypto/tls may hold decrypted
// bytes that no socket readiness event announces), WebSocket and HTTP/2
// streams, the client side, and servers that do not park.

// ReserveReader claims the reader's role before Start, so that the
// connection cannot end before its reader runs: a client holds a new
// connection so until it has installed it.
func (c *Conn) ReserveReader() {
	c.mu.Lock()
	c.flags |= readerActive
	c.mu.Unlock()
}

// Start starts the connection's reader goroutine, unless the connection is
// already closed.
func (c *Conn) Start() {
	c.mu.Lock()
	c.kind = goroutineReader
	run := c.flags.has(readerActive) || c.claimReaderLocked()
	c.mu.Unlock()
	if run {
		go c.readBlocking()
	}
}

func (c *Conn) readBlocking() {
	buf, n := c.resume(make([]byte, 16<<10))
	c.pending = nil
	if n > 0 {
		n = c.ingest(buf, n)
	}
	for !c.stopRead.Load() {
		if n == len(buf) {
			buf = c.grow(buf, n)
		}
		nr, err := c.nc.Read(buf[n:])
		if nr > 0 {
			c.touch()
			c.bytesIn.Add(uint64(nr))
			n = c.ingest(buf, n+nr)
		}
		if err != nil {
			c.endOfInput(buf[:n], err)
			break
		}
		if n == 0 && len(buf) > readBufSize {
			buf = make([]byte, 16<<10) // one large message must not stay with the connection
		}
	}
	c.releaseReader()
}
