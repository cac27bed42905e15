//! Every flag and environment variable, parsed by clap and validated once into a [`Config`].
//!
//! Nothing downstream re-parses addresses or checks membership: a `Config` that exists is usable.
//! Listen addresses are socket addresses; members' addresses are `host:port` checked for shape here
//! and resolved only when a peer connects, because in containers and Kubernetes a peer's name exists
//! before its address does (and its address changes when it is rescheduled).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::domain::{LotName, LotSpec};

#[derive(Debug, Parser)]
#[command(name = "raftlot", version, about = "Parking lots, PN counters and a TTL cache replicated through Raft")]
pub struct Cli {
    /// Log lines as human-readable text, or as one JSON object per line for log collectors. Which
    /// lines appear is chosen by RUST_LOG.
    #[arg(long, global = true, env = "RAFTLOT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one node.
    Serve(ServeArgs),
    /// Start a local cluster of `--nodes` processes and print how to reach them.
    Cluster(ClusterArgs),
    /// Print the cluster's status as a table.
    Status(StatusArgs),
    /// Exit 0 if a node's gRPC health service reports SERVING (a container health check).
    Health(HealthArgs),
    /// Measure a running cluster at each consistency level, optionally beside etcd.
    Bench(crate::cli::BenchArgs),
    /// Add or remove a member (through any node; the leader runs the change).
    Member(MemberArgs),
    /// Hand leadership to another voter.
    TransferLeader(TransferLeaderArgs),
}

#[derive(Debug, Args)]
pub struct MemberArgs {
    #[command(subcommand)]
    pub action: MemberAction,
    /// Any node's client endpoint.
    #[arg(long, global = true, default_value = "http://127.0.0.1:50051")]
    pub endpoint: String,
    #[command(flatten)]
    pub access: crate::cli::ClientAccess,
}

#[derive(Debug, Subcommand)]
pub enum MemberAction {
    /// Start `raftlot serve --id ID ...` first; the node joins as a learner, catches up, then votes.
    Add {
        #[arg(long)]
        id: u64,
        /// host:port where clients reach the new node.
        #[arg(long)]
        client_addr: String,
        /// host:port where peers reach the new node.
        #[arg(long)]
        peer_addr: String,
    },
    /// The node leaves the membership; stop its process afterwards.
    Remove {
        #[arg(long)]
        id: u64,
    },
}

