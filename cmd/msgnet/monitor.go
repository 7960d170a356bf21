package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/monitor"
	"github.com/msgnet/msgnet/monitor/hostcheck"
	"github.com/msgnet/msgnet/web"
)

func init() { serveFeatures = append(serveFeatures, newMonitorFeature) }

// monitorFeature serves the monitoring endpoints (package monitor) and the
// live page (package web) on an HTTP listener of their own:
// `msgnet serve --monitor 127.0.0.1:8222`.
type monitorFeature struct {
	baseFeature
	fs    *flag.FlagSet // to read the TLS flags, which another feature defines
	addr  *string
	pprof *bool
	chat  *bool
	hosts *string

	allowed []string // --monitor-allowed-hosts, split
}

func newMonitorFeature(fs *flag.FlagSet) serveFeature {
	return &monitorFeature{
		fs:    fs,
		addr:  fs.String("monitor", "", "serve /metrics, /varz, /connz, /healthz and the live page over HTTP on this address, e.g. 127.0.0.1:8222 (empty: off)"),
		pprof: fs.Bool("pprof", false, "also serve runtime profiles at /debug/pprof/ on the --monitor address"),
		chat: fs.Bool("monitor-chat", false, "also serve the live page's chat: client sessions over WebSocket at /ws on the --monitor address. "+
			"They go through --auth-key-file and --encryption-key-file like any session, but the monitor is plain HTTP, "+
			"so it cannot be combined with --tls-client-ca: the chat would let clients in without a certificate"),
		hosts: fs.String("monitor-allowed-hosts", "", "comma-separated host names, IP addresses or *.domain the --monitor address also answers to "+
			"(it always answers to localhost, loopback addresses and the IP a request came in on); "+
			"requests naming any other host in Host or Origin get 403, which stops DNS rebinding"),
	}
}

func (f *monitorFeature) options(*slog.Logger) ([]msgnet.Option, error) {
	if *f.addr == "" {
		for _, needs := range []struct {
			set  bool
			name string
		}{{*f.pprof, "--pprof"}, {*f.chat, "--monitor-chat"}, {*f.hosts != "", "--monitor-allowed-hosts"}} {
			if needs.set {
				return nil, fmt.Errorf("%s needs --monitor", needs.name)
			}
		}
	}
	if *f.hosts != "" {
		f.allowed = strings.Split(*f.hosts, ",")
		if _, err := hostcheck.New(f.allowed...); err != nil {
			return nil, fmt.Errorf("--monitor-allowed-hosts: %w", err)
		}
	}
	// The chat's sessions reach the server through the monitor's listener,
	// which has no TLS: with client certificates required on the client
	// port they would be a way in without one. Serving the monitor with
	// that TLS config instead would demand certificates of Prometheus,
	// health checkers and browsers too, for the sake of the chat alone.
	if *f.chat {
		if ca := f.fs.Lookup("tls-client-ca"); ca != nil && ca.Value.String() != "" {
			return nil, errors.New("--monitor-chat cannot be used with --tls-client-ca: " +
				"chat sessions arrive over the monitor's plain HTTP, without the client certificate the client port requires")
		}
	}
	return nil, nil
}

// monitorShutdownTimeout bounds how long stop waits for requests in flight
// (a CPU profile may be one) before it closes their connections.
const monitorShutdownTimeout = 2 * time.Second

func (f *monitorFeature) start(ctx context.Context, srv *msgnet.Server, log *slog.Logger) (func(), error) {
	if *f.addr == "" {
		return nil, nil
	}
	l, err := net.Listen("tcp", *f.addr)
	if err != nil {
		return nil, err
	}
	pageOpts := []web.Option{web.WithAllowedHosts(f.allowed...)}
	if *f.chat {
		pageOpts = append(pageOpts, web.WithChat())
	}
	hs := &http.Server{
		Handler: monitor.New(srv,
			monitor.WithPprof(*f.pprof),
			monitor.WithAllowedHosts(f.allowed...),
			monitor.WithPage("/", web.Handler(srv, pageOpts...))),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			log.Error("monitor stopped serving", "err", err)
		}
	}()
	log.Info("monitor started", "addr", l.Addr().String(), "pprof", *f.pprof, "chat", *f.chat)
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), monitorShutdownTimeout)
		defer cancel()
		if err := hs.Shutdown(sctx); err != nil {
			hs.Close()
		}
		<-done
	}, nil
}
