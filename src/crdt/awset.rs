//! An add-wins observed-remove set whose elements carry a payload per dot (Almeida et al., the
//! "AWORSet" built on a dot store and a causal context).
//!
//! An add creates a new dot; a remove covers the dots it observed with its context. A concurrent add
//! and remove of the same element leave the add's dot alive: adds win.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Actor, Context, Dot, Lattice};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwSet<E: Ord, P> {
    entries: BTreeMap<E, BTreeMap<Dot, P>>,
    context: Context,
}

impl<E: Ord, P> Default for AwSet<E, P> {
    fn default() -> Self {
        AwSet { entries: BTreeMap::new(), context: Context::default() }
    }
}

impl<E: Ord + Clone, P: Ord + Clone> AwSet<E, P> {
    pub fn contains(&self, element: &E) -> bool {
        self.entries.contains_key(element)
    }

    /// Every element with its live dots; an element added concurrently by several actors has
    /// several.
    pub fn iter(&self) -> impl Iterator<Item = (&E, &BTreeMap<Dot, P>)> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn dots_of(&self, element: &E) -> impl Iterator<Item = Dot> + '_ {
        self.entries.get(element).into_iter().flat_map(|dots| dots.keys().copied())
    }

    /// The delta that adds `element` under a fresh dot of `actor`, replacing what this replica saw
    /// of it.
    pub fn add(&self, actor: Actor, element: E, payload: P) -> Self {
        let dot = self.context.next(actor);
        let mut delta = self.remove(&element);
        delta.context.insert(dot);
        delta.entries.insert(element, BTreeMap::from([(dot, payload)]));
        delta
    }

    /// The delta that adds `element` under a dot the caller chose (the Raft actor's log index),
    /// removing nothing else.
    pub fn add_dot(dot: Dot, element: E, payload: P) -> Self {
        let mut delta = Self::default();
        delta.context.insert(dot);
        delta.entries.insert(element, BTreeMap::from([(dot, payload)]));
        delta
    }

    /// The delta that removes every dot of `element` this replica has seen.
    pub fn remove(&self, element: &E) -> Self {
        self.remove_where(element, |_| true)
    }

    /// The delta that removes the seen dots of `element` that match `which`.
    pub fn remove_where(&self, element: &E, which: impl Fn(&Dot) -> bool) -> Self {
        let mut delta = Self::default();
        for dot in self.dots_of(element).filter(|d| which(d)) {
            delta.context.insert(dot);
        }
        delta
    }

    /// A state holding exactly `entries`, with a context that has seen every dot of `actor` up to
    /// `upto`: joining it removes that actor's dots up to `upto` that are not in `entries`.
    pub fn authoritative(actor: Actor, upto: u64, entries: impl IntoIterator<Item = (E, Dot, P)>) -> Self {
        let mut set = Self::default();
        set.context.advance(actor, upto);
        for (element, dot, payload) in entries {
            set.context.insert(dot);
            set.entries.entry(element).or_default().insert(dot, payload);
        }
        set
    }

    /// Notes that every dot of `actor` up to `upto` has been seen here; true of the Raft actor
    /// once this node applied the log up to `upto`, and it keeps the context compact.
    pub fn seen_up_to(&mut self, actor: Actor, upto: u64) {
        self.context.advance(actor, upto);
    }
}

