//go:build linux

package conn

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// acceptPair returns a Socket accepted from a prepared listener and the
// dialled end of it.
func acceptPair(t *testing.T, keepAlive bool) (*Socket, *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	rc, err := l.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := PrepareListener(rc, keepAlive); err != nil {
		t.Fatal(err)
	}
	a := NewAcceptor(rc)
	if _, err := a.Accept(); err != ErrWouldBlock {
		t.Fatalf("nothing pending: got %v, want ErrWouldBlock", err)
	}
	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := a.Accept()
		if err == nil {
			t.Cleanup(func() { s.Close() })
			return s, nc.(*net.TCPConn)
		}
		if err != ErrWouldBlock || time.Now().After(deadline) {
			t.Fatalf("accept: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
}

func sockopt(t *testing.T, s *Socket, level, opt int) int {
	t.Helper()
	var v int
	var err error
	s.Control(func(fd uintptr) { v, err = unix.GetsockoptInt(int(fd), level, opt) })
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// An accepted socket has from its listener what Go sets on each accepted
// connection: no Nagle delay, and keepalive when asked for.
func TestSocketInheritsListenerOptions(t *testing.T) {
	s, _ := acceptPair(t, true)
	if sockopt(t, s, unix.IPPROTO_TCP, unix.TCP_NODELAY) == 0 {
		t.Error("TCP_NODELAY not set on the accepted socket")
	}
	if sockopt(t, s, unix.SOL_SOCKET, unix.SO_KEEPALIVE) == 0 {
		t.Error("SO_KEEPALIVE not set on the accepted socket")
	}
	if v := sockopt(t, s, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE); v != 15 {
		t.Errorf("TCP_KEEPIDLE = %d, want 15", v)
	}
	s2, _ := acceptPair(t, false)
	if sockopt(t, s2, unix.SOL_SOCKET, unix.SO_KEEPALIVE) != 0 {
		t.Error("SO_KEEPALIVE set though not asked for")
	}
}

func TestSocketAddresses(t *testing.T) {
	s, nc := acceptPair(t, false)
	if got, want := s.RemoteAddr().String(), nc.LocalAddr().String(); got != want {
		t.Errorf("RemoteAddr %s, want %s", got, want)
	}
	if got, want := s.LocalAddr().String(), nc.RemoteAddr().String(); got != want {
		t.Errorf("LocalAddr %s, want %s", got, want)
	}
	if s.PeerIP().String() != "127.0.0.1" {
		t.Errorf("PeerIP %s", s.PeerIP())
	}
}

// Read and Write without waiting stay on the descriptor; a read that must
// wait makes the blocking duplicate once, and both ends see each other's
// bytes and the close.
func TestSocketReadWrite(t *testing.T) {
	s, nc := acceptPair(t, false)
	if _, err := s.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if _, err := io.ReadFull(nc, b); err != nil || string(b) != "ping" {
		t.Fatalf("peer read %q %v", b, err)
	}
	if s.nc != nil {
		t.Fatal("a write the socket took at once made a blocking duplicate")
	}
	type result struct {
		n   int
		err error
	}
	read := make(chan result, 1)
	go func() {
		n, err := io.ReadFull(s, b) // waits: nothing there yet
		read <- result{n, err}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for { // the read waits on the duplicate once it exists
		s.mu.Lock()
		made := s.nc != nil
		s.mu.Unlock()
		if made {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a read with nothing to read made no duplicate to wait on")
		}
		time.Sleep(time.Millisecond)
	}
	nc.Write([]byte("pong"))
	if r := <-read; r.err != nil || string(b[:r.n]) != "pong" {
		t.Fatalf("read %q %v", b[:r.n], r.err)
	}
	s.Close()
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Read(b); err != io.EOF {
		t.Fatalf("peer after Close: %v, want EOF (both descriptors closed)", err)
	}
	if _, err := s.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
	if err := s.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
}

// Deadlines set before the duplicate exists hold once it does: a read
// deadline in the past fails a read that would wait, and a write deadline
// bounds a write to a peer that never reads.
func TestSocketDeadlines(t *testing.T) {
	s, _ := acceptPair(t, false)
	s.SetReadDeadline(time.Unix(1, 0))
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v", err)
	}
	s.SetReadDeadline(time.Time{})

	s.SetWriteBuffer(4096)
	s.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	start := time.Now()
	_, err := s.Write(make([]byte, 64<<20)) // far more than the buffers hold
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write to a peer that never reads: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("write took %v past a 200ms deadline", d)
	}
}

// A batch the socket cannot take at once goes out whole through the
// duplicate, in order, as the peer reads.
func TestSocketWriteBatchToSlowPeer(t *testing.T) {
	s, nc := acceptPair(t, false)
	s.SetWriteBuffer(4096)
	var want bytes.Buffer
	w := new(writer)
	for i := range 64 {
		ch := &chunk{b: bytes.Repeat([]byte{byte('a' + i%26)}, 32<<10)}
		want.Write(ch.b)
		w.batch = append(w.batch, ch)
	}
	var got bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.CopyN(&got, nc, int64(want.Len()))
	}()
	n, err := s.writeBatch(w)
	if err != nil || n != want.Len() {
		t.Fatalf("writeBatch: %d %v, want %d", n, err, want.Len())
	}
	wg.Wait()
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("the peer got %d bytes, not the batch in order", got.Len())
	}
}

// Close while a system call uses the descriptor waits for it: the number
// cannot be freed, and reused by another socket, under the call.
func TestSocketCloseWaitsForUse(t *testing.T) {
	s, nc := acceptPair(t, false)
	inside, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		var werr error
		err := s.Control(func(fd uintptr) {
			close(inside)
			<-release
			// Still open: a write reaches the peer.
			_, werr = unix.Write(int(fd), []byte("late"))
		})
		done <- errors.Join(err, werr)
	}()
	<-inside
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s.Control(func(uintptr) {}) == nil {
		t.Fatal("Control after Close ran")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(nc)
	if string(b) != "late" || err != nil {
		t.Fatalf("peer got %q %v; want the write made under Control, then EOF", b, err)
	}
}

// A refused connection's last word (LingerClose) reaches the peer whole,
// lingering on a duplicate that owns the socket alone: the Socket's own
// descriptor is closed at once.
func TestSocketLingerClose(t *testing.T) {
	s, nc := acceptPair(t, false)
	if _, err := s.Write([]byte("refused")); err != nil {
		t.Fatal(err)
	}
	nc.Write([]byte("hello the server never reads")) // unread input: closing at once would reset
	done := make(chan struct{})
	go func() {
		defer close(done)
		LingerClose(s)
	}()
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(nc)
	if string(b) != "refused" || err != nil {
		t.Fatalf("peer got %q %v; want the last word, then EOF", b, err)
	}
	if s.Control(func(uintptr) {}) == nil {
		t.Fatal("the Socket's descriptor is still open during the linger")
	}
	nc.Close() // the peer's FIN ends the linger
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("LingerClose did not end on the peer's close")
	}
}
