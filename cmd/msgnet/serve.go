package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/managed"
)

// serveCmd is `msgnet serve`'s flags: its own and its features'.
type serveCmd struct {
	fs       *flag.FlagSet
	config   *string
	addr     *string
	id       *string
	mode     *string
	drain    *time.Duration
	quiet    *bool
	logLevel *string
	engine   *string
	features []serveFeature
}

// newServeCmd defines serve's flags on a new FlagSet.
func newServeCmd(stderr io.Writer) *serveCmd {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &serveCmd{
		fs:       fs,
		config:   fs.String("config", configFromEnv(), "read settings from this TOML file (keys: the flags' names; flags and MSGNET_* environment variables override it); default $MSGNET_CONFIG"),
		addr:     fs.String("addr", "127.0.0.1:8080", "address to listen on"),
		id:       fs.String("id", "main_server", "server id reported to clients"),
		mode:     fs.String("mode", "managed", "managed: BROADCAST, PRIVATE:<id>:<text>, JOIN:<group>, LEAVE:<group>, GROUP:<group>:<text>, anything else echoed as \"Echo: <text>\"; echo: payloads back unchanged"),
		drain:    fs.Duration("drain-timeout", 5*time.Second, "how long a graceful stop may take"),
		quiet:    fs.Bool("quiet", false, "log only warnings and errors (as --log-level warn)"),
		logLevel: fs.String("log-level", "info", "debug, info, warn or error"),
		engine:   fs.String("engine", "auto", "how sessions wait for input and where handlers run: parked (idle connections in an epoll set, a goroutine per burst; handlers may block), goroutine (a goroutine per connection), loop (handlers on event loops; they never block), loop-blocking (loop, idle loops waiting in epoll_wait: less CPU, for a process that does nothing else), auto (loop-blocking for echo, parked for managed, which may publish to a cluster)"),
	}
	for _, newFeature := range serveFeatures {
		c.features = append(c.features, newFeature(fs))
	}
	return c
}

// parse reads the command line, then the environment and the config file.
func (c *serveCmd) parse(args []string, environ []string) (*settings, error) {
	if err := c.fs.Parse(args); err != nil {
		return nil, errParse
	}
	if c.fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", c.fs.Arg(0))
	}
	return applySettings(c.fs, *c.config, environ)
}

// errParse is a command line the flag package has already explained.
var errParse = errors.New("bad command line")

// level is the log level the flags ask for.
func (c *serveCmd) level() (slog.Level, error) {
	if *c.quiet {
		return slog.LevelWarn, nil
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(*c.logLevel)); err != nil {
		return 0, fmt.Errorf("--log-level: %v", err)
	}
	return l, nil
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := newServeCmd(stderr)
	st, err := cmd.parse(args, os.Environ())
	if err != nil {
		if err != errParse {
			fmt.Fprintf(stderr, "msgnet serve: %v\n", err)
		}
		return 2
	}
	level, err := cmd.level()
	if err != nil {
		fmt.Fprintf(stderr, "msgnet serve: %v\n", err)
		return 2
	}
	var levelVar slog.LevelVar
	levelVar.Set(level)
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: &levelVar}))
	for _, w := range st.warnings {
		logger.Warn(w)
	}
	if st.file != "" {
		logger.Info("settings read", "config", st.file, "from_file", len(st.fromFile), "from_environment", len(st.fromEnv))
	}
	features, mode, id, addr, drain := cmd.features, cmd.mode, cmd.id, cmd.addr, cmd.drain
	opts := []msgnet.Option{
		msgnet.WithDrainTimeout(*drain),
		msgnet.WithLogger(logger),
	}
	engine := cmd.engine
	e, err := parseEngine(*engine, *mode)
	if err != nil {
		fmt.Fprintf(stderr, "msgnet serve: %v\n", err)
		return 2
	}
	opts = append(opts, msgnet.WithEngine(e))
	for _, f := range features {
		more, err := f.options(logger)
		if err != nil {
			fmt.Fprintf(stderr, "msgnet serve: %v\n", err)
			return 2
		}
		opts = append(opts, more...)
	}
	srv := msgnet.NewServer(*id, opts...)
	switch *mode {
	case "echo":
		srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.Send(msg) })
	case "managed":
		managed.Install(srv)
	default:
		fmt.Fprintf(stderr, "msgnet serve: unknown --mode %q (managed or echo)\n", *mode)
		return 2
	}
	l, err := srv.Listen(*addr)
	if err != nil {
		srv.Close() // releases what the features' options started (a cluster bus)
		fmt.Fprintf(stderr, "msgnet serve: %v\n", err)
		return 1
	}
	for _, f := range features {
		if l, err = f.listener(l); err != nil {
			l.Close()
			srv.Close()
			fmt.Fprintf(stderr, "msgnet serve: %v\n", err)
			return 1
		}
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	var stops []func()
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	for _, f := range features {
		if u, ok := f.(interface{ useFeatures([]serveFeature) }); ok {
			u.useFeatures(features)
		}
	}
	for _, f := range features {
		stop, err := f.start(ctx, srv, logger)
		if err != nil {
			fmt.Fprintf(stderr, "msgnet serve: %v\n", err)
			srv.Close()
			<-served
			return 1
		}
		if stop != nil {
			stops = append(stops, stop)
		}
	}
	logger.Info("server started", "id", *id, "addr", l.Addr().String(), "mode", *mode)
	stopReload := watchReload(cmd, args, srv, &levelVar, logger)
	defer stopReload()
	select {
	case <-ctx.Done():
	case err := <-served:
		served <- err
	}
	logger.Info("stopping", "sessions", srv.ConnectionCount())
	sctx, cancel := context.WithTimeout(context.Background(), *drain+time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("graceful stop incomplete", "err", err)
	}
	if err := <-served; !errors.Is(err, msgnet.ErrServerClosed) {
		logger.Error("serving failed", "err", err)
		return 1
	}
	logger.Info("server stopped")
	return 0
}

