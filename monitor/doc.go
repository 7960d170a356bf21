// Package monitor exposes a msgnet server's state to operators: Prometheus
// metrics, JSON endpoints in the manner of NATS's /varz and /connz, a health
// check and, when asked for, runtime profiles.
//
// Serve everything on an address of its own:
//
//	srv := msgnet.NewServer("main_server", msgnet.WithLogger(logger))
//	...
//	go http.ListenAndServe("127.0.0.1:8222", monitor.New(srv))
//
// or with profiles and, later, a page of your own at "/":
//
//	h := monitor.New(srv, monitor.WithPprof(true), monitor.WithPage("/", page))
//
// The endpoints:
//
//	GET /metrics        Prometheus text exposition
//	GET /varz           server state and counters (Varz)
//	GET /connz          open sessions, paged and sorted (Connz):
//	                    ?offset=0&limit=1024&sort=id|msgs|bytes|last|since|queue&order=asc|desc
//	GET /healthz        200 "ok" while the server serves, 503 otherwise
//	GET /debug/pprof/   runtime profiles (WithPprof(true) only)
//
// The handler answers only requests that name the server as their host:
// localhost, a loopback address, the IP address the request came in on, or
// a name given with WithAllowedHosts. Any other Host, or an Origin header
// naming another host, gets 403 and no data (package hostcheck), so a web
// page cannot read the endpoints through a visitor's browser by DNS
// rebinding. GET /healthz alone is answered whatever the Host.
//
// To put the metrics on a registry of your own instead, register the
// collector:
//
//	reg.MustRegister(monitor.NewCollector(srv))
//
// The collector reads srv.Stats() when it is scraped and does nothing
// otherwise: the server counts on its own, with atomics, and nothing on the
// per-message path takes a lock or allocates for metrics. Metric names
// start with msgnet_; docs/MONITORING.md lists them all.
//
// Logging is separate: a server given msgnet.WithLogger writes log/slog
// records for sessions that connect ("session connected": session, client,
// remote) and disconnect ("session disconnected": session, client, reason),
// for ERROR frames peers send ("peer reported an error": session, code,
// message) and for failures of its own (accept errors, a panicking
// disconnect handler, cluster publish failures). Connect and disconnect are
// logged at Info level, so a logger at Warn level keeps only the failures.
package monitor
