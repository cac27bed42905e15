//! The replicated state and its deterministic transition function. State is kept per entity (a
//! counter, a lot), which is what lets a later multi-group layout split it.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::cache::Cache;
use super::dedup::Dedup;
use super::{
    Applied, CacheKey, Command, DedupEntry, DomainError, JobEffect, Lot, LotName, LotSpec, LotView, Plate, Proposal,
    Query, QueryReply, Reply,
};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    counters: BTreeMap<String, i64>,
    lots: BTreeMap<String, Lot>,
    /// Which lot each parked plate is in: derived from `lots`, kept to check uniqueness in O(1).
    plates: HashMap<Plate, String>,
    dedup: Dedup,
    cache: Cache,
}

impl State {
    /// Applies one committed proposal at log `index`, in an entry of leader term `term`. A rejected
    /// command (overflow, a full lot, a fenced job) changes nothing but its dedup record.
    pub fn apply(&mut self, proposal: &Proposal, index: u64, term: u64) -> Applied {
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
            Command::CachePut { key, value, ttl_ms, token } => self
                .cache
                .put(key, value, *ttl_ms, token.as_deref(), proposal.at_ms, index)
                .map(|value| Reply::CacheStored { key: key.as_str().to_string(), value }),
            Command::CacheDelete { key } => {
                let existed = self.cache.delete(key, proposal.at_ms);
                Ok(Reply::CacheDeleted { key: key.as_str().to_string(), existed })
            }
            Command::CacheClaim { key, lease_ms, holder } => self
                .cache
                .claim(key, *lease_ms, holder, proposal.at_ms, index)
                .map(|outcome| Reply::Claimed { key: key.as_str().to_string(), outcome }),
            Command::Job { term: planned, effect } => self.job(*planned, effect, proposal.at_ms, index, term),
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

    /// Applies a singleton job's effect. The fence: a leader proposes only in its own term, so an
    /// entry whose term is not the one the job started in comes from a job that outlived its
    /// leadership (its node lost the lead and won it back, or forwarded a stale effect).
    fn job(
        &mut self,
        planned: u64,
        effect: &JobEffect,
        at_ms: u64,
        index: u64,
        term: u64,
    ) -> Result<Reply, DomainError> {
        if planned != term {
            return Err(DomainError::FailedPrecondition(format!(
                "job effect planned in term {planned} reached the log in term {term}; a stale leader's job is fenced off"
            )));
        }
        match effect {
            JobEffect::Tow { lot, plates } => {
                let target = self.lot_mut(lot)?;
                let towed: Vec<Plate> = plates.iter().filter(|p| target.tow(p, at_ms, index, term)).cloned().collect();
                for plate in &towed {
                    self.plates.remove(plate);
                }
                Ok(Reply::Towed {
                    lot: lot.as_str().to_string(),
                    plates: towed.iter().map(|p| p.as_str().to_string()).collect(),
                })
            }
            JobEffect::Expire { keys } => Ok(Reply::Expired { keys: self.cache.expire(keys, at_ms, index) }),
        }
    }

    /// Per lot, the cars parked past its limit at `now_ms`: the overstay sweeper's work list.
    pub fn overstayed(&self, now_ms: u64) -> Vec<(LotName, Vec<Plate>)> {
        self.lots
            .iter()
            .filter(|(_, lot)| lot.spec.max_stay_ms > 0)
            .filter_map(|(name, lot)| {
                let plates = lot.overstayed(now_ms);
                let name = LotName::parse(name.as_str()).ok()?;
                (!plates.is_empty()).then_some((name, plates))
            })
            .collect()
    }

    /// Up to `limit` cache keys expired at `now_ms`: the expiry sweeper's work list.
    pub fn expired_cache_keys(&self, now_ms: u64, limit: usize) -> Vec<CacheKey> {
        self.cache.expired(now_ms, limit)
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Answers a read; `now_ms` is the serving node's clock, against which cache entries expire.
    pub fn query(&self, query: &Query, now_ms: u64) -> QueryReply {
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
            Query::Cache(key) => QueryReply::Cache(self.cache.get(key, now_ms)),
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
        s.apply(&add("a", 2, None), 1, 1);
        let applied = s.apply(&add("a", -5, None), 2, 1);
        assert_eq!(applied.outcome, Ok(Reply::Added { name: "a".into(), value: -3 }));
        assert_eq!(
            s.query(&Query::Counter(CounterName::parse("b").unwrap()), 0),
            QueryReply::Counter { value: 0, exists: false }
        );
    }

    #[test]
    fn overflow_is_rejected_and_changes_nothing() {
        let mut s = State::default();
        s.apply(&add("a", i64::MAX, None), 1, 1);
        let applied = s.apply(&add("a", 1, None), 2, 1);
        assert!(matches!(applied.outcome, Err(DomainError::Overflow { .. })));
        assert_eq!(
            s.query(&Query::Counter(CounterName::parse("a").unwrap()), 0),
            QueryReply::Counter { value: i64::MAX, exists: true }
        );
    }

    #[test]
    fn a_retried_request_id_applies_once_and_returns_the_first_reply() {
        let mut s = State::default();
        let first = s.apply(&add("a", 5, Some("r1")), 1, 1);
        let again = s.apply(&add("a", 5, Some("r1")), 2, 1);
        assert_eq!(again.outcome, first.outcome);
        assert_eq!(again.index, 1);
        assert!(again.deduplicated);
        assert_eq!(
            s.query(&Query::Counter(CounterName::parse("a").unwrap()), 0),
            QueryReply::Counter { value: 5, exists: true }
        );
    }

    fn proposal(command: Command, at_ms: u64) -> Proposal {
        Proposal { command, request_id: None, at_ms }
    }

    #[test]
    fn an_overstayed_car_is_towed_once_and_a_stale_term_is_fenced() {
        let mut s = State::default();
        let lot = LotName::parse("short").unwrap();
        let spec = LotSpec::new(5, 1).unwrap().with_max_stay(1_000).unwrap();
        s.apply(&proposal(Command::ConfigureLot { lot: lot.clone(), spec }, 0), 1, 1);
        let p = |x: &str| Plate::parse(x).unwrap();
        s.apply(&proposal(Command::Enter { lot: lot.clone(), plate: p("A"), gate: 1 }, 0), 2, 1);
        s.apply(&proposal(Command::Enter { lot: lot.clone(), plate: p("B"), gate: 1 }, 900), 3, 1);
        assert!(s.overstayed(1_000).is_empty(), "a stay of exactly max_stay is allowed");
        assert_eq!(s.overstayed(1_500), vec![(lot.clone(), vec![p("A")])]);

        let tow =
            |term| Command::Job { term, effect: JobEffect::Tow { lot: lot.clone(), plates: vec![p("A"), p("B")] } };
        // Planned in term 1, committed in term 2: refused, nothing changes.
        let fenced = s.apply(&proposal(tow(1), 1_500), 4, 2);
        assert!(matches!(fenced.outcome, Err(DomainError::FailedPrecondition(_))), "{fenced:?}");
        assert_eq!(s.lot("short").unwrap().occupied(), 2);
        // In its own term it tows A only: B has not overstayed at the entry's time.
        let towed = s.apply(&proposal(tow(2), 1_500), 5, 2);
        assert_eq!(towed.outcome, Ok(Reply::Towed { lot: "short".into(), plates: vec!["A".into()] }));
        // A repeat changes nothing, and A may enter again.
        let again = s.apply(&proposal(tow(2), 1_600), 6, 2);
        assert_eq!(again.outcome, Ok(Reply::Towed { lot: "short".into(), plates: vec![] }));
        let back = s.apply(&proposal(Command::Enter { lot: lot.clone(), plate: p("A"), gate: 1 }, 1_700), 7, 2);
        assert!(back.outcome.is_ok(), "{back:?}");
        let tows = &s.lot("short").unwrap().tows;
        assert_eq!(tows.len(), 1);
        assert_eq!((tows[0].index, tows[0].term, tows[0].towed_at_ms), (5, 2, 1_500));
    }

    #[test]
    fn cache_expiry_applies_at_the_entrys_time_and_is_fenced_too() {
        let mut s = State::default();
        let key = CacheKey::parse("k").unwrap();
        let put = Command::CachePut { key: key.clone(), value: b"v".to_vec(), ttl_ms: 100, token: None };
        s.apply(&proposal(put, 0), 1, 1);
        assert_eq!(s.expired_cache_keys(100, 10), vec![key.clone()]);
        let expire = |term| Command::Job { term, effect: JobEffect::Expire { keys: vec![key.clone()] } };
        assert!(s.apply(&proposal(expire(1), 100), 2, 3).outcome.is_err());
        assert_eq!(s.apply(&proposal(expire(3), 100), 3, 3).outcome, Ok(Reply::Expired { keys: vec!["k".into()] }));
        let QueryReply::Cache(read) = s.query(&Query::Cache(key), 100) else { panic!() };
        assert_eq!((read.value, read.removed_at_index), (None, Some(3)));
    }

    #[test]
    fn a_snapshot_round_trip_keeps_values_and_dedup() {
        let mut s = State::default();
        s.apply(&add("a", 5, Some("r1")), 1, 1);
        s.apply(&add("b", 7, Some("r2")), 2, 1);
        let mut back: State = bincode::deserialize(&bincode::serialize(&s).unwrap()).unwrap();
        assert_eq!(back.query(&Query::Counters, 0), s.query(&Query::Counters, 0));
        assert!(back.apply(&add("a", 5, Some("r1")), 3, 1).deduplicated);
    }
}
