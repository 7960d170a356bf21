#!/usr/bin/env bash
# Runs every check msgnet has: go vet, the race-enabled tests of every
# package, and a short run of every fuzz target (FUZZTIME each, default 6s).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== go vet"
go vet ./...

echo "== go test -race"
go test -race -count=1 -timeout 15m ./...

echo "== fuzz (${FUZZTIME:=6s} per target)"
for dir in $(go list -f '{{.Dir}}' ./...); do
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
    echo "-- $target in ${dir#$PWD/}"
    go test -run='^$' -fuzz="^${target}\$" -fuzztime="$FUZZTIME" "$dir" >/tmp/msgnet-fuzz.log 2>&1 || {
      cat /tmp/msgnet-fuzz.log
      echo "fuzz target $target failed" >&2
      exit 1
    }
    tail -1 /tmp/msgnet-fuzz.log
  done
done
echo "all checks passed"
