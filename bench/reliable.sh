#!/usr/bin/env bash
# bench/reliable.sh: msgnet's acknowledged delivery side by side with NATS
# JetStream: reliable publish -> deliver, one publisher, one subscriber, one
# stream.
#
# Systems (table columns):
#   msgnet-mem   `msgnet serve` (streams in memory, the default)
#   msgnet-file  `msgnet serve --store DIR` (streams in JetStream files, in
#                process, single node)
#   js-mem       a standalone nats-server with JetStream (bench/cmd/natsd),
#                a memory-storage stream
#   js-file      the same, a file-storage stream
# msgnet is driven by `msgnet bench reliable` (msgnet's reliable client),
# JetStream by bench/cmd/jsbench (nats.go's JetStream client), both the same
# measuring loop (internal/loadgen RunReliable): the publisher keeps at most
# INFLIGHT publishes unacknowledged by the server and at most INFLIGHT not
# yet delivered; JetStream publishes async with a Nats-Msg-Id on each
# message, and its subscriber is an ordered consumer (CONSUMER=ackall: a
# pull consumer acknowledging in runs).
#
#   msgnet-mem-base, msgnet-file-base
#                the same, with `msgnet serve` built from BASE_REV (the load
#                tool stays this tree's), for a before/after table in one run:
#                BASE_REV=HEAD~1 SYSTEMS="msgnet-file-base msgnet-file" ./reliable.sh
#
# Every test starts a fresh server (fresh store directory) pinned to CPU 0
# and runs the load pinned to CPU 1, with the server's pid for its CPU time
# (/proc/PID/stat). Rounds interleave the systems (A B C D A B C D ...);
# the report takes medians across rounds.
#
# Tests: rel128 and rel1k (window INFLIGHT, 128 B and 1 KiB payloads),
# lat128 (window 1: one message in flight, 128 B).
#
# Usage:  cd bench && ./reliable.sh
# Env:
#   ROUNDS=3          rounds
#   DURATION=10s      measured window of each test
#   WARMUP=2s         warm-up before each window
#   INFLIGHT=1024     the publisher's window
#   SYSTEMS="msgnet-mem msgnet-file js-mem js-file"
#   TESTS="rel128 rel1k lat128"
#   CONSUMER=ordered  the JetStream subscriber: ordered or ackall
#   BASE_REV=         a git revision to build the *-base systems' server from
#   OUT=../docs/BENCHMARKS.md   file whose reliable:begin/end part is rewritten
#   COOLDOWN=2        seconds of rest between tests
#   KEEP=1            keep the work directory (binaries, JSON, logs)
#   PORT=17700        first loopback port
#   PROFILE=SYSTEM.TEST  also take a CPU profile of that msgnet server in
#                     round 1 (msgnet serve --monitor --pprof), kept in the
#                     work directory (implies KEEP=1)
#
# A smoke run: DURATION=2s WARMUP=1s ROUNDS=1 ./reliable.sh

set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
INFLIGHT=${INFLIGHT:-1024}
SYSTEMS=${SYSTEMS:-"msgnet-mem msgnet-file js-mem js-file"}
TESTS=${TESTS:-"rel128 rel1k lat128"}
CONSUMER=${CONSUMER:-ordered}
OUT=${OUT:-$ROOT/docs/BENCHMARKS.md}
COOLDOWN=${COOLDOWN:-2}
PORT=${PORT:-17700}
PROFILE=${PROFILE:-}
BASE_REV=${BASE_REV:-}
[ -n "$PROFILE" ] && KEEP=1

# shellcheck source=lib.sh
. "$HERE/lib.sh"
setup_work msgnet-reliable

# ---- build ----------------------------------------------------------------
log "building into $BIN"
build "$ROOT" msgnet ./cmd/msgnet msgnet
build "$HERE" natsd ./cmd/natsd bench/cmd/natsd
build "$HERE" jsbench ./cmd/jsbench bench/cmd/jsbench
build "$HERE" relreport ./cmd/relreport bench/cmd/relreport

for s in $SYSTEMS; do
	case $s in
	msgnet-mem | msgnet-file | js-mem | js-file) ;;
	msgnet-mem-base | msgnet-file-base) [ -n "$BASE_REV" ] || die "$s needs BASE_REV" ;;
	*) die "unknown system $s (known: msgnet-mem msgnet-file js-mem js-file msgnet-mem-base msgnet-file-base)" ;;
	esac
done
if [ -n "$BASE_REV" ]; then
	# The revision's tree, exported (no worktree is made).
	mkdir -p "$WORK/base" &&
		git -C "$ROOT" archive "$BASE_REV" | tar -x -C "$WORK/base" &&
		(cd "$WORK/base" && go build -o "$BIN/msgnet-base" ./cmd/msgnet) >"$LOGS/base-build.log" 2>&1 ||
		die "cannot build msgnet from $BASE_REV (see $LOGS/base-build.log)"
	rm -rf "$WORK/base"
	log "msgnet-base: built from $BASE_REV ($(git -C "$ROOT" rev-parse --short "$BASE_REV"))"
