package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/tlsconfig"
)

func init() { serveFeatures = append(serveFeatures, newSecurityFeature) }

// securityFeature adds TLS, authentication, encryption and abuse limits to
// `msgnet serve`.
type securityFeature struct {
	cert, key, clientCA *string
	authKeyFile         *string
	authKeysFile        *string
	pskFile             *string
	compress            *string

	reloader *tlsconfig.Reloader
}

func newSecurityFeature(fs *flag.FlagSet) serveFeature {
	return &securityFeature{
		cert:         fs.String("tls-cert", "", "serve TLS with this PEM certificate (reloaded when the file changes, or on SIGHUP)"),
		key:          fs.String("tls-key", "", "PEM private key for --tls-cert"),
		clientCA:     fs.String("tls-client-ca", "", "require client certificates signed by these PEM CAs (mutual TLS)"),
		authKeyFile:  fs.String("auth-key-file", "", "require clients to prove they hold the key in this file (HMAC challenge); every holder may claim any client id"),
		authKeysFile: fs.String("auth-keys-file", "", "require clients to prove they hold one of the keys in this file, each bound to the client ids it may claim (lines: KEY_ID SECRET [PATTERN,...])"),
		pskFile:      fs.String("encryption-key-file", "", "require clients to encrypt DATA with a key derived from this file's contents (16+ bytes)"),
		compress:     fs.String("compression", "zstd,s2,lz4,snappy", "codecs granted to clients that ask (empty: none)"),
	}
}

func (f *securityFeature) options(*slog.Logger) ([]msgnet.Option, error) {
	var opts []msgnet.Option
	var codecs []string
	if *f.compress != "" {
		codecs = strings.Split(*f.compress, ",")
	}
	opts = append(opts, msgnet.WithCompression(codecs...))
	if *f.authKeyFile != "" && *f.authKeysFile != "" {
		return nil, errors.New("--auth-key-file and --auth-keys-file exclude each other")
	}
	if *f.authKeyFile != "" {
		k, err := readKey(*f.authKeyFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, msgnet.WithAuthKey(k))
	}
	if *f.authKeysFile != "" {
		keys, err := readKeyring(*f.authKeysFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, msgnet.WithAuth(keys...))
	}
	if *f.pskFile != "" {
		k, err := readKey(*f.pskFile)
		if err != nil {
			return nil, err
		}
		if len(k) < 16 {
			return nil, errors.New("--encryption-key-file: the key must be at least 16 bytes")
		}
		opts = append(opts, msgnet.WithEncryption(k))
	}
	if (*f.cert == "") != (*f.key == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if *f.clientCA != "" && *f.cert == "" {
		return nil, errors.New("--tls-client-ca needs --tls-cert and --tls-key")
	}
	if *f.cert != "" {
		r, err := tlsconfig.New(*f.cert, *f.key, *f.clientCA)
		if err != nil {
			return nil, err
		}
		f.reloader = r
	}
	return opts, nil
}

func (f *securityFeature) listener(l net.Listener) (net.Listener, error) {
	if f.reloader == nil {
		return l, nil
	}
	return tls.NewListener(l, f.reloader.Config()), nil
}

// start reloads the certificates on SIGHUP.
func (f *securityFeature) start(ctx context.Context, _ *msgnet.Server, log *slog.Logger) (func(), error) {
	if f.reloader == nil {
		return nil, nil
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
				if err := f.reloader.Reload(); err != nil {
					log.Error("certificate reload failed; keeping the old ones", "err", err)
				} else {
					log.Info("certificates reloaded")
				}
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(hup); close(done) }, nil
}

// readKey reads a key file, without a trailing newline.
func readKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return []byte(strings.TrimRight(string(b), "\r\n")), nil
}

// readKeyring reads an --auth-keys-file: one key per line, as
//
//	KEY_ID SECRET [PATTERN,PATTERN...]
//
// where SECRET is the key's text (16 bytes or more, no white space) and
// the patterns are the client ids its holder may claim, '*' standing for
// any run of characters; without patterns, any. Blank lines and lines
// starting with '#' are ignored.
func readKeyring(path string) ([]msgnet.AuthKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys []msgnet.AuthKey
	seen := map[string]bool{}
	for i, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		where := fmt.Sprintf("%s:%d", path, i+1)
		if len(fields) < 2 || len(fields) > 3 {
			return nil, fmt.Errorf("%s: want KEY_ID SECRET [PATTERN,...], got %d fields", where, len(fields))
		}
		if seen[fields[0]] {
			return nil, fmt.Errorf("%s: key id %q appears twice", where, fields[0])
		}
		seen[fields[0]] = true
		if len(fields[1]) < 16 {
			return nil, fmt.Errorf("%s: the secret of key %q is shorter than 16 bytes", where, fields[0])
		}
		k := msgnet.AuthKey{ID: fields[0], Secret: []byte(fields[1])}
		if len(fields) == 3 {
			for _, p := range strings.Split(fields[2], ",") {
				if p == "" {
					return nil, fmt.Errorf("%s: an empty client id pattern", where)
				}
				k.ClientIDs = append(k.ClientIDs, p)
			}
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no keys", path)
	}
	return keys, nil
}

// clientSecurity holds the client flags of send and chat.
type clientSecurity struct {
	tls                  *bool
	ca, cert, key, sni   *string
	insecure             *bool
	authKeyFile, pskFile *string
	authKeyID            *string
	compress             *string
}

func addClientSecurityFlags(fs *flag.FlagSet) *clientSecurity {
	return &clientSecurity{
		tls:         fs.Bool("tls", false, "connect over TLS"),
		ca:          fs.String("tls-ca", "", "PEM CAs to verify the server with (default: the system's)"),
		cert:        fs.String("tls-cert", "", "client certificate for mutual TLS"),
		key:         fs.String("tls-key", "", "key for --tls-cert"),
		sni:         fs.String("tls-server-name", "", "name to verify the server's certificate against (default: the host of --addr)"),
		insecure:    fs.Bool("tls-insecure", false, "do not verify the server's certificate (testing only)"),
		authKeyFile: fs.String("auth-key-file", "", "answer the server's authentication challenge with this key"),
		authKeyID:   fs.String("auth-key-id", "", "which of the server's keys --auth-key-file holds (a server with --auth-keys-file)"),
		pskFile:     fs.String("encryption-key-file", "", "encrypt DATA with this pre-shared key"),
		compress:    fs.String("compression", "", "ask for compression: codecs in order of preference, e.g. s2,zstd"),
	}
}

func (c *clientSecurity) options() ([]msgnet.Option, error) {
	var opts []msgnet.Option
	if *c.tls || *c.ca != "" || *c.cert != "" {
		cfg, err := tlsconfig.ClientConfig(*c.ca, *c.cert, *c.key)
		if err != nil {
			return nil, err
		}
		cfg.ServerName = *c.sni
		cfg.InsecureSkipVerify = *c.insecure
		opts = append(opts, msgnet.WithTLS(cfg))
	}
	if *c.authKeyFile != "" {
		k, err := readKey(*c.authKeyFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, msgnet.WithAuth(msgnet.AuthKey{ID: *c.authKeyID, Secret: k}))
	}
	if *c.pskFile != "" {
		k, err := readKey(*c.pskFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, msgnet.WithEncryption(k))
	}
	if *c.compress != "" {
		opts = append(opts, msgnet.WithCompression(strings.Split(*c.compress, ",")...))
	}
	return opts, nil
}
