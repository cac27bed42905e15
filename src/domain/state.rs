//! The replicated state and its deterministic transition function.
//!
//! Storage persists the state entity by entity: `apply` reports every [`Key`] it touched, and the
//! caller writes [`State::record`] for each (or deletes it when the record is gone). Keeping state
//! keyed per entity is what lets a later multi-group layout split it.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::dedup::Dedup;
use super::{
    Applied, Command, DedupEntry, DomainError, Lot, LotName, LotSpec, LotView, Plate, Proposal, Query, QueryReply,
    Reply, RequestId,
};

/// One independently persisted piece of state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Key {
    Counter(String),
    Lot(String),
    Dedup(RequestId),
}

/// The stored value under a [`Key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    Counter(i64),
    Lot(Lot),
    Dedup(DedupEntry),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    counters: BTreeMap<String, i64>,
    lots: BTreeMap<String, Lot>,
    /// Which lot each parked plate is in: derived from `lots`, kept to check uniqueness in O(1).
    plates: HashMap<Plate, String>,
    dedup: Dedup,
}

impl State {
    /// Applies one committed proposal at log `index`, pushing every key it changed onto `touched`.
    /// A rejected command (overflow) changes nothing but its dedup record.
    pub fn apply(&mut self, proposal: &Proposal, index: u64, touched: &mut Vec<Key>) -> Applied {
        if let Some(id) = &proposal.request_id {
            if let Some(first) = self.dedup.get(id) {
                return Applied { deduplicated: true, ..first.applied.clone() };
            }
        }
        let outcome = match &proposal.command {
            Command::Add { name, delta } => self.add(name.as_str(), *delta, touched),
            Command::ConfigureLot { lot, spec } => self.configure_lot(lot, *spec, false, touched),
            Command::EnsureLot { lot, spec } => self.configure_lot(lot, *spec, true, touched),
            Command::Enter { lot, plate, gate } => self.enter(lot, plate, *gate, proposal.at_ms, index, touched),
            Command::Exit { lot, plate, gate } => self.exit(lot, plate, *gate, proposal.at_ms, touched),
        };
        let applied = Applied { index, outcome, deduplicated: false };
        if let Some(id) = &proposal.request_id {
            let entry = DedupEntry { at_ms: proposal.at_ms, applied: applied.clone() };
            let evicted = self.dedup.insert(id.clone(), entry);
            touched.push(Key::Dedup(id.clone()));
            touched.extend(evicted.into_iter().map(Key::Dedup));
        }
        applied
    }

    fn add(&mut self, name: &str, delta: i64, touched: &mut Vec<Key>) -> Result<Reply, DomainError> {
        let value = self.counters.get(name).copied().unwrap_or(0);
        let new =
            value.checked_add(delta).ok_or_else(|| DomainError::Overflow { name: name.to_string(), value, delta })?;
        self.counters.insert(name.to_string(), new);
        touched.push(Key::Counter(name.to_string()));
        Ok(Reply::Added { name: name.to_string(), value: new })
    }

    fn configure_lot(
        &mut self,
        lot: &LotName,
        spec: LotSpec,
        only_if_missing: bool,
        touched: &mut Vec<Key>,
    ) -> Result<Reply, DomainError> {
        let name = lot.as_str();
        let created = match self.lots.get_mut(name) {
            Some(_) if only_if_missing => false,
            Some(existing) => {
                existing.reconfigure(name, spec)?;
                false
            }
            None => {
                self.lots.insert(name.to_string(), Lot::new(spec));
                true
            }
        };
        let spec = self.lots.get(name).map_or(spec, |l| l.spec);
        touched.push(Key::Lot(name.to_string()));
        Ok(Reply::LotConfigured { lot: name.to_string(), spec, created })
    }

    fn lot_mut(&mut self, lot: &LotName) -> Result<&mut Lot, DomainError> {
        self.lots
            .get_mut(lot.as_str())
            .ok_or_else(|| DomainError::NotFound(format!("lot {} does not exist", lot.as_str())))
    }

