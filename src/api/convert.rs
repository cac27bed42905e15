//! Protobuf messages to domain values and back. Every field of every public request is checked
//! here, in the order a client reads them, and a bad one becomes `INVALID_ARGUMENT` naming the
//! field; nothing is unwrapped. The request functions are public so that the fuzz target (fuzz/)
//! drives exactly what the services run.

use super::metrics::note_level;
use crate::crdt::gossip::GossipLag;
use crate::domain::{
    check_ttl, check_value, CacheKey, Command, CounterName, DomainError, LotName, LotSpec, Plate, RequestId,
    MAX_LEASE_MS, MAX_TTL_MS,
};
use crate::error::Error;
use crate::node::{ClusterView, Consistency, NodeView, ReadMeta, WriteMode};
use crate::pb::v1 as pb;

/// A validated write: the command, how durably to apply it, and its idempotency key. A gate is
/// checked when the command applies, against the lot's configuration at that point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub mode: WriteMode,
    pub command: Command,
    pub request_id: Option<RequestId>,
}

pub fn add(r: pb::AddRequest) -> Result<Write, Error> {
    let name = CounterName::parse(r.name)?;
    let mode = write_mode(r.mode)?;
    let request_id = RequestId::parse_optional(r.request_id)?;
    Ok(Write { mode, command: Command::Add { name, delta: r.delta }, request_id })
}

pub fn get(r: pb::GetRequest) -> Result<(CounterName, Consistency), Error> {
    Ok((CounterName::parse(r.name)?, consistency(r.consistency)?))
}

pub fn list(r: pb::ListRequest) -> Result<Consistency, Error> {
    consistency(r.consistency)
}

pub fn enter(r: pb::EnterRequest) -> Result<Write, Error> {
    let (lot, plate, mode, request_id) = gate_event(r.lot, &r.plate, r.mode, r.request_id)?;
    Ok(Write { mode, command: Command::Enter { lot, plate, gate: r.gate }, request_id })
}

pub fn exit(r: pb::ExitRequest) -> Result<Write, Error> {
    let (lot, plate, mode, request_id) = gate_event(r.lot, &r.plate, r.mode, r.request_id)?;
    Ok(Write { mode, command: Command::Exit { lot, plate, gate: r.gate }, request_id })
}

/// The fields Enter and Exit share.
fn gate_event(
    lot: String,
    plate: &str,
    mode: i32,
    request_id: String,
) -> Result<(LotName, Plate, WriteMode, Option<RequestId>), Error> {
    let lot = LotName::parse(lot)?;
    let plate = Plate::parse(plate)?;
    let mode = write_mode(mode)?;
    Ok((lot, plate, mode, RequestId::parse_optional(request_id)?))
}

pub fn get_lot(r: pb::GetLotRequest) -> Result<(LotName, Consistency), Error> {
    Ok((LotName::parse(r.lot)?, consistency(r.consistency)?))
}

pub fn configure_lot(r: pb::ConfigureLotRequest) -> Result<(LotName, LotSpec), Error> {
    Ok((LotName::parse(r.lot)?, LotSpec::new(r.capacity, r.gates)?.with_max_stay(r.max_stay_ms)?))
}

pub fn get_vehicle(r: pb::GetVehicleRequest) -> Result<(Plate, Consistency), Error> {
    Ok((Plate::parse(&r.plate)?, consistency(r.consistency)?))
}

const MAX_HOLDER_BYTES: usize = 128;
const MAX_TOKEN_BYTES: usize = 64;
/// A claim waits at most this long for a value, and never past the node's request deadline.
const MAX_WAIT_MS: u64 = 60_000;

/// A free-text field from the network: bounded and printable, so it can be shown to other callers.
fn text(field: &str, value: String, max: usize) -> Result<String, Error> {
    if value.len() > max {
        return Err(DomainError::invalid(field, format!("is {} bytes, the limit is {max}", value.len())).into());
    }
    if let Some(bad) = value.chars().find(|c| c.is_control()) {
        return Err(DomainError::invalid(field, format!("contains the control character {bad:?}")).into());
    }
    Ok(value)
}

pub fn cache_put(r: pb::PutRequest) -> Result<Command, Error> {
    let key = CacheKey::parse(r.key)?;
    check_value(&r.value)?;
    check_ttl("ttl_ms", r.ttl_ms, MAX_TTL_MS)?;
    let token = text("claim_token", r.claim_token, MAX_TOKEN_BYTES)?;
    let token = (!token.is_empty()).then_some(token);
    Ok(Command::CachePut { key, value: r.value, ttl_ms: r.ttl_ms, token })
}

pub fn cache_get(r: pb::CacheGetRequest) -> Result<(CacheKey, Consistency), Error> {
    Ok((CacheKey::parse(r.key)?, consistency(r.consistency)?))
}

pub fn cache_delete(r: pb::DeleteRequest) -> Result<CacheKey, Error> {
    Ok(CacheKey::parse(r.key)?)
}

