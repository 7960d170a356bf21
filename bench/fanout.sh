#!/usr/bin/env bash
# bench/fanout.sh: group fan-out, msgnet side by side with nats-server, on a
# ladder of delivery rates.
#
# Builds msgnet (the server, and `msgnet bench fanout` as the load tool) and
# bench/peers/nats (nats-server in a process of its own). Then for each
# round, each subscriber count, each rate of the ladder and each server
# (rounds interleaved: msgnet, nats, msgnet, nats, ...): starts a fresh
# server pinned to CPU 0, runs `msgnet bench fanout` pinned to CPU 1 against
# it on loopback (SUBS receivers in one group, or on one subject, and one
# sender at RATE / SUBS messages per second, open loop, timestamped and
# numbered) and keeps its --json result. At the end bench/cmd/fanoutreport
# writes the medians across rounds into docs/BENCHMARKS.md between
# <!-- fanout:begin --> and <!-- fanout:end -->.
#
# msgnet:  msgnet serve --mode managed --max-connections 0 --idle-timeout 0
#          --quiet; the load speaks msgnet's frames (JOIN, GROUP).
# nats:    bench/peers/nats (nats-server, no JetStream, logging off); the
#          load speaks the NATS text protocol (SUB, PUB): --proto nats.
#
# Usage:  cd bench && ./fanout.sh
# Env:
#   ROUNDS=3          rounds
#   SUBS="1000 10000" subscriber counts; each needs SUBS + 100 descriptors
#                     in the load tool and in the server (ulimit -n, which
#                     the script raises to the hard limit when it can; a
#                     count that does not fit is skipped with a message)
#   RATES="250000 500000 1000000 2000000 4000000"
#                     deliveries per second; messages per second = RATE / SUBS
#   RATES_<SUBS>      the ladder of one subscriber count, instead of RATES.
#                     When RATES is not set, RATES_10000 defaults to
#                     "50000 100000 150000 200000 300000": on a 2-core
#                     machine both servers fall behind near 0.2M deliveries/s
#                     to 10,000 subscribers, while at 1,000 they go past 1M
#   SERVERS="msgnet nats"  also floor: bench/peers/floor --proto nats, the
#                     least a server can do to pass the load (one thread,
#                     raw epoll, one write per subscriber per pass): where
#                     this machine's floor is; floor-uring: the same with
#                     a pass's writes as one io_uring submission
#   DURATION=5s       measured window;  WARMUP=1s before it
#   DRAIN=2s          how long deliveries of the window's messages may
#                     still arrive after it
#   JOIN_WAIT=1s      pause after the joins (msgnet) or the confirmed
#                     subscriptions (nats) before the sender starts
#   OUT=../docs/BENCHMARKS.md
#   COOLDOWN=2        seconds of rest between tests (the machine is shared)
#   KEEP=1            keep the work directory (binaries, JSON, logs)
#   PORT=17800        first loopback port; each server start takes the next
#   EXTRA_SERVE=""    more flags for msgnet serve (e.g. "--monitor
#                     127.0.0.1:19090 --pprof" to profile it)
#
# A smoke run: ROUNDS=1 SUBS=1000 RATES="250000" DURATION=2s OUT=/tmp/f.md ./fanout.sh

set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
ROUNDS=${ROUNDS:-3}
SUBS=${SUBS:-"1000 10000"}
if [ -z "${RATES+x}" ]; then
	RATES="250000 500000 1000000 2000000 4000000"
	RATES_10000=${RATES_10000:-"50000 100000 150000 200000 300000"}
fi
# rates_for SUBS prints the ladder of a subscriber count.
rates_for() {
	local v="RATES_$1"
	echo "${!v:-$RATES}"
}
SERVERS=${SERVERS:-"msgnet nats"}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
DRAIN=${DRAIN:-2s}
JOIN_WAIT=${JOIN_WAIT:-1s}
OUT=${OUT:-$ROOT/docs/BENCHMARKS.md}
COOLDOWN=${COOLDOWN:-2}
PORT=${PORT:-17800}
EXTRA_SERVE=${EXTRA_SERVE:-}

# shellcheck source=lib.sh
. "$HERE/lib.sh"
setup_work msgnet-fanout

