package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/transport/h2"
	"github.com/msgnet/msgnet/transport/ws"
)

func init() { serveFeatures = append(serveFeatures, newHTTPFeature) }

// httpFeature serves msgnet sessions to clients over HTTP on a listener of
// their own: `msgnet serve --http 127.0.0.1:8081`. WebSocket at /ws, and
// HTTP/2 streams at /msgnet: h2c (cleartext, prior knowledge) without TLS,
// h2 with TLS (--tls-cert, negotiated with ALPN, client certificates
// required as on the TCP port with --tls-client-ca). It is the same server
// as the TCP port: one session table, the same authentication, encryption,
// limits and timeouts.
type httpFeature struct {
	baseFeature
	addr    *string
	origins *string
	sec     *securityFeature
}

func newHTTPFeature(fs *flag.FlagSet) serveFeature {
	return &httpFeature{
		addr:    fs.String("http", "", "also serve clients over HTTP on this address: WebSocket at /ws, HTTP/2 streams at /msgnet (h2c, or h2 with --tls-cert); empty: off"),
		origins: fs.String("http-origins", "", "origins whose pages may open WebSocket sessions on --http, comma-separated host patterns such as app.example.com or *.example.com (default: the same origin only)"),
	}
}

// useFeatures finds the TLS settings, which --http shares with the TCP
// port.
func (f *httpFeature) useFeatures(all []serveFeature) {
	for _, o := range all {
		if s, ok := o.(*securityFeature); ok {
			f.sec = s
		}
	}
}

func (f *httpFeature) options(*slog.Logger) ([]msgnet.Option, error) {
	if *f.origins != "" && *f.addr == "" {
		return nil, errors.New("--http-origins needs --http")
	}
	return nil, nil
}

// httpShutdownTimeout bounds how long stop waits for requests in flight.
// Sessions are not requests it waits for: the server's own stop ends them.
const httpShutdownTimeout = 2 * time.Second

func (f *httpFeature) start(ctx context.Context, srv *msgnet.Server, log *slog.Logger) (func(), error) {
	if *f.addr == "" {
		return nil, nil
	}
	l, err := net.Listen("tcp", *f.addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /ws", ws.Handler(srv, ws.WithOriginPatterns(splitList(*f.origins)...)))
	mux.Handle("/msgnet", h2.Handler(srv))
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	var tlsCfg *tls.Config
	if f.sec != nil && f.sec.reloader != nil {
		tlsCfg = f.sec.reloader.ConfigFor("h2", "http/1.1")
		hs.TLSConfig = tlsCfg
	} else {
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		hs.Protocols = &p
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var err error
		if tlsCfg != nil {
			err = hs.ServeTLS(l, "", "")
		} else {
			err = hs.Serve(l)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP listener stopped serving", "err", err)
		}
	}()
	log.Info("HTTP listener started", "addr", l.Addr().String(), "tls", tlsCfg != nil, "paths", "/ws /msgnet")
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
		defer cancel()
		if err := hs.Shutdown(sctx); err != nil {
			hs.Close()
		}
		<-done
	}, nil
}