/// A claim's key, the claim, and how long a HELD answer may wait; an empty holder is named after
/// `node`, the node the caller reached.
pub fn cache_claim(r: pb::ClaimRequest, node: u64) -> Result<(CacheKey, Command, u64), Error> {
    let key = CacheKey::parse(r.key)?;
    check_ttl("lease_ms", r.lease_ms, MAX_LEASE_MS)?;
    let holder = text("holder", r.holder, MAX_HOLDER_BYTES)?;
    let holder = if holder.is_empty() { format!("client of node {node}") } else { holder };
    if r.wait_ms > MAX_WAIT_MS {
        return Err(DomainError::invalid("wait_ms", format!("{} is above {MAX_WAIT_MS}", r.wait_ms)).into());
    }
    Ok((key.clone(), Command::CacheClaim { key, lease_ms: r.lease_ms, holder }, r.wait_ms))
}

/// Parses a read's consistency level and labels the call being served with it (metrics and span).
pub fn consistency(value: i32) -> Result<Consistency, Error> {
    let (consistency, label) = match pb::ReadConsistency::try_from(value) {
        Ok(pb::ReadConsistency::Unspecified | pb::ReadConsistency::Linearizable) => {
            (Consistency::Linearizable, "linearizable")
        }
        Ok(pb::ReadConsistency::Lease) => (Consistency::Lease, "lease"),
        Ok(pb::ReadConsistency::Local) => (Consistency::Local, "local"),
        Ok(pb::ReadConsistency::Eventual) => (Consistency::Eventual, "eventual"),
        Err(_) => {
            return Err(DomainError::invalid("consistency", format!("unknown ReadConsistency value {value}")).into())
        }
    };
    note_level(label);
    Ok(consistency)
}

/// Parses a write's mode and labels the call being served with it (metrics and span).
pub fn write_mode(value: i32) -> Result<WriteMode, Error> {
    let (mode, label) = match pb::WriteMode::try_from(value) {
        Ok(pb::WriteMode::Unspecified | pb::WriteMode::Strong) => (WriteMode::Strong, "strong"),
        Ok(pb::WriteMode::Eventual) => (WriteMode::Eventual, "eventual"),
        Err(_) => return Err(DomainError::invalid("mode", format!("unknown WriteMode value {value}")).into()),
    };
    note_level(label);
    Ok(mode)
}

pub fn write_mode_to_pb(mode: WriteMode) -> i32 {
    match mode {
        WriteMode::Strong => pb::WriteMode::Strong as i32,
        WriteMode::Eventual => pb::WriteMode::Eventual as i32,
    }
}

pub fn consistency_to_pb(c: Consistency) -> pb::ReadConsistency {
    match c {
        Consistency::Linearizable => pb::ReadConsistency::Linearizable,
        Consistency::Lease => pb::ReadConsistency::Lease,
        Consistency::Local => pb::ReadConsistency::Local,
        Consistency::Eventual => pb::ReadConsistency::Eventual,
    }
}

impl From<ReadMeta> for pb::ReadMeta {
    fn from(m: ReadMeta) -> Self {
        pb::ReadMeta {
            served_by: m.served_by,
            leader_id: m.leader_id.unwrap_or(0),
            term: m.term,
            applied_index: m.applied_index,
            consistency: consistency_to_pb(m.consistency) as i32,
            staleness_ms: m.staleness_ms,
        }
    }
}

impl From<NodeView> for pb::NodeStatus {
    fn from(n: NodeView) -> Self {
        pb::NodeStatus {
            id: n.id,
            client_addr: n.client_addr,
            peer_addr: n.peer_addr,
            role: n.role,
            term: n.term,
            last_log_index: n.last_log_index,
            applied_index: n.applied_index,
            matched_index: n.matched_index,
            leader_id: n.leader_id.unwrap_or(0),
            snapshot_index: n.snapshot_index,
            purged_index: n.purged_index,
            gossip: n.gossip.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<GossipLag> for pb::GossipLag {
    fn from(g: GossipLag) -> Self {
        pb::GossipLag {
            peer_id: g.peer,
            pending_deltas: g.pending,
            needs_full_sync: g.needs_full,
            since_ack_ms: g.since_ack_ms,
        }
    }
}

impl From<ClusterView> for pb::StatusReply {
    fn from(v: ClusterView) -> Self {
        let jobs = v
            .nodes
            .iter()
            .flat_map(|n| {
                n.jobs.iter().map(|j| pb::JobStatus {
                    name: j.name.clone(),
                    node_id: n.id,
                    term: j.term,
                    since_ms: j.since_ms,
                    runs: j.runs,
                    applied: j.applied,
                    last_error: j.last_error.clone().unwrap_or_default(),
                })
            })
            .collect();
        pb::StatusReply {
            leader_id: v.leader_id.unwrap_or(0),
            term: v.term,
            served_by: v.served_by,
            nodes: v.nodes.into_iter().map(Into::into).collect(),
            jobs,
        }
    }
}
