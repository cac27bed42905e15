//! A raftlot cluster in containers on this machine's Docker engine, for the container tier. The
//! image is assembled by deploy/image.sh from this test build's binary (nothing is pulled); the
//! nodes sit on two networks made for the run, as in deploy/compose.yaml: an internal one for Raft
//! and gossip, where peers are named by DNS aliases, and one for clients, with each node's client
//! port published on a loopback port. Containers run as the StatefulSet runs its pods: read-only
//! root filesystem, no capabilities, node id from the host name `raftlot-N`. Fault verbs act
//! through the engine: `kill` (docker kill, a SIGKILL), `start`, `isolate` (disconnect from the
//! peer network; clients still reach the node) and `heal`. Every name carries a per-run prefix,
//! and `Drop` removes the containers, their volumes, the networks and the image, also when the
//! test panics.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Command;

use raftlot::pb::v1::cluster_client::ClusterClient;
use raftlot::pb::v1::counters_client::CountersClient;
use raftlot::pb::v1::parking_client::ParkingClient;
use raftlot::pb::v1::{StatusReply, StatusRequest};
use tonic::transport::Channel;

use super::{client_channel, free_port, status_via, wait_for_agreed_leader};

/// Runs `docker ARGS`; its trimmed stdout, or why it failed.
fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker").args(args).output().map_err(|e| format!("cannot run docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why the container tier cannot run here, or `None` when a Docker engine answers.
pub fn unavailable() -> Option<String> {
    docker(&["info", "--format", "{{.ServerVersion}}"]).err()
}

pub struct DockerCluster {
    /// Prefix of every container, network and image name of this run.
    run: String,
    image: String,
    secret: String,
    /// Client gRPC channels through the published loopback ports. A port is fixed per node, so a
    /// restarted container is reached again through the same (lazily reconnecting) channel.
    channels: BTreeMap<u64, Channel>,
    running: BTreeSet<u64>,
    created: Vec<String>,
    networks: Vec<String>,
}

impl DockerCluster {
    /// Builds the image and starts `n` nodes; panics (after cleaning up) if anything fails.
    pub fn start(n: u64) -> Self {
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let run = format!("raftlot-test-{}-{}", std::process::id(), stamp % 1_000_000_000);
        let mut cluster = DockerCluster {
            image: format!("{run}:image"),
            secret: format!("secret-{stamp}"),
            run,
            channels: BTreeMap::new(),
            running: BTreeSet::new(),
            created: Vec::new(),
            networks: Vec::new(),
        };
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/image.sh");
        let built =
            Command::new(script).args([env!("CARGO_BIN_EXE_raftlot"), &cluster.image]).output().expect("run image.sh");
        assert!(built.status.success(), "deploy/image.sh failed: {}", String::from_utf8_lossy(&built.stderr));
        for (net, internal) in [("peers", true), ("clients", false)] {
            let name = format!("{}-{net}", cluster.run);
            let mut args = vec!["network", "create"];
            if internal {
                args.push("--internal");
            }
            args.push(&name);
            docker(&args).expect("create network");
            cluster.networks.push(name);
        }
        let peers =
            (1..=n).map(|id| format!("{id}={a}:50051/{a}:50061", a = cluster.alias(id))).collect::<Vec<_>>().join(",");
        for id in 1..=n {
            let port = free_port();
            let name = cluster.name(id);
            let publish = format!("127.0.0.1:{port}:50051");
            let clients = format!("{}-clients", cluster.run);
            let env = [
                // As in the StatefulSet: the id comes from the host name's ordinal.
                "RAFTLOT_ID_FROM_HOSTNAME=true".to_string(),
                format!("RAFTLOT_PEERS={peers}"),
                format!("RAFTLOT_CLUSTER_SECRET={}", cluster.secret),
                "RUST_LOG=info,openraft=warn".to_string(),
            ];
            let hostname = format!("raftlot-{}", id - 1);
            // The StatefulSet's security context, so the tier shows the image runs under it.
            let mut args = vec![
                "create",
                "--name",
                &name,
                "--hostname",
                &hostname,
                "--read-only",
                "--cap-drop",
                "ALL",
                "--security-opt",
                "no-new-privileges",
                "--network",
                &clients,
                "-p",
                &publish,
            ];
            for e in &env {
                args.extend(["-e", e]);
            }
            args.push(&cluster.image);
            docker(&args).expect("create container");
            cluster.created.push(name.clone());
            cluster.heal(id);
            let channel = client_channel(SocketAddr::from(([127, 0, 0, 1], port)), None);
            cluster.channels.insert(id, channel);
        }
        for id in 1..=n {
            cluster.start_node(id);
        }
        cluster
    }

