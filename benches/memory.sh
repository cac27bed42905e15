#!/usr/bin/env bash
# Memory and disk after the same N strong writes on raftlot and on etcd (issue 5's memory bar):
# starts a three-node raftlot cluster and a three-node etcd on loopback, runs
# `raftlot bench --workload add --clients 64 --ops N --etcd ...` (N adds to raftlot, then N puts to
# etcd, over the same 64 keys), then prints each node's resident memory (VmRSS) and data directory
# size. Everything runs under a temporary directory that is removed at the end.
#
# Usage: benches/memory.sh [N]   (default 1000000; needs target/release/raftlot and etcd-server)
set -euo pipefail
cd "$(dirname "$0")/.."
ops="${1:-1000000}"
bin="${RAFTLOT_BIN:-target/release/raftlot}"
[[ -x "$bin" ]] || { echo "build first: cargo build --release" >&2; exit 1; }
work="$(mktemp -d)"
cluster_pid=""
cleanup() {
    [[ -n "$cluster_pid" ]] && kill -INT "$cluster_pid" 2>/dev/null && wait "$cluster_pid" 2>/dev/null
    ETCD_DATA="$work/etcd" benches/etcd-cluster.sh stop
    rm -rf "$work"
}
trap cleanup EXIT

"$bin" cluster --data-dir "$work/raftlot" >"$work/cluster.out" 2>&1 &
cluster_pid=$!
ETCD_DATA="$work/etcd" benches/etcd-cluster.sh >/dev/null
for _ in $(seq 1 200); do grep -q "nodes up" "$work/cluster.out" && break; sleep 0.1; done
grep -q "nodes up" "$work/cluster.out" || { cat "$work/cluster.out" >&2; exit 1; }

# With --ops and no --duration the bench allows each run an hour; the count is checked all the
# same, since figures after fewer writes than N would claim what they did not measure.
"$bin" bench --workload add --consistency linearizable --clients 64 --ops "$ops" \
    --etcd 127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793 --json "$work/bench.json" >&2
done_ops="$(awk -F'[:,]' '/"ops":/ { gsub(/ /, "", $2); print $2 }' "$work/bench.json")"
for n in $done_ops; do
    ((n >= ops)) || { echo "only $n of $ops writes ran before the bench's time bound" >&2; exit 1; }
done

rss_mib() { awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
printf "%-8s %-6s %9s %10s\n" system node "rss MiB" "data MiB"
for n in 1 2 3; do
    pid="$(pgrep -f "serve --id $n .*$work/raftlot" | head -1)"
    printf "%-8s %-6s %9s %10s\n" raftlot "$n" "$(rss_mib "$pid")" "$(du -sm "$work/raftlot/node-$n" | cut -f1)"
done
n=0
while read -r pid; do
    n=$((n + 1))
    printf "%-8s %-6s %9s %10s\n" etcd "e$n" "$(rss_mib "$pid")" "$(du -sm "$work/etcd/e$n" | cut -f1)"
done <"$work/etcd/pids"
echo "after" $done_ops "writes: strong adds to raftlot, then puts to etcd (64 clients, 64 keys)"
