//! Operation histories and a checker written for raftlot's model. Each client operation is recorded
//! with its invocation time, its completion time and what it learnt: a value, "done", definitely not
//! applied (`Failed`), or `Unknown` (no answer, or an answer that does not say; it may take effect at
//! any moment after its invocation, forever).
//!
//! A general linearizability search is exponential; these data types do not need one. A counter's
//! state is a sum, so every read has an interval it must lie in: the acknowledged adds that completed
//! before it was invoked must be in it, and nothing invoked after it completed may be. A plate's
//! presence in a lot is decided by the last entry or exit before the read, so "an acknowledged entry
//! with no exit that could fall between it and the read" pins the plate inside, and the mirror rule
//! pins it outside. These checks are sound (a violation is a real anomaly) but not complete.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Add { counter: String, delta: i64 },
    Read { counter: String },
    Enter { lot: String, plate: String },
    Exit { lot: String, plate: String },
    ReadLot { lot: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An acknowledged add with the counter's new value, or a counter read.
    Value(i64),
    /// An acknowledged entry or exit.
    Done,
    /// A lot read: its capacity and the plates inside, as listed.
    Lot { capacity: u32, plates: Vec<String> },
    /// Definitely not applied: refused by validation or by the rules at apply time.
    Failed(String),
    /// Not known to have been applied or not: may take effect at any time after invocation.
    Unknown(String),
}

#[derive(Debug, Clone)]
pub struct Op {
    pub id: usize,
    /// Who ran it, for the printout (a writer's number, or the node it went through).
    pub client: String,
    pub call: Call,
    /// Microseconds since the history began.
    pub invoked: u64,
    pub completed: u64,
    pub outcome: Outcome,
}

impl Op {
    /// The last moment the op can have taken effect: its completion, or never-ending when unknown.
    fn end(&self) -> u64 {
        if matches!(self.outcome, Outcome::Unknown(_)) {
            u64::MAX
        } else {
            self.completed
        }
    }

    fn may_have_applied(&self) -> bool {
        !matches!(self.outcome, Outcome::Failed(_))
    }

    fn acked(&self) -> bool {
        matches!(self.outcome, Outcome::Value(_) | Outcome::Done)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |us: u64| us as f64 / 1000.0;
        write!(f, "#{} [{}] ", self.id, self.client)?;
        match &self.call {
            Call::Add { counter, delta } => write!(f, "add {delta} to {counter}")?,
            Call::Read { counter } => write!(f, "read {counter}")?,
            Call::Enter { lot, plate } => write!(f, "{plate} enters {lot}")?,
            Call::Exit { lot, plate } => write!(f, "{plate} exits {lot}")?,
            Call::ReadLot { lot } => write!(f, "read lot {lot}")?,
        }
        write!(f, " {:.1}..{:.1} ms -> {:?}", ms(self.invoked), ms(self.completed), self.outcome)
    }
}

/// One broken rule and the operations that break it.
#[derive(Debug, Clone)]
pub struct Violation {
    pub rule: String,
    /// An acknowledged write is missing from what a later observation saw.
    pub lost: bool,
    pub ops: Vec<Op>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.rule)?;
        for op in &self.ops {
            writeln!(f, "    {op}")?;
        }
        Ok(())
    }
}

/// A history being recorded by many tasks at once.
pub struct History {
    start: Instant,
    ops: Mutex<Vec<Op>>,
}

impl Default for History {
    fn default() -> Self {
        History { start: Instant::now(), ops: Mutex::new(Vec::new()) }
    }
}

impl History {
    fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Records that `call` is about to be sent; the returned number completes it.
    pub fn invoke(&self, client: impl Into<String>, call: Call) -> usize {
        let invoked = self.now();
        let mut ops = self.ops.lock().expect("history lock");
        let id = ops.len();
        let outcome = Outcome::Unknown("pending".into());
        ops.push(Op { id, client: client.into(), call, invoked, completed: invoked, outcome });
        id
    }

    pub fn complete(&self, id: usize, outcome: Outcome) {
        let completed = self.now();
        let mut ops = self.ops.lock().expect("history lock");
        ops[id].completed = completed;
        ops[id].outcome = outcome;
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().expect("history lock").clone()
    }