    fn enter(
        &mut self,
        lot: &LotName,
        plate: &Plate,
        gate: u32,
        at_ms: u64,
        index: u64,
        touched: &mut Vec<Key>,
    ) -> Result<Reply, DomainError> {
        self.lot_mut(lot)?;
        if let Some(inside) = self.plates.get(plate) {
            return Err(DomainError::AlreadyExists(format!("plate {} is already inside lot {inside}", plate.as_str())));
        }
        let name = lot.as_str();
        let target = self.lot_mut(lot)?;
        target.enter(name, plate, gate, at_ms, index)?;
        let (occupied, capacity) = (target.occupied(), target.spec.capacity);
        self.plates.insert(plate.clone(), name.to_string());
        touched.push(Key::Lot(name.to_string()));
        Ok(Reply::Entered {
            lot: name.to_string(),
            plate: plate.as_str().to_string(),
            gate,
            occupied,
            capacity,
            entered_at_ms: at_ms,
        })
    }

    fn exit(
        &mut self,
        lot: &LotName,
        plate: &Plate,
        gate: u32,
        at_ms: u64,
        touched: &mut Vec<Key>,
    ) -> Result<Reply, DomainError> {
        let name = lot.as_str();
        let target = self.lot_mut(lot)?;
        let parked_ms = target.exit(name, plate, gate, at_ms)?;
        let (occupied, capacity) = (target.occupied(), target.spec.capacity);
        self.plates.remove(plate);
        touched.push(Key::Lot(name.to_string()));
        Ok(Reply::Exited {
            lot: name.to_string(),
            plate: plate.as_str().to_string(),
            gate,
            occupied,
            capacity,
            parked_ms,
        })
    }

    pub fn query(&self, query: &Query) -> QueryReply {
        match query {
            Query::Counter(name) => match self.counters.get(name.as_str()) {
                Some(v) => QueryReply::Counter { value: *v, exists: true },
                None => QueryReply::Counter { value: 0, exists: false },
            },
            Query::Counters => QueryReply::Counters(self.counters.iter().map(|(k, v)| (k.clone(), *v)).collect()),
            Query::Lot(name) => QueryReply::Lot(self.lots.get(name.as_str()).map(LotView::from)),
            Query::Vehicle(plate) => QueryReply::Vehicle(self.plates.get(plate).and_then(|lot| {
                let vehicle = self.lots.get(lot)?.vehicles.get(plate)?;
                Some((lot.clone(), vehicle.clone()))
            })),
        }
    }