fi
for t in $TESTS; do
	case $t in
	rel128 | rel1k | lat128) ;;
	*) die "unknown test $t (known: rel128 rel1k lat128)" ;;
	esac
done

# server_cmd SYSTEM PORT [PROFILING]: the command line of a fresh server
# with a fresh store (SDIR), in SRV_CMD; when profiling, also takes the
# next port for the monitor (MPORT). start_server (lib.sh) calls it.
server_cmd() {
	SDIR=$(mktemp -d "$WORK/store.XXXXXX")
	local addr=127.0.0.1:$2 extra=()
	if [ -n "${3:-}" ]; then
		next_port
		MPORT=$PORT
		extra=(--monitor "127.0.0.1:$MPORT" --pprof)
	fi
	case $1 in
	msgnet-mem) SRV_CMD=("$BIN/msgnet" serve --addr "$addr" --quiet "${extra[@]}") ;;
	msgnet-file) SRV_CMD=("$BIN/msgnet" serve --addr "$addr" --quiet --store "$SDIR" "${extra[@]}") ;;
	msgnet-mem-base) SRV_CMD=("$BIN/msgnet-base" serve --addr "$addr" --quiet "${extra[@]}") ;;
	msgnet-file-base) SRV_CMD=("$BIN/msgnet-base" serve --addr "$addr" --quiet --store "$SDIR" "${extra[@]}") ;;
	js-mem | js-file) SRV_CMD=("$BIN/natsd" --addr "$addr" --store "$SDIR") ;;
	esac
}

# load_cmd SYSTEM TEST sets LOAD.
load_cmd() {
	local size=128 inflight=$INFLIGHT
	case $2 in
	rel1k) size=1KiB ;;
	lat128) inflight=1 ;;
	esac
	local common=(--addr "127.0.0.1:$SPORT" --size "$size" --inflight "$inflight" --max-lag "$inflight"
		--duration "$DURATION" --warmup "$WARMUP" --pid "$SPID" --json --quiet)
	case $1 in
	msgnet-*) LOAD=("$BIN/msgnet" bench reliable "${common[@]}") ;;
	js-mem) LOAD=("$BIN/jsbench" --storage memory --consumer "$CONSUMER" "${common[@]}") ;;
	js-file) LOAD=("$BIN/jsbench" --storage file --consumer "$CONSUMER" "${common[@]}") ;;
	esac
}

# ---- run ------------------------------------------------------------------
LOAD_BEFORE=$(loadavg)
T0=$(date +%s)
log "systems: $SYSTEMS; tests: $TESTS; rounds: $ROUNDS; window $DURATION after $WARMUP warm-up; in flight $INFLIGHT"
for round in $(seq "$ROUNDS"); do
	for t in $TESTS; do
		for s in $SYSTEMS; do
			profiling=""
			[ "$round" = 1 ] && [ "$PROFILE" = "$s.$t" ] && profiling=1
			if ! start_server "$s" $profiling; then
				log "round $round $s $t: the server did not start: $(tail -n 3 "$LOGS/$s.server.log" | tr '\n' ' ')"
				continue
			fi
			load_cmd "$s" "$t"
			out=$RES/$s.$t.r$round.json
			PROF_PID=""
			if [ -n "$profiling" ]; then
				(sleep "${WARMUP%s}" && curl -s -o "$WORK/$s.$t.pprof" \
					"http://127.0.0.1:$MPORT/debug/pprof/profile?seconds=${DURATION%s}") &
				PROF_PID=$!
			fi
			if timeout --kill-after=10 300 "${PIN_LOAD[@]}" "${LOAD[@]}" >"$out.tmp" 2>>"$LOGS/$s.$t.load.log"; then
				mv "$out.tmp" "$out"
				summary=$(grep -E '"(msgs_per_sec|p50_us|p99_us|cpu_seconds|errors)"' "$out" | tr -d ' \n')
				log "round $round $t $s: $summary"
			else
				rm -f "$out.tmp"
				log "round $round $t $s: the load failed: $(tail -n 2 "$LOGS/$s.$t.load.log" | tr '\n' ' ')"
			fi
			[ -n "$PROF_PID" ] && wait "$PROF_PID"
			stop_server
			sleep "$COOLDOWN"
		done
	done
done
LOAD_AFTER=$(loadavg)
ELAPSED=$(($(date +%s) - T0))

# ---- report ---------------------------------------------------------------
"$BIN/relreport" --results "$RES" --out "$OUT" --systems "$SYSTEMS" --tests "$TESTS" \
	--rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" --inflight "$INFLIGHT" \
	--consumer "$CONSUMER" --loadavg-before "$LOAD_BEFORE" --loadavg-after "$LOAD_AFTER" \
	--elapsed "$(minutes_seconds "$ELAPSED")" \
	--base-rev "$BASE_REV" --nats-version "$(nats_version)" || die "report failed"
log "wrote $OUT"
