//! What an operator's Prometheus and log collector see.
//!
//! - metrics: three in-process nodes; scrape the leader's `GET /metrics`; send it strong and eventual
//!   adds, a read at every level and one bad read; scrape again and check every family, and that the
//!   request counts moved by exactly what was sent.
//! - json logs: a `raftlot serve` process with `--log-format json`; every line it writes is a JSON
//!   object, and the request lines carry the method, the consistency level and the node.

mod common;

use std::collections::BTreeMap;

use common::local::LocalCluster;
use common::{http, Options, TestCluster, WAIT};
use raftlot::pb::v1::{AddRequest, GetRequest, ReadConsistency, WriteMode};

/// One sample of the text format: the metric name, its labels, its value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus/OpenMetrics text format as far as this test needs: comment lines are
/// skipped, every other line must be `name{k="v",...} value`, and a line that is not fails the test.
fn parse(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').unwrap_or_else(|| panic!("bad labels in {line:?}"))),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("bad label {pair:?} in {line:?}"));
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        samples.push(Sample { name: name.to_string(), labels, value });
    }
    samples
}

/// The value of the one sample named `name` whose labels include `labels`; 0 when there is none.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .collect();
    assert!(matching.len() <= 1, "{name} {labels:?} matches {matching:?}");
    matching.first().map_or(0.0, |s| s.value)
}

