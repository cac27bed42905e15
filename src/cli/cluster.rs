//! `raftlot cluster`: starts `--nodes` separate `raftlot serve` processes on this machine, waits for
//! every node to serve and agree on a leader, prints how to reach and restart each node, and stops
//! them all on Ctrl-C.
//!
//! Each node is a real OS process with its own sled directory, so `kill -9 <pid>` is a real crash.
//! A node that dies is reported, not restarted: the point is to watch failover and then restart it
//! by hand with its printed command.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

use super::status::{fetch_status, format_status};
use super::ClientAccess;
use crate::config::{format_peers, ClusterArgs, HostPort, Member};

/// Prints a line, ignoring a closed stdout: losing the terminal must not stop the nodes uncleanly.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

macro_rules! out_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

struct Spawned {
    id: u64,
    child: Child,
    command_line: String,
    client_addr: HostPort,
}

fn shell_quote(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Each node's worker threads when `nodes` nodes share `cores` cores. tokio's default gives every
/// process one worker per core, so three nodes on two cores run six workers that keep waking one
/// another to steal work; measured on two cores, one worker per node served 15-40% more reads at 64
/// clients for less CPU per read, and 5-12% fewer strong writes (benches/README.md).
fn worker_share(cores: usize, nodes: u64) -> u64 {
    (cores as u64 / nodes.max(1)).max(1)
}

/// How long `cluster` waits for a port that a connection, not a listener, holds: Linux keeps the
/// port of a connection closed from this side in TIME_WAIT for 60 s.
const CONNECTION_HOLD: Duration = Duration::from_secs(65);

/// Fails before any node starts when an address a node must listen on is taken by a listener. Were
/// another cluster already serving there, it would answer the start-up checks in the new nodes'
/// place while they exit, and the command would report a cluster that is not its own. A port held
/// only by a connection (these ports lie in Linux's ephemeral range, so another program's outgoing
/// connection can use one, and keeps it for a minute after it closes) frees itself: the command says
/// so and waits.
async fn ensure_free(id: u64, what: &str, addr: &HostPort) -> anyhow::Result<()> {
    let give_up = tokio::time::Instant::now() + CONNECTION_HOLD;
    let mut waiting = false;
    loop {
        let e = match std::net::TcpListener::bind(addr.to_string()) {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let listened = std::net::TcpStream::connect(addr.to_string()).is_ok();
        if listened || e.kind() != std::io::ErrorKind::AddrInUse || tokio::time::Instant::now() >= give_up {
            let holder = if listened { "another cluster or program listens there" } else { "a connection holds it" };
            bail!("cannot start node {id}: its {what} address {addr} is unavailable ({e}); {holder}");
        }
        if !waiting {
            out!(
                "raftlot: node {id}'s {what} address {addr} is held by a connection, not a listener; \
                 waiting up to {}s for it to close",
                CONNECTION_HOLD.as_secs()
            );
            waiting = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > 99 {
        bail!("invalid --nodes: {} (1 to 99)", args.nodes);
    }
    let mut members = BTreeMap::new();
    let mut http_addrs = BTreeMap::new();
    for id in 1..=args.nodes {
        let offset = u16::try_from(id - 1)?;
        let port =
            |base: u16| base.checked_add(offset).with_context(|| format!("port {base} + {offset} is out of range"));
        let addr = |base: u16| -> anyhow::Result<HostPort> {
            HostPort::parse(&format!("{}:{}", args.host, port(base)?))
                .map_err(|why| anyhow::anyhow!("invalid --host: {why}"))
        };
        members.insert(id, Member { client_addr: addr(args.client_port)?, peer_addr: addr(args.peer_port)? });
        http_addrs.insert(id, addr(args.http_port)?);
    }
    for (id, member) in &members {
        let wanted = [("client", &member.client_addr), ("peer", &member.peer_addr), ("HTTP", &http_addrs[id])];
        for (what, addr) in wanted {
            ensure_free(*id, what, addr).await?;
        }
    }
    let peers = format_peers(&members);
    let exe = std::env::current_exe().context("cannot find the raftlot executable")?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = args.worker_threads.map_or_else(|| worker_share(cores, args.nodes), u64::from);
    let mut nodes = Vec::new();
    for (id, member) in &members {
        let data_dir = args.data_dir.join(format!("node-{id}"));
        std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
        let log_path = data_dir.join("node.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let mut argv = vec![
            "serve".to_string(),
            "--id".to_string(),
            id.to_string(),
            "--peers".to_string(),
            peers.clone(),
            "--data-dir".to_string(),
            data_dir.display().to_string(),
            "--http-listen".to_string(),
            http_addrs[id].to_string(),
        ];
        for lot in &args.lots {
            argv.push("--lot".to_string());
            argv.push(lot.clone());
        }
        argv.push("--worker-threads".to_string());
        argv.push(workers.to_string());
        let mut command = Command::new(&exe);
        command.args(&argv).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).kill_on_drop(true);
        if let Some(secret) = &args.cluster_secret {
            command.env("RAFTLOT_CLUSTER_SECRET", secret);
        }
        let child = command.spawn().with_context(|| format!("cannot start node {id}"))?;
        let mut command_line = shell_quote(&exe.display().to_string());
        for a in &argv {
            command_line.push(' ');
            command_line.push_str(&shell_quote(a));
        }
        nodes.push(Spawned { id: *id, child, command_line, client_addr: member.client_addr.clone() });
    }

    let status = wait_for_cluster(&mut nodes, Duration::from_secs(30)).await?;
    out!("raftlot: {} nodes up, leader is node {} (term {})\n", nodes.len(), status.leader_id, status.term);
    out_raw!("{}", format_status(&status));
    out!("");
    for n in &nodes {
        let pid = n.child.id().map_or("?".to_string(), |p| p.to_string());
        out!("node {} pid {pid}, log {}", n.id, args.data_dir.join(format!("node-{}/node.log", n.id)).display());
        out!("  restart: {}", n.command_line);
    }
    let http_first = http_addrs[&1].to_string();
    out!("\n{}", cheat_sheet(&nodes[0].client_addr, &nodes[nodes.len() - 1].client_addr, &http_first));
    // Listening before saying so: a Ctrl-C right after the line must stop the nodes, not kill this
    // process and leave them running.
    let shutdown = crate::node::shutdown_signal();
    out!("Ctrl-C stops every node.");

    supervise(&mut nodes, shutdown).await;
    stop_all(&mut nodes).await;
    Ok(())
}

/// Polls every node's `Cluster/Status` until all of them answer and name the same leader, failing
/// fast if a node exits: "N nodes up" must mean that every node serves, not that a majority elected
/// a leader while one node failed (its data directory unusable, or a port `ensure_free` found free
/// taken by the time the node bound it). Returns the leader's view.
async fn wait_for_cluster(nodes: &mut [Spawned], limit: Duration) -> anyhow::Result<crate::pb::v1::StatusReply> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut silent = Vec::new();
        let mut leaders = BTreeSet::new();
        let mut leader_view = None;
        for n in nodes.iter_mut() {
            if let Some(exit) = n.child.try_wait()? {
                bail!("node {} exited during start-up ({exit}); see its node.log", n.id);
            }
            let endpoint = format!("http://{}", n.client_addr);
            let access = ClientAccess::default();
            let asked = tokio::time::timeout(Duration::from_millis(500), fetch_status(&endpoint, &access));
            match asked.await {
                Ok(Ok(s)) => {
                    leaders.insert(s.leader_id);
                    if s.leader_id == n.id {
                        leader_view = Some(s);
                    }
                }
                _ => silent.push(n.id),
            }
        }
        let agreed = silent.is_empty() && leaders.len() == 1;
        if let Some(view) = leader_view.filter(|_| agreed) {
            return Ok(view);
        }
        if tokio::time::Instant::now() >= deadline {
            if silent.is_empty() {
                bail!("the nodes did not agree on a leader within {limit:?}; see the nodes' node.log files");
            }
            bail!("nodes {silent:?} did not answer within {limit:?}; see their node.log files");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for `shutdown` (Ctrl-C or SIGTERM), reporting nodes that die meanwhile.
async fn supervise(nodes: &mut [Spawned], shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut reported = vec![false; nodes.len()];
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        for (i, n) in nodes.iter_mut().enumerate() {
            if reported[i] {
                continue;
            }
            if let Ok(Some(exit)) = n.child.try_wait() {
                reported[i] = true;
                out!("node {} exited ({exit}); restart it with:\n  {}", n.id, n.command_line);
            }
        }
    }
}

/// SIGTERM to every node (each flushes and stops its servers), then SIGKILL after a grace period.
async fn stop_all(nodes: &mut [Spawned]) {
    for n in nodes.iter() {
        if let Some(pid) = n.child.id() {
            // SAFETY: kill(2) with a pid we spawned and still own; no memory is involved.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    for n in nodes.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(10), n.child.wait()).await {
            Ok(_) => out!("node {} stopped", n.id),
            Err(_) => {
                let _ = n.child.kill().await;
                out!("node {} did not stop within 10s and was killed", n.id);
            }
        }
    }
}

pub fn cheat_sheet(first: &HostPort, last: &HostPort, http: &str) -> String {
    format!(
        r#"grpcurl cheat-sheet:
  grpcurl -plaintext {first} list
  grpcurl -plaintext -d '{{"name":"mycount","delta":"2"}}' {last} raftlot.v1.Counters/Add
  grpcurl -plaintext -d '{{"name":"mycount"}}' {first} raftlot.v1.Counters/Get
  grpcurl -plaintext -d '{{"name":"mycount","consistency":"READ_CONSISTENCY_LOCAL"}}' {last} raftlot.v1.Counters/Get
  grpcurl -plaintext -d '{{"name":"mycount","delta":"5","mode":"WRITE_MODE_EVENTUAL"}}' {last} raftlot.v1.Counters/Add
  grpcurl -plaintext -d '{{"name":"mycount","consistency":"READ_CONSISTENCY_EVENTUAL"}}' {first} raftlot.v1.Counters/Get
  grpcurl -plaintext {first} raftlot.v1.Counters/List
  grpcurl -plaintext -d '{{"lot":"main","plate":"AB-123","gate":1}}' {last} raftlot.v1.Parking/Enter
  grpcurl -plaintext -d '{{"lot":"main"}}' {first} raftlot.v1.Parking/GetLot
  grpcurl -plaintext -d '{{"key":"report:42","lease_ms":"30000"}}' {last} raftlot.v1.Cache/Claim
  grpcurl -plaintext {first} raftlot.v1.Cluster/Status
  grpcurl -plaintext {first} grpc.health.v1.Health/Check
  curl -d 3 {http}/counter/mycount && curl {http}/counter/mycount/value && curl {http}/counter/mycount/consistent_value
"#
    )
}

#[cfg(test)]
mod tests {
    use super::worker_share;

    #[test]
    fn nodes_split_the_cores_and_each_keeps_at_least_one_worker() {
        assert_eq!(worker_share(2, 3), 1);
        assert_eq!(worker_share(8, 3), 2);
        assert_eq!(worker_share(16, 1), 16);
        assert_eq!(worker_share(1, 5), 1);
    }
}
