//! The test harness: real `raftlot serve` processes on loopback ports chosen by the OS, data in a
//! temporary directory, and fault verbs (`kill`, `restart`, `stop`) that act on real processes.
//! Everything waits on conditions with a deadline; nothing sleeps for a fixed time to "let things
//! settle".

#![allow(dead_code)] // each test file uses a different part of the harness

pub mod docker;
pub mod history;
pub mod load;
pub mod local;
pub mod tls;

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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

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

/// `Cluster/Status` through `client`, or `None` when it does not answer within a second.
pub async fn status_via(
    mut client: ClusterClient<Channel>,
    request: tonic::Request<StatusRequest>,
) -> Option<StatusReply> {
    match tokio::time::timeout(Duration::from_secs(1), client.status(request)).await {
        Ok(Ok(reply)) => Some(reply.into_inner()),
        _ => None,
    }
}

/// Waits until one of `running` reports a leader that is also in `running` and agrees it leads.
pub async fn wait_for_agreed_leader<F, Fut>(running: &[u64], status: F) -> u64
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Option<StatusReply>>,
{
    eventually("a leader among the running nodes", WAIT, || async {
        for id in running {
            let Some(s) = status(*id).await else { continue };
            let named = s.leader_id != 0 && running.contains(&s.leader_id);
            if named && status(s.leader_id).await?.leader_id == s.leader_id {
                return Some(s.leader_id);
            }
        }
        None
    })
    .await
}

struct TestNode {
    /// The `--peers` this node starts with: the founding members, plus itself if it joined later.
    peers: String,
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    channel: Channel,
}

pub struct TestCluster {
    dir: tempfile::TempDir,
    peers: String,
    options: Options,
    nodes: BTreeMap<u64, TestNode>,
}

/// How a cluster's nodes are started and how the harness reaches them.
#[derive(Default, Clone)]
pub struct Options {
    /// Flags appended to every `raftlot serve`.
    pub extra: Vec<String>,
    /// Environment for every node, after the harness's default `RUST_LOG` (so it may override it).
    pub env: Vec<(String, String)>,
    /// The client token the harness presents (`authorization: Bearer`), for `--client-token`.
    pub token: Option<String>,
    /// TLS for the harness's client channels, for clusters started with `--tls-*`.
    pub tls: Option<ClientTlsConfig>,
    /// Give every node an HTTP port (`--http-listen`).
    pub http: bool,
}

impl Options {
    pub fn flags(extra: &[&str]) -> Self {
        Options { extra: extra.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }
}

/// A port for a node that starts later. Picked below the kernel's ephemeral range (32768-60999 by
/// default): a port the kernel hands out there is free now, but the nodes' own outgoing connections
/// draw their local ports from that same range and can take it before its node binds it. Each test
/// process walks its own stretch of ports, and one counter keeps parallel tests from sharing one.
pub fn free_port() -> u16 {
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
        Self::start_opts(n, Options::flags(extra)).await
    }

    /// Starts `n` nodes as `options` say and waits until they have elected a leader.
    pub async fn start_opts(n: u64, options: Options) -> Self {
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
            let channel = client_channel(*client_addr, options.tls.clone());
            let node = TestNode {
                peers: peers.clone(),
                client_addr: *client_addr,
                peer_addr: *peer_addr,
                http_addr: options.http.then(|| SocketAddr::from(([127, 0, 0, 1], free_port()))),
                data_dir: dir.path().join(format!("node-{id}")),
                log: dir.path().join(format!("node-{id}.log")),
                child: None,
                channel,
            };
            nodes.insert(*id, node);
        }
        let mut cluster = TestCluster { dir, peers, options, nodes };
        for id in 1..=n {
            cluster.restart(id);
        }
        cluster.wait_for_leader().await;
        cluster
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Starts a new node, not yet a member: it waits for the leader to add it (`Cluster/AddNode`).
    /// Returns its id and its client and peer addresses.
    pub fn spawn_new_node(&mut self) -> (u64, SocketAddr, SocketAddr) {
        let id = self.nodes.keys().max().map_or(1, |m| m + 1);
        let client_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let peer_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let node = TestNode {
            peers: format!("{},{id}={client_addr}/{peer_addr}", self.peers),
            client_addr,
            peer_addr,
            http_addr: self.options.http.then(|| SocketAddr::from(([127, 0, 0, 1], free_port()))),
            data_dir: self.dir.path().join(format!("node-{id}")),
            log: self.dir.path().join(format!("node-{id}.log")),
            child: None,
            channel: client_channel(client_addr, self.options.tls.clone()),
        };
        self.nodes.insert(id, node);
        self.restart(id);
        (id, client_addr, peer_addr)
    }

