//! A smoke test of `raftlot bench` against a real three-node cluster: each workload runs briefly and
//! writes a JSON report and an SVG plot. No timing is asserted: benchmarks report, tests check.

mod common;

use std::process::Command;

use common::TestCluster;

fn bench(cluster: &TestCluster, args: &[&str]) -> serde_json::Value {
    let endpoints = cluster.ids().iter().map(|id| cluster.client_addr(*id).to_string()).collect::<Vec<_>>().join(",");
    let json = cluster.root().join(format!("bench-{}.json", args.join("-").replace(['/', ','], "_")));
    let out = Command::new(env!("CARGO_BIN_EXE_raftlot"))
        .args(["bench", "--endpoints", &endpoints, "--duration", "500ms", "--keys", "8"])
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run raftlot bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("ops/s") && stdout.contains("p99.9 ms"), "table printed:\n{stdout}");
    serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON report")).expect("valid JSON")
}

fn rows(report: &serde_json::Value) -> &Vec<serde_json::Value> {
    report["rows"].as_array().expect("rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_every_workload_and_writes_json_and_a_plot() {
    let cluster = TestCluster::start(3).await;
    let plot = cluster.root().join("read.svg");
    let plot_arg = plot.display().to_string();
    let read = bench(
        &cluster,
        &["--workload", "read", "--clients", "1,4", "--consistency", "linearizable,eventual", "--plot", &plot_arg],
    );
    assert_eq!(rows(&read).len(), 4, "one row per clients x level: {read}");
    for row in rows(&read) {
        assert!(row["ops"].as_u64().unwrap() > 0, "{row}");
        assert_eq!(row["errors"], 0, "{row}");
        assert!(row["p50_us"].as_u64().unwrap() <= row["p99_us"].as_u64().unwrap(), "{row}");
    }
    let svg = std::fs::read_to_string(&plot).expect("plot written");
    assert!(svg.contains("<svg") && svg.contains("get eventual"), "the plot names its series");

    let park = bench(&cluster, &["--workload", "park", "--clients", "3", "--consistency", "linearizable,eventual"]);
    let ops: Vec<&str> = rows(&park).iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["park strong", "park eventual"]);
    assert!(rows(&park).iter().all(|r| r["errors"] == 0 && r["ops"].as_u64().unwrap() > 0), "{park}");

    let mixed = bench(&cluster, &["--workload", "mixed", "--clients", "2", "--consistency", "lease"]);
    assert_eq!(rows(&mixed).len(), 1);

    let stale = bench(&cluster, &["--workload", "staleness", "--consistency", "local,eventual", "--ops", "20"]);
    let ops: Vec<&str> = rows(&stale).iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["staleness local", "staleness eventual"]);
    assert!(rows(&stale).iter().all(|r| r["ops"].as_u64().unwrap() > 0), "{stale}");
}
