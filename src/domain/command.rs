//! What enters the log (a [`Proposal`]), what applying it answers (an [`Applied`]), and the
//! read-only questions a node can answer from its state ([`Query`]).

use serde::{Deserialize, Serialize};

use super::{CounterName, DomainError, LotName, LotSpec, LotView, Plate, RequestId, Vehicle};

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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryReply {
    Counter { value: i64, exists: bool },
    Counters(Vec<(String, i64)>),
    Lot(Option<LotView>),
    Vehicle(Option<(String, Vehicle)>),
}
