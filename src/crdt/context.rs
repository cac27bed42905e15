//! A causal context: the set of dots a replica has seen, kept compact as a version vector (every dot
//! up to `clock[actor]`) plus the dots seen out of order.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Actor, Dot, Lattice};

/// Always kept in canonical form (no zero clocks, no cloud dot the clock covers, no cloud dot that
/// extends the clock), so two contexts holding the same dots compare equal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    clock: BTreeMap<Actor, u64>,
    cloud: BTreeSet<Dot>,
}

impl Context {
    pub fn contains(&self, dot: &Dot) -> bool {
        self.clock.get(&dot.actor).is_some_and(|&seq| dot.seq <= seq) || self.cloud.contains(dot)
    }

    pub fn insert(&mut self, dot: Dot) {
        if !self.contains(&dot) {
            self.cloud.insert(dot);
            self.compact();
        }
    }

    /// A fresh dot for `actor`. Only sound for an actor whose dots this context holds contiguously,
    /// which is true of a replica's own actor in its own state.
    pub fn next(&self, actor: Actor) -> Dot {
        Dot { actor, seq: self.clock.get(&actor).copied().unwrap_or(0) + 1 }
    }

    /// Records that every dot of `actor` up to `seq` has been seen.
    pub fn advance(&mut self, actor: Actor, seq: u64) {
        if seq > self.clock.get(&actor).copied().unwrap_or(0) {
            self.clock.insert(actor, seq);
            self.compact();
        }
    }

    fn compact(&mut self) {
        let cloud = std::mem::take(&mut self.cloud);
        // Ascending (actor, seq) order: each actor's dots are visited in sequence, so one pass
        // folds every run that continues the clock.
        for dot in cloud {
            let seen = self.clock.get(&dot.actor).copied().unwrap_or(0);
            if dot.seq == seen + 1 {
                self.clock.insert(dot.actor, dot.seq);
            } else if dot.seq > seen {
                self.cloud.insert(dot);
            }
        }
    }
}

impl Lattice for Context {
    fn join(&mut self, other: &Self) {
        for (actor, seq) in &other.clock {
            let mine = self.clock.entry(*actor).or_insert(0);
            *mine = (*mine).max(*seq);
        }
        self.cloud.extend(other.cloud.iter().copied());
        self.compact();
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::crdt::laws;

    fn context() -> impl Strategy<Value = Context> {
        prop::collection::vec(laws::dot(), 0..12).prop_map(|dots| {
            let mut c = Context::default();
            for d in dots {
                c.insert(d);
            }
            c
        })
    }

    proptest! {
        #[test]
        fn join_is_a_lattice(a in context(), b in context(), c in context()) {
            laws::check(&a, &b, &c)?;
        }

        #[test]
        fn holds_exactly_the_inserted_dots(dots in prop::collection::vec(laws::dot(), 0..20), probe in laws::dot()) {
            let mut c = Context::default();
            for d in &dots {
                c.insert(*d);
            }
            prop_assert_eq!(c.contains(&probe), dots.contains(&probe));
        }
    }

    #[test]
    fn out_of_order_dots_compact_into_the_clock() {
        let a = Actor::Raft;
        let mut c = Context::default();
        c.insert(Dot { actor: a, seq: 3 });
        c.insert(Dot { actor: a, seq: 1 });
        assert_eq!(c.next(a).seq, 2);
        c.insert(Dot { actor: a, seq: 2 });
        assert_eq!(c.next(a).seq, 4);
        assert!(c.cloud.is_empty());
    }
}
