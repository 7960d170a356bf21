// Package tlsconfig builds TLS configurations for msgnet servers whose
// certificates can be replaced on disk without a restart.
//
//	r, err := tlsconfig.New("server.crt", "server.key", "clients-ca.pem") // CA "" for no client certs
//	srv := msgnet.NewServer("main", msgnet.WithTLS(r.Config()))
//
// The files are checked at most once a second, on a new connection, and
// reloaded when they changed; Reload forces it (e.g. on SIGHUP). A reload
// that fails keeps the previous certificates and is reported by Reload and
// LastError. TLS 1.2 is the minimum; Go negotiates 1.3 when the peer has it.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// Reloader holds the current certificate and client CA pool.
type Reloader struct {
	certFile, keyFile, caFile string

	mu        sync.Mutex
	cfg       *tls.Config // current, handed to each handshake
	stamp     string      // files' modification times and sizes at the last load
	checked   time.Time
	lastError error
}

// New loads the server certificate and key and, if clientCAFile is not
// empty, requires and verifies client certificates signed by its CAs
// (mutual TLS).
func New(certFile, keyFile, clientCAFile string) (*Reloader, error) {
	r := &Reloader{certFile: certFile, keyFile: keyFile, caFile: clientCAFile}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Config returns the configuration to serve with. Every handshake gets the
// certificates current at that moment.
func (r *Reloader) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			r.maybeReload()
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.cfg, nil
		},
	}
}

// ConfigFor is Config for a server that negotiates application protocols
// with ALPN, such as "h2" and "http/1.1" for an HTTP server: each
// handshake gets the current certificates and nextProtos.
func (r *Reloader) ConfigFor(nextProtos ...string) *tls.Config {
	protos := append([]string(nil), nextProtos...)
	var mu sync.Mutex
	var base, withProtos *tls.Config // the last certificates seen, and their clone with protos
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: protos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			r.maybeReload()
			r.mu.Lock()
			cur := r.cfg
			r.mu.Unlock()
			mu.Lock()
			defer mu.Unlock()
			if cur != base {
				base, withProtos = cur, cur.Clone()
				withProtos.NextProtos = protos
			}
			return withProtos, nil
		},
	}
}

// Reload reads the files now. On failure the previous certificates stay.
func (r *Reloader) Reload() error {
	stamp, err := r.fileStamp()
	if err == nil {
		var cfg *tls.Config
		cfg, err = r.load()
		if err == nil {
			r.mu.Lock()
			r.cfg, r.stamp, r.lastError = cfg, stamp, nil
			r.mu.Unlock()
			return nil
		}
	}
	r.mu.Lock()
	r.lastError = err
	r.mu.Unlock()
	return err
}

// LastError is the error of the last reload attempt, nil if it worked.
func (r *Reloader) LastError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastError
}

func (r *Reloader) maybeReload() {
	r.mu.Lock()
	due := time.Since(r.checked) >= time.Second
	if due {
		r.checked = time.Now()
	}
	old := r.stamp
	r.mu.Unlock()
	if !due {
		return
	}
	if stamp, err := r.fileStamp(); err == nil && stamp != old {
		r.Reload()
	}
}

func (r *Reloader) fileStamp() (string, error) {
	var stamp string
	for _, f := range []string{r.certFile, r.keyFile, r.caFile} {
		if f == "" {
			continue
		}
		fi, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		stamp += fmt.Sprintf("%s:%d:%d;", f, fi.ModTime().UnixNano(), fi.Size())
	}
	return stamp, nil
}

func (r *Reloader) load() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return nil, fmt.Errorf("tlsconfig: %w", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if r.caFile != "" {
		pem, err := os.ReadFile(r.caFile)
		if err != nil {
			return nil, fmt.Errorf("tlsconfig: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("tlsconfig: no certificates in " + r.caFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// ClientConfig returns a client configuration trusting the CAs in caFile
// (the system's when empty) and, when certFile is set, presenting that
// certificate for mutual TLS.
func ClientConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("tlsconfig: no certificates in " + caFile)
		}
		cfg.RootCAs = pool
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
