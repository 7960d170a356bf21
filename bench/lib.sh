# bench/lib.sh: what bench/run.sh, bench/fanout.sh and bench/reliable.sh
# share, sourced by each after it has read its settings: the work
# directory, logging, CPU pinning, starting and stopping one server at a
# time on a fresh loopback port, and building binaries. Kept in one place so
# that a fix (say, to how a server is stopped) reaches every benchmark.
#
# The sourcing script sets HERE (bench/) and ROOT (the repository) and,
# before calling start_server, defines
#   server_cmd NAME PORT [ARGS...]   sets SRV_CMD, the server's command line
# It may define cleanup_more, run on exit after the server is stopped and
# before the work directory is removed or kept (KEEP=1).
#
# Globals it sets: WORK BIN RES LOGS PIN_SERVER PIN_LOAD (setup_work),
# SPID SPORT (start_server), PORT (advanced by next_port), SDIR (a
# server's store directory, removed by stop_server when set).

# shellcheck shell=bash

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { log "error: $*"; exit 1; }


# stop_server stops the running server, if any: SIGTERM, up to 10 s for it
# to exit, then SIGKILL; and removes its store directory, if any.
stop_server() {
	if [ -n "$SPID" ]; then
		kill -TERM "$SPID" 2>/dev/null
		for _ in $(seq 100); do
			kill -0 "$SPID" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$SPID" 2>/dev/null
		wait "$SPID" 2>/dev/null
		SPID=""
	fi
	if [ -n "$SDIR" ]; then
		rm -rf "$SDIR"
		SDIR=""
	fi
}

# cleanup runs on exit, however the script ends: no server is left running
# and the work directory goes unless KEEP is set.
cleanup() {
	stop_server
	if declare -F cleanup_more >/dev/null; then
		cleanup_more
	fi
	if [ -n "${KEEP:-}" ]; then
		log "work directory kept: $WORK"
	else
		rm -rf "$WORK"
	fi
}

# setup_work PREFIX: a fresh work directory with bin/, results/ and logs/, the
# exit trap that cleans up after it, and the CPU pinning. The server gets
# CPU 0 and the load tool CPU 1, so that neither takes the other's core; on
# a machine without taskset or a second CPU both run unpinned, which the log
# says.
setup_work() {
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
	BIN=$WORK/bin
	RES=$WORK/results
	LOGS=$WORK/logs
	mkdir -p "$BIN" "$RES" "$LOGS"
	SPID=""
	SDIR=""
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	PIN_SERVER=(taskset -c 0)
	PIN_LOAD=(taskset -c 1)
	if ! command -v taskset >/dev/null || [ "$(nproc)" -lt 2 ]; then
		log "warning: taskset missing or fewer than 2 CPUs: running unpinned"
		PIN_SERVER=()
		PIN_LOAD=()
	fi
}

# build DIR NAME PACKAGE WHAT: go build PACKAGE (relative to DIR) into
# $BIN/NAME, or stop with "cannot build WHAT".
build() {
	(cd "$1" && go build -o "$BIN/$2" "$3") || die "cannot build $4"
}

# nats_version prints the nats-server version bench/go.mod requires.
nats_version() {
	(cd "$HERE" && go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)
}

# loadavg prints the 1, 5 and 15 minute load averages: the machine is
# shared, and the reports say how busy it was.
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# minutes_seconds SECONDS prints "M min S s".
minutes_seconds() { echo "$(($1 / 60)) min $(($1 % 60)) s"; }

port_listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

# next_port advances PORT to the next port nothing listens on: a server
# from an earlier test may still hold its port in the kernel for a while.
next_port() {
	PORT=$((PORT + 1))
	while port_listening "$PORT"; do PORT=$((PORT + 1)); done
}

# start_server NAME [ARGS...]: starts the server NAME on a fresh port, pinned,
# its output appended to $LOGS/NAME.server.log, and waits up to 10 s for it
# to listen; sets SPID and SPORT. ARGS go to the script's server_cmd.
# Returns 1 if it exits or does not listen in time.
start_server() {
	next_port
	SPORT=$PORT
	server_cmd "$1" "$SPORT" "${@:2}"
	"${PIN_SERVER[@]}" "${SRV_CMD[@]}" >>"$LOGS/$1.server.log" 2>&1 &
	SPID=$!
	for _ in $(seq 100); do
		if ! kill -0 "$SPID" 2>/dev/null; then
			wait "$SPID" 2>/dev/null
			SPID=""
			return 1
		fi
		port_listening "$SPORT" && return 0
		sleep 0.1
	done
	stop_server
	return 1
}