# ---- descriptors ----------------------------------------------------------
# The load tool holds SUBS + 1 sockets and the server as many, each in its
# own process; both inherit this shell's limit.
MAX_SUBS=0
for s in $SUBS; do [ "$s" -gt "$MAX_SUBS" ] && MAX_SUBS=$s; done
NEED=$((MAX_SUBS + 100))
SOFT=$(ulimit -Sn)
HARD=$(ulimit -Hn)
if [ "$SOFT" != unlimited ] && [ "$SOFT" -lt "$NEED" ]; then
	ulimit -n "$HARD" 2>/dev/null || true
fi
NOFILE=$(ulimit -n)
ULIMIT_NOTE="ulimit -n was $SOFT (hard $HARD), ran with $NOFILE; $MAX_SUBS subscribers need about $NEED per process"
log "$ULIMIT_NOTE"
RUN_SUBS=""
for s in $SUBS; do
	if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt $((s + 100)) ]; then
		log "skipping $s subscribers: ulimit -n is $NOFILE, below $((s + 100)) (raise the hard limit)"
		ULIMIT_NOTE+="; $s subscribers skipped"
		continue
	fi
	RUN_SUBS+="$s "
done
[ -n "$RUN_SUBS" ] || die "no subscriber count fits ulimit -n $NOFILE"

# ---- build ----------------------------------------------------------------
log "building into $BIN"
build "$ROOT" msgnet ./cmd/msgnet msgnet
build "$HERE" nats-peer ./peers/nats "the nats peer"
build "$HERE" fanoutreport ./cmd/fanoutreport "the report"
case " $SERVERS " in *" floor "* | *" floor-uring "*) build "$HERE" floor-peer ./peers/floor "the floor peer" ;; esac
NATS_VERSION=$(nats_version)

for s in $SERVERS; do
	case $s in
	msgnet | nats | floor | floor-uring) ;;
	*) die "unknown server $s (known: msgnet nats floor floor-uring)" ;;
	esac
done

# server_cmd NAME PORT sets SRV_CMD and PROTO.
server_cmd() {
	local addr=127.0.0.1:$2
	case $1 in
	msgnet)
		# shellcheck disable=SC2206 # EXTRA_SERVE is split on purpose
		SRV_CMD=("$BIN/msgnet" serve --addr "$addr" --mode managed --max-connections 0 --idle-timeout 0 --quiet $EXTRA_SERVE)
		PROTO=msgnet
		;;
	nats)
		SRV_CMD=("$BIN/nats-peer" --addr "$addr")
		PROTO=nats
		;;
	floor)
		SRV_CMD=("$BIN/floor-peer" --proto nats --addr "$addr")
		PROTO=nats
		;;
	floor-uring)
		SRV_CMD=("$BIN/floor-peer" --proto nats --writes uring --addr "$addr")
		PROTO=nats
		;;
	esac
}