#[derive(Debug, Args)]
pub struct TransferLeaderArgs {
    /// The voter to hand leadership to [default: the most caught-up other voter].
    #[arg(long)]
    pub to: Option<u64>,
    /// Any node's client endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub endpoint: String,
    #[command(flatten)]
    pub access: crate::cli::ClientAccess,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// This node's id; must appear in --peers.
    #[arg(long, env = "RAFTLOT_ID")]
    pub id: Option<u64>,
    /// Take the node id from the host name's trailing number plus one, so that StatefulSet pod
    /// `raftlot-0` is node 1 (node ids start at 1).
    #[arg(long, env = "RAFTLOT_ID_FROM_HOSTNAME", value_parser = clap::builder::BoolishValueParser::new())]
    pub id_from_hostname: bool,
    /// Every node as ID=CLIENT_ADDR/PEER_ADDR, comma separated; an address is HOST:PORT with an IP
    /// or a DNS name, e.g. 1=127.0.0.1:50051/127.0.0.1:50061,2=node2:50051/node2:50061
    #[arg(long, env = "RAFTLOT_PEERS")]
    pub peers: String,
    /// Client gRPC listen address [default: this node's client address in --peers, or 0.0.0.0 on
    /// its port when that address is a host name].
    #[arg(long, env = "RAFTLOT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Peer gRPC listen address [default: as --listen, from this node's peer address].
    #[arg(long, env = "RAFTLOT_PEER_LISTEN")]
    pub peer_listen: Option<SocketAddr>,
    /// HTTP listen address for /ping, /config, /counter/{name} routes and the like; off when unset.
    #[arg(long, env = "RAFTLOT_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// The longest between gossip rounds to a peer, e.g. 50ms or 1s; new eventual writes are sent
    /// at once, and the rounds carry acks, retries and full syncs.
    #[arg(long, env = "RAFTLOT_GOSSIP_INTERVAL", default_value = "50ms")]
    pub gossip_interval: String,
    /// How often the leader's singleton jobs (overstay and cache-expiry sweepers) look for work.
    #[arg(long, env = "RAFTLOT_JOB_INTERVAL", default_value = "500ms")]
    pub job_interval: String,
    /// Where sled keeps the vote, the log, the state machine and snapshots.
    #[arg(long, env = "RAFTLOT_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Shared secret that peer RPCs must carry (like the Erlang cookie).
    #[arg(long, env = "RAFTLOT_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Raft heartbeat interval in milliseconds; elections time out after 2-4 heartbeats.
    #[arg(long, env = "RAFTLOT_HEARTBEAT_MS", default_value_t = 50)]
    pub heartbeat_ms: u64,
    /// Take a snapshot (and compact the log) after this many applied entries.
    #[arg(long, env = "RAFTLOT_SNAPSHOT_LOGS", default_value_t = 10_000)]
    pub snapshot_logs: u64,
    /// sled page cache size in MiB (sled's own default, 1 GiB, is far too much for a node).
    #[arg(long, env = "RAFTLOT_CACHE_MB", default_value_t = 64)]
    pub cache_mb: u64,
    /// How long a client request may wait for a leader or a quorum before UNAVAILABLE.
    #[arg(long, env = "RAFTLOT_REQUEST_TIMEOUT_MS", default_value_t = 2_000)]
    pub request_timeout_ms: u64,
    /// A lot that exists from the start, as NAME=CAPACITYxGATES; repeatable. Created once if
    /// missing, never resized at start-up.
    #[arg(long = "lot", env = "RAFTLOT_LOTS", value_delimiter = ',', default_value = "main=100x4")]
    pub lots: Vec<String>,
    /// Bearer token every client gRPC call (but health) and HTTP route (but /ping and /metrics)
    /// must carry as `authorization: Bearer TOKEN`.
    #[arg(long, env = "RAFTLOT_CLIENT_TOKEN", hide_env_values = true)]
    pub client_token: Option<String>,
    /// PEM certificate (chain) this node presents on its client and peer ports and to its peers.
    #[arg(long, env = "RAFTLOT_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "RAFTLOT_TLS_KEY", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate that peers' certificates must chain to (mutual TLS on the peer port).
    #[arg(long, env = "RAFTLOT_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// Threads that run this node's async tasks [default: one per core]. Nodes that share a
    /// machine should split its cores between them; `raftlot cluster` does.
    #[arg(long, env = "RAFTLOT_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,
}

#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// How many nodes to start.
    #[arg(long, env = "RAFTLOT_NODES", default_value_t = 3)]
    pub nodes: u64,
    /// Node N keeps its data under DATA_DIR/node-N.
    #[arg(long, env = "RAFTLOT_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Host every node listens on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Node N's client gRPC port is CLIENT_PORT + N - 1.
    #[arg(long, default_value_t = 50051)]
    pub client_port: u16,
    /// Node N's peer gRPC port is PEER_PORT + N - 1.
    #[arg(long, default_value_t = 50061)]
    pub peer_port: u16,
    /// Node N's HTTP port is HTTP_PORT + N - 1.
    #[arg(long, default_value_t = 8081)]
    pub http_port: u16,
    /// Shared secret for peer RPCs, passed to every node through its environment.
    #[arg(long, env = "RAFTLOT_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Lots every node creates at start-up if missing, as NAME=CAPACITYxGATES; repeatable.
    #[arg(long = "lot", env = "RAFTLOT_LOTS", value_delimiter = ',', default_value = "main=100x4")]
    pub lots: Vec<String>,
    /// Each node's async worker threads [default: this machine's cores divided among the nodes,
    /// at least one].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Any node's client endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub endpoint: String,
    #[command(flatten)]
    pub access: crate::cli::ClientAccess,
}

#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// The node's client endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub endpoint: String,
    /// The service to ask about; empty means the node as a whole.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Give up (and fail) after this many milliseconds.
    #[arg(long, default_value_t = 2_000)]
    pub timeout_ms: u64,
    #[command(flatten)]
    pub access: crate::cli::ClientAccess,
}

