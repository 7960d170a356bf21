package main

import (
	"flag"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/msgnet/msgnet"
)

// Reloading serve's settings on SIGHUP: the config file and the
// environment are read again (flags on the command line still win), and
// what can change safely is applied: the limits (Server.SetLimits) and the
// log level; certificates are re-read from their files too (security.go).
// Anything else that changed needs a restart: it is refused with a message
// and the running value kept.

// reloadable are the flags a SIGHUP applies.
var reloadable = append([]string{"quiet", "log-level"}, limitFlags...)

// watchReload reloads on SIGHUP until the returned stop is called.
func watchReload(cmd *serveCmd, args []string, srv *msgnet.Server, level *slog.LevelVar, log *slog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-hup:
				reload(cmd, args, os.Environ(), srv, level, log)
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(hup); close(done); <-finished }
}

// reload reads the settings again and applies what changed, as the
// package comment says. cmd holds the settings now; it is updated with
// what was applied.
func reload(cmd *serveCmd, args, environ []string, srv *msgnet.Server, level *slog.LevelVar, log *slog.Logger) {
	next := newServeCmd(io.Discard)
	if _, err := next.parse(args, environ); err != nil {
		log.Error("config reload failed; nothing changed", "err", err)
		return
	}
	var changed, refused []string
	next.fs.VisitAll(func(f *flag.Flag) {
		cur := cmd.fs.Lookup(f.Name)
		if cur.Value.String() == f.Value.String() {
			return
		}
		if !slices.Contains(reloadable, f.Name) {
			refused = append(refused, f.Name)
			log.Error("config reload: this setting needs a restart; the running value is kept",
				"setting", f.Name, "running", cur.Value.String(), "new", f.Value.String())
			return
		}
		cmd.fs.Set(f.Name, f.Value.String())
		changed = append(changed, f.Name)
		log.Info("config reload: setting changed", "setting", f.Name, "value", f.Value.String())
	})
	if l, err := cmd.level(); err == nil {
		level.Set(l)
	} else {
		log.Error("config reload: bad log level kept out", "err", err)
	}
	srv.SetLimits(limitsFromFlags(cmd.fs))
	log.Info("config reloaded", "changed", len(changed), "refused", len(refused))
}