# net_counters prints the machine's loopback backlog drops (the second
# column of /proc/net/softnet_stat, summed over the CPUs) and the TCP
# segments retransmitted: a burst of writes to thousands of sockets can
# overflow the backlog, and what is dropped comes back by retransmission,
# late.
net_counters() {
	local drops=0 d
	while read -r _ d _; do drops=$((drops + 16#$d)); done </proc/net/softnet_stat
	awk -v d="$drops" '/^Tcp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "RetransSegs") c = i; h = 1 } else print d, $c }' /proc/net/snmp
}

# ---- run ------------------------------------------------------------------
LOAD_BEFORE=$(loadavg)
read -r DROPS0 RETRANS0 < <(net_counters)
T0=$(date +%s)
log "servers: $SERVERS; rounds: $ROUNDS; window $DURATION after $WARMUP"
for subs in $RUN_SUBS; do log "$subs subscribers: deliveries/s $(rates_for "$subs")"; done
log "load average before: $LOAD_BEFORE"
for round in $(seq "$ROUNDS"); do
	for subs in $RUN_SUBS; do
		for rate in $(rates_for "$subs"); do
			msgrate=$(awk -v r="$rate" -v s="$subs" 'BEGIN { printf "%.6g", r / s }')
			for s in $SERVERS; do
				if ! start_server "$s"; then
					log "round $round $s $subs subs: the server did not start ($(tail -n 3 "$LOGS/$s.server.log" 2>/dev/null | tr '\n' ' '))"
					continue
				fi
				out=$RES/$s.s$subs.d$rate.r$round.json
				if timeout --kill-after=10 300 "${PIN_LOAD[@]}" "$BIN/msgnet" bench fanout --proto "$PROTO" \
					--addr "127.0.0.1:$SPORT" --conns "$subs" --rate "$msgrate" \
					--duration "$DURATION" --warmup "$WARMUP" --drain "$DRAIN" --join-wait "$JOIN_WAIT" \
					--dial-timeout 20s --pid "$SPID" --json --quiet \
					>"$out.tmp" 2>>"$LOGS/$s.load.log"; then
					mv "$out.tmp" "$out"
					summary=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); f=r["fanout"]; s=r.get("server") or {}
w=f.get("cpu_wait") or {}
print("delivered %.3f%% p50 %.1fms p99 %.1fms server %.0f%% load %.0f%% (waiting for a CPU: %.0f%% / %.0f%%) errors %d" % (f["delivered_pct"], r["latency"]["p50_us"]/1e3, r["latency"]["p99_us"]/1e3, 100*s.get("cpu_seconds",0)/r["seconds"], 100*r["load_cpu_seconds"]/r["seconds"], 100*w.get("server_seconds",0)/r["seconds"], 100*w.get("load_seconds",0)/r["seconds"], r["errors"]))' "$out" 2>/dev/null)
					log "round $round $s $subs subs $rate/s ($msgrate msg/s): $summary"
				else
					rm -f "$out.tmp"
					log "round $round $s $subs subs $rate/s: the load tool failed: $(tail -n 2 "$LOGS/$s.load.log" | tr '\n' ' ')"
				fi
				stop_server
				sleep "$COOLDOWN"
			done
		done
	done
done
LOAD_AFTER=$(loadavg)
ELAPSED=$(($(date +%s) - T0))
read -r DROPS1 RETRANS1 < <(net_counters)
NET_NOTE="during the run, machine-wide: $((DROPS1 - DROPS0)) packets dropped from the loopback backlog (/proc/net/softnet_stat), $((RETRANS1 - RETRANS0)) TCP segments retransmitted (/proc/net/snmp)"
log "load average after: $LOAD_AFTER; $NET_NOTE"

# ---- report ---------------------------------------------------------------
CPU=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
MACHINE="${CPU:-unknown CPU}, $(nproc) logical CPUs, Linux $(uname -r), $(go version | sed 's/^go version //')"
SERVES="msgnet: \`msgnet serve --addr 127.0.0.1:PORT --mode managed --max-connections 0 --idle-timeout 0 --quiet${EXTRA_SERVE:+ $EXTRA_SERVE}\` (the managed engine's default: parked sessions, a goroutine per burst; 4 MiB send queue per session, 256 MiB in all); nats: \`bench/peers/nats --addr 127.0.0.1:PORT\` (nats-server $NATS_VERSION in-process, defaults: 64 MiB pending per client)."
case " $SERVERS " in *" floor "* | *" floor-uring "*) SERVES="$SERVES floor: \`bench/peers/floor --proto nats --addr 127.0.0.1:PORT\` (a measuring device, not a server: one thread, raw epoll, one write per subscriber per pass, no limits); floor-uring: the same with \`--writes uring\` (a pass's writes as one io_uring submission)." ;; esac
SERVES="$SERVES All Go, GOMAXPROCS 1 under taskset."
"$BIN/fanoutreport" --results "$RES" --out "$OUT" --servers "$SERVERS" --rounds "$ROUNDS" \
	--duration "$DURATION" --warmup "$WARMUP" --drain "$DRAIN" \
	--loadavg-before "$LOAD_BEFORE" --loadavg-after "$LOAD_AFTER" \
	--elapsed "$(minutes_seconds "$ELAPSED")" --machine "$MACHINE" \
	--ulimit "$ULIMIT_NOTE" --serve-cmds "$SERVES" --net "$NET_NOTE" || die "report failed"
