//! A smoke test of `raftlot bench` against a real three-node cluster: each workload runs briefly and
//! writes a JSON report and an SVG plot. No timing is asserted: benchmarks report, tests check.

mod common;

use std::process::Command;

use common::TestCluster;

/// Runs `raftlot bench` with `args` against every node and returns its JSON report and stderr.
fn bench_with_stderr(cluster: &TestCluster, args: &[&str]) -> (serde_json::Value, String) {
    let endpoints = cluster.ids().iter().map(|id| cluster.client_addr(*id).to_string()).collect::<Vec<_>>().join(",");
    let json = cluster.root().join(format!("bench-{}.json", args.join("-").replace(['/', ','], "_")));
    let out = Command::new(env!("CARGO_BIN_EXE_raftlot"))
        .args(["bench", "--endpoints", &endpoints, "--keys", "8"])
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run raftlot bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("ops/s") && stdout.contains("p99.9 ms"), "table printed:\n{stdout}");
    let report = serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON report")).expect("valid JSON");
    (report, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A short run of `args`: half a second each.
fn bench(cluster: &TestCluster, args: &[&str]) -> serde_json::Value {
    bench_with_stderr(cluster, &[args, &["--duration", "500ms"]].concat()).0
}

fn rows(report: &serde_json::Value) -> &Vec<serde_json::Value> {
    report["rows"].as_array().expect("rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_every_workload_and_writes_json_and_a_plot() {
    let cluster = TestCluster::start(3).await;
    let plot = cluster.root().join("read.svg");
    let plot_arg = plot.display().to_string();
    let read_args = "--workload read --clients 1,4 --consistency linearizable,eventual --health-check --plot";
    let read = bench(&cluster, &[read_args.split(' ').collect(), vec![plot_arg.as_str()]].concat());
    let ops: Vec<&str> = rows(&read).iter().map(|r| r["op"].as_str().unwrap()).collect();
    let per_clients = ["health check", "get linearizable", "get eventual"];
    assert_eq!(ops, [per_clients, per_clients].concat(), "the floor, then one row per level, per clients: {read}");
    for row in rows(&read) {
        assert!(row["ops"].as_u64().unwrap() > 0, "{row}");
        assert_eq!(row["errors"], 0, "{row}");
        assert_eq!(row["connections"], row["clients"], "each client has its own connection by default: {row}");
        assert!(row["p50_us"].as_u64().unwrap() <= row["p99_us"].as_u64().unwrap(), "{row}");
    }
    // Which first endpoint leads, for the one-client rows; no etcd ran, so it cannot say for etcd.
    let first_leads = cluster.wait_for_leader().await == cluster.ids()[0];
    assert_eq!(read["first_endpoint_leads"]["raftlot"], first_leads, "{read}");
    assert!(read["first_endpoint_leads"]["etcd"].is_null(), "{read}");
    let svg = std::fs::read_to_string(&plot).expect("plot written");
    assert!(svg.contains("<svg") && svg.contains("get eventual"), "the plot names its series");

    // Three clients take turns on one connection, each with its own car.
    let park = bench(
        &cluster,
        &["--workload", "park", "--clients", "3", "--conns", "1", "--consistency", "linearizable,eventual"],
    );
    let ops: Vec<&str> = rows(&park).iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["park strong", "park eventual"]);
    assert!(rows(&park).iter().all(|r| r["errors"] == 0 && r["ops"].as_u64().unwrap() > 0), "{park}");
    assert!(rows(&park).iter().all(|r| r["connections"] == 1), "{park}");

    // Each weaker read is compared with LINEARIZABLE's p50 in the same round.
    let summary = read["summary"].as_array().expect("summary");
    let eventual = summary.iter().filter(|s| s["op"] == "get eventual").collect::<Vec<_>>();
    assert_eq!(eventual.len(), 2, "one per client count: {read}");
    assert!(eventual.iter().all(|s| s["p50_vs_linearizable"].as_array().unwrap().len() == 1), "{read}");
    // And each read with the health check, the call that reads nothing.
    assert!(eventual.iter().all(|s| s["p50_vs_health_check"].as_array().unwrap().len() == 1), "{read}");

    // Rounds repeat every pass; the summary takes the medians across them.
    let mixed = bench(&cluster, &["--workload", "mixed", "--clients", "2", "--consistency", "lease", "--rounds", "2"]);
    let rounds: Vec<u64> = rows(&mixed).iter().map(|r| r["round"].as_u64().unwrap()).collect();
    assert_eq!(rounds, [1, 2]);
    assert_eq!(mixed["summary"][0]["rounds"], 2, "{mixed}");

    // --ops alone bounds a run by its count (the time bound is then an hour).
    let (stale, _) =
        bench_with_stderr(&cluster, &["--workload", "staleness", "--consistency", "local,eventual", "--ops", "20"]);
    let ops: Vec<&str> = rows(&stale).iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["staleness local", "staleness eventual"]);
    assert!(rows(&stale).iter().all(|r| r["ops"].as_u64().unwrap() > 0), "{stale}");
    for row in rows(&stale) {
        assert_eq!(row["ops"].as_u64().unwrap() + row["errors"].as_u64().unwrap(), 20, "{row}");
    }

    let add_args = ["--workload", "add", "--clients", "1", "--consistency", "linearizable", "--ops", "40"];
    let (add, stderr) = bench_with_stderr(&cluster, &add_args);
    assert_eq!(rows(&add)[0]["ops"], 40, "one client stops at exactly --ops: {add}");
    assert!(!stderr.contains("--duration bound"), "a run that reached its count is not flagged: {stderr}");

    // A run the time bound ends before its count says so, so its figures are not taken for N.
    let cut = ["--workload", "read", "--clients", "2", "--consistency", "local", "--ops", "100000000"];
    let (cut_short, stderr) = bench_with_stderr(&cluster, &[&cut[..], &["--duration", "300ms"]].concat());
    assert!(stderr.contains("the --duration bound ended this run after"), "{stderr}");
    assert_eq!(rows(&cut_short).len(), 1, "no health check pass unless asked for: {cut_short}");

    let floor_for_writes =
        Command::new(env!("CARGO_BIN_EXE_raftlot")).args(["bench", "--workload", "add", "--health-check"]).output();
    let floor_for_writes = floor_for_writes.expect("run");
    let stderr = String::from_utf8_lossy(&floor_for_writes.stderr);
    assert!(!floor_for_writes.status.success() && stderr.contains("--health-check"), "{stderr}");

    let zero = Command::new(env!("CARGO_BIN_EXE_raftlot")).args(["bench", "--rounds", "0"]).output().expect("run");
    assert!(!zero.status.success() && String::from_utf8_lossy(&zero.stderr).contains("--rounds"), "{zero:?}");
}