/// A member's address as `--peers` gives it: an IP address or a DNS name, and a port. Only its
/// shape is checked; tonic resolves the name on every (re)connect, so a peer that comes back with a
/// new IP under the same name is found again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// An IP address (IPv6 without brackets) or a lower-case DNS name.
    host: String,
    port: u16,
}

impl HostPort {
    /// Parses `HOST:PORT`, `IPV4:PORT` or `[IPV6]:PORT`; the reason names what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(HostPort { host: addr.ip().to_string(), port: addr.port() });
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(|| format!("{text:?} is not HOST:PORT"))?;
        let port: u16 = port.parse().map_err(|_| format!("{text:?} has no port number after its last ':'"))?;
        if port == 0 {
            return Err(format!("{text:?} has port 0, which nobody can connect to"));
        }
        check_dns_name(host).map_err(|why| format!("{text:?} is neither ip:port nor a host name: {why}"))?;
        Ok(HostPort { host: host.to_ascii_lowercase(), port })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The IP address, when the host is one rather than a name.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// Where a node listens when `--peers` is all it was told: this very address when it is an
    /// IP, else every interface on its port, since a name may resolve to an address the node
    /// cannot bind (a Service's) or not yet resolve at all (a pod's own DNS record).
    pub fn default_listen(&self) -> SocketAddr {
        SocketAddr::new(self.ip().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), self.port)
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip() {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// RFC 1123 host name syntax: dot-separated labels of letters, digits and inner hyphens, each at
/// most 63 characters, 253 in all; a trailing dot (fully qualified) is allowed.
fn check_dns_name(name: &str) -> Result<(), String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err("the host is empty".to_string());
    }
    if name.len() > 253 {
        return Err(format!("the host has {} characters, at most 253 are allowed", name.len()));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("label {label:?} must have 1 to 63 characters"));
        }
        if let Some(c) = label.chars().find(|c| !c.is_ascii_alphanumeric() && *c != '-') {
            return Err(format!("label {label:?} contains {c:?}; allowed are a-z 0-9 and -"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
    }
    Ok(())
}

/// One member of the cluster as every node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub client_addr: HostPort,
    pub peer_addr: HostPort,
}

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub id: u64,
    pub members: BTreeMap<u64, Member>,
    pub listen: SocketAddr,
    pub peer_listen: SocketAddr,
    pub http_listen: Option<SocketAddr>,
    pub gossip_interval: Duration,
    pub job_interval: Duration,
    pub data_dir: PathBuf,
    pub cluster_secret: Option<String>,
    pub heartbeat: Duration,
    pub snapshot_logs: u64,
    pub cache_bytes: u64,
    pub request_timeout: Duration,
    pub lots: Vec<(LotName, LotSpec)>,
    pub client_token: Option<String>,
    pub tls: Option<TlsPem>,
}

/// The PEM files of `--tls-cert`, `--tls-key` and `--tls-ca`, read once at start-up.
#[derive(Clone)]
pub struct TlsPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub ca: Vec<u8>,
}

impl std::fmt::Debug for TlsPem {
    /// Never prints the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPem").field("cert_bytes", &self.cert.len()).field("ca_bytes", &self.ca.len()).finish()
    }
}

/// Reads a PEM file named by `flag`, refusing one that is empty or holds no PEM block.
pub fn read_pem(flag: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    let pem = std::fs::read(path).map_err(|e| bad(flag, format!("cannot read {}: {e}", path.display())))?;
    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(bad(flag, format!("{} holds no PEM block", path.display())));
    }
    Ok(pem)
}

#[derive(Debug, thiserror::Error)]
#[error("invalid {flag}: {reason}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub reason: String,
}

fn bad(flag: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError { flag, reason: reason.into() }
}

