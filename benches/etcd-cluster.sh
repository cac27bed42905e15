#!/usr/bin/env bash
# Starts a three-node etcd cluster on loopback for `raftlot bench --etcd`, the same shape as the
# quickstart: clients on 127.0.0.1:23791-23793, peers on 127.0.0.1:23801-23803, data under
# ${ETCD_DATA:-./data-etcd}. etcd's own defaults otherwise (fsync on, 100 ms heartbeat, 1 s
# election timeout). `benches/etcd-cluster.sh stop` stops it.
#
# etcd comes from Debian: apt-get install etcd-server (etcd 3.4).
set -euo pipefail
data="${ETCD_DATA:-./data-etcd}"
pids="$data/pids"

if [[ "${1:-}" == stop ]]; then
    [[ -f "$pids" ]] && xargs -r kill < "$pids" || true
    rm -f "$pids"
    exit 0
fi

command -v etcd >/dev/null || { echo "etcd not found: apt-get install etcd-server" >&2; exit 1; }
mkdir -p "$data"
: > "$pids"
cluster="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803"
for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$data/e$i" \
        --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
        --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
        --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token raftlot-bench \
        --log-outputs "$data/e$i.log" --logger zap >/dev/null 2>&1 &
    echo $! >> "$pids"
done
for _ in $(seq 1 100); do
    if ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:23791 endpoint health >/dev/null 2>&1 \
        || curl -sf http://127.0.0.1:23791/health >/dev/null 2>&1; then
        echo "etcd up: --etcd 127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793"
        exit 0
    fi
    sleep 0.1
done
echo "etcd did not become healthy; see $data/e*.log" >&2
exit 1
