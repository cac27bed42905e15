//! Starting and stopping a node: binding its ports, opening storage in order, initialising a new
//! cluster, refusing another cluster's data, starting the servers and background tasks, and the
//! orderly shutdown (leadership handed over, Raft stopped, a final flush).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::metrics::Metrics;
use crate::api::ClientPort;
use crate::config::Config;
use crate::domain::{Command, LotName, LotSpec};
use crate::jobs::Jobs;
use crate::raft::consensus::Consensus;
use crate::raft::disk::Disk;
use crate::raft::identity::ClusterIdentity;
use crate::raft::log_store::LogStore;
use crate::raft::network::{CallError, Faults, NetworkFactory, PeerClients};
use crate::raft::replica::EventualReplica;
use crate::raft::state_machine::StateMachine;
use crate::raft::{NodeId, PeerNode};

use super::gossip::gossip;
use super::Node;

/// Creates the start-up lots that do not exist yet. Every node does this on every start; `EnsureLot`
/// is a no-op for an existing lot, so repeats cost a log entry and never resize or empty a lot.
async fn ensure_lots(node: Arc<Node>, lots: Vec<(LotName, LotSpec)>, stop: CancellationToken) {
    for (lot, spec) in lots {
        loop {
            match node.write(Command::EnsureLot { lot: lot.clone(), spec }, None).await {
                Ok(_) => break,
                Err(e) => tracing::debug!(lot = lot.as_str(), "start-up lot not created yet: {e}"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }
}

/// Asks every one of `members` for its `NodeInfo` (which carries its cluster id), at once.
async fn ask_members(
    peers: &PeerClients,
    members: &BTreeMap<NodeId, String>,
) -> Vec<(NodeId, std::result::Result<crate::pb::peer::NodeInfoReply, CallError>)> {
    futures::future::join_all(members.iter().map(|(id, addr)| async move {
        let timeout = Duration::from_millis(500);
        let req = peers.request(crate::pb::peer::NodeInfoRequest {}, timeout);
        (*id, peers.call(*id, addr, timeout, |mut c| async move { c.node_info(req).await }).await)
    }))
    .await
}

/// Resolves, with the reason, only if the other members say this node's data belongs to another
/// cluster; otherwise it stays pending once it has heard enough (or given up asking), and the peer
/// guard keeps refusing foreign calls from then on. Only the members `--peers` names are asked, not
/// the Raft membership: data from another cluster carries that cluster's membership, whose nodes
/// would vouch for it.
async fn refuse_foreign_data(node: &Node, asked: BTreeMap<NodeId, String>) -> anyhow::Error {
    let Some(mine) = node.identity.get() else { return std::future::pending().await };
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answers = ask_members(&node.peers, &asked).await;
        let (mut agree, mut foreign, mut silent) = (0usize, Vec::new(), 0usize);
        for (id, answer) in answers {
            match answer {
                Ok(info) if info.cluster_id == *mine => agree += 1,
                Ok(info) if info.cluster_id.is_empty() => {}
                Ok(info) => foreign.push(format!("node {id} belongs to cluster {}", info.cluster_id)),
                Err(CallError::Failed { reason, .. }) if reason.contains(crate::raft::identity::MISMATCH) => {
                    foreign.push(format!("node {id} refuses this data ({reason})"))
                }
                Err(_) => silent += 1,
            }
        }
        if !foreign.is_empty() && foreign.len() > agree {
            return anyhow::anyhow!(
                "this data directory belongs to cluster {mine}, but {}; it was written by another cluster. \
                 Start it with its own cluster's --peers, or make it a new member of this one: \
                 `raftlot member remove --id {id}`, empty the directory, start the node again, then \
                 `raftlot member add --id {id} --client-addr .. --peer-addr ..`",
                foreign.join(", "),
                id = node.id
            );
        }
        if silent == 0 || agree > 0 || tokio::time::Instant::now() >= give_up {
            return std::future::pending().await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed by this call, not when the future is
/// first polled: a signal arriving in between would take its default action and end the process
/// without stopping anything in order (`raftlot cluster` printed "Ctrl-C stops every node" before
/// its first poll, and a Ctrl-C at once killed it and left the nodes running).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        // A signal that cannot be listened for never ends the wait; the other one still does.
        async fn received(signal: Option<Signal>) {
            match signal {
                Some(mut s) => drop(s.recv().await),
                None => std::future::pending().await,
            }
        }
        async move {
            tokio::select! {
                _ = received(interrupt) => {}
                _ = received(terminate) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The sockets a node serves on, bound before it starts (tests bind port 0).
pub struct Listeners {
    pub client: TcpListener,
    pub peer: TcpListener,
    pub http: Option<TcpListener>,
}

/// How long a node keeps trying a port that is in use before it gives up.
const BIND_PATIENCE: Duration = Duration::from_secs(3);

/// Binds `addr`, trying again for a few seconds while it is in use. A client that dials this node's
/// port on loopback before the node is up can be handed that very port as its own source port (it
/// lies in Linux's ephemeral range), connecting to itself and holding the port until it notices; a
/// quickstart restart hit this. raftlot's own clients set SO_REUSEADDR (`api::connect_lazy`), which
/// lets this bind succeed anyway; other programs' clients need the wait.
async fn bind_patiently(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let give_up = tokio::time::Instant::now() + BIND_PATIENCE;
    loop {
        match TcpListener::bind(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tokio::time::Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            bound => return bound,
        }
    }
}

impl Listeners {
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let client = bind_patiently(config.listen)
            .await
            .with_context(|| format!("cannot listen for clients on {}", config.listen))?;
        let peer = bind_patiently(config.peer_listen)
            .await
            .with_context(|| format!("cannot listen for peers on {}", config.peer_listen))?;
        let http = match config.http_listen {
            Some(addr) => {
                Some(bind_patiently(addr).await.with_context(|| format!("cannot listen for HTTP on {addr}"))?)
            }
            None => None,
        };
        Ok(Listeners { client, peer, http })
    }
}

/// Binds the configured addresses and runs the node until `shutdown` resolves.
pub async fn serve(config: Config, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&config).await?;
    run(config, listeners, Faults::default(), shutdown).await
}

/// How long a stopping leader waits for its successor to take over before it stops anyway.
const LEADER_HANDOVER: Duration = Duration::from_secs(2);

/// Runs a node on already-bound listeners until `shutdown` resolves. `faults` cuts peer links on
/// demand; tests running several nodes in one process share one.
pub async fn run(
    config: Config,
    listeners: Listeners,
    faults: Faults,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let disk = Disk::open(&config.data_dir.join("sled"), config.cache_bytes)
        .with_context(|| format!("cannot open sled under {}", config.data_dir.display()))?;
    let log_store = LogStore::open(&disk)?;
    let refusing = || format!("refusing to start node {} on data directory {}", config.id, config.data_dir.display());
    let replica = Arc::new(EventualReplica::open(&disk, config.id).with_context(refusing)?);
    let identity = Arc::new(ClusterIdentity::open(&disk)?);
    let sm = StateMachine::open(&disk, replica.clone())?;
    let peers =
        PeerClients::new(config.id, config.cluster_secret.clone(), config.tls.as_ref(), identity.clone(), faults);
    let metrics = Arc::new(Metrics::new(disk.clone()));
    let consensus = Consensus::start(&config, NetworkFactory { clients: peers.clone() }, log_store, sm).await?;

    // The configured members other than this node, by peer address: asked for their cluster id.
    let others: BTreeMap<NodeId, String> = config
        .members
        .iter()
        .filter(|(id, _)| **id != config.id)
        .map(|(id, m)| (*id, m.peer_addr.to_string()))
        .collect();
    let lowest = config.members.keys().next().copied();
    if lowest == Some(config.id) && !consensus.is_initialized().await? {
        let members: BTreeMap<NodeId, PeerNode> = config
            .members
            .iter()
            .map(|(id, m)| {
                (*id, PeerNode { client_addr: m.client_addr.to_string(), peer_addr: m.peer_addr.to_string() })
            })
            .collect();
        // A lowest-id node whose directory was lost initialises again (harmlessly: its lone entry
        // loses to the members' logs). It must not draw a new cluster id then, or the members would
        // refuse it: when they already have one, it learns theirs from the leader's first append.
        let existing = ask_members(&peers, &others).await.into_iter().find_map(|(_, a)| a.ok()).map(|i| i.cluster_id);
        match existing.filter(|id| !id.is_empty()) {
            Some(cluster_id) => tracing::warn!(
                ?members,
                %cluster_id,
                "this node's directory is empty but the members already form a cluster: initialising anyway, \
                 and taking the cluster's id from its leader"
            ),
            None => {
                let cluster_id = identity.create().await?;
                tracing::info!(?members, %cluster_id, "initialising a new cluster");
            }
        }
        consensus.initialize(members).await?;
    }

    let node = Arc::new(Node {
        id: config.id,
        consensus,
        replica,
        peers,
        request_timeout: config.request_timeout,
        started: Instant::now(),
        leader_contact_ms: AtomicU64::new(0),
        append_streams_opened: AtomicU64::new(0),
        jobs: Jobs::default(),
        identity,
        forwarders: Mutex::default(),
    });

    let stop = CancellationToken::new();
    let client_addr: SocketAddr = listeners.client.local_addr()?;
    let peer_addr: SocketAddr = listeners.peer.local_addr()?;
    let client_port =
        ClientPort { metrics: metrics.clone(), token: config.client_token.clone(), tls: config.tls.clone() };
    let mut client_task =
        tokio::spawn(crate::api::serve_client(node.clone(), client_port, listeners.client, stop.clone()));
    let mut peer_task = tokio::spawn(crate::api::serve_peer(
        node.clone(),
        config.cluster_secret.clone(),
        config.tls.clone(),
        listeners.peer,
        stop.clone(),
    ));
    tokio::spawn(metrics.clone().count_leader_changes(node.clone(), stop.clone()));
    let mut http_task = match listeners.http {
        Some(l) => {
            tracing::info!(id = config.id, http_addr = %l.local_addr()?, "serving HTTP");
            tokio::spawn(crate::api::serve_http(node.clone(), metrics, config.client_token.clone(), l, stop.clone()))
        }
        None => tokio::spawn(std::future::pending()),
    };
    tracing::info!(id = config.id, %client_addr, %peer_addr, data_dir = %config.data_dir.display(), "node started");
    tokio::spawn(ensure_lots(node.clone(), config.lots.clone(), stop.clone()));
    tokio::spawn(gossip(node.clone(), config.gossip_interval, stop.clone()));
    tokio::spawn(crate::jobs::supervise(node.clone(), config.job_interval, stop.clone()));

    let early = tokio::select! {
        _ = shutdown => None,
        r = &mut client_task => Some(("client server", r)),
        r = &mut peer_task => Some(("peer server", r)),
        r = &mut http_task => Some(("http server", r)),
        e = refuse_foreign_data(&node, others) => Some(("start-up check", Ok(Err(e.context(refusing()))))),
    };
    // While the servers still run, so requests in flight here are forwarded to the successor.
    if early.is_none() {
        node.hand_over_leadership(LEADER_HANDOVER).await;
    }
    stop.cancel();
    if let Err(e) = node.consensus.shutdown().await {
        tracing::warn!("raft shutdown: {e}");
    }
    disk.flush().await.context("final flush")?;
    tracing::info!(id = config.id, "node stopped");
    match early {
        None => Ok(()),
        Some((which, Ok(Ok(())))) => anyhow::bail!("{which} stopped unexpectedly"),
        Some((which, Ok(Err(e)))) => Err(e.context(format!("{which} failed"))),
        Some((which, Err(e))) => anyhow::bail!("{which} panicked: {e}"),
    }
}
