//! The test harness: real `raftlot serve` processes on loopback ports chosen by the OS, data in a
//! temporary directory, and fault verbs (`kill`, `restart`, `stop`) that act on real processes.
//! Everything waits on conditions with a deadline; nothing sleeps for a fixed time to "let things
//! settle".

#![allow(dead_code)] // each test file uses a different part of the harness

pub mod history;
pub mod local;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use raftlot::pb::v1::cache_client::CacheClient;
use raftlot::pb::v1::cluster_client::ClusterClient;
use raftlot::pb::v1::counters_client::CountersClient;
use raftlot::pb::v1::parking_client::ParkingClient;
use raftlot::pb::v1::{GetRequest, ReadConsistency, StatusReply, StatusRequest};
use tonic::transport::{Channel, Endpoint};

pub const WAIT: Duration = Duration::from_secs(20);

/// Polls `check` every 20 ms until it yields a value, panicking with `what` after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct TestNode {
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    channel: Channel,
}

pub struct TestCluster {
    dir: tempfile::TempDir,
    peers: String,
    extra: Vec<String>,
    nodes: BTreeMap<u64, TestNode>,
}

/// A port for a node that starts later. Picked below the kernel's ephemeral range (32768-60999 by
/// default): a port the kernel hands out there is free now, but the nodes' own outgoing connections
/// draw their local ports from that same range and can take it before its node binds it. Each test
/// process walks its own stretch of ports, and one counter keeps parallel tests from sharing one.
fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = (std::process::id() % 100) * 120;
    loop {
        let port = (20_000 + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl TestCluster {
    /// Starts `n` nodes and waits until they have elected a leader.
    pub async fn start(n: u64) -> Self {
        Self::start_with(n, &[]).await
    }

    /// Starts `n` nodes, each with `extra` flags appended to `raftlot serve`.
    pub async fn start_with(n: u64, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let addrs: Vec<(u64, SocketAddr, SocketAddr)> = (1..=n)
            .map(|id| {
                let client = SocketAddr::from(([127, 0, 0, 1], free_port()));
                let peer = SocketAddr::from(([127, 0, 0, 1], free_port()));
                (id, client, peer)
            })
            .collect();
        let peers = addrs.iter().map(|(id, c, p)| format!("{id}={c}/{p}")).collect::<Vec<_>>().join(",");
        let mut nodes = BTreeMap::new();
        for (id, client_addr, peer_addr) in &addrs {
            let channel = Endpoint::from_shared(format!("http://{client_addr}"))
                .expect("endpoint")
                .connect_timeout(Duration::from_millis(500))
                .connect_lazy();
            let node = TestNode {
                client_addr: *client_addr,
                peer_addr: *peer_addr,
                data_dir: dir.path().join(format!("node-{id}")),
                log: dir.path().join(format!("node-{id}.log")),
                child: None,
                channel,
            };
            nodes.insert(*id, node);
        }
        let mut cluster = TestCluster { dir, peers, extra: extra.iter().map(|s| s.to_string()).collect(), nodes };
        for id in 1..=n {
            cluster.restart(id);
        }
        cluster.wait_for_leader().await;
        cluster
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn client_addr(&self, id: u64) -> SocketAddr {
        self.nodes[&id].client_addr
    }

    pub fn peer_addr(&self, id: u64) -> SocketAddr {
        self.nodes[&id].peer_addr
    }

    pub fn counters(&self, id: u64) -> CountersClient<Channel> {
        CountersClient::new(self.nodes[&id].channel.clone())
    }

    pub fn parking(&self, id: u64) -> ParkingClient<Channel> {
        ParkingClient::new(self.nodes[&id].channel.clone())
    }

    pub fn cache(&self, id: u64) -> CacheClient<Channel> {
        CacheClient::new(self.nodes[&id].channel.clone())
    }

    pub fn cluster(&self, id: u64) -> ClusterClient<Channel> {
        ClusterClient::new(self.nodes[&id].channel.clone())
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.nodes[&id].child.is_some()
    }

    /// Fault verb: starts (or starts again) node `id` with the same flags and data directory.
    pub fn restart(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("known node");
        assert!(node.child.is_none(), "node {id} is already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_raftlot"))
            .arg("serve")
            .args(["--id", &id.to_string(), "--peers", &self.peers])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(&self.extra)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn raftlot serve");
        node.child = Some(child);
    }

    /// Fault verb: SIGKILL, so nothing is flushed or closed on the way out.
    pub fn kill(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("known node");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Fault verb: SIGTERM and wait for a clean exit.
    pub async fn stop(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("known node");
        if let Some(mut child) = node.child.take() {
            // SAFETY: kill(2) on a child process this harness spawned and has not reaped.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        assert!(status.success(), "node {id} exited with {status} on SIGTERM; see {:?}", node.log);
                        return;
                    }
                    _ if std::time::Instant::now() >= deadline => panic!("node {id} ignored SIGTERM for 10 s"),
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
    }

    pub async fn status(&self, id: u64) -> Option<StatusReply> {
        let mut client = self.cluster(id);
        let call = client.status(StatusRequest {});
        match tokio::time::timeout(Duration::from_secs(1), call).await {
            Ok(Ok(reply)) => Some(reply.into_inner()),
            _ => None,
        }
    }

    /// Waits until a running node reports a leader that is itself running and agrees it leads.
    pub async fn wait_for_leader(&self) -> u64 {
        eventually("a leader among the running nodes", WAIT, || async {
            for id in self.ids().into_iter().filter(|id| self.is_running(*id)) {
                let Some(s) = self.status(id).await else { continue };
                if s.leader_id != 0 && self.is_running(s.leader_id) {
                    let leader_view = self.status(s.leader_id).await?;
                    if leader_view.leader_id == s.leader_id {
                        return Some(s.leader_id);
                    }
                }
            }
            None
        })
        .await
    }

    pub fn followers(&self, leader: u64) -> Vec<u64> {
        self.ids().into_iter().filter(|id| *id != leader).collect()
    }

    /// The node's own applied index, from its own view.
    pub async fn applied_index(&self, id: u64) -> Option<u64> {
        let s = self.status(id).await?;
        s.nodes.iter().find(|n| n.id == id).map(|n| n.applied_index)
    }

    /// Waits until every running node has applied at least `index`.
    pub async fn wait_for_applied(&self, index: u64) {
        for id in self.ids().into_iter().filter(|id| self.is_running(*id)) {
            eventually(&format!("node {id} to apply index {index}"), WAIT, || async {
                (self.applied_index(id).await? >= index).then_some(())
            })
            .await;
        }
    }

    pub async fn get(&self, id: u64, name: &str, consistency: ReadConsistency) -> Result<i64, tonic::Status> {
        let request = GetRequest { name: name.to_string(), consistency: consistency as i32 };
        Ok(self.counters(id).get(request).await?.into_inner().value)
    }

    pub fn log_of(&self, id: u64) -> String {
        std::fs::read_to_string(&self.nodes[&id].log).unwrap_or_default()
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.nodes[&id].data_dir.clone()
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
