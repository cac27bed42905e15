#!/usr/bin/env bash
# CPU per operation of each system's nodes and of the load generator, from /proc, around one
# `raftlot bench --etcd` invocation against the clusters the README's benchmark commands start
# (raftlot's quickstart cluster and benches/etcd-cluster.sh). Throughput ratios on a shared 2-core
# machine depend on how much of it the load generator takes; CPU per operation does not, so this
# shows what each system's servers spend on the same operations.
#
# Each system sits nearly idle (heartbeats, timers) while the other one is measured. Its idle rate is
# measured first, for IDLE seconds, and taken off its CPU over the whole invocation; what is left,
# divided by its own operations, is its cost per operation.
#
# Usage: benches/cpu.sh --workload add --clients 64 --consistency linearizable --duration 4s
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${RAFTLOT_BIN:-target/release/raftlot}"
etcd="${ETCD_ENDPOINTS:-127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793}"
raftlot_pids="$(pgrep -f " serve --id " || true)"
etcd_pids="$(pgrep -x etcd || true)"
[[ -n "$raftlot_pids" && -n "$etcd_pids" ]] || { echo "start both clusters first (see README, Benchmarks)" >&2; exit 1; }

# utime + stime of the given pids, in clock ticks.
ticks() { for p in "$@"; do awk '{ print $14 + $15 }' "/proc/$p/stat"; done | awk '{ t += $1 } END { print t + 0 }'; }
hz="$(getconf CLK_TCK)"
json="$(mktemp)"
trap 'rm -f "$json"' EXIT

idle="${IDLE:-3}"
# shellcheck disable=SC2086 # the pid lists are meant to split
ri="$(ticks $raftlot_pids)" ei="$(ticks $etcd_pids)"
sleep "$idle"
# shellcheck disable=SC2086
r0="$(ticks $raftlot_pids)" e0="$(ticks $etcd_pids)"
started="$(date +%s.%N)"
# bash's own `time` reports the bench process's user and system CPU seconds.
TIMEFORMAT="%U %S"
client="$( { time "$bin" bench "$@" --etcd "$etcd" --json "$json" >/dev/null 2>/dev/null; } 2>&1 | tail -1)"
# shellcheck disable=SC2086
r1="$(ticks $raftlot_pids)" e1="$(ticks $etcd_pids)"
wall="$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')"
# Every run's target and operation count, in order.
runs="$(awk -F'"' '/"target":/ { t = $4 } /"ops":/ { gsub(/[^0-9]/, "", $3); print t, $3 }' "$json")"
raftlot_ops="$(awk '$1 == "raftlot" { n += $2 } END { print n + 0 }' <<<"$runs")"
etcd_ops="$(awk '$1 == "etcd" { n += $2 } END { print n + 0 }' <<<"$runs")"
awk -v hz="$hz" -v ro="$raftlot_ops" -v eo="$etcd_ops" -v c="$client" -v wall="$wall" -v idle="$idle" \
    -v r="$((r1 - r0))" -v ri="$((r0 - ri))" -v e="$((e1 - e0))" -v ei="$((e0 - ei))" '
BEGIN {
    split(c, t, " "); cs = t[1] + t[2]
    r -= ri * wall / idle; e -= ei * wall / idle
    printf "%-8s %10s %16s\n", "system", "ops", "node CPU us/op"
    printf "%-8s %10d %16.1f\n", "raftlot", ro, r / hz / ro * 1e6
    printf "%-8s %10d %16.1f\n", "etcd", eo, e / hz / eo * 1e6
    printf "load generator: %.1f us of CPU per operation, both systems together\n", cs / (ro + eo) * 1e6
    printf "idle CPU taken off over %.1f s: raftlot %.0f%%, etcd %.0f%% of one core\n", wall, ri / hz / idle * 100, ei / hz / idle * 100
}'
