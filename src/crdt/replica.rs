//! A node's whole eventual view: one PN-counter per counter, one lot replica per lot and a
//! last-writer-wins map of cache values; the eventual write operations; and the folding of strongly
//! committed writes into the view.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Actor, AwSet, Dot, Lattice, PnCounter, ReplicaId, Versioned};
use crate::domain::{
    CacheRead, CachedValue, Command, DomainError, GateCount, JobEffect, LotSpec, LotView, Plate, Query, QueryReply,
    Reply, State, Vehicle,
};

/// Where and when a car entered, as one add of a plate records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stay {
    pub gate: u32,
    pub at_ms: u64,
}

impl Lattice for GateCount {
    fn join(&mut self, other: &Self) {
        self.entries = self.entries.max(other.entries);
        self.exits = self.exits.max(other.exits);
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotReplica {
    /// Lots are created and resized only through Raft.
    pub spec: Option<Versioned<LotSpec>>,
    pub plates: AwSet<Plate, Stay>,
    /// Committed entries and exits per gate (index `g - 1` is gate `g`) as of a log index.
    pub raft_gates: Option<Versioned<Vec<GateCount>>>,
    /// Each replica's eventual entries and exits per gate; they only grow.
    pub gates: BTreeMap<ReplicaId, BTreeMap<u32, GateCount>>,
}

impl Lattice for LotReplica {
    fn join(&mut self, other: &Self) {
        self.spec.join(&other.spec);
        self.plates.join(&other.plates);
        self.raft_gates.join(&other.raft_gates);
        self.gates.join(&other.gates);
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub counters: BTreeMap<String, PnCounter>,
    pub lots: BTreeMap<String, LotReplica>,
    /// Cache values, the highest log index winning. Only committed writes reach it: the cache has
    /// no eventual write path, because handing a key to exactly one filler needs consensus. As
    /// every node folds the same log, this part is neither gossiped nor persisted (reconcile
    /// rebuilds it), and a removal can drop a key outright: no peer can send an older version back.
    #[serde(skip)]
    pub cache: BTreeMap<String, Versioned<CachedValue>>,
}

impl Lattice for Replica {
    fn join(&mut self, other: &Self) {
        self.counters.join(&other.counters);
        self.lots.join(&other.lots);
        self.cache.join(&other.cache);
    }
}

fn clamp(value: i128) -> i64 {
    value.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

fn raft_dot(index: u64) -> Dot {
    Dot { actor: Actor::Raft, seq: index }
}

impl Replica {
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty() && self.lots.is_empty()
    }

    /// The part of `self` that `delta` names (its counters and lots), for persisting after a join.
    pub fn touched(&self, delta: &Replica) -> Replica {
        Replica {
            counters: delta.counters.keys().filter_map(|k| Some((k.clone(), self.counters.get(k)?.clone()))).collect(),
            lots: delta.lots.keys().filter_map(|k| Some((k.clone(), self.lots.get(k)?.clone()))).collect(),
            cache: BTreeMap::new(),
        }
    }

    fn known_lot(&self, lot: &str, gate: u32) -> Result<(&LotReplica, LotSpec), DomainError> {
        let found = self.lots.get(lot).and_then(|l| Some((l, l.spec.as_ref()?.value)));
        let (replica, spec) =
            found.ok_or_else(|| DomainError::NotFound(format!("lot {lot} does not exist in this node's view")))?;
        if gate == 0 || gate > spec.gates {
            return Err(DomainError::invalid("gate", format!("{gate} is outside 1..={}", spec.gates)));
        }
        Ok((replica, spec))
    }

    /// Applies an eventual write made by `me` at local time `at_ms`, returning the reply and the
    /// delta to gossip. Capacity and plate uniqueness are deliberately not enforced: this path
    /// cannot know what other nodes admit concurrently, and reads report the result instead.
    pub fn apply_eventual(
        &mut self,
        me: ReplicaId,
        command: &Command,
        at_ms: u64,
    ) -> Result<(Reply, Replica), DomainError> {
        let mut delta = Replica::default();
        match command {
            Command::Add { name, delta: amount } => {
                let counter = self.counters.get(name.as_str()).cloned().unwrap_or_default();
                let change = counter.add(me, *amount).ok_or_else(|| DomainError::Overflow {
                    name: name.as_str().to_string(),
                    value: clamp(counter.value()),
                    delta: *amount,
                })?;
                delta.counters.insert(name.as_str().to_string(), change);
            }
            Command::Enter { lot, plate, gate } => {
                let (replica, _) = self.known_lot(lot.as_str(), *gate)?;
                let change = LotReplica {
                    plates: replica.plates.add(Actor::Replica(me), plate.clone(), Stay { gate: *gate, at_ms }),
                    gates: gate_delta(replica, me, *gate, |c| c.entries += 1),
                    ..LotReplica::default()
                };
                delta.lots.insert(lot.as_str().to_string(), change);
            }
            Command::Exit { lot, plate, gate } => {
                let (replica, _) = self.known_lot(lot.as_str(), *gate)?;
                if !replica.plates.contains(plate) {
                    return Err(DomainError::NotFound(format!(
                        "plate {} is not inside lot {} in this node's view",
                        plate.as_str(),
                        lot.as_str()
                    )));
                }
                let change = LotReplica {
                    plates: replica.plates.remove(plate),
                    gates: gate_delta(replica, me, *gate, |c| c.exits += 1),
                    ..LotReplica::default()
                };
                delta.lots.insert(lot.as_str().to_string(), change);
            }
            Command::ConfigureLot { .. } | Command::EnsureLot { .. } => {
                return Err(DomainError::invalid(
                    "mode",
                    "lots are configured through Raft only; use WRITE_MODE_STRONG",
                ))
            }
            Command::CachePut { .. }
            | Command::CacheDelete { .. }
            | Command::CacheClaim { .. }
            | Command::Job { .. } => {
                return Err(DomainError::invalid("mode", "the cache and jobs write through Raft only"))
            }
        }
        let entered_at = self.entered_at(command);
        self.join(&delta);
        Ok((self.reply(command, at_ms, entered_at), delta))
    }

    /// For an exit, when the car entered (read before the exit removes it).
    fn entered_at(&self, command: &Command) -> Option<u64> {
        match command {
            Command::Exit { lot, plate, .. } => self
                .lots
                .get(lot.as_str())?
                .plates
                .iter()
                .find(|(p, _)| *p == plate)
                .and_then(|(_, dots)| dots.values().map(|s| s.at_ms).min()),
            _ => None,
        }
    }

    fn reply(&self, command: &Command, at_ms: u64, entered_at_ms: Option<u64>) -> Reply {
        let lot_counts = |lot: &str| {
            let l = self.lots.get(lot);
            let occupied = l.map_or(0, |l| l.plates.len() as u32);
            let capacity = l.and_then(|l| l.spec.as_ref()).map_or(0, |s| s.value.capacity);
            (occupied, capacity)
        };
        match command {
            Command::Add { name, .. } => Reply::Added {
                name: name.as_str().to_string(),
                value: self.counters.get(name.as_str()).map_or(0, |c| clamp(c.value())),
            },
            Command::Enter { lot, plate, gate } => {
                let (occupied, capacity) = lot_counts(lot.as_str());
                Reply::Entered {
                    lot: lot.as_str().to_string(),
                    plate: plate.as_str().to_string(),
                    gate: *gate,
                    occupied,
                    capacity,
                    entered_at_ms: at_ms,
                }
            }
            Command::Exit { lot, plate, gate } => {
                let (occupied, capacity) = lot_counts(lot.as_str());
                Reply::Exited {
                    lot: lot.as_str().to_string(),
                    plate: plate.as_str().to_string(),
                    gate: *gate,
                    occupied,
                    capacity,
                    parked_ms: entered_at_ms.map_or(0, |t| at_ms.saturating_sub(t)),
                }
            }
            _ => Reply::Nothing,
        }
    }

    /// Folds the write committed at `index` into the view, given the command, its reply and the
    /// state right after applying it. Deduplicated retries and refused commands changed nothing and
    /// must not be folded.
    pub fn fold_committed(&mut self, index: u64, command: &Command, reply: &Reply, state: &State) {
        match (command, reply) {
            (Command::Add { name, .. }, Reply::Added { value, .. }) => {
                self.counters.entry(name.as_str().to_string()).or_default().join(&PnCounter::committed(index, *value));
            }
            (Command::ConfigureLot { lot, .. } | Command::EnsureLot { lot, .. }, Reply::LotConfigured { spec, .. }) => {
                let replica = self.lots.entry(lot.as_str().to_string()).or_default();
                replica.spec.join(&Some(Versioned { index, value: *spec }));
                self.fold_gates(lot.as_str(), index, state);
            }
            (Command::Enter { lot, plate, .. }, Reply::Entered { gate, entered_at_ms, .. }) => {
                let replica = self.lots.entry(lot.as_str().to_string()).or_default();
                let stay = Stay { gate: *gate, at_ms: *entered_at_ms };
                replica.plates.join(&AwSet::add_dot(raft_dot(index), plate.clone(), stay));
                self.fold_gates(lot.as_str(), index, state);
            }
            (Command::Exit { lot, plate, .. }, Reply::Exited { .. }) => {
                self.fold_removal(lot.as_str(), plate, index);
                self.fold_gates(lot.as_str(), index, state);
            }
            (Command::Job { effect: JobEffect::Tow { lot, .. }, .. }, Reply::Towed { plates, .. }) => {
                for plate in plates.iter().filter_map(|p| Plate::parse(p).ok()) {
                    self.fold_removal(lot.as_str(), &plate, index);
                }
                self.fold_gates(lot.as_str(), index, state);
            }
            (Command::CachePut { key, .. }, Reply::CacheStored { value, .. }) => {
                self.cache
                    .join(&BTreeMap::from([(key.as_str().to_string(), Versioned { index, value: value.clone() })]));
            }
            (Command::CacheDelete { key }, Reply::CacheDeleted { .. }) => {
                self.cache.remove(key.as_str());
            }
            (Command::Job { effect: JobEffect::Expire { .. }, .. }, Reply::Expired { keys }) => {
                for key in keys {
                    self.cache.remove(key);
                }
            }
            _ => {}
        }
    }

    /// A committed exit or tow of `plate`: its one committed entry is its Raft dot below this
    /// index; a later re-entry seen early through gossip has a higher index and stays.
    fn fold_removal(&mut self, lot: &str, plate: &Plate, index: u64) {
        let replica = self.lots.entry(lot.to_string()).or_default();
        let removal = replica.plates.remove_where(plate, |d| d.actor == Actor::Raft && d.seq < index);
        replica.plates.join(&removal);
    }

    fn fold_gates(&mut self, lot: &str, index: u64, state: &State) {
        let Some(replica) = self.lots.get_mut(lot) else { return };
        if let Some(committed) = state.lot(lot) {
            replica.raft_gates.join(&Some(Versioned { index, value: committed.gate_counts.clone() }));
        }
        // Every committed write up to `index` has been folded here, so the context may say so;
        // this keeps the Raft actor's dots out of the context's cloud.
        replica.plates.seen_up_to(Actor::Raft, index);
    }

    /// Brings the Raft actor's part of the view up to `state` as of log `index`: used after a
    /// restart and after installing a snapshot, when the entries in between were never folded.
    pub fn reconcile(&mut self, state: &State, index: u64) {
        for (name, value) in state.counters() {
            self.counters.entry(name.to_string()).or_default().join(&PnCounter::committed(index, value));
        }
        for (name, lot) in state.lots() {
            let replica = self.lots.entry(name.to_string()).or_default();
            replica.spec.join(&Some(Versioned { index, value: lot.spec }));
            replica.raft_gates.join(&Some(Versioned { index, value: lot.gate_counts.clone() }));
            let committed = lot.vehicles.iter().map(|(plate, v)| {
                (plate.clone(), raft_dot(v.entered_index), Stay { gate: v.gate, at_ms: v.entered_at_ms })
            });
            replica.plates.join(&AwSet::authoritative(Actor::Raft, index, committed));
        }
        self.cache =
            state.cache().values().map(|(k, v)| (k.to_string(), Versioned { index: v.version, value: v })).collect();
    }

    /// Answers a read; `now_ms` is this node's clock, against which cache values expire.
    pub fn query(&self, query: &Query, now_ms: u64) -> QueryReply {
        match query {
            Query::Counter(name) => match self.counters.get(name.as_str()) {
                Some(c) => QueryReply::Counter { value: clamp(c.value()), exists: true },
                None => QueryReply::Counter { value: 0, exists: false },
            },
            Query::Counters => {
                QueryReply::Counters(self.counters.iter().map(|(k, c)| (k.clone(), clamp(c.value()))).collect())
            }
            Query::Lot(name) => QueryReply::Lot(self.lot_view(name.as_str())),
            Query::Vehicle(plate) => QueryReply::Vehicle(self.lots.iter().find_map(|(name, lot)| {
                let (_, dots) = lot.plates.iter().find(|(p, _)| *p == plate)?;
                Some((name.clone(), vehicle(dots)))
            })),
            Query::Cache(key) => QueryReply::Cache(CacheRead {
                value: self.cache.get(key.as_str()).map(|v| v.value.clone()).filter(|v| now_ms < v.expires_at_ms),
                removed_at_index: None,
            }),
        }
    }

    fn lot_view(&self, name: &str) -> Option<LotView> {
        let lot = self.lots.get(name)?;
        let spec = lot.spec.as_ref()?.value;
        let in_other_lot = |plate: &Plate| self.lots.iter().any(|(n, l)| n != name && l.plates.contains(plate));
        let mut vehicles = Vec::with_capacity(lot.plates.len());
        let mut duplicates = Vec::new();
        for (plate, dots) in lot.plates.iter() {
            if dots.len() > 1 || in_other_lot(plate) {
                duplicates.push(plate.clone());
            }
            vehicles.push((plate.clone(), vehicle(dots)));
        }
        let committed = lot.raft_gates.as_ref().map_or(&[][..], |v| &v.value[..]);
        let widest = lot.gates.values().flat_map(|g| g.keys().copied()).max().unwrap_or(0) as usize;
        let mut gate_counts = vec![GateCount::default(); committed.len().max(spec.gates as usize).max(widest)];
        for (slot, c) in gate_counts.iter_mut().zip(committed) {
            *slot = *c;
        }
        for (gate, c) in lot.gates.values().flatten() {
            let slot = &mut gate_counts[*gate as usize - 1];
            slot.entries += c.entries;
            slot.exits += c.exits;
        }
        Some(LotView {
            spec,
            over_capacity: vehicles.len() > spec.capacity as usize,
            vehicles,
            gate_counts,
            duplicates,
            tows: Vec::new(),
        })
    }
}

/// The delta that bumps `me`'s own count at `gate`.
fn gate_delta(
    lot: &LotReplica,
    me: ReplicaId,
    gate: u32,
    bump: impl Fn(&mut GateCount),
) -> BTreeMap<ReplicaId, BTreeMap<u32, GateCount>> {
    let mut count = lot.gates.get(&me).and_then(|g| g.get(&gate)).copied().unwrap_or_default();
    bump(&mut count);
    BTreeMap::from([(me, BTreeMap::from([(gate, count)]))])
}

/// A car as the view shows it: of concurrent entries, the earliest.
fn vehicle(dots: &BTreeMap<Dot, Stay>) -> Vehicle {
    let (dot, stay) = dots
        .iter()
        .min_by_key(|(_, s)| s.at_ms)
        .map(|(d, s)| (*d, *s))
        .unwrap_or((raft_dot(0), Stay { gate: 0, at_ms: 0 }));
    Vehicle {
        gate: stay.gate,
        entered_at_ms: stay.at_ms,
        entered_index: if dot.actor == Actor::Raft { dot.seq } else { 0 },
    }
}
