#!/usr/bin/env bash
# bench/run.sh: msgnet's echo server side by side with peer echo servers.
#
# Builds msgnet (`msgnet serve --mode echo`) and the peers (bench/peers/gnet,
# bench/peers/stdlib, bench/peers/stdlib --naive), then for each round and
# each server: starts a fresh server pinned to CPU 0 for every test, runs the
# load tool pinned to CPU 1 against it on loopback, and keeps its --json
# result. At the end bench/cmd/report writes the medians across rounds, with
# ratios to the best peer, the machine and the method into docs/BENCHMARKS.md
# between <!-- bench:begin --> and <!-- bench:end -->.
#
# Tests: throughput at 64 B and 1 KiB (50 conns x 32 in flight), latency
# (1 conn, 1 in flight), connection rate (8 workers), idle RSS per connection
# (10,000 conns).
#
# Usage:  cd bench && ./run.sh
# Env:
#   ROUNDS=3          rounds per server
#   DURATION=5s       measured window of each test
#   WARMUP=1s         warm-up before each window
#   HOLD=$DURATION    how long the idle test holds its connections
#   IDLE_CONNS=10000  connections of the idle test
#   SERVERS="msgnet gnet stdlib stdlib-naive"   servers, in table order; also
#                     msgnet-loop: msgnet serve --engine loop (idle loops park)
#                     msgnet-parked: msgnet serve --engine parked
#                     msgnet-base: msgnet serve built from BASE_REV
#                     floor: bench/peers/floor --proto echo, the least a
#                     server can do to pass the load (throughput and
#                     latency only: it echoes bytes unparsed)
#   BASE_REV=main     a git revision to build msgnet-base from, for a
#                     before/after table in one run:
#                     BASE_REV=HEAD~3 SERVERS="msgnet-base msgnet" PEERS=msgnet-base OUT=/tmp/ab.md ./run.sh
#   PEERS="gnet stdlib stdlib-naive"            servers the ratios are taken to
#   TESTS="tp64 tp1k lat connrate idle"         tests, in table order
#   OUT=../docs/BENCHMARKS.md                   file to update
#   COOLDOWN=2        seconds of rest between tests (the machine is shared)
#   KEEP=1            keep the work directory (binaries, JSON, logs)
#   PORT=17600        first loopback port; each server start takes the next
#
# A smoke run: DURATION=2s ROUNDS=1 ./run.sh
# A server that does not build or start is skipped with a message.

set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
HOLD=${HOLD:-$DURATION}
IDLE_CONNS=${IDLE_CONNS:-10000}
SERVERS=${SERVERS:-"msgnet gnet stdlib stdlib-naive"}
OUT=${OUT:-$ROOT/docs/BENCHMARKS.md}
COOLDOWN=${COOLDOWN:-2}
PORT=${PORT:-17600}
TESTS=${TESTS:-"tp64 tp1k lat connrate idle"}
TP_CONNS=50
TP_INFLIGHT=32
LAT_CONNS=1
CR_CONNS=8
PEERS=${PEERS:-"gnet stdlib stdlib-naive"}
BASE_REV=${BASE_REV:-}

# shellcheck source=lib.sh
. "$HERE/lib.sh"
# cleanup_more removes the worktree BASE_REV was built in.
cleanup_more() {
	if [ -d "$WORK/base" ]; then
		git -C "$ROOT" worktree remove --force "$WORK/base" >/dev/null 2>&1
	fi
}
setup_work msgnet-bench
SKIPPED=$WORK/skipped.tsv
: >"$SKIPPED"

# ---- build ----------------------------------------------------------------
log "building into $BIN"
build "$HERE" gnet-peer ./peers/gnet "the gnet peer"
build "$HERE" stdlib-peer ./peers/stdlib "the stdlib peer"
case " $SERVERS " in *" floor "*) build "$HERE" floor-peer ./peers/floor "the floor peer" ;; esac
build "$HERE" report ./cmd/report "the report"

MSGNET_OK=0
if (cd "$ROOT" && go build -o "$BIN/msgnet" ./cmd/msgnet) >"$LOGS/msgnet-build.log" 2>&1; then
	MSGNET_OK=1
