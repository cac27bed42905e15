//! An in-process cluster: every node runs `raftlot::node::run` in this test's runtime, on real
//! loopback TCP and real sled files, and all share one `Faults` so a test can cut peer links with
//! `isolate`, `cut` and `heal` and watch what each side still serves.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use raftlot::config::{Cli, Command, Config};
use raftlot::node::Listeners;
use raftlot::pb::v1::cluster_client::ClusterClient;
use raftlot::pb::v1::counters_client::CountersClient;
use raftlot::pb::v1::parking_client::ParkingClient;
use raftlot::pb::v1::{AddRequest, GetRequest, ReadConsistency, ReadMeta, StatusReply, StatusRequest, WriteMode};
use raftlot::raft::network::Faults;
use tokio::sync::oneshot;
use tonic::transport::Channel;

use super::{eventually, WAIT};

struct LocalNode {
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    http_addr: SocketAddr,
    channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub struct LocalCluster {
    faults: Faults,
    nodes: BTreeMap<u64, LocalNode>,
    _dir: tempfile::TempDir,
}

fn bind() -> std::net::TcpListener {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.set_nonblocking(true).expect("non-blocking listener");
    l
}

fn tokio_listener(l: std::net::TcpListener) -> tokio::net::TcpListener {
    tokio::net::TcpListener::from_std(l).expect("tokio listener")
}

impl LocalCluster {
    /// Starts `n` nodes with `extra` flags for `raftlot serve` and waits for a leader.
    pub async fn start(n: u64, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let sockets: Vec<_> = (1..=n).map(|id| (id, bind(), bind(), bind())).collect();
        let peers = sockets
            .iter()
            .map(|(id, c, p, _)| format!("{id}={}/{}", c.local_addr().unwrap(), p.local_addr().unwrap()))
            .collect::<Vec<_>>()
            .join(",");
        let faults = Faults::default();
        let mut nodes = BTreeMap::new();
        for (id, client, peer, http) in sockets {
            let data_dir = dir.path().join(format!("node-{id}"));
            let mut argv = vec![
                "raftlot".to_string(),
                "serve".into(),
                "--id".into(),
                id.to_string(),
                "--peers".into(),
                peers.clone(),
                "--data-dir".into(),
                data_dir.display().to_string(),
            ];
            argv.extend(extra.iter().map(|s| s.to_string()));
            let Command::Serve(args) = Cli::try_parse_from(argv).expect("serve flags").command else {
                unreachable!("parsed a serve command")
            };
            let config = Config::try_from(args).expect("valid config");
            let client_addr = client.local_addr().unwrap();
            let peer_addr = peer.local_addr().unwrap();
            let http_addr = http.local_addr().unwrap();
            let listeners = Listeners {
                client: tokio_listener(client),
                peer: tokio_listener(peer),
                http: Some(tokio_listener(http)),
            };
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(raftlot::node::run(config, listeners, faults.clone(), async move {
                let _ = stopped.await;
            }));
            let channel = super::client_channel(client_addr, None);
            nodes.insert(id, LocalNode { client_addr, peer_addr, http_addr, channel, stop: Some(stop), task });
        }
        let cluster = LocalCluster { faults, nodes, _dir: dir };
        cluster.wait_for_leader(&cluster.ids()).await;
        cluster
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Fault verb: cuts `id` off from every other node, both ways. Clients still reach it.
    pub fn isolate(&self, id: u64) {
        self.faults.isolate(id, self.ids());
    }

    /// Fault verb: cuts the link between `a` and `b`, both ways.
    pub fn cut(&self, a: u64, b: u64) {
        self.faults.cut(a, b);
    }

    /// Fault verb: restores every link.
    pub fn heal(&self) {
        self.faults.heal();
    }

    pub fn counters(&self, id: u64) -> CountersClient<Channel> {
        CountersClient::new(self.nodes[&id].channel.clone())
    }

    pub fn parking(&self, id: u64) -> ParkingClient<Channel> {
        ParkingClient::new(self.nodes[&id].channel.clone())
    }

    pub fn client_addr(&self, id: u64) -> SocketAddr {
        self.nodes[&id].client_addr
    }

    pub fn peer_addr(&self, id: u64) -> SocketAddr {
        self.nodes[&id].peer_addr
    }

    pub fn http_addr(&self, id: u64) -> SocketAddr {
        self.nodes[&id].http_addr
    }

    pub async fn status(&self, id: u64) -> Option<StatusReply> {
        let mut client = ClusterClient::new(self.nodes[&id].channel.clone());
        match tokio::time::timeout(Duration::from_secs(1), client.status(StatusRequest {})).await {
            Ok(Ok(reply)) => Some(reply.into_inner()),
            _ => None,
        }
    }

    /// Waits until one of `among` leads and every node of `among` agrees.
    pub async fn wait_for_leader(&self, among: &[u64]) -> u64 {
        eventually(&format!("a leader among {among:?}"), WAIT, || async {
            let mut seen = None;
            for id in among {
                let s = self.status(*id).await?;
                if s.leader_id == 0 || !among.contains(&s.leader_id) || seen.is_some_and(|l| l != s.leader_id) {
                    return None;
                }
                seen = Some(s.leader_id);
            }
            seen
        })
        .await
    }

    pub async fn add(&self, id: u64, name: &str, delta: i64, mode: WriteMode) -> Result<i64, tonic::Status> {
        let request = AddRequest { name: name.into(), delta, mode: mode as i32, ..Default::default() };
        Ok(self.counters(id).add(request).await?.into_inner().value)
    }

    pub async fn get(
        &self,
        id: u64,
        name: &str,
        consistency: ReadConsistency,
    ) -> Result<(i64, ReadMeta), tonic::Status> {
        let request = GetRequest { name: name.to_string(), consistency: consistency as i32 };
        let reply = self.counters(id).get(request).await?.into_inner();
        Ok((reply.value, reply.meta.unwrap_or_default()))
    }

    /// Stops every node the way SIGTERM would, and checks none of them failed.
    pub async fn stop(mut self) {
        for (id, node) in std::mem::take(&mut self.nodes) {
            if let Some(stop) = node.stop {
                let _ = stop.send(());
            }
            match tokio::time::timeout(Duration::from_secs(10), node.task).await {
                Ok(Ok(Ok(()))) => {}
                other => panic!("node {id} did not stop cleanly: {other:?}"),
            }
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in self.nodes.values() {
            node.task.abort();
        }
    }
}