async fn scrape(cluster: &LocalCluster, id: u64) -> (String, Vec<Sample>) {
    let (code, text) = http(cluster.http_addr(id), "GET", "/metrics", "").await;
    assert_eq!(code, 200, "{text}");
    let samples = parse(&text);
    (text, samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_cover_raft_gossip_disk_and_every_request() {
    let cluster = LocalCluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader(&cluster.ids()).await;
    let followers: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != leader).collect();
    let (_, before) = scrape(&cluster, leader).await;
    let add = "raftlot.v1.Counters/Add";
    let get = "raftlot.v1.Counters/Get";

    const STRONG: usize = 5;
    for i in 0..STRONG {
        cluster.add(leader, "hits", i as i64, WriteMode::Strong).await.expect("strong add");
    }
    cluster.add(leader, "hits", 1, WriteMode::Eventual).await.expect("eventual add");
    let levels = [
        (ReadConsistency::Linearizable, "linearizable"),
        (ReadConsistency::Lease, "lease"),
        (ReadConsistency::Local, "local"),
        (ReadConsistency::Eventual, "eventual"),
    ];
    for (level, _) in levels {
        cluster.get(leader, "hits", level).await.expect("read");
    }
    let bad = GetRequest { name: "hits".into(), consistency: 99 };
    let err = cluster.counters(leader).get(bad).await.expect_err("unknown consistency");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let unknown = AddRequest { name: "x".into(), delta: 1, ..Default::default() };
    let _ = cluster.counters(followers[0]).add(unknown).await.expect("an add through a follower");

    let (text, after) = scrape(&cluster, leader).await;
    println!("{text}");
    for family in [
        "raftlot_grpc_requests",
        "raftlot_grpc_request_duration_seconds",
        "raftlot_leader_changes",
        "raftlot_raft_term",
        "raftlot_raft_role",
        "raftlot_raft_commit_index",
        "raftlot_raft_applied_index",
        "raftlot_raft_replication_lag_entries",
        "raftlot_gossip_pending_deltas",
        "raftlot_sled_size_bytes",
    ] {
        assert!(text.contains(&format!("# TYPE {family} ")), "no {family} family");
    }

    let requests = "raftlot_grpc_requests_total";
    let ok = [("method", add), ("consistency", "strong"), ("code", "Ok")];
    assert_eq!(value(&before, requests, &ok), 0.0);
    assert_eq!(value(&after, requests, &ok), STRONG as f64);
    let eventual = [("method", add), ("consistency", "eventual"), ("code", "Ok")];
    assert_eq!(value(&after, requests, &eventual), 1.0);
    for (_, label) in levels {
        assert_eq!(value(&after, requests, &[("method", get), ("consistency", label), ("code", "Ok")]), 1.0, "{label}");
        let count = "raftlot_grpc_request_duration_seconds_count";
        assert_eq!(value(&after, count, &[("method", get), ("consistency", label)]), 1.0, "{label}");
    }
    assert_eq!(value(&after, requests, &[("method", get), ("consistency", "none"), ("code", "InvalidArgument")]), 1.0);
    let latency =
        value(&after, "raftlot_grpc_request_duration_seconds_sum", &[("method", add), ("consistency", "strong")]);
    assert!(latency > 0.0 && latency < 5.0 * STRONG as f64, "{latency}");

    assert_eq!(value(&after, "raftlot_raft_role", &[("role", "leader")]), 1.0);
    assert_eq!(value(&after, "raftlot_raft_role", &[("role", "follower")]), 0.0);
    assert_eq!(value(&after, "raftlot_node_id", &[]), leader as f64);
    assert!(value(&after, "raftlot_raft_term", &[]) >= 1.0);
    assert!(value(&after, "raftlot_leader_changes_total", &[]) >= 1.0);
    let applied = |s: &[Sample]| value(s, "raftlot_raft_applied_index", &[]);
    assert!(applied(&after) >= applied(&before) + (STRONG + 1) as f64, "the adds moved the applied index");
    assert!(value(&after, "raftlot_raft_commit_index", &[]) >= applied(&after));
    assert!(value(&after, "raftlot_sled_size_bytes", &[]) > 0.0);
    for follower in &followers {
        let peer = [("peer", &*follower.to_string())];
        let lag = after.iter().find(|s| {
            s.name == "raftlot_raft_replication_lag_entries"
                && s.labels.get("peer").map(String::as_str) == Some(peer[0].1)
        });
        assert!(lag.is_some_and(|s| s.value >= 0.0), "no replication lag for follower {follower}");
        assert!(
            after.iter().any(|s| s.name == "raftlot_gossip_pending_deltas"
                && s.labels.get("peer").map(String::as_str) == Some(peer[0].1)),
            "no gossip lag for peer {follower}"
        );
    }

    // A follower reports itself as one and keeps no replication figures.
    let (_, follower) = scrape(&cluster, followers[0]).await;
    assert_eq!(value(&follower, "raftlot_raft_role", &[("role", "follower")]), 1.0);
    assert!(!follower.iter().any(|s| s.name == "raftlot_raft_replication_lag_entries"));
    assert_eq!(value(&follower, requests, &[("method", add), ("consistency", "strong"), ("code", "Ok")]), 1.0);

    // The leader keeps its AppendEntries streams open: 100 LINEARIZABLE reads (each a heartbeat
    // round to both followers) and 100 strong adds reuse them instead of opening a stream per
    // heartbeat. A few reopenings are allowed for a heartbeat that times out on a loaded machine.
    let opened = |s: &[Sample]| value(s, "raftlot_raft_append_streams_opened_total", &[]);
    assert!(opened(&follower) >= 1.0, "the leader opened no stream to follower {}", followers[0]);
    for i in 0..100 {
        cluster.get(leader, "hits", ReadConsistency::Linearizable).await.expect("linearizable read");
        cluster.add(leader, "hits", i, WriteMode::Strong).await.expect("strong add");
    }
    let (_, later) = scrape(&cluster, followers[0]).await;
    let reopened = opened(&later) - opened(&follower);
    assert!(reopened <= 5.0, "200 requests opened {reopened} new streams to follower {}", followers[0]);

    // Concurrent LINEARIZABLE reads share ReadIndex rounds: a read that finds the rounds busy waits
    // for the next, which proves as much for it as one of its own would. Every read is still right.
    let rounds = |s: &[Sample]| value(s, "raftlot_raft_read_index_rounds_total", &[]);
    let total = cluster.get(leader, "hits", ReadConsistency::Linearizable).await.expect("linearizable read");
    let (_, before_burst) = scrape(&cluster, leader).await;
    let reads = (0..64).map(|_| cluster.get(leader, "hits", ReadConsistency::Linearizable));
    for read in futures::future::join_all(reads).await {
        assert_eq!(read.expect("linearizable read"), total, "every read sees every acknowledged add");
    }
    let (_, after_burst) = scrape(&cluster, leader).await;
    let ran = rounds(&after_burst) - rounds(&before_burst);
    assert!((1.0..64.0).contains(&ran), "64 concurrent reads ran {ran} ReadIndex rounds");

    // A follower's forwarded LINEARIZABLE reads run none: with three voters the forward call is the
    // follower's own acknowledgement of the leader (see `Consensus::vouched_by` in
    // `src/raft/consensus.rs`). Every read is still right.
    for follower in &followers {
        let (_, before) = scrape(&cluster, leader).await;
        for _ in 0..20 {
            let read = cluster.get(*follower, "hits", ReadConsistency::Linearizable).await;
            assert_eq!(read.expect("linearizable read"), total, "a read through follower {follower}");
        }
        let (_, after) = scrape(&cluster, leader).await;
        assert_eq!(rounds(&after) - rounds(&before), 0.0, "reads through follower {follower} ran ReadIndex rounds");
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_method_consistency_and_node() {
    let options = Options {
        extra: vec!["--log-format".into(), "json".into()],
        env: vec![("RUST_LOG".into(), "info,openraft=warn,raftlot::request=debug".into())],
        ..Default::default()
    };
    let cluster = TestCluster::start_opts(1, options).await;
    cluster.get(1, "seen", ReadConsistency::Local).await.expect("local read");
    let add = AddRequest { name: "seen".into(), delta: 2, mode: WriteMode::Eventual as i32, ..Default::default() };
    cluster.counters(1).add(add).await.expect("eventual add");

    let lines = common::eventually("both requests in the log", WAIT, || async {
        let log = cluster.log_of(1);
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}")))
            .collect();
        let done = lines.iter().filter(|l| l["fields"]["message"] == "request done").count();
        (done >= 2).then_some(lines)
    })
    .await;
    let request = |method: &str| {
        lines
            .iter()
            .find(|l| l["fields"]["message"] == "request done" && l["span"]["method"] == method)
            .unwrap_or_else(|| panic!("no request line for {method}"))
            .clone()
    };
    let read = request("raftlot.v1.Counters/Get");
    assert_eq!(read["span"]["consistency"], "local", "{read}");
    assert_eq!(read["span"]["node"], 1, "{read}");
    assert_eq!(read["fields"]["code"], "Ok", "{read}");
    assert_eq!(read["level"], "DEBUG", "{read}");
    let write = request("raftlot.v1.Counters/Add");
    assert_eq!(write["span"]["consistency"], "eventual", "{write}");
    assert!(lines.iter().any(|l| l["fields"]["message"] == "node started"), "start-up lines are JSON too");
}
