#!/usr/bin/env bash
# Starts a three-node etcd cluster on loopback for `raftlot bench --etcd`, the same shape as the
# quickstart: clients on 127.0.0.1:23791-23793, peers on 127.0.0.1:23801-23803, e1 leading as node 1
# does there (see below), data under ${ETCD_DATA:-./data-etcd}. etcd's own defaults otherwise (fsync
# on, 100 ms heartbeat, 1 s election timeout). `benches/etcd-cluster.sh stop` stops it.
#
# etcd comes from Debian: apt-get install etcd-server (etcd 3.4).
set -euo pipefail
data="${ETCD_DATA:-./data-etcd}"
pids="$data/pids"

if [[ "${1:-}" == stop ]]; then
    if [[ -f "$pids" ]]; then
        xargs -r kill < "$pids" 2>/dev/null || true
        # Gone, not just told, since a cluster started next needs the ports: a leader takes seconds
        # to hand over and stop. (A zombie holds no port.)
        list="$(paste -sd, "$pids")"
        for _ in $(seq 1 200); do
            ps -o stat= -p "$list" | grep -qv '^Z' || break
            sleep 0.1
        done
    fi
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
healthy=""
for _ in $(seq 1 100); do
    if curl -sf http://127.0.0.1:23791/health >/dev/null 2>&1; then
        healthy=yes
        break
    fi
    sleep 0.1
done
[[ -n "$healthy" ]] || { echo "etcd did not become healthy; see $data/e*.log" >&2; exit 1; }

# The leader goes to e1, as raftlot's quickstart cluster has node 1 lead: a bench client runs at the
# first endpoint of each system, so one client then meets the leader of both. Left to the election,
# etcd's leader is any of the three, and a one-client run at a follower pays a forward hop that
# raftlot's run does not (etcd's one-client linearizable get took 3.3 health checks from a follower
# against 2.3 at the leader). Through etcd's JSON gateway, so that only curl is needed.
status() { curl -sf -X POST -d '{}' "http://127.0.0.1:2379$1/v3/maintenance/status"; }
field() { sed -n "s/.*\"$1\":\"\([0-9]*\)\".*/\1/p"; }
e1="$(status 1 | field member_id)"
for _ in $(seq 1 100); do
    leader="$(status 1 | field leader)"
    if [[ -n "$e1" && "$leader" == "$e1" ]]; then
        echo "etcd up, e1 leads: --etcd 127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793"
        exit 0
    fi
    for i in 2 3; do
        if [[ -n "$leader" && "$(status $i | field member_id)" == "$leader" ]]; then
            curl -sf -X POST -d "{\"targetID\":\"$e1\"}" \
                "http://127.0.0.1:2379$i/v3/maintenance/transfer-leadership" >/dev/null || true
        fi
    done
    sleep 0.1
done
echo "etcd's leadership did not move to e1; see $data/e*.log" >&2
exit 1
