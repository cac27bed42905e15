//! What enters the log (a [`Proposal`]), what applying it answers (an [`Applied`]), and the
//! read-only questions a node can answer from its state ([`Query`]).

use serde::{Deserialize, Serialize};

use super::{
    CacheKey, CacheRead, CachedValue, ClaimOutcome, CounterName, DomainError, LotName, LotSpec, LotView, Plate,
    RequestId, Vehicle,
};

/// A state change a client asked for, already validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Add {
        name: CounterName,
        delta: i64,
    },
    /// Creates or resizes a lot.
    ConfigureLot {
        lot: LotName,
        spec: LotSpec,
    },
    /// Creates a lot only if it does not exist: how start-up lots (`--lot`) are made idempotently.
    EnsureLot {
        lot: LotName,
        spec: LotSpec,
    },
    Enter {
        lot: LotName,
        plate: Plate,
        gate: u32,
    },
    Exit {
        lot: LotName,
        plate: Plate,
        gate: u32,
    },
    /// Stores a value; with `token`, fulfils that claim.
    CachePut {
        key: CacheKey,
        value: Vec<u8>,
        ttl_ms: u64,
        token: Option<String>,
    },
    CacheDelete {
        key: CacheKey,
    },
    CacheClaim {
        key: CacheKey,
        lease_ms: u64,
        holder: String,
    },
    /// A leader-pinned job's effect. It applies only in the term of the leader that planned it:
    /// an entry whose term differs was proposed by a leader that has since been replaced (fencing).
    Job {
        term: u64,
        effect: JobEffect,
    },
}

/// What a singleton job asks the state machine to do. Each names the entities its leader saw; apply
/// re-checks every condition at the entry's own time, so a repeat or a late entry changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobEffect {
    /// Tow these cars if they are still inside and overstayed.
    Tow { lot: LotName, plates: Vec<Plate> },
    /// Remove these cache entries if they are still expired.
    Expire { keys: Vec<CacheKey> },
}

/// One Raft log entry's payload. `at_ms` is the leader's wall clock at proposal time; it travels in
/// the log so that time-dependent rules (deduplication retention) apply identically on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub command: Command,
    pub request_id: Option<RequestId>,
    pub at_ms: u64,
}

impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.command {
            Command::Add { name, delta } => write!(f, "add {delta} to {}", name.as_str())?,
            Command::ConfigureLot { lot, spec } | Command::EnsureLot { lot, spec } => {
                write!(f, "lot {} = {}x{}", lot.as_str(), spec.capacity, spec.gates)?
            }
            Command::Enter { lot, plate, gate } => {
                write!(f, "{} enters {} at gate {gate}", plate.as_str(), lot.as_str())?
            }
            Command::Exit { lot, plate, gate } => {
                write!(f, "{} exits {} at gate {gate}", plate.as_str(), lot.as_str())?
            }
            Command::CachePut { key, value, ttl_ms, .. } => {
                write!(f, "cache {} = {} bytes for {ttl_ms} ms", key.as_str(), value.len())?
            }
            Command::CacheDelete { key } => write!(f, "cache delete {}", key.as_str())?,
            Command::CacheClaim { key, holder, .. } => write!(f, "cache claim {} by {holder}", key.as_str())?,
            Command::Job { term, effect: JobEffect::Tow { lot, plates } } => {
                write!(f, "term {term} tows {} cars from {}", plates.len(), lot.as_str())?
            }
            Command::Job { term, effect: JobEffect::Expire { keys } } => {
                write!(f, "term {term} expires {} cache keys", keys.len())?
            }
        }
        if let Some(id) = &self.request_id {
            write!(f, " (request {})", id.as_str())?;
        }
        Ok(())
    }
}

/// The successful answer to a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Added {
        name: String,
        value: i64,
    },
    LotConfigured {
        lot: String,
        spec: LotSpec,
        created: bool,
    },
    Entered {
        lot: String,
        plate: String,
        gate: u32,
        occupied: u32,
        capacity: u32,
        entered_at_ms: u64,
    },
    Exited {
        lot: String,
        plate: String,
        gate: u32,
        occupied: u32,
        capacity: u32,
        parked_ms: u64,
    },
    CacheStored {
        key: String,
        value: CachedValue,
    },
    CacheDeleted {
        key: String,
        existed: bool,
    },
    Claimed {
        key: String,
        outcome: ClaimOutcome,
    },
    Towed {
        lot: String,
        plates: Vec<String>,
    },
    Expired {
        keys: Vec<String>,
    },
    /// A log entry that carries no command (a leader's blank entry or a membership change).
    Nothing,
}

/// What applying one log entry produced, returned to the proposer by Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The log index at which the command first took effect (for a deduplicated retry, the first
    /// attempt's index).
    pub index: u64,
    pub outcome: Result<Reply, DomainError>,
    /// True when this is the stored outcome of an earlier proposal with the same request id.
    pub deduplicated: bool,
}

impl Default for Applied {
    fn default() -> Self {
        Applied { index: 0, outcome: Ok(Reply::Nothing), deduplicated: false }
    }
}

/// A read-only question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    Counter(CounterName),
    Counters,
    Lot(LotName),
    /// Which lot a plate is in, if any.
    Vehicle(Plate),
    Cache(CacheKey),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryReply {
    Counter { value: i64, exists: bool },
    Counters(Vec<(String, i64)>),
    Lot(Option<LotView>),
    Vehicle(Option<(String, Vehicle)>),
    Cache(CacheRead),
}