else
	log "msgnet: build of ../cmd/msgnet failed; it will be skipped (see below)"
	sed 's/^/    /' "$LOGS/msgnet-build.log" | head -20
fi

BASE_OK=0
if [ -n "$BASE_REV" ]; then
	if git -C "$ROOT" worktree add --detach "$WORK/base" "$BASE_REV" >"$LOGS/base-build.log" 2>&1 &&
		(cd "$WORK/base" && go build -o "$BIN/msgnet-base" ./cmd/msgnet) >>"$LOGS/base-build.log" 2>&1; then
		BASE_OK=1
		log "msgnet-base: built from $BASE_REV ($(git -C "$ROOT" rev-parse --short "$BASE_REV"))"
	else
		log "msgnet-base: cannot build $BASE_REV; it will be skipped"
		sed 's/^/    /' "$LOGS/base-build.log" | tail -20
	fi
fi

# The load tool: this build's `msgnet bench`.
[ "$MSGNET_OK" = 1 ] || die "the load tool is msgnet bench, and cmd/msgnet does not build"
LOAD=("$BIN/msgnet" bench)
LOAD_NAME="msgnet bench"
log "load tool: $LOAD_NAME"

# msgnet's server flags; --quiet (no per-session log lines) when it has it.
MSGNET_SERVE_EXTRA=()
if [ "$MSGNET_OK" = 1 ] && "$BIN/msgnet" serve -h 2>&1 | grep -q -- '-quiet'; then
	MSGNET_SERVE_EXTRA=(--quiet)
fi

skip() { # server reason
	if ! grep -q "^$1	" "$SKIPPED"; then
		printf '%s\t%s\n' "$1" "$2" >>"$SKIPPED"
		log "skipping $1: $2"
	fi
}
is_skipped() { grep -q "^$1	" "$SKIPPED"; }

for s in $SERVERS; do
	case $s in
	msgnet) [ "$MSGNET_OK" = 1 ] || skip msgnet "go build ../cmd/msgnet failed" ;;
	msgnet-loop | msgnet-parked) [ "$MSGNET_OK" = 1 ] || skip "$s" "go build ../cmd/msgnet failed" ;;
	msgnet-base) [ "$BASE_OK" = 1 ] || skip "$s" "no BASE_REV, or it does not build" ;;
	gnet | stdlib | stdlib-naive | floor) ;;
	*) die "unknown server $s (known: msgnet msgnet-loop msgnet-parked msgnet-base gnet stdlib stdlib-naive floor)" ;;
	esac
done

# server_cmd NAME PORT sets SRV_CMD.
server_cmd() {
	local addr=127.0.0.1:$2
	case $1 in
	msgnet) SRV_CMD=("$BIN/msgnet" serve --addr "$addr" --mode echo --quiet --max-connections 20000 "${MSGNET_SERVE_EXTRA[@]}") ;;
	msgnet-loop) SRV_CMD=("$BIN/msgnet" serve --addr "$addr" --mode echo --quiet --max-connections 20000 --engine loop "${MSGNET_SERVE_EXTRA[@]}") ;;
	msgnet-parked) SRV_CMD=("$BIN/msgnet" serve --addr "$addr" --mode echo --quiet --max-connections 20000 --engine parked "${MSGNET_SERVE_EXTRA[@]}") ;;
	msgnet-base) SRV_CMD=("$BIN/msgnet-base" serve --addr "$addr" --mode echo --quiet --max-connections 20000 "${MSGNET_SERVE_EXTRA[@]}") ;;
	gnet) SRV_CMD=("$BIN/gnet-peer" --addr "$addr") ;;
	stdlib) SRV_CMD=("$BIN/stdlib-peer" --addr "$addr") ;;
	stdlib-naive) SRV_CMD=("$BIN/stdlib-peer" --naive --addr "$addr") ;;
	floor) SRV_CMD=("$BIN/floor-peer" --proto echo --addr "$addr") ;;
	esac
}