    pub fn counters(&self) -> impl Iterator<Item = (&str, i64)> + '_ {
        self.counters.iter().map(|(k, v)| (k.as_str(), *v))
    }

    pub fn lots(&self) -> impl Iterator<Item = (&str, &Lot)> + '_ {
        self.lots.iter().map(|(k, l)| (k.as_str(), l))
    }

    pub fn lot(&self, name: &str) -> Option<&Lot> {
        self.lots.get(name)
    }

    /// The current record under `key`, or `None` when it no longer exists.
    pub fn record(&self, key: &Key) -> Option<Record> {
        match key {
            Key::Counter(name) => self.counters.get(name).map(|v| Record::Counter(*v)),
            Key::Lot(name) => self.lots.get(name).cloned().map(Record::Lot),
            Key::Dedup(id) => self.dedup.get(id).cloned().map(Record::Dedup),
        }
    }

    /// Every record, for rewriting storage after a snapshot install.
    pub fn records(&self) -> impl Iterator<Item = (Key, Record)> + '_ {
        let counters = self.counters.iter().map(|(k, v)| (Key::Counter(k.clone()), Record::Counter(*v)));
        let lots = self.lots.iter().map(|(k, l)| (Key::Lot(k.clone()), Record::Lot(l.clone())));
        let dedup = self.dedup.iter().map(|(k, e)| (Key::Dedup(k.clone()), Record::Dedup(e.clone())));
        counters.chain(lots).chain(dedup)
    }

    /// Rebuilds state from stored records. Dedup records must come in log order.
    pub fn from_records(records: impl IntoIterator<Item = (Key, Record)>) -> Self {
        let mut state = State::default();
        let mut dedup: Vec<(RequestId, DedupEntry)> = Vec::new();
        for (key, record) in records {
            match (key, record) {
                (Key::Counter(name), Record::Counter(v)) => {
                    state.counters.insert(name, v);
                }
                (Key::Lot(name), Record::Lot(lot)) => {
                    for plate in lot.vehicles.keys() {
                        state.plates.insert(plate.clone(), name.clone());
                    }
                    state.lots.insert(name, lot);
                }
                (Key::Dedup(id), Record::Dedup(e)) => dedup.push((id, e)),
                // A key and record of different kinds cannot be written by `record`; skip rather
                // than guess.
                _ => {}
            }
        }
        dedup.sort_by_key(|(_, e)| (e.at_ms, e.applied.index));
        for (id, e) in dedup {
            state.dedup.restore(id, e);
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CounterName;

    fn add(name: &str, delta: i64, rid: Option<&str>) -> Proposal {
        Proposal {
            command: Command::Add { name: CounterName::parse(name).unwrap(), delta },
            request_id: rid.map(|r| RequestId::parse_optional(r).unwrap().unwrap()),
            at_ms: 1000,
        }
    }

    #[test]
    fn adds_accumulate_and_unknown_counters_read_zero() {
        let mut s = State::default();
        let mut t = Vec::new();
        s.apply(&add("a", 2, None), 1, &mut t);
        let applied = s.apply(&add("a", -5, None), 2, &mut t);
        assert_eq!(applied.outcome, Ok(Reply::Added { name: "a".into(), value: -3 }));
        assert_eq!(
            s.query(&Query::Counter(CounterName::parse("b").unwrap())),
            QueryReply::Counter { value: 0, exists: false }
        );
    }

    #[test]
    fn overflow_is_rejected_and_changes_nothing() {
        let mut s = State::default();
        let mut t = Vec::new();
        s.apply(&add("a", i64::MAX, None), 1, &mut t);
        t.clear();
        let applied = s.apply(&add("a", 1, None), 2, &mut t);
        assert!(matches!(applied.outcome, Err(DomainError::Overflow { .. })));
        assert!(t.is_empty());
        assert_eq!(
            s.query(&Query::Counter(CounterName::parse("a").unwrap())),
            QueryReply::Counter { value: i64::MAX, exists: true }
        );
    }

    #[test]
    fn a_retried_request_id_applies_once_and_returns_the_first_reply() {
        let mut s = State::default();
        let mut t = Vec::new();
        let first = s.apply(&add("a", 5, Some("r1")), 1, &mut t);
        let again = s.apply(&add("a", 5, Some("r1")), 2, &mut t);
        assert_eq!(again.outcome, first.outcome);
        assert_eq!(again.index, 1);
        assert!(again.deduplicated);
        assert_eq!(
            s.query(&Query::Counter(CounterName::parse("a").unwrap())),
            QueryReply::Counter { value: 5, exists: true }
        );
    }

    #[test]
    fn records_round_trip_to_the_same_state() {
        let mut s = State::default();
        let mut t = Vec::new();
        s.apply(&add("a", 5, Some("r1")), 1, &mut t);
        s.apply(&add("b", 7, Some("r2")), 2, &mut t);
        let back = State::from_records(s.records().collect::<Vec<_>>());
        assert_eq!(back.query(&Query::Counters), s.query(&Query::Counters));
        let again = back.clone().apply(&add("a", 5, Some("r1")), 3, &mut t);
        assert!(again.deduplicated);
    }
}