/// Parses `ID=CLIENT_ADDR/PEER_ADDR[,...]`.
pub fn parse_peers(spec: &str) -> Result<BTreeMap<u64, Member>, ConfigError> {
    let mut members = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addrs) =
            part.split_once('=').ok_or_else(|| bad("--peers", format!("{part:?} is not ID=CLIENT_ADDR/PEER_ADDR")))?;
        let id: u64 = id.trim().parse().map_err(|_| bad("--peers", format!("{id:?} is not a node id")))?;
        if id == 0 {
            return Err(bad("--peers", "node ids start at 1 (0 means \"no leader\" on the wire)"));
        }
        let (client, peer) =
            addrs.split_once('/').ok_or_else(|| bad("--peers", format!("{addrs:?} is not CLIENT_ADDR/PEER_ADDR")))?;
        let parse = |a: &str| HostPort::parse(a).map_err(|why| bad("--peers", format!("node {id}: {why}")));
        let member = Member { client_addr: parse(client)?, peer_addr: parse(peer)? };
        if members.insert(id, member).is_some() {
            return Err(bad("--peers", format!("node {id} is listed twice")));
        }
    }
    if members.is_empty() {
        return Err(bad("--peers", "lists no node"));
    }
    Ok(members)
}

/// The node id a StatefulSet pod's host name implies: its trailing ordinal plus one (`raftlot-0` is
/// node 1), because ordinals start at 0 and node id 0 means "no leader" on the wire.
pub fn id_from_hostname(hostname: &str) -> Result<u64, ConfigError> {
    let hostname = hostname.trim();
    // A pod's host name is its bare name, but a container may be given a qualified one.
    let short = hostname.split('.').next().unwrap_or_default();
    let digits = short.rsplit_once('-').map_or(short, |(_, tail)| tail);
    let ordinal: u64 = digits.parse().map_err(|_| {
        bad("--id-from-hostname", format!("host name {hostname:?} does not end in -ORDINAL, e.g. raftlot-0"))
    })?;
    ordinal.checked_add(1).ok_or_else(|| bad("--id-from-hostname", format!("ordinal {ordinal} is too large")))
}

/// This machine's host name: the kernel's, which Kubernetes sets to the pod name, else `HOSTNAME`.
fn hostname() -> Result<String, ConfigError> {
    match std::fs::read_to_string("/proc/sys/kernel/hostname") {
        Ok(name) => Ok(name.trim().to_string()),
        Err(e) => std::env::var("HOSTNAME").map_err(|_| {
            bad("--id-from-hostname", format!("cannot read /proc/sys/kernel/hostname ({e}) and HOSTNAME is unset"))
        }),
    }
}

/// Parses `NAME=CAPACITYxGATES`.
pub fn parse_lot(spec: &str) -> Result<(LotName, LotSpec), ConfigError> {
    let shape =
        || bad("--lot", format!("{spec:?} is not NAME=CAPACITYxGATES[/MAX_STAY], e.g. main=100x4 or short=10x2/30s"));
    let (name, shape_and_stay) = spec.split_once('=').ok_or_else(shape)?;
    let (size, max_stay) = match shape_and_stay.split_once('/') {
        Some((size, stay)) => (size, parse_duration("--lot", stay.trim())?),
        None => (shape_and_stay, Duration::ZERO),
    };
    let (capacity, gates) = size.split_once(['x', 'X']).ok_or_else(shape)?;
    let capacity: u32 = capacity.trim().parse().map_err(|_| shape())?;
    let gates: u32 = gates.trim().parse().map_err(|_| shape())?;
    let name = LotName::parse(name.trim()).map_err(|e| bad("--lot", e.to_string()))?;
    let lot = LotSpec::new(capacity, gates)
        .and_then(|s| s.with_max_stay(max_stay.as_millis() as u64))
        .map_err(|e| bad("--lot", e.to_string()))?;
    Ok((name, lot))
}

/// Parses a duration given as milliseconds with an `ms` or `s` unit (`50ms`, `1s`); a bare number
/// means milliseconds.
pub fn parse_duration(flag: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let value = value.trim();
    let (digits, scale) = match value.strip_suffix("ms") {
        Some(d) => (d, 1),
        None => match value.strip_suffix('s') {
            Some(d) => (d, 1000),
            None => (value, 1),
        },
    };
    let n: u64 =
        digits.trim().parse().map_err(|_| bad(flag, format!("{value:?} is not a duration like 50ms or 1s")))?;
    if n == 0 {
        return Err(bad(flag, "must be above zero"));
    }
    Ok(Duration::from_millis(n.saturating_mul(scale)))
}

