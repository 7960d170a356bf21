package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/msgnet/msgnet/tlsconfig"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// serveFails runs serve with args, which must be refused before it
// serves: exit 2 and a message containing every one of want.
func serveFails(t *testing.T, args []string, want ...string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), append([]string{"serve", "--addr", "127.0.0.1:0", "--quiet"}, args...), nil, &out, &errOut)
	if code != 2 {
		t.Fatalf("serve %q: exit %d, want 2; %s", args, code, errOut.String())
	}
	for _, w := range want {
		if !strings.Contains(errOut.String(), w) {
			t.Fatalf("serve %q said %q, want it to mention %q", args, errOut.String(), w)
		}
	}
}

// writeFile writes content into a new file of the test's temporary
// directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestServeClusterRefusesOpenPorts(t *testing.T) {
	files, err := tlsconfig.WriteTestFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:0", "nodes.example:0"} {
		serveFails(t, []string{"--cluster-listen", addr},
			"--cluster-listen "+addr+" is not a loopback address", "--cluster-auth-file", "--cluster-tls-ca", "--cluster-insecure")
	}
	serveFails(t, []string{"--cluster-listen", "127.0.0.1:0", "--cluster-client-listen", "0.0.0.0:0"},
		"--cluster-client-listen 0.0.0.0:0 is not a loopback address", "--cluster-client-auth-file", "--cluster-insecure")
	// TLS without client certificates encrypts but lets anyone in.
	serveFails(t, []string{"--cluster-listen", "127.0.0.1:0", "--cluster-client-listen", "0.0.0.0:0",
		"--cluster-client-tls-cert", files.ServerCert, "--cluster-client-tls-key", files.ServerKey},
		"--cluster-client-listen 0.0.0.0:0 is not a loopback address")
}

// Ports beyond loopback open with authentication, or with
// --cluster-insecure; loopback ones need neither.
func TestServeClusterListenAccepted(t *testing.T) {
	auth := writeFile(t, "route.auth", "msgnet:route secret\n")
	startServe(t, "--quiet", "--cluster-listen", "0.0.0.0:0", "--cluster-client-listen", "0.0.0.0:0", "--cluster-insecure")
	startServe(t, "--quiet", "--cluster-listen", "0.0.0.0:0", "--cluster-auth-file", auth)
	startServe(t, "--quiet", "--cluster-listen", "127.0.0.1:0", "--cluster-client-listen", "127.0.0.1:0")
	startServe(t, "--quiet", "--cluster-listen", "localhost:0")
}

func TestServeClusterSecretFileErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	empty := writeFile(t, "empty", "")
	newline := writeFile(t, "newline", "\n")
	noColon := writeFile(t, "nocolon", "justatoken\n")
	twoLines := writeFile(t, "twolines", "msgnet:secret\nmore\n")
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--cluster-listen", "127.0.0.1:0", "--cluster-auth-file", missing}, []string{"--cluster-auth-file", "no such file"}},
		{[]string{"--cluster-listen", "127.0.0.1:0", "--cluster-auth-file", empty}, []string{"--cluster-auth-file", "is empty"}},
		{[]string{"--cluster-listen", "127.0.0.1:0", "--cluster-auth-file", newline}, []string{"--cluster-auth-file", "is empty"}},
		{[]string{"--cluster-listen", "127.0.0.1:0", "--cluster-auth-file", noColon}, []string{"--cluster-auth-file", `"user:password"`}},
		{[]string{"--cluster-listen", "127.0.0.1:0", "--cluster-auth-file", twoLines}, []string{"--cluster-auth-file", "one line"}},
		{[]string{"--cluster-listen", "127.0.0.1:0", "--cluster-client-auth-file", empty}, []string{"--cluster-client-auth-file", "is empty"}},
		{[]string{"--cluster", "nats://127.0.0.1:1", "--cluster-creds", missing}, []string{"--cluster-creds", "no such file"}},
		{[]string{"--cluster", "nats://127.0.0.1:1", "--cluster-auth-file", empty}, []string{"--cluster-auth-file", "is empty"}},
		{[]string{"--cluster-listen", "127.0.0.1:0", "--cluster-tls-cert", missing}, []string{"go together"}},
		{[]string{"--cluster-listen", "127.0.0.1:0", "--cluster-creds", missing}, []string{"--cluster-creds is for an external NATS"}},
		{[]string{"--cluster", "nats://127.0.0.1:1", "--cluster-client-auth-file", empty}, []string{"--cluster-client-*"}},
		{[]string{"--cluster-auth-file", empty}, []string{"need --cluster or --cluster-listen"}},
	} {
		serveFails(t, c.args, c.want...)
	}
}