# test_args TEST sets ARGS.
test_args() {
	case $1 in
	tp64) ARGS=(throughput --size 64 --conns $TP_CONNS --inflight $TP_INFLIGHT --duration "$DURATION" --warmup "$WARMUP") ;;
	tp1k) ARGS=(throughput --size 1KiB --conns $TP_CONNS --inflight $TP_INFLIGHT --duration "$DURATION" --warmup "$WARMUP") ;;
	lat) ARGS=(latency --size 64 --conns $LAT_CONNS --duration "$DURATION" --warmup "$WARMUP") ;;
	connrate) ARGS=(connrate --size 64 --conns $CR_CONNS --duration "$DURATION" --warmup "$WARMUP") ;;
	idle) ARGS=(idle --conns "$IDLE_CONNS" --hold "$HOLD" --duration 120s) ;;
	esac
}

# ---- run ------------------------------------------------------------------
LOAD_BEFORE=$(loadavg)
T0=$(date +%s)
log "servers: $SERVERS; rounds: $ROUNDS; window $DURATION after $WARMUP warm-up; idle: $IDLE_CONNS conns for $HOLD"
for round in $(seq "$ROUNDS"); do
	for s in $SERVERS; do
		for t in $TESTS; do
			is_skipped "$s" && continue
			# The floor echoes bytes unparsed: no DISCONNECT, no idle test.
			[ "$s" = floor ] && case $t in connrate | idle) continue ;; esac
			if ! start_server "$s"; then
				skip "$s" "the server did not start listening (log: $(tail -n 3 "$LOGS/$s.server.log" 2>/dev/null | tr '\n' ' '))"
				continue
			fi
			test_args "$t"
			out=$RES/$s.$t.r$round.json
			if timeout --kill-after=10 600 "${PIN_LOAD[@]}" "${LOAD[@]}" "${ARGS[@]}" \
				--addr "127.0.0.1:$SPORT" --pid "$SPID" --json --quiet \
				>"$out.tmp" 2>>"$LOGS/$s.$t.load.log"; then
				mv "$out.tmp" "$out"
				summary=$(grep -E '"(msgs_per_sec|conns_per_sec|p99_us|rss_bytes_per_conn|errors)"' "$out" | tr -d ' \n')
				log "round $round $s $t: $summary"
			else
				rm -f "$out.tmp"
				log "round $round $s $t: the load tool failed: $(tail -n 2 "$LOGS/$s.$t.load.log" | tr '\n' ' ')"
			fi
			stop_server
			sleep "$COOLDOWN"
		done
	done
done
LOAD_AFTER=$(loadavg)
ELAPSED=$(($(date +%s) - T0))

# ---- report ---------------------------------------------------------------
SERVE_DESC=""
if ! is_skipped msgnet && [[ " $SERVERS " == *" msgnet "* ]]; then
	SERVE_DESC="\`msgnet serve --addr 127.0.0.1:PORT --mode echo --quiet --max-connections 20000 ${MSGNET_SERVE_EXTRA[*]}\` (echo mode's handler never blocks, so --engine auto runs it on event loops that wait in a blocking epoll_wait: EngineLoopBlocking)"
fi
if ! is_skipped msgnet-loop && [[ " $SERVERS " == *" msgnet-loop "* ]]; then
	[ -n "$SERVE_DESC" ] && SERVE_DESC+="; "
	SERVE_DESC+="msgnet-loop: the same with \`--engine loop\` (EngineLoop: an idle loop parks on the Go runtime's poller, which suits a process that does other network work)"
fi
if ! is_skipped msgnet-parked && [[ " $SERVERS " == *" msgnet-parked "* ]]; then
	[ -n "$SERVE_DESC" ] && SERVE_DESC+="; "
	SERVE_DESC+="msgnet-parked: the same with \`--engine parked\` (the library's default: handlers on a goroutine per active connection, idle connections parked)"
fi
"$BIN/report" --results "$RES" --out "$OUT" --servers "$SERVERS" --peers "$PEERS" \
	--skipped "$SKIPPED" --rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" \
	--hold "$HOLD" --idle-conns "$IDLE_CONNS" --tp-conns $TP_CONNS --tp-inflight $TP_INFLIGHT \
	--lat-conns $LAT_CONNS --connrate-conns $CR_CONNS --load-tool "$LOAD_NAME" \
	--serve-cmd "$SERVE_DESC" --loadavg-before "$LOAD_BEFORE" --loadavg-after "$LOAD_AFTER" \
	--elapsed "$(minutes_seconds "$ELAPSED")" || die "report failed"
