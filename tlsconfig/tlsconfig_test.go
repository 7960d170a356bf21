package tlsconfig

import (
	"crypto/tls"
	"net"
	"os"
	"testing"
	"time"
)

// serveOnce accepts one TLS connection and completes its handshake.
func serveOnce(t *testing.T, l net.Listener) {
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.(*tls.Conn).Handshake()
		c.Close()
	}()
}

func peerSerial(t *testing.T, addr string, cfg *tls.Config) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String() +
		c.ConnectionState().PeerCertificates[0].NotBefore.String()
}

func TestCertificatesReloadWithoutRestart(t *testing.T) {
	dir := t.TempDir()
	files, err := WriteTestFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(files.ServerCert, files.ServerKey, "")
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", r.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := ClientConfig(files.CA, "", "")
	if err != nil {
		t.Fatal(err)
	}
	serveOnce(t, l)
	first := peerSerial(t, l.Addr().String(), client)

	// New files at the same paths (a new CA, so the client must trust it).
	time.Sleep(1100 * time.Millisecond) // mtime granularity and the once-a-second check
	files2, err := WriteTestFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range [][2]string{{files2.ServerCert, files.ServerCert}, {files2.ServerKey, files.ServerKey}} {
		b, _ := os.ReadFile(p[0])
		os.WriteFile(p[1], b, 0o600)
	}
	client2, _ := ClientConfig(files2.CA, "", "")
	serveOnce(t, l)
	if second := peerSerial(t, l.Addr().String(), client2); second == first {
		t.Fatal("the old certificate is still served")
	}
	if err := r.LastError(); err != nil {
		t.Fatal(err)
	}

	// A broken file keeps the last good certificate.
	os.WriteFile(files.ServerCert, []byte("not a certificate"), 0o600)
	if err := r.Reload(); err == nil {
		t.Fatal("reload of a broken certificate succeeded")
	}
	serveOnce(t, l)
	peerSerial(t, l.Addr().String(), client2)
}

func TestMutualTLSConfig(t *testing.T) {
	files, err := WriteTestFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(files.ServerCert, files.ServerKey, files.CA)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := r.Config().GetConfigForClient(nil)
	if cfg.ClientAuth != tls.RequireAndVerifyClientCert || cfg.MinVersion != tls.VersionTLS12 {
		t.Fatalf("client auth %v, min version %x", cfg.ClientAuth, cfg.MinVersion)
	}
	if _, err := New(files.ServerCert, files.ServerKey, files.ServerKey); err == nil {
		t.Fatal("a CA file without certificates was accepted")
	}
}
