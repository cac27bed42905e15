//! The replicated state and its deterministic transition function. State is kept per entity (a
//! counter, a lot), which is what lets a later multi-group layout split it.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::dedup::Dedup;
use super::{
    Applied, Command, DedupEntry, DomainError, Lot, LotName, LotSpec, LotView, Plate, Proposal, Query, QueryReply,
    Reply,
};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    counters: BTreeMap<String, i64>,
    lots: BTreeMap<String, Lot>,
    /// Which lot each parked plate is in: derived from `lots`, kept to check uniqueness in O(1).
    plates: HashMap<Plate, String>,
    dedup: Dedup,
}

impl State {
    /// Applies one committed proposal at log `index`. A rejected command (overflow) changes nothing
    /// but its dedup record.
    pub fn apply(&mut self, proposal: &Proposal, index: u64) -> Applied {
        if let Some(id) = &proposal.request_id {
            if let Some(first) = self.dedup.get(id) {
                return Applied { deduplicated: true, ..first.applied.clone() };
            }
        }
        let outcome = match &proposal.command {
            Command::Add { name, delta } => self.add(name.as_str(), *delta),
            Command::ConfigureLot { lot, spec } => self.configure_lot(lot, *spec, false),
            Command::EnsureLot { lot, spec } => self.configure_lot(lot, *spec, true),
            Command::Enter { lot, plate, gate } => self.enter(lot, plate, *gate, proposal.at_ms, index),
            Command::Exit { lot, plate, gate } => self.exit(lot, plate, *gate, proposal.at_ms),
        };
        let applied = Applied { index, outcome, deduplicated: false };
        if let Some(id) = &proposal.request_id {
            let entry = DedupEntry { at_ms: proposal.at_ms, applied: applied.clone() };
            self.dedup.insert(id.clone(), entry);
        }
        applied
    }

    fn add(&mut self, name: &str, delta: i64) -> Result<Reply, DomainError> {
        let value = self.counters.get(name).copied().unwrap_or(0);
        let new =
            value.checked_add(delta).ok_or_else(|| DomainError::Overflow { name: name.to_string(), value, delta })?;
        self.counters.insert(name.to_string(), new);
        Ok(Reply::Added { name: name.to_string(), value: new })
    }

    fn configure_lot(&mut self, lot: &LotName, spec: LotSpec, only_if_missing: bool) -> Result<Reply, DomainError> {
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
        Ok(Reply::LotConfigured { lot: name.to_string(), spec, created })
    }

    fn lot_mut(&mut self, lot: &LotName) -> Result<&mut Lot, DomainError> {
        self.lots
            .get_mut(lot.as_str())
            .ok_or_else(|| DomainError::NotFound(format!("lot {} does not exist", lot.as_str())))
    }

    fn enter(&mut self, lot: &LotName, plate: &Plate, gate: u32, at_ms: u64, index: u64) -> Result<Reply, DomainError> {
        self.lot_mut(lot)?;
        if let Some(inside) = self.plates.get(plate) {
            return Err(DomainError::AlreadyExists(format!("plate {} is already inside lot {inside}", plate.as_str())));
        }
        let name = lot.as_str();
        let target = self.lot_mut(lot)?;
        target.enter(name, plate, gate, at_ms, index)?;
        let (occupied, capacity) = (target.occupied(), target.spec.capacity);
        self.plates.insert(plate.clone(), name.to_string());
        Ok(Reply::Entered {
            lot: name.to_string(),
            plate: plate.as_str().to_string(),
            gate,
            occupied,
            capacity,
            entered_at_ms: at_ms,
        })
    }

    fn exit(&mut self, lot: &LotName, plate: &Plate, gate: u32, at_ms: u64) -> Result<Reply, DomainError> {
        let name = lot.as_str();
        let target = self.lot_mut(lot)?;
        let parked_ms = target.exit(name, plate, gate, at_ms)?;
        let (occupied, capacity) = (target.occupied(), target.spec.capacity);
        self.plates.remove(plate);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CounterName, RequestId};

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
        s.apply(&add("a", 2, None), 1);
        let applied = s.apply(&add("a", -5, None), 2);
        assert_eq!(applied.outcome, Ok(Reply::Added { name: "a".into(), value: -3 }));
        assert_eq!(
            s.query(&Query::Counter(CounterName::parse("b").unwrap())),
            QueryReply::Counter { value: 0, exists: false }
        );
    }

    #[test]
    fn overflow_is_rejected_and_changes_nothing() {
        let mut s = State::default();
        s.apply(&add("a", i64::MAX, None), 1);
        let applied = s.apply(&add("a", 1, None), 2);
        assert!(matches!(applied.outcome, Err(DomainError::Overflow { .. })));
        assert_eq!(
            s.query(&Query::Counter(CounterName::parse("a").unwrap())),
            QueryReply::Counter { value: i64::MAX, exists: true }
        );
    }

    #[test]
    fn a_retried_request_id_applies_once_and_returns_the_first_reply() {
        let mut s = State::default();
        let first = s.apply(&add("a", 5, Some("r1")), 1);
        let again = s.apply(&add("a", 5, Some("r1")), 2);
        assert_eq!(again.outcome, first.outcome);
        assert_eq!(again.index, 1);
        assert!(again.deduplicated);
        assert_eq!(
            s.query(&Query::Counter(CounterName::parse("a").unwrap())),
            QueryReply::Counter { value: 5, exists: true }
        );
    }

    #[test]
    fn a_snapshot_round_trip_keeps_values_and_dedup() {
        let mut s = State::default();
        s.apply(&add("a", 5, Some("r1")), 1);
        s.apply(&add("b", 7, Some("r2")), 2);
        let mut back: State = bincode::deserialize(&bincode::serialize(&s).unwrap()).unwrap();
        assert_eq!(back.query(&Query::Counters), s.query(&Query::Counters));
        assert!(back.apply(&add("a", 5, Some("r1")), 3).deduplicated);
    }
}
