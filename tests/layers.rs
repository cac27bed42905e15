//! The layering rules, checked on the source: openraft and sled are named only under `src/raft/`
//! and `src/api/`, so an upgrade of either stays there; tonic only where the gRPC edge is; and the
//! domain and CRDT code does no IO and reads no clock, so it stays pure and deterministic.
//!
//! Comments are skipped: they may talk about openraft; code may not use it.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, as paths relative to the crate root.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            found.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found
}

/// The lines of `path` that are code, with any trailing `//` comment cut off, numbered from 1.
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).expect("read a source file");
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let code = line.split("//").next().unwrap_or("").trim();
            (!code.is_empty()).then(|| (i + 1, code.to_string()))
        })
        .collect()
}

/// Where the files under `src/` that `checked` picks (by their path from the crate root) name any
/// of `forbidden`.
fn violations(forbidden: &[&str], checked: impl Fn(&str) -> bool) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for path in sources(&root.join("src")) {
        let relative = path.strip_prefix(root).expect("under the crate root").to_string_lossy().replace('\\', "/");
        if !checked(&relative) {
            continue;
        }
        for (number, code) in code_lines(&path) {
            if let Some(name) = forbidden.iter().find(|f| code.contains(*f)) {
                found.push(format!("{relative}:{number} names {name}: {code}"));
            }
        }
    }
    found
}

#[test]
fn openraft_and_sled_stay_in_the_raft_and_api_modules() {
    let seen = violations(&["openraft::"], |p| p.starts_with("src/raft/"));
    assert!(!seen.is_empty(), "the scan finds openraft where it is used");
    let found = violations(&["openraft::", "sled::"], |p| !p.starts_with("src/raft/") && !p.starts_with("src/api/"));
    assert!(found.is_empty(), "openraft or sled outside src/raft and src/api:\n{}", found.join("\n"));
}

#[test]
fn tonic_stays_at_the_grpc_edge() {
    // `error` holds the one conversion to `tonic::Status`, `pb` the generated code, and the `cli`
    // commands are gRPC clients.
    let edge = ["src/api/", "src/raft/network.rs", "src/error.rs", "src/pb.rs", "src/cli/"];
    assert!(!violations(&["tonic"], |p| p.starts_with("src/api/")).is_empty(), "the scan finds tonic in api");
    let found = violations(&["tonic"], |p| !edge.iter().any(|e| p.starts_with(e)));
    assert!(found.is_empty(), "tonic outside the gRPC edge:\n{}", found.join("\n"));
}

#[test]
fn domain_and_crdt_code_do_no_io_and_read_no_clock() {
    let impure =
        ["tokio", "std::fs", "std::net", "std::io", "SystemTime", "Instant", "rand::", "tonic", "openraft", "sled"];
    assert!(!violations(&impure, |p| p.starts_with("src/node/")).is_empty(), "the scan finds IO in the node");
    let found = violations(&impure, |p| p.starts_with("src/domain/") || p.starts_with("src/crdt/"));
    assert!(found.is_empty(), "IO, a clock or randomness in pure code:\n{}", found.join("\n"));
}