/// Formats members back into the `--peers` syntax.
pub fn format_peers(members: &BTreeMap<u64, Member>) -> String {
    members.iter().map(|(id, m)| format!("{id}={}/{}", m.client_addr, m.peer_addr)).collect::<Vec<_>>().join(",")
}

impl TryFrom<ServeArgs> for Config {
    type Error = ConfigError;

    fn try_from(args: ServeArgs) -> Result<Self, ConfigError> {
        let members = parse_peers(&args.peers)?;
        // Checked here rather than by clap, which counts RAFTLOT_ID_FROM_HOSTNAME=false as given.
        let id = match (args.id, args.id_from_hostname) {
            (Some(id), false) => id,
            (None, true) => id_from_hostname(&hostname()?)?,
            (Some(_), true) => return Err(bad("--id", "give either --id or --id-from-hostname, not both")),
            (None, false) => return Err(bad("--id", "required (or --id-from-hostname)")),
        };
        let me = members.get(&id).ok_or_else(|| bad("--id", format!("node {id} is not in --peers")))?;
        if args.heartbeat_ms == 0 {
            return Err(bad("--heartbeat-ms", "must be at least 1"));
        }
        if args.snapshot_logs == 0 {
            return Err(bad("--snapshot-logs", "must be at least 1"));
        }
        if args.cache_mb == 0 {
            return Err(bad("--cache-mb", "must be at least 1"));
        }
        if args.request_timeout_ms == 0 {
            return Err(bad("--request-timeout-ms", "must be at least 1"));
        }
        let lots = args.lots.iter().map(|l| parse_lot(l)).collect::<Result<Vec<_>, _>>()?;
        if args.cluster_secret.as_deref() == Some("") {
            return Err(bad("--cluster-secret", "must not be empty when given"));
        }
        if let Some(secret) = &args.cluster_secret {
            if !secret.bytes().all(|b| (b' '..=b'~').contains(&b)) {
                return Err(bad("--cluster-secret", "must be printable ASCII (it travels as gRPC metadata)"));
            }
        }
        if let Some(token) = &args.client_token {
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad("--client-token", "must be non-empty printable ASCII without spaces"));
            }
        }
        let tls = match (&args.tls_cert, &args.tls_key, &args.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(TlsPem {
                cert: read_pem("--tls-cert", cert)?,
                key: read_pem("--tls-key", key)?,
                ca: read_pem("--tls-ca", ca)?,
            }),
            (None, None, None) => None,
            _ => return Err(bad("--tls-cert", "--tls-cert, --tls-key and --tls-ca go together")),
        };
        Ok(Config {
            id,
            listen: args.listen.unwrap_or_else(|| me.client_addr.default_listen()),
            peer_listen: args.peer_listen.unwrap_or_else(|| me.peer_addr.default_listen()),
            http_listen: args.http_listen,
            gossip_interval: parse_duration("--gossip-interval", &args.gossip_interval)?,
            job_interval: parse_duration("--job-interval", &args.job_interval)?,
            members,
            data_dir: args.data_dir,
            cluster_secret: args.cluster_secret,
            heartbeat: Duration::from_millis(args.heartbeat_ms),
            snapshot_logs: args.snapshot_logs,
            cache_bytes: args.cache_mb * 1024 * 1024,
            request_timeout: Duration::from_millis(args.request_timeout_ms),
            lots,
            client_token: args.client_token,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_round_trip_and_reject_nonsense() {
        let spec = "1=127.0.0.1:50051/127.0.0.1:50061,2=127.0.0.1:50052/127.0.0.1:50062";
        let members = parse_peers(spec).unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(format_peers(&members), spec);
        for bad in ["", "1=x/y", "0=127.0.0.1:1/127.0.0.1:2", "1=127.0.0.1:1", "a=127.0.0.1:1/127.0.0.1:2"] {
            assert!(parse_peers(bad).is_err(), "{bad:?} should be refused");
        }
        let twice = "1=127.0.0.1:1/127.0.0.1:2,1=127.0.0.1:3/127.0.0.1:4";
        assert!(parse_peers(twice).unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn peers_may_be_host_names_resolved_later() {
        let spec = "1=raftlot-0.raftlot-peer.default.svc.cluster.local:50051/raftlot-0.raftlot-peer.default.svc.cluster.local:50061,\
                    2=Node2:50051/node2:50061,3=[::1]:50053/[::1]:50063";
        let members = parse_peers(spec).unwrap();
        assert_eq!(members[&2].client_addr.to_string(), "node2:50051", "names are case-insensitive");
        assert_eq!(members[&3].peer_addr.to_string(), "[::1]:50063");
        assert_eq!(parse_peers(&format_peers(&members)).unwrap(), members);
        // A name listens on every interface at its port; an IP listens where it says.
        assert_eq!(members[&1].peer_addr.default_listen(), "0.0.0.0:50061".parse().unwrap());
        assert_eq!(members[&3].client_addr.default_listen(), "[::1]:50053".parse().unwrap());
        let long_label = format!("1={}:1/a:2", "a".repeat(64));
        for bad in
            ["1=node:0/node:1", "1=no_underscores:1/a:2", "1=-lead:1/a:2", "1=a..b:1/a:2", "1=:1/a:2", "1=a:1:2/a:3"]
                .into_iter()
                .chain([long_label.as_str()])
        {
            let err = parse_peers(bad).expect_err(bad).to_string();
            assert!(err.contains("--peers") && err.contains("node 1"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn statefulset_ordinals_become_node_ids() {
        assert_eq!(id_from_hostname("raftlot-0").unwrap(), 1);
        assert_eq!(id_from_hostname("raftlot-12\n").unwrap(), 13);
        assert_eq!(id_from_hostname("my-db-2.raftlot-peer.ns.svc.cluster.local").unwrap(), 3);
        for bad in ["raftlot", "raftlot-", "raftlot-x", "", "raftlot-18446744073709551615"] {
            assert!(id_from_hostname(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn the_id_comes_from_a_flag_or_the_host_name_never_both() {
        let serve = |extra: &[&str]| {
            let mut argv = vec!["raftlot", "serve", "--peers", "1=a:1/a:2", "--data-dir", "/tmp/x"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv)
        };
        let config = |extra: &[&str]| {
            let Command::Serve(args) = serve(extra).unwrap().command else { panic!("serve") };
            Config::try_from(args)
        };
        assert!(config(&[]).unwrap_err().to_string().contains("--id"), "neither --id nor --id-from-hostname");
        assert!(config(&["--id", "1", "--id-from-hostname"]).unwrap_err().to_string().contains("not both"));
        let config = config(&["--id", "1"]).unwrap();
        assert_eq!((config.id, config.listen), (1, "0.0.0.0:1".parse().unwrap()));
    }

    #[test]
    fn worker_threads_must_be_at_least_one() {
        let workers = |n: &str| {
            let flag = format!("--worker-threads={n}");
            let argv = ["raftlot", "serve", "--peers", "1=a:1/a:2", "--data-dir", "/tmp/x", &flag];
            Cli::try_parse_from(argv).map(|cli| match cli.command {
                Command::Serve(args) => args.worker_threads,
                _ => panic!("serve"),
            })
        };
        assert_eq!(workers("3").unwrap(), Some(3));
        for bad in ["0", "-1", "many"] {
            let e = workers(bad).unwrap_err().to_string();
            assert!(e.contains("--worker-threads"), "{bad:?} refused without naming the flag: {e}");
        }
    }

    #[test]
    fn durations_take_ms_or_s() {
        assert_eq!(parse_duration("--x", "50ms").unwrap(), Duration::from_millis(50));
        assert_eq!(parse_duration("--x", "2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("--x", "75").unwrap(), Duration::from_millis(75));
        for bad in ["", "0ms", "fast", "-5ms", "1h"] {
            assert!(parse_duration("--x", bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn lots_parse_and_reject_nonsense() {
        let (name, spec) = parse_lot("main=100x4").unwrap();
        assert_eq!((name.as_str(), spec.capacity, spec.gates), ("main", 100, 4));
        for bad in ["main", "main=100", "main=0x4", "main=10x0", "main=ax4", "=10x2", "a b=1x1"] {
            assert!(parse_lot(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