// parseEngine reads --engine; auto depends on the mode: echo's handler
// never blocks, so it runs on the event loops.
func parseEngine(name, mode string) (msgnet.Engine, error) {
	if name == "auto" {
		if mode == "echo" {
			return msgnet.EngineLoopBlocking, nil
		}
		return msgnet.EngineParked, nil
	}
	for _, e := range []msgnet.Engine{msgnet.EngineParked, msgnet.EngineGoroutine, msgnet.EngineLoop, msgnet.EngineLoopBlocking} {
		if e.String() == name {
			return e, nil
		}
	}
	return 0, fmt.Errorf("unknown --engine %q (parked, goroutine, loop, loop-blocking or auto)", name)
}

// serveFeature is an optional part of `msgnet serve` kept in a file of its
// own (the monitor, TLS, the cluster). Each file appends a constructor to
// serveFeatures in an init function; the constructor registers the
// feature's flags, and serve calls the methods in this order: options
// before the server is made, listener to wrap the TCP listener, start once
// it serves (stop runs when serve returns).
type serveFeature interface {
	options(log *slog.Logger) ([]msgnet.Option, error)
	listener(l net.Listener) (net.Listener, error)
	start(ctx context.Context, srv *msgnet.Server, log *slog.Logger) (stop func(), err error)
}

var serveFeatures []func(fs *flag.FlagSet) serveFeature

// baseFeature gives a feature the methods it does not need.
type baseFeature struct{}

func (baseFeature) options(*slog.Logger) ([]msgnet.Option, error) { return nil, nil }
func (baseFeature) listener(l net.Listener) (net.Listener, error) { return l, nil }
func (baseFeature) start(context.Context, *msgnet.Server, *slog.Logger) (func(), error) {
	return nil, nil
}

// sizeFlag parses byte sizes such as 1MiB, 64KiB, 512KB or 1000.
type sizeFlag int

func (s *sizeFlag) String() string { return strconv.Itoa(int(*s)) }

func (s *sizeFlag) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s = sizeFlag(n)
	return nil
}

func parseSize(v string) (int, error) {
	units := []struct {
		suffix string
		mult   int
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	v = strings.TrimSpace(v)
	mult := 1
	for _, u := range units {
		if strings.HasSuffix(strings.ToLower(v), strings.ToLower(u.suffix)) {
			v, mult = strings.TrimSpace(v[:len(v)-len(u.suffix)]), u.mult
			break
		}
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, errors.New("not a size: want e.g. 1MiB, 64KiB or 1000")
	}
	return n * mult, nil
}
