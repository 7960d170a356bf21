package natsbus

import (
	"crypto/tls"
	"errors"
	"fmt"
	"regexp"

	"github.com/nats-io/nats-server/v2/server"
)

// RouteTLSConfig builds Embedded.RouteTLS from PEM files: this node's
// certificate and key, and the CAs that every node's certificate must be
// signed by. Routes are both dialled and accepted, so the certificate must
// allow server and client authentication (or name no extended key usage),
// and it is checked against the CAs in both directions. The error names
// the file that could not be used.
func RouteTLSConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" || caFile == "" {
		return nil, errors.New("natsbus: route TLS needs a certificate, its key and the CA")
	}
	cfg, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: certFile, KeyFile: keyFile, CaFile: caFile, Verify: true})
	if err == nil && cfg == nil {
		err = fmt.Errorf("cannot read %s", caFile)
	}
	if err != nil {
		return nil, fmt.Errorf("natsbus: route TLS: %w", err)
	}
	// As nats-server does for a cluster's tls block: the CAs that check
	// peers accepted also check the servers this node dials.
	cfg.RootCAs = cfg.ClientCAs
	return cfg, nil
}

// ClientTLSConfig builds Embedded.ClientTLS from PEM files: the server's
// certificate and key and, when caFile is set, the CAs that clients'
// certificates must be signed by (clients without one are refused).
func ClientTLSConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("natsbus: client port TLS needs a certificate and its key")
	}
	cfg, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: certFile, KeyFile: keyFile, CaFile: caFile, Verify: caFile != ""})
	if err == nil && cfg == nil {
		err = fmt.Errorf("cannot read %s", caFile)
	}
	if err != nil {
		return nil, fmt.Errorf("natsbus: client port TLS: %w", err)
	}
	return cfg, nil
}

// bcryptHash is how nats-server recognizes a hashed password; a node both
// checks and sends its passwords, so they must be plain.
var bcryptHash = regexp.MustCompile(`^\$2[abxy]\$\d{2}\$`)

// secure applies e's route and client port security to o.
func secure(e Embedded, o *server.Options) error {
	switch {
	case (e.RouteUser == "") != (e.RoutePassword == ""):
		return errors.New("natsbus: RouteUser and RoutePassword go together")
	case (e.RouteUser != "" || e.RouteTLS != nil) && e.ClusterListen == "":
		return errors.New("natsbus: route credentials and TLS need a cluster listen address")
	case (e.ClientUser == "") != (e.ClientPassword == ""):
		return errors.New("natsbus: ClientUser and ClientPassword go together")
	case e.ClientToken != "" && e.ClientUser != "":
		return errors.New("natsbus: ClientToken excludes ClientUser and ClientPassword")
	case bcryptHash.MatchString(e.RoutePassword) || bcryptHash.MatchString(e.ClientPassword):
		return errors.New("natsbus: a password must be plain, not a bcrypt hash: the node sends it too")
	}
	o.Cluster.Username, o.Cluster.Password = e.RouteUser, e.RoutePassword
	if t := e.RouteTLS; t != nil {
		switch {
		case t.ClientAuth != tls.RequireAndVerifyClientCert || t.ClientCAs == nil:
			return errors.New("natsbus: RouteTLS must verify other nodes' certificates (ClientCAs and tls.RequireAndVerifyClientCert; see RouteTLSConfig)")
		case t.InsecureSkipVerify:
			return errors.New("natsbus: RouteTLS must verify the nodes it dials (InsecureSkipVerify is set)")
		case len(t.Certificates) == 0 && (t.GetCertificate == nil || t.GetClientCertificate == nil):
			return errors.New("natsbus: RouteTLS has no certificate to present")
		}
		if t.RootCAs == nil {
			t = t.Clone()
			t.RootCAs = t.ClientCAs
		}
		o.Cluster.TLSConfig = t
	}
	o.Username, o.Password, o.Authorization = e.ClientUser, e.ClientPassword, e.ClientToken
	if e.ClientTLS != nil {
		o.TLSConfig = e.ClientTLS
		o.TLSVerify = e.ClientTLS.ClientAuth == tls.RequireAndVerifyClientCert
	}
	return nil
}
