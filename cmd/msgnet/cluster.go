package main

import (
	"errors"
	"flag"
	"log/slog"
	"strings"
	"time"

	"github.com/msgnet/msgnet"
	natsbus "github.com/msgnet/msgnet/cluster/nats"
)

// The cluster feature of `msgnet serve`: with --cluster the node joins
// other nodes through an external NATS; with --cluster-listen it starts an
// embedded NATS server, routed to the other nodes' with --cluster-routes.
// Without these flags serve has no bus at all (docs/CLUSTER.md). The
// security flags are in clustersec.go; a route port beyond loopback needs
// them (or --cluster-insecure).
//
//	msgnet serve --id n1 --addr :8080 --cluster-listen 10.0.0.1:6222 --cluster-auth-file route.auth
//	msgnet serve --id n2 --addr :8080 --cluster-listen 10.0.0.2:6222 --cluster-auth-file route.auth --cluster-routes nats-route://10.0.0.1:6222
//	msgnet serve --id n3 --addr :8080 --cluster nats://10.0.0.9:4222 --cluster-creds n3.creds
func init() { serveFeatures = append(serveFeatures, newClusterFeature) }

type clusterFeature struct {
	baseFeature
	fs        *flag.FlagSet
	url       string
	listen    string
	routes    string
	name      string
	client    string
	advertise string
	prefix    string
	heartbeat time.Duration
	inProcess bool
	sec       clusterSecurity
}

func newClusterFeature(fs *flag.FlagSet) serveFeature {
	f := &clusterFeature{fs: fs}
	fs.StringVar(&f.url, "cluster", "", "join a cluster through the external NATS at this URL (nats://host:4222, comma-separated for several)")
	fs.StringVar(&f.listen, "cluster-listen", "", "start an embedded NATS server accepting routes from other nodes on HOST:PORT")
	fs.StringVar(&f.routes, "cluster-routes", "", "other nodes' --cluster-listen addresses, comma-separated nats-route://host:port")
	fs.StringVar(&f.name, "cluster-name", "msgnet", "NATS cluster name of the embedded server, the same on every node")
	fs.StringVar(&f.client, "cluster-client-listen", "", "also open the embedded NATS server's client port on HOST:PORT (default: a loopback port)")
	fs.StringVar(&f.advertise, "cluster-advertise", "", "address published in this node's load for balancers (default: the listen address)")
	fs.StringVar(&f.prefix, "cluster-prefix", "msgnet", "first token of the cluster's NATS subjects")
	fs.DurationVar(&f.heartbeat, "cluster-heartbeat", time.Second, "how often the node publishes its load; silent 3 times as long, a node is dropped")
	fs.BoolVar(&f.inProcess, "cluster-in-process", false, "connect to the embedded NATS server through an in-process pipe, not its loopback port: lower latency for messages crossing nodes one at a time, more CPU per message under load")
	f.sec.register(fs)
	return f
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func (f *clusterFeature) options(log *slog.Logger) ([]msgnet.Option, error) {
	if f.url == "" && f.listen == "" && f.routes == "" {
		if f.sec.given() {
			return nil, errors.New("the cluster's credential and TLS flags need --cluster or --cluster-listen")
		}
		return nil, nil // a single server: no bus
	}
	opts := []natsbus.Option{
		natsbus.WithLogger(log),
		natsbus.WithHeartbeat(f.heartbeat),
		natsbus.WithPrefix(f.prefix),
		natsbus.WithAdvertiseAddr(f.advertise),
	}
	switch {
	case f.url != "" && (f.listen != "" || f.routes != "" || f.client != "" || f.inProcess):
		return nil, errors.New("--cluster (external NATS) excludes --cluster-listen, --cluster-routes, --cluster-client-listen and --cluster-in-process (embedded NATS)")
	case f.url != "":
		nopts, err := f.sec.external()
		if err != nil {
			return nil, err
		}
		opts = append(opts, natsbus.WithURL(splitList(f.url)...), natsbus.WithNATSOptions(nopts...))
	case f.listen == "":
		return nil, errors.New("--cluster-routes needs --cluster-listen: an embedded server routes from its own cluster port")
	default:
		e := natsbus.Embedded{
			ClusterListen: f.listen,
			Routes:        splitList(f.routes),
			ClusterName:   f.name,
			ClientListen:  f.client,
			InProcess:     f.inProcess,
		}
		if err := f.sec.embedded(&e, log); err != nil {
			return nil, err
		}
		if dir := f.fs.Lookup("store").Value.String(); dir != "" {
			// Clustered JetStream: each node keeps its replicas in its own
			// directory, under its own server name.
			e.StoreDir, e.ServerName = dir, f.fs.Lookup("id").Value.String()
		}
		opts = append(opts, natsbus.WithEmbedded(e))
	}
	if id := f.fs.Lookup("id"); id != nil && id.Value.String() == id.DefValue {
		log.Warn("cluster: every node needs its own --id; this one uses the default", "id", id.DefValue)
	}
	bus, err := natsbus.New(opts...)
	if err != nil {
		return nil, err
	}
	if f.url != "" {
		log.Info("cluster: connected to NATS", "url", redactURLs(f.url))
	} else {
		log.Info("cluster: embedded NATS started", "routes_on", bus.ClusterAddr(), "routes", redactURLs(f.routes))
	}
	st, err := clusterStore(f.fs, bus, f.url != "", log)
	if err != nil {
		bus.Close()
		return nil, err
	}
	// The server attaches the bus when it serves and closes it (and the
	// store) when it stops.
	mopts := []msgnet.Option{msgnet.WithBus(bus)}
	if st != nil {
		mopts = append(mopts, msgnet.WithStore(st))
	}
	return mopts, nil
}
