//! Delta-state CRDTs (Almeida, Shoker and Baquero, "Delta State Replicated Data Types", 2018) for
//! the eventual path: a PN-counter per counter and an add-wins observed-remove set of plates per lot.
//!
//! Pure code: no IO, no clocks, no Raft. A delta is a value of the same type as the state it came
//! from, so "apply a delta" and "merge a peer's state" are the same [`Lattice::join`], and gossip can
//! ship either.
//!
//! Two kinds of writer change these states:
//! - [`Actor::Raft`], reserved for strongly committed writes. Every node folds every committed entry
//!   in itself at apply time, with dots and versions taken from the log index, so all nodes fold the
//!   same events identically and merging them is idempotent.
//! - [`Actor::Replica`], one per node incarnation, for `WRITE_MODE_EVENTUAL` writes.
//!
//! The `crdts` crate was considered and not used: it has no delta mutators, and our Raft actor needs
//! dots chosen from the log rather than from a local counter.

mod awset;
mod context;
mod counter;
pub mod gossip;
mod replica;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use awset::AwSet;
pub use context::Context;
pub use counter::{Pn, PnCounter};
pub use replica::{LotReplica, Replica, Stay};

/// A join-semilattice: `join` is commutative, associative and idempotent, so replicas that have
/// seen the same states in any order and any number of times are equal.
pub trait Lattice {
    fn join(&mut self, other: &Self);
}

/// One node's eventual writer. The incarnation changes when a node starts with an empty data
/// directory, so a wiped node never reuses dots or counts its earlier self already published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplicaId {
    pub node: u64,
    pub incarnation: u64,
}

impl std::fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node-{}/{:08x}", self.node, self.incarnation as u32)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Actor {
    /// Strongly committed writes; a dot's sequence number is the log index of the entry.
    Raft,
    Replica(ReplicaId),
}

/// A unique event: the `seq`-th event of `actor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    pub actor: Actor,
    pub seq: u64,
}

/// A value stamped with the log index it was read at: the later index wins. Only the Raft actor
/// writes these, and every node computes the same value for the same index; the tie-break on the
/// value exists only to keep `join` a lattice for any input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned<T> {
    pub index: u64,
    pub value: T,
}

impl<T: Ord + Clone> Lattice for Versioned<T> {
    fn join(&mut self, other: &Self) {
        if (other.index, &other.value) > (self.index, &self.value) {
            *self = other.clone();
        }
    }
}

impl<T: Lattice + Clone> Lattice for Option<T> {
    fn join(&mut self, other: &Self) {
        match (self.as_mut(), other) {
            (_, None) => {}
            (None, Some(o)) => *self = Some(o.clone()),
            (Some(s), Some(o)) => s.join(o),
        }
    }
}

impl<K: Ord + Clone, V: Lattice + Clone> Lattice for BTreeMap<K, V> {
    fn join(&mut self, other: &Self) {
        for (k, v) in other {
            match self.get_mut(k) {
                Some(mine) => mine.join(v),
                None => {
                    self.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// Generators and law checks shared by the property tests of every CRDT here.
#[cfg(test)]
pub(crate) mod laws {
    use std::fmt::Debug;

    use proptest::prelude::*;

    use super::*;

    pub fn replica_id() -> impl Strategy<Value = ReplicaId> {
        (1u64..4, 0u64..2).prop_map(|(node, incarnation)| ReplicaId { node, incarnation })
    }

    pub fn actor() -> impl Strategy<Value = Actor> {
        prop_oneof![Just(Actor::Raft), replica_id().prop_map(Actor::Replica)]
    }

    pub fn dot() -> impl Strategy<Value = Dot> {
        (actor(), 1u64..8).prop_map(|(actor, seq)| Dot { actor, seq })
    }

    fn joined<T: Lattice + Clone>(a: &T, b: &T) -> T {
        let mut x = a.clone();
        x.join(b);
        x
    }

    /// Commutative, associative and idempotent.
    pub fn check<T: Lattice + Clone + PartialEq + Debug>(a: &T, b: &T, c: &T) -> Result<(), TestCaseError> {
        prop_assert_eq!(joined(a, b), joined(b, a), "commutative");
        prop_assert_eq!(joined(&joined(a, b), c), joined(a, &joined(b, c)), "associative");
        prop_assert_eq!(&joined(a, a), a, "idempotent");
        Ok(())
    }
}