// Two nodes whose routes need credentials (read from a file with a
// trailing newline) and mutual TLS: a private message crosses.
func TestServeClusterRouteSecurity(t *testing.T) {
	auth := writeFile(t, "route.auth", "msgnet:route secret\n")
	ca, certs := writeRouteCerts(t, "node-a", "node-b")
	secure := func(node string) []string {
		return []string{"--cluster-auth-file", auth, "--cluster-tls-ca", ca,
			"--cluster-tls-cert", certs[node][0], "--cluster-tls-key", certs[node][1]}
	}
	route := freeAddr(t)
	a := startServe(t, append([]string{"--id", "node-a", "--quiet", "--cluster-listen", route, "--cluster-heartbeat", "100ms"}, secure("node-a")...)...)
	b := startServe(t, append([]string{"--id", "node-b", "--quiet", "--cluster-listen", "127.0.0.1:0",
		"--cluster-routes", "nats-route://" + route, "--cluster-heartbeat", "100ms"}, secure("node-b")...)...)
	alice, ag := managedClient(t, a, "alice")
	bob, bg := managedClient(t, b, "bob")
	privateCrosses(t, alice, ag, "bob", bg)
	privateCrosses(t, bob, bg, "alice", ag)
}

// The embedded server's client port with a token, and with mutual TLS.
func TestServeClusterClientPortSecurity(t *testing.T) {
	token := writeFile(t, "client.auth", "client token\n")
	port := freeAddr(t)
	startServe(t, "--quiet", "--cluster-listen", "127.0.0.1:0", "--cluster-client-listen", port, "--cluster-client-auth-file", token)
	if nc, err := nats.Connect("nats://"+port, nats.Token("guessed")); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("connect with a wrong token: %v, want an authorization error", err)
	}
	nc, err := nats.Connect("nats://"+port, nats.Token("client token"))
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()

	files, err := tlsconfig.WriteTestFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	port = freeAddr(t)
	startServe(t, "--quiet", "--cluster-listen", "127.0.0.1:0", "--cluster-client-listen", port,
		"--cluster-client-tls-cert", files.ServerCert, "--cluster-client-tls-key", files.ServerKey, "--cluster-client-tls-ca", files.CA)
	if nc, err := nats.Connect("tls://"+port, nats.RootCAs(files.CA)); err == nil {
		nc.Close()
		t.Fatal("connected without a client certificate")
	}
	nc, err = nats.Connect("tls://"+port, nats.RootCAs(files.CA), nats.ClientCert(files.ClientCert, files.ClientKey))
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
}

// An external NATS requiring a user and mutual TLS: serve joins with
// --cluster-auth-file and --cluster-tls-*, and is refused without them.
func TestServeClusterExternalSecurity(t *testing.T) {
	files, err := tlsconfig.WriteTestFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: files.ServerCert, KeyFile: files.ServerKey, CaFile: files.CA, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
		Username: "node", Password: "nats secret", TLSConfig: tc, TLSVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server did not start")
	}
	url := ns.ClientURL()
	auth := writeFile(t, "nats.auth", "node:nats secret\n")
	tlsFlags := []string{"--cluster-tls-ca", files.CA, "--cluster-tls-cert", files.ClientCert, "--cluster-tls-key", files.ClientKey}
	startServe(t, append([]string{"--id", "node-x", "--quiet", "--cluster", url, "--cluster-auth-file", auth}, tlsFlags...)...)
	serveFails(t, append([]string{"--cluster", url}, tlsFlags...), "Authorization Violation")
	serveFails(t, []string{"--cluster", url, "--cluster-auth-file", auth, "--cluster-tls-ca", files.CA})
}

// writeRouteCerts writes a CA and, for each name, a certificate and key
// valid for 127.0.0.1 as server and as client (routes are both). It
// returns the CA file and each name's certificate and key files.
func writeRouteCerts(t *testing.T, names ...string) (string, map[string][2]string) {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "route CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	ca := write("ca.pem", "CERTIFICATE", caDER)
	certs := map[string][2]string{}
	for i, name := range names {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certs[name] = [2]string{write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "EC PRIVATE KEY", kb)}
	}
	return ca, certs
}