    /// Forgets a node that left the cluster, killing its process if it still runs.
    pub fn forget(&mut self, id: u64) {
        self.kill(id);
        self.nodes.remove(&id);
    }

    pub fn client_addr(&self, id: u64) -> SocketAddr {
        self.nodes[&id].client_addr
    }

    pub fn peer_addr(&self, id: u64) -> SocketAddr {
        self.nodes[&id].peer_addr
    }

    pub fn http_addr(&self, id: u64) -> SocketAddr {
        self.nodes[&id].http_addr.expect("the cluster was started with Options::http")
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
        let extra = self.options.extra.clone();
        self.restart_with(id, &extra);
    }

    /// Starts node `id` with `extra` in place of the cluster's own extra flags, e.g. a wrong secret.
    pub fn restart_with(&mut self, id: u64, extra: &[String]) {
        let node = self.nodes.get_mut(&id).expect("known node");
        assert!(node.child.is_none(), "node {id} is already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_raftlot"))
            .arg("serve")
            .args(["--id", &id.to_string(), "--peers", &node.peers])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(extra)
            .args(node.http_addr.iter().flat_map(|a| ["--http-listen".to_string(), a.to_string()]))
            .env("RUST_LOG", "info,openraft=warn")
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
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

    /// Wraps a message in a request that carries the cluster's client token, if it has one.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.options.token {
            let value = format!("Bearer {token}").parse().expect("a token is ASCII");
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    /// Waits for node `id`'s process to exit by itself and returns its exit status.
    pub async fn wait_exit(&mut self, id: u64, limit: Duration) -> std::process::ExitStatus {
        let node = self.nodes.get_mut(&id).expect("known node");
        let child = node.child.as_mut().expect("node is running");
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                node.child = None;
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "node {id} still runs after {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn status(&self, id: u64) -> Option<StatusReply> {
        status_via(self.cluster(id), self.request(StatusRequest {})).await
    }

    /// Waits until a running node reports a leader that is itself running and agrees it leads.
    pub async fn wait_for_leader(&self) -> u64 {
        let running: Vec<u64> = self.ids().into_iter().filter(|id| self.is_running(*id)).collect();
        wait_for_agreed_leader(&running, |id| self.status(id)).await
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
        Ok(self.counters(id).get(self.request(request)).await?.into_inner().value)
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

/// A lazily connecting channel to a node's client port, over TLS when `tls` is given.
pub fn client_channel(addr: SocketAddr, tls: Option<ClientTlsConfig>) -> Channel {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}")).expect("endpoint");
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).expect("client TLS config");
    }
    raftlot::api::connect_lazy(&endpoint.connect_timeout(Duration::from_millis(500)))
}

/// Sends one HTTP/1.1 request and returns the status code and body.
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    http_with(addr, method, path, &[], body).await
}

/// [`http`] with extra request headers.
pub async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect to the HTTP port");
    let headers: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send the HTTP request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read the HTTP response");
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Runs the real grpcurl; returns whether it succeeded and everything it printed.
pub fn grpcurl(args: &[&str]) -> (bool, String) {
    let out = Command::new("grpcurl").args(args).output().expect("run grpcurl");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Whether grpcurl is on PATH (`.ci/run` installs it; tests that need it skip, saying so, without it).
pub fn have_grpcurl() -> bool {
    Command::new("grpcurl").arg("-version").output().is_ok_and(|o| o.status.success())
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
