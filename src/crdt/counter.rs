//! A PN-counter whose Raft entry is the strongly committed value at a log index, and whose replica
//! entries count each node's eventual increments and decrements.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Lattice, ReplicaId, Versioned};

/// One replica's eventual contributions; each only grows, so `join` takes the maximum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pn {
    pub p: u64,
    pub n: u64,
}

impl Lattice for Pn {
    fn join(&mut self, other: &Self) {
        self.p = self.p.max(other.p);
        self.n = self.n.max(other.n);
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PnCounter {
    /// The strong value as of a log index. A committed add's delta is this value, not the add,
    /// so a node that skipped entries (it installed a snapshot) still converges.
    pub raft: Option<Versioned<i64>>,
    pub replicas: BTreeMap<ReplicaId, Pn>,
}

impl PnCounter {
    /// Strong value plus every eventual contribution seen. Wide enough that no mix of i64 adds
    /// overflows it.
    pub fn value(&self) -> i128 {
        let strong = self.raft.as_ref().map_or(0, |v| v.value) as i128;
        self.replicas.values().fold(strong, |sum, pn| sum + pn.p as i128 - pn.n as i128)
    }

    /// The delta that adds `delta` under `replica`, or `None` if that replica's running totals
    /// would overflow.
    pub fn add(&self, replica: ReplicaId, delta: i64) -> Option<Self> {
        let mut pn = self.replicas.get(&replica).copied().unwrap_or_default();
        if delta >= 0 {
            pn.p = pn.p.checked_add(delta as u64)?;
        } else {
            pn.n = pn.n.checked_add(delta.unsigned_abs())?;
        }
        Some(PnCounter { raft: None, replicas: BTreeMap::from([(replica, pn)]) })
    }

    pub fn committed(index: u64, value: i64) -> Self {
        PnCounter { raft: Some(Versioned { index, value }), replicas: BTreeMap::new() }
    }
}

impl Lattice for PnCounter {
    fn join(&mut self, other: &Self) {
        self.raft.join(&other.raft);
        self.replicas.join(&other.replicas);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::crdt::laws;

    fn counter() -> impl Strategy<Value = PnCounter> {
        let raft = prop::option::of((0u64..5, -5i64..5).prop_map(|(index, value)| Versioned { index, value }));
        let replicas = prop::collection::btree_map(laws::replica_id(), (0u64..9, 0u64..9), 0..3)
            .prop_map(|m| m.into_iter().map(|(r, (p, n))| (r, Pn { p, n })).collect());
        (raft, replicas).prop_map(|(raft, replicas)| PnCounter { raft, replicas })
    }

    proptest! {
        #[test]
        fn join_is_a_lattice(a in counter(), b in counter(), c in counter()) {
            laws::check(&a, &b, &c)?;
        }

        #[test]
        fn applying_a_delta_adds_exactly_its_amount(a in counter(), r in laws::replica_id(), d in -1000i64..1000) {
            let mut after = a.clone();
            after.join(&a.add(r, d).unwrap());
            prop_assert_eq!(after.value(), a.value() + d as i128);
        }

        /// A peer that merges the delta ends where a peer that merges the whole new state does.
        #[test]
        fn a_delta_carries_the_change_to_a_peer(a in counter(), b in counter(), r in laws::replica_id(), d in -9i64..9) {
            let delta = a.add(r, d).unwrap();
            let mut after = a.clone();
            after.join(&delta);
            let mut via_delta = b.clone();
            via_delta.join(&a);
            via_delta.join(&delta);
            let mut via_state = b.clone();
            via_state.join(&after);
            prop_assert_eq!(via_delta, via_state);
        }
    }

    #[test]
    fn the_latest_committed_value_wins_and_eventual_adds_sit_on_top() {
        let r = ReplicaId { node: 2, incarnation: 1 };
        let mut c = PnCounter::committed(4, 10);
        c.join(&c.add(r, -3).unwrap());
        c.join(&PnCounter::committed(2, 99));
        assert_eq!(c.value(), 7);
        c.join(&PnCounter::committed(9, 20));
        assert_eq!(c.value(), 17);
        assert!(c.add(r, i64::MIN).is_some());
    }
}
