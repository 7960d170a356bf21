package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/msgnet/msgnet"
	natsbus "github.com/msgnet/msgnet/cluster/nats"
)

// The streams of `msgnet serve` (docs/PROTOCOL.md 6.7): kept in memory by
// default; with --store DIR in JetStream on disk, which survives kill -9;
// in a cluster with an embedded NATS, in JetStream replicated across the
// nodes (the cluster feature builds that store, from these flags).
//
//	msgnet serve --store /var/lib/msgnet
//	msgnet serve --id n1 --cluster-listen :6222 --cluster-routes ... --store /var/lib/msgnet
func init() { serveFeatures = append(serveFeatures, newStoreFeature) }

type storeFeature struct {
	baseFeature
	fs       *flag.FlagSet
	dir      string
	replicas int
	streams  bool
	messages int
	bytes    sizeFlag
	age      time.Duration
	groups   string
	memory   sizeFlag
}

func newStoreFeature(fs *flag.FlagSet) serveFeature {
	d := msgnet.DefaultRetention()
	f := &storeFeature{fs: fs, bytes: sizeFlag(d.MaxBytes), memory: sizeFlag(msgnet.DefaultMemoryStoreBytes)}
	fs.StringVar(&f.dir, "store", "", "keep streams in JetStream in this directory, surviving a restart or kill -9 (default: in memory); in a cluster with --cluster-listen, replicated across the nodes; with --cluster (external NATS), 'jetstream' uses that NATS's JetStream")
	fs.IntVar(&f.replicas, "store-replicas", 0, "servers holding each stream: 0 for 1 alone and 3 in a cluster (which then needs 3 nodes or more)")
	fs.BoolVar(&f.streams, "streams", true, "offer acknowledged delivery (streams); false: SendGroup and SendTo keep nothing")
	fs.Var(&f.memory, "store-memory", "without --store: bytes all streams keep in memory together, each message counting its payload and 48 bytes, e.g. 256MiB")
	fs.IntVar(&f.messages, "retention-messages", d.MaxMessages, "messages each stream keeps")
	fs.Var(&f.bytes, "retention-bytes", "payload bytes each stream keeps, e.g. 16MiB")
	fs.DurationVar(&f.age, "retention-age", d.MaxAge, "how long each stream keeps a message")
	fs.StringVar(&f.groups, "group-retention", "", "retention of the groups matching a pattern, comma-separated PATTERN=MESSAGES/BYTES/AGE, e.g. 'ticker-*=1000/1MiB/1m' (0 or empty keeps the default)")
	return f
}

func (f *storeFeature) options(log *slog.Logger) ([]msgnet.Option, error) {
	if !f.streams {
		if f.dir != "" {
			return nil, errors.New("--store needs streams: drop --streams=false")
		}
		return []msgnet.Option{msgnet.WithoutStreams()}, nil
	}
	if f.messages < 0 || f.bytes < 0 || f.age < 0 {
		return nil, errors.New("retention limits cannot be negative")
	}
	if f.memory <= 0 {
		return nil, errors.New("--store-memory must be positive")
	}
	opts := []msgnet.Option{msgnet.WithRetention(msgnet.Retention{MaxMessages: f.messages, MaxBytes: int64(f.bytes), MaxAge: f.age})}
	groups, err := parseGroupRetention(f.groups)
	if err != nil {
		return nil, err
	}
	for _, g := range groups {
		opts = append(opts, msgnet.WithGroupRetention(g.pattern, g.r))
	}
	if f.dir == "" {
		return append(opts, msgnet.WithStore(msgnet.NewMemoryStore(int64(f.memory)))), nil
	}
	if clustered(f.fs) {
		return opts, nil // the cluster feature's store
	}
	if f.replicas > 1 {
		return nil, errors.New("--store-replicas above 1 needs a cluster (--cluster-listen)")
	}
	st, err := natsbus.OpenStore(f.dir, natsbus.StoreOptions{Logger: log})
	if err != nil {
		return nil, err
	}
	log.Info("streams kept in JetStream", "dir", f.dir)
	// The server closes the store when it stops.
	return append(opts, msgnet.WithStore(st)), nil
}

// clustered reports whether serve's flags join a cluster.
func clustered(fs *flag.FlagSet) bool {
	for _, name := range []string{"cluster", "cluster-listen"} {
		if fl := fs.Lookup(name); fl != nil && fl.Value.String() != "" {
			return true
		}
	}
	return false
}

// clusterStore returns the store of a cluster node, per --store and
// --store-replicas: nil for memory. The embedded NATS server needs the
// directory before it starts (storeDir), the store the bus after.
func clusterStore(fs *flag.FlagSet, bus *natsbus.Bus, external bool, log *slog.Logger) (*natsbus.Store, error) {
	dir := fs.Lookup("store").Value.String()
	if dir == "" {
		return nil, nil
	}
	if external && dir != "jetstream" {
		return nil, fmt.Errorf("with --cluster, streams are kept in that NATS's JetStream: give --store jetstream, not a directory")
	}
	replicas, _ := strconv.Atoi(fs.Lookup("store-replicas").Value.String())
	if replicas == 0 {
		replicas = 3
	}
	st, err := bus.Store(natsbus.StoreOptions{Replicas: replicas, Logger: log})
	if err != nil {
		return nil, err
	}
	log.Info("streams kept in JetStream, replicated", "replicas", replicas)
	return st, nil
}

type groupRetention struct {
	pattern string
	r       msgnet.Retention
}

// parseGroupRetention reads --group-retention.
func parseGroupRetention(v string) ([]groupRetention, error) {
	var out []groupRetention
	for _, item := range splitList(v) {
		pattern, limits, ok := strings.Cut(item, "=")
		parts := strings.Split(limits, "/")
		if !ok || pattern == "" || len(parts) != 3 {
			return nil, fmt.Errorf("--group-retention %q: want PATTERN=MESSAGES/BYTES/AGE", item)
		}
		var g groupRetention
		g.pattern = pattern
		var err error
		if parts[0] != "" {
			if g.r.MaxMessages, err = strconv.Atoi(parts[0]); err != nil || g.r.MaxMessages < 0 {
				return nil, fmt.Errorf("--group-retention %q: messages %q", item, parts[0])
			}
		}
		if parts[1] != "" {
			n, err := parseSize(parts[1])
			if err != nil || n < 0 {
				return nil, fmt.Errorf("--group-retention %q: bytes %q", item, parts[1])
			}
			g.r.MaxBytes = int64(n)
		}
		if parts[2] != "" && parts[2] != "0" {
			if g.r.MaxAge, err = time.ParseDuration(parts[2]); err != nil || g.r.MaxAge < 0 {
				return nil, fmt.Errorf("--group-retention %q: age %q", item, parts[2])
			}
		}
		out = append(out, g)
	}
	return out, nil
}