    /// Microseconds since the history began, on the clock its operations are stamped with.
    pub fn now_us(&self) -> u64 {
        self.now()
    }

    /// Checks the history and counts what it holds.
    pub fn verdict(&self) -> Verdict {
        let ops = self.ops();
        let writes =
            ops.iter().filter(|op| matches!(op.call, Call::Add { .. } | Call::Enter { .. } | Call::Exit { .. }));
        let acked_writes = writes.filter(|op| op.acked()).count();
        Verdict { ops: ops.len(), acked_writes, violations: check(&ops) }
    }
}

/// What checking a history found.
pub struct Verdict {
    pub ops: usize,
    pub acked_writes: usize,
    pub violations: Vec<Violation>,
}

impl Verdict {
    /// Acknowledged writes missing from a later observation.
    pub fn lost(&self) -> usize {
        self.violations.iter().filter(|v| v.lost).count()
    }

    /// This verdict's row of the fault table, with no gap or convergence figures yet.
    pub fn row<'a>(&self, scenario: &'a str, injected: &'a str) -> Row<'a> {
        Row {
            scenario,
            injected,
            ops: self.ops,
            lost: self.lost(),
            violations: self.violations.len(),
            gaps: Vec::new(),
            converged: None,
        }
    }

    /// Panics listing every violation (the first 20 in full, with their operations) if there is one.
    pub fn assert_clean(&self, scenario: &str) {
        if !self.violations.is_empty() {
            let shown: Vec<String> = self.violations.iter().take(20).map(|v| v.to_string()).collect();
            panic!(
                "{scenario}: {} violation(s), {} of them lost acknowledged writes, in a history of {} operations:\n{}",
                self.violations.len(),
                self.lost(),
                self.ops,
                shown.join("")
            );
        }
    }
}

/// One row of the fault table in FAULTS.md; each scenario test prints its own.
pub struct Row<'a> {
    pub scenario: &'a str,
    pub injected: &'a str,
    pub ops: usize,
    pub lost: usize,
    pub violations: usize,
    /// Client-visible write gaps after each fault, when the scenario measures them.
    pub gaps: Vec<std::time::Duration>,
    pub converged: Option<std::time::Duration>,
}

impl fmt::Display for Row<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: std::time::Duration| format!("{} ms", d.as_millis());
        let gap = if self.gaps.is_empty() {
            "-".to_string()
        } else {
            let mut sorted = self.gaps.clone();
            sorted.sort();
            // The lower median for an even count: a figure that was actually observed.
            format!("{} / {}", ms(sorted[(sorted.len() - 1) / 2]), ms(sorted[sorted.len() - 1]))
        };
        let converged = self.converged.map_or("-".to_string(), ms);
        write!(
            f,
            "FAULTS | {} | {} | {} | {} | {} | {gap} | {converged} |",
            self.scenario, self.injected, self.ops, self.lost, self.violations
        )
    }
}

/// How a failed write's status reads in a history: refusals that the server makes before or while
/// applying are definite; anything else (deadline, no leader, a dropped connection, a failed forward)
/// says nothing about whether it applied.
pub fn write_outcome(status: &tonic::Status) -> Outcome {
    use tonic::Code::*;
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        InvalidArgument | NotFound | AlreadyExists | FailedPrecondition | OutOfRange => Outcome::Failed(message),
        _ => Outcome::Unknown(message),
    }
}

/// Every rule, over every counter and lot in `ops`.
pub fn check(ops: &[Op]) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut counters: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    let mut lots: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        match &op.call {
            Call::Add { counter, .. } | Call::Read { counter } => counters.entry(counter).or_default().push(op),
            Call::Enter { lot, .. } | Call::Exit { lot, .. } | Call::ReadLot { lot } => {
                lots.entry(lot).or_default().push(op)
            }
        }
    }
    for (name, ops) in counters {
        check_counter(name, &ops, &mut violations);
    }
    for (name, ops) in lots {
        check_lot(name, &ops, &mut violations);
    }
    violations
}

fn delta(op: &Op) -> i64 {
    match op.call {
        Call::Add { delta, .. } => delta,
        _ => 0,
    }
}