    fn name(&self, id: u64) -> String {
        format!("{}-n{id}", self.run)
    }

    /// The node's name on the peer network only; its container name would resolve on the client
    /// network too and let an isolated node's peers reach it there.
    fn alias(&self, id: u64) -> String {
        format!("node-{id}.peers")
    }

    pub fn ids(&self) -> Vec<u64> {
        self.channels.keys().copied().collect()
    }

    pub fn counters(&self, id: u64) -> CountersClient<Channel> {
        CountersClient::new(self.channels[&id].clone())
    }

    pub fn parking(&self, id: u64) -> ParkingClient<Channel> {
        ParkingClient::new(self.channels[&id].clone())
    }

    pub async fn status(&self, id: u64) -> Option<StatusReply> {
        status_via(ClusterClient::new(self.channels[&id].clone()), tonic::Request::new(StatusRequest {})).await
    }

    pub async fn wait_for_leader(&self) -> u64 {
        let running: Vec<u64> = self.running.iter().copied().collect();
        wait_for_agreed_leader(&running, |id| self.status(id)).await
    }

    /// Fault verb: SIGKILL through the engine.
    pub fn kill(&mut self, id: u64) {
        docker(&["kill", &self.name(id)]).expect("docker kill");
        self.running.remove(&id);
    }

    /// Fault verb: starts the node's container again, on its volume.
    pub fn start_node(&mut self, id: u64) {
        docker(&["start", &self.name(id)]).expect("docker start");
        self.running.insert(id);
    }

    /// Fault verb: cuts the node off the peer network. Clients still reach it on its published port.
    pub fn isolate(&self, id: u64) {
        docker(&["network", "disconnect", &format!("{}-peers", self.run), &self.name(id)]).expect("disconnect");
    }

    /// Fault verb: puts the node back on the peer network under its alias.
    pub fn heal(&self, id: u64) {
        let (network, alias) = (format!("{}-peers", self.run), self.alias(id));
        docker(&["network", "connect", "--alias", &alias, &network, &self.name(id)]).expect("connect");
    }

    /// The engine's view of the image's health check (`raftlot health`): starting, healthy or unhealthy.
    pub fn health(&self, id: u64) -> String {
        docker(&["inspect", "--format", "{{.State.Health.Status}}", &self.name(id)]).unwrap_or_else(|e| e)
    }

    /// The last lines a node logged, for failure messages.
    pub fn logs(&self, id: u64) -> String {
        let out = Command::new("docker").args(["logs", "--tail", "40", &self.name(id)]).output();
        out.map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
            .unwrap_or_default()
    }
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for id in self.ids() {
                eprintln!("--- last log lines of node {id} ({}):\n{}", self.name(id), self.logs(id));
            }
        }
        // -v: each container's anonymous /data volume goes with it.
        let mut rm = vec!["rm", "-f", "-v"];
        rm.extend(self.created.iter().map(String::as_str));
        let results = [
            (!self.created.is_empty()).then(|| docker(&rm)),
            self.networks.iter().map(|n| docker(&["network", "rm", n])).find(Result::is_err),
            Some(docker(&["rmi", "-f", &self.image])),
        ];
        for failed in results.into_iter().flatten().filter_map(Result::err) {
            eprintln!("container tier clean-up: {failed}");
        }
    }
}
