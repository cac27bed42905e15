#!/usr/bin/env bash
# Compares two raftlot builds by running them at the same time: two three-node clusters (ports
# 50051-50053 and 51051-51053), each driven by its own `raftlot bench` with the same arguments. On
# this shared VM the speed of the machine moves by a factor of two or three within minutes (other
# guests' load shows as steal time), so runs one after the other compare phases of the machine as
# much as builds; two builds run together share every phase, and the builds swap ports and start
# order every round. Each line is one round: each build's rows and its nodes' CPU per operation.
# It compares throughput and CPU; a latency at low load measured here includes the other cluster's
# load, so compare those with runs alone.
#
# Usage: benches/side-by-side.sh ROUNDS "BENCH-ARGS" BUILD-A BUILD-B
#   e.g. benches/side-by-side.sh 4 "--workload add --clients 64 --consistency linearizable --duration 5s" \
#        target/release/raftlot /tmp/raftlot-before
# The load generator is BENCH_BIN (default BUILD-A), the same binary for both sides.
set -euo pipefail
(($# == 4)) || { sed -n 2,14p "$0" >&2; exit 2; }
rounds=$1 args=$2 a=$3 b=$4
bench="${BENCH_BIN:-$a}"
work="$(mktemp -d)"
clusters=()

stop() {
    for pid in "${clusters[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${clusters[@]}"; do wait "$pid" 2>/dev/null || true; done
    clusters=()
}
trap 'stop; rm -rf "$work"' EXIT

# utime + stime, in clock ticks, of the nodes serving from data directory $1.
ticks() {
    local t=0 pid
    for pid in $(pgrep -f "serve --id .*--data-dir $1/" || true); do
        t=$((t + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    echo "$t"
}

# Prints one side's rows from its JSON report, and node CPU per operation from its tick count.
side() {
    python3 - "$1" "$2" "$3" "$(getconf CLK_TCK)" <<'PY'
import json, sys
name, report, ticks, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rows = [r for r in json.load(open(report))["rows"] if r["target"] == "raftlot"]
ops = sum(r["ops"] for r in rows)
runs = "; ".join(f"{r['op']} x{r['clients']} {r['ops_per_sec']:.0f}/s p50 {r['p50_us']} us" for r in rows)
print(f"{name}: {runs}; node CPU {ticks / hz / max(ops, 1) * 1e6:.0f} us/op", end="")
PY
}

for round in $(seq 1 "$rounds"); do
    if ((round % 2)); then first=$a second=$b; else first=$b second=$a; fi
    rm -rf "$work/one" "$work/two"
    "$first" cluster --data-dir "$work/one" >"$work/one.log" 2>&1 &
    clusters+=($!)
    "$second" cluster --data-dir "$work/two" --client-port 51051 --peer-port 51061 --http-port 9081 \
        >"$work/two.log" 2>&1 &
    clusters+=($!)
    for _ in $(seq 1 150); do
        grep -q "nodes up" "$work/one.log" && grep -q "nodes up" "$work/two.log" && break
        sleep 0.2
    done
    grep -q "nodes up" "$work/one.log" && grep -q "nodes up" "$work/two.log" \
        || { echo "a cluster did not start:" >&2; cat "$work/one.log" "$work/two.log" >&2; exit 1; }
    one0=$(ticks "$work/one") two0=$(ticks "$work/two")
    # shellcheck disable=SC2086 # the bench arguments are meant to split
    "$bench" bench $args --json "$work/one.json" >/dev/null 2>&1 &
    p1=$!
    # shellcheck disable=SC2086
    "$bench" bench $args --endpoints 127.0.0.1:51051,127.0.0.1:51052,127.0.0.1:51053 \
        --json "$work/two.json" >/dev/null 2>&1 &
    p2=$!
    wait "$p1" "$p2"
    one1=$(ticks "$work/one") two1=$(ticks "$work/two")
    echo "round $round: $(side "$first" "$work/one.json" $((one1 - one0))) | $(side "$second" "$work/two.json" $((two1 - two0)))"
    stop
done