/// Sums of deltas of a set of adds, keyed by a time, answered for "every add keyed before t".
struct Prefix {
    keys: Vec<u64>,
    pos: Vec<i128>,
    neg: Vec<i128>,
}

impl Prefix {
    fn new(mut items: Vec<(u64, i64)>) -> Self {
        items.sort_unstable();
        let (mut pos, mut neg) = (vec![0i128], vec![0i128]);
        for (_, d) in &items {
            pos.push(pos.last().copied().unwrap_or(0) + i128::from((*d).max(0)));
            neg.push(neg.last().copied().unwrap_or(0) + i128::from((*d).min(0)));
        }
        Prefix { keys: items.into_iter().map(|(k, _)| k).collect(), pos, neg }
    }

    /// (positive part, negative part) of every add whose key is strictly before `t`.
    fn before(&self, t: u64) -> (i128, i128) {
        let n = self.keys.partition_point(|k| *k < t);
        (self.pos[n], self.neg[n])
    }
}

/// Counter rules. Every observed value (a read, or the value an acknowledged add returned, which
/// includes that add) lies within [lo, hi]: every acknowledged add that completed before the
/// observation was invoked is in it, and any add that may have applied and was invoked before the
/// observation completed may be in it. When no delta is negative, an observation that starts after
/// another finished never sees a smaller value.
fn check_counter(name: &str, ops: &[&Op], violations: &mut Vec<Violation>) {
    let adds: Vec<&Op> = ops.iter().copied().filter(|op| matches!(op.call, Call::Add { .. })).collect();
    let must = Prefix::new(adds.iter().filter(|a| a.acked()).map(|a| (a.completed, delta(a))).collect());
    let may = Prefix::new(adds.iter().filter(|a| a.may_have_applied()).map(|a| (a.invoked, delta(a))).collect());
    let observations: Vec<(&Op, i64)> = ops
        .iter()
        .filter_map(|op| match op.outcome {
            Outcome::Value(v) => Some((*op, v)),
            _ => None,
        })
        .collect();
    for (op, value) in &observations {
        let (must_pos, must_neg) = must.before(op.invoked);
        let (may_pos, may_neg) = may.before(op.completed);
        // Every must-add was invoked before it completed, so it is counted in `may` too.
        let mut lo = must_pos + must_neg + (may_neg - must_neg);
        let mut hi = must_pos + must_neg + (may_pos - must_pos);
        if matches!(op.call, Call::Add { .. }) {
            // The add's own value includes it: its positive part is certain, its negative part too.
            lo += i128::from(delta(op).max(0));
            hi += i128::from(delta(op).min(0));
        }
        let v = i128::from(*value);
        if v < lo || v > hi {
            let mut culprits = vec![(*op).clone()];
            let relevant = adds.iter().filter(|a| {
                a.id != op.id
                    && if v < lo {
                        a.acked() && a.completed < op.invoked
                    } else {
                        a.may_have_applied() && a.invoked < op.completed
                    }
            });
            let mut relevant: Vec<&&Op> = relevant.collect();
            // The adds nearest the observation explain it best; show the last few.
            relevant.sort_by_key(|a| a.completed);
            culprits.extend(relevant.iter().rev().take(8).map(|a| (**a).clone()));
            violations.push(Violation {
                lost: v < lo,
                rule: format!(
                    "counter {name}: observed {value}, but the adds around it allow only {lo}..={hi} \
                     (below: an acknowledged add is missing; above: an add that cannot have applied yet is counted)"
                ),
                ops: culprits,
            });
        }
    }
    if adds.iter().all(|a| delta(a) >= 0) {
        // Sweep observations by invocation, keeping the largest value among those already completed.
        let mut by_completion: Vec<&(&Op, i64)> = observations.iter().collect();
        by_completion.sort_by_key(|(op, _)| op.completed);
        let mut by_invocation: Vec<&(&Op, i64)> = observations.iter().collect();
        by_invocation.sort_by_key(|(op, _)| op.invoked);
        let mut next = 0;
        let mut highest: Option<&(&Op, i64)> = None;
        for later in by_invocation {
            while next < by_completion.len() && by_completion[next].0.completed < later.0.invoked {
                let candidate = by_completion[next];
                if highest.is_none_or(|h| candidate.1 > h.1) {
                    highest = Some(candidate);
                }
                next += 1;
            }
            if let Some(earlier) = highest {
                if later.1 < earlier.1 {
                    violations.push(Violation {
                        lost: false,
                        rule: format!(
                            "counter {name} went backwards: {} was observed after {} had been observed",
                            later.1, earlier.1
                        ),
                        ops: vec![earlier.0.clone(), later.0.clone()],
                    });
                }
            }
        }
    }
}

