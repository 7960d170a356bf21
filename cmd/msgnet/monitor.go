package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/monitor"
	"github.com/msgnet/msgnet/web"
)

func init() { serveFeatures = append(serveFeatures, newMonitorFeature) }

// monitorFeature serves the monitoring endpoints (package monitor) on an
// HTTP listener of their own: `msgnet serve --monitor 127.0.0.1:8222`.
type monitorFeature struct {
	baseFeature
	addr  *string
	pprof *bool
}

func newMonitorFeature(fs *flag.FlagSet) serveFeature {
	return &monitorFeature{
		addr:  fs.String("monitor", "", "serve /metrics, /varz, /connz and /healthz over HTTP on this address, e.g. 127.0.0.1:8222 (empty: off)"),
		pprof: fs.Bool("pprof", false, "also serve runtime profiles at /debug/pprof/ on the --monitor address"),
	}
}

func (f *monitorFeature) options(*slog.Logger) ([]msgnet.Option, error) {
	if *f.pprof && *f.addr == "" {
		return nil, errors.New("--pprof needs --monitor")
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
	hs := &http.Server{
		Handler:           monitor.New(srv, monitor.WithPprof(*f.pprof), monitor.WithPage("/", web.Handler(srv))),
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
	log.Info("monitor started", "addr", l.Addr().String(), "pprof", *f.pprof)
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), monitorShutdownTimeout)
		defer cancel()
		if err := hs.Shutdown(sctx); err != nil {
			hs.Close()
		}
		<-done
	}, nil
}