impl<E: Ord + Clone, P: Ord + Clone> Lattice for AwSet<E, P> {
    fn join(&mut self, other: &Self) {
        // Elements this side holds but the other side does not can only lose dots the other side's
        // context covers; the rest are unaffected, so only those and the other side's own elements
        // need visiting.
        let mut keys: BTreeSet<E> = other.entries.keys().cloned().collect();
        if other.context != Context::default() {
            for (element, dots) in &self.entries {
                if dots.keys().any(|d| other.context.contains(d)) {
                    keys.insert(element.clone());
                }
            }
        }
        let none = BTreeMap::new();
        for element in keys {
            let mine = self.entries.get(&element).unwrap_or(&none);
            let theirs = other.entries.get(&element).unwrap_or(&none);
            let mut kept = BTreeMap::new();
            for (dot, payload) in mine {
                match theirs.get(dot) {
                    Some(p) => {
                        kept.insert(*dot, payload.max(p).clone());
                    }
                    None if !other.context.contains(dot) => {
                        kept.insert(*dot, payload.clone());
                    }
                    None => {}
                }
            }
            for (dot, payload) in theirs {
                if !mine.contains_key(dot) && !self.context.contains(dot) {
                    kept.insert(*dot, payload.clone());
                }
            }
            if kept.is_empty() {
                self.entries.remove(&element);
            } else {
                self.entries.insert(element, kept);
            }
        }
        self.context.join(&other.context);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::crdt::{laws, ReplicaId};

    type Set = AwSet<u8, u8>;

    #[derive(Debug, Clone)]
    enum Op {
        Add { incarnation: u64, element: u8, payload: u8 },
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..2, 0u8..5, 0u8..3).prop_map(|(incarnation, element, payload)| Op::Add {
                incarnation,
                element,
                payload
            }),
            (0u8..5).prop_map(Op::Remove),
        ]
    }

    fn actor(node: u64, incarnation: u64) -> Actor {
        Actor::Replica(ReplicaId { node, incarnation })
    }

    fn delta(s: &Set, node: u64, op: &Op) -> Set {
        match *op {
            Op::Add { incarnation, element, payload } => s.add(actor(node, incarnation), element, payload),
            Op::Remove(element) => s.remove(&element),
        }
    }

    /// The same operation as a whole-state mutator, written independently of the delta code.
    fn mutate(s: &Set, node: u64, op: &Op) -> Set {
        let mut out = s.clone();
        match *op {
            Op::Add { incarnation, element, payload } => {
                let dot = s.context.next(actor(node, incarnation));
                out.entries.insert(element, BTreeMap::from([(dot, payload)]));
                out.context.insert(dot);
            }
            Op::Remove(element) => {
                out.entries.remove(&element);
            }
        }
        out
    }

    /// A reachable state: node `node` applied `ops` to its own state as deltas. Replicas built for
    /// different nodes use disjoint actors, as real nodes do.
    fn replica(node: u64) -> impl Strategy<Value = Set> {
        prop::collection::vec(op(), 0..10).prop_map(move |ops| {
            let mut s = Set::default();
            for op in &ops {
                let d = delta(&s, node, op);
                s.join(&d);
            }
            s
        })
    }

    proptest! {
        #[test]
        fn join_is_a_lattice(a in replica(1), b in replica(2), c in replica(3)) {
            laws::check(&a, &b, &c)?;
        }

        /// m(X) = X join m_delta(X): the delta mutator loses nothing the whole-state one does, on
        /// any state a node can reach (its own writes merged with a peer's).
        #[test]
        fn applying_a_delta_equals_the_whole_state_mutation(a in replica(1), b in replica(2), op in op()) {
            let mut x = a.clone();
            x.join(&b);
            let mut by_delta = x.clone();
            by_delta.join(&delta(&x, 1, &op));
            prop_assert_eq!(by_delta, mutate(&x, 1, &op));
        }

        /// A delta shipped to a peer that has not seen it has the same effect there as merging the
        /// sender's whole state.
        #[test]
        fn a_delta_carries_the_change_to_a_peer(a in replica(1), b in replica(2), op in op()) {
            let d = delta(&a, 1, &op);
            let mut after = a.clone();
            after.join(&d);
            let mut via_delta = b.clone();
            via_delta.join(&a);
            via_delta.join(&d);
            let mut via_state = b.clone();
            via_state.join(&after);
            prop_assert_eq!(via_delta, via_state);
        }
    }

    #[test]
    fn a_concurrent_add_wins_over_a_remove() {
        let mut base = Set::default();
        base.join(&base.add(actor(1, 0), 7, 0));
        let (mut a, mut b) = (base.clone(), base.clone());
        a.join(&a.remove(&7));
        b.join(&b.add(actor(2, 0), 7, 1));
        a.join(&b);
        assert!(a.contains(&7));
        b.join(&a);
        assert_eq!(a, b);
    }

    #[test]
    fn an_authoritative_state_drops_dots_it_does_not_hold() {
        let raft = |seq| Dot { actor: Actor::Raft, seq };
        let mut s = Set::default();
        s.join(&Set::add_dot(raft(3), 1, 0));
        s.join(&Set::add_dot(raft(5), 2, 0));
        s.join(&Set::authoritative(Actor::Raft, 5, [(2, raft(5), 0)]));
        assert!(!s.contains(&1));
        assert!(s.contains(&2));
    }
}