/// Lot rules. Every lot read lists each plate once and no more plates than spaces; a plate listed
/// was entered by an op that may have applied before the read ended; an acknowledged entry with no
/// possibly-applied exit between it and the read is listed, and an acknowledged exit with no
/// possibly-applied entry between it and the read is not. At every acknowledged entry, the plates
/// pinned inside never outnumber the spaces.
fn check_lot(name: &str, ops: &[&Op], violations: &mut Vec<Violation>) {
    let mut enters: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    let mut exits: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        match &op.call {
            Call::Enter { plate, .. } => enters.entry(plate).or_default().push(op),
            Call::Exit { plate, .. } => exits.entry(plate).or_default().push(op),
            _ => {}
        }
    }
    let none: Vec<&Op> = Vec::new();
    // The op that pins `plate` inside (or outside) over [from, to], if any.
    let pinned = |plate: &str, inside: bool, from: u64, to: u64| -> Option<Op> {
        let (pins, undo) = if inside { (&enters, &exits) } else { (&exits, &enters) };
        let undo = undo.get(plate).unwrap_or(&none);
        pins.get(plate).unwrap_or(&none).iter().find_map(|p| {
            let pinning = p.acked() && p.completed < from;
            let undone = undo.iter().any(|u| u.may_have_applied() && u.invoked < to && u.end() > p.invoked);
            (pinning && !undone).then(|| (*p).clone())
        })
    };
    let plates: BTreeSet<&str> = enters.keys().chain(exits.keys()).copied().collect();
    let mut capacity = 0;
    for read in ops.iter().filter(|op| matches!(op.call, Call::ReadLot { .. })) {
        let Outcome::Lot { capacity: cap, plates: listed } = &read.outcome else { continue };
        capacity = capacity.max(*cap);
        let unique: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
        if unique.len() != listed.len() || listed.len() > *cap as usize {
            violations.push(Violation {
                lost: false,
                rule: format!("lot {name}: {} cars listed, {} distinct, {cap} spaces", listed.len(), unique.len()),
                ops: vec![(*read).clone()],
            });
        }
        for plate in &unique {
            let possible =
                enters.get(plate).unwrap_or(&none).iter().any(|e| e.may_have_applied() && e.invoked < read.completed);
            if !possible {
                violations.push(Violation {
                    lost: false,
                    rule: format!("lot {name}: {plate} is listed but no entry that may have applied precedes the read"),
                    ops: vec![(*read).clone()],
                });
            }
        }
        for plate in &plates {
            let listed = unique.contains(plate);
            if let Some(pin) = pinned(plate, !listed, read.invoked, read.completed) {
                let what =
                    if listed { "an acknowledged exit is not reflected" } else { "an acknowledged entry is missing" };
                violations.push(Violation {
                    lost: true,
                    rule: format!("lot {name}: {what}: {plate} is {}listed", if listed { "" } else { "not " }),
                    ops: vec![pin, (*read).clone()],
                });
            }
        }
    }
    if capacity == 0 {
        return; // never read, so its capacity is unknown; the rules above still ran on nothing
    }
    for enter in ops.iter().filter(|op| matches!(op.call, Call::Enter { .. }) && op.acked()) {
        let t = enter.completed;
        // Pinned at the instant the entry was acknowledged, the entry itself included.
        let inside: Vec<Op> = plates.iter().filter_map(|p| pinned(p, true, t + 1, t)).collect();
        if inside.len() > capacity as usize {
            violations.push(Violation {
                lost: false,
                rule: format!("lot {name}: {} acknowledged cars are inside at once, {capacity} spaces", inside.len()),
                ops: inside,
            });
        }
    }
}
