//! Leader-pinned singleton jobs: the overstay sweeper and the cache-expiry sweeper.
//!
//! A job runs only on the Raft leader and moves with leadership: the supervisor starts every job when
//! this node becomes leader of a term and stops them when that term ends for it. A job never changes
//! state itself. It reads the applied state, plans an effect, and proposes it through Raft stamped
//! with the term it started in. The state machine refuses an effect whose entry lands in any other
//! term (`domain::State` fences it), so a job that outlived its leadership cannot act; and every
//! effect re-checks its conditions at the entry's own time, so a repeated or late effect changes
//! nothing. Together: no effect is applied twice, and none by a stale leader.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::{DomainError, JobEffect, Reply, State};
use crate::error::Error;
use crate::node::Node;
use crate::now_ms;

/// The most one effect carries, so a backlog becomes several small entries, not one huge one.
const MAX_BATCH: usize = 500;
/// How often the supervisor looks at this node's role. Cheap (a metrics borrow), and it bounds how
/// long after an election the new leader's jobs start.
const ROLE_POLL: Duration = Duration::from_millis(20);

/// A job: a name and a pure planner from the applied state and the leader's clock to effects.
struct Job {
    name: &'static str,
    plan: fn(&State, u64) -> Vec<JobEffect>,
}

const JOBS: [Job; 2] =
    [Job { name: "overstay-sweeper", plan: plan_tows }, Job { name: "cache-expiry", plan: plan_expiry }];

fn plan_tows(state: &State, now_ms: u64) -> Vec<JobEffect> {
    state
        .overstayed(now_ms)
        .into_iter()
        .flat_map(|(lot, plates)| {
            plates
                .chunks(MAX_BATCH)
                .map(|chunk| JobEffect::Tow { lot: lot.clone(), plates: chunk.to_vec() })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn plan_expiry(state: &State, now_ms: u64) -> Vec<JobEffect> {
    let keys = state.expired_cache_keys(now_ms, MAX_BATCH);
    if keys.is_empty() {
        Vec::new()
    } else {
        vec![JobEffect::Expire { keys }]
    }
}

/// What `Cluster/Status` shows of a job running on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobView {
    pub name: String,
    /// The leader term the job runs for.
    pub term: u64,
    pub since_ms: u64,
    /// Passes over the state so far in this term.
    pub runs: u64,
    /// Committed effects that changed something (cars towed, keys expired).
    pub applied: u64,
    pub last_error: Option<String>,
}

/// The jobs running on this node. Shared by the job tasks (which update their entry) and the status
/// readers; the lock is held only to copy or bump an entry.
#[derive(Default)]
pub struct Jobs {
    running: Mutex<BTreeMap<&'static str, JobView>>,
}

impl Jobs {
    fn update(&self, name: &'static str, f: impl FnOnce(&mut JobView)) {
        if let Some(view) = self.running.lock().unwrap_or_else(|p| p.into_inner()).get_mut(name) {
            f(view);
        }
    }

    pub fn views(&self) -> Vec<JobView> {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    fn start(&self, name: &'static str, term: u64) {
        let view = JobView { name: name.to_string(), term, since_ms: now_ms(), runs: 0, applied: 0, last_error: None };
        self.running.lock().unwrap_or_else(|p| p.into_inner()).insert(name, view);
    }

    fn clear(&self) {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Runs the jobs while this node leads: started on becoming leader of a term, stopped when that term
/// ends here (a step-down, a higher term, or shutdown).
pub async fn supervise(node: Arc<Node>, interval: Duration, stop: CancellationToken) {
    let mut running: Option<(u64, CancellationToken)> = None;
    loop {
        let term = node.leader_term();
        if running.as_ref().map(|(t, _)| *t) != term {
            if let Some((old, token)) = running.take() {
                token.cancel();
                node.jobs.clear();
                tracing::info!(term = old, "singleton jobs stopped: leadership ended");
            }
            if let Some(term) = term {
                let token = stop.child_token();
                for job in &JOBS {
                    node.jobs.start(job.name, term);
                    tokio::spawn(run(node.clone(), job, term, interval, token.clone()));
                }
                tracing::info!(term, "singleton jobs started on the new leader");
                running = Some((term, token));
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(ROLE_POLL) => {}
        }
    }
    if let Some((_, token)) = running {
        token.cancel();
    }
}

async fn run(node: Arc<Node>, job: &'static Job, term: u64, interval: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let effects = node.with_state(|state| (job.plan)(state, now_ms()));
        for effect in effects {
            let outcome = tokio::select! {
                _ = stop.cancelled() => return,
                r = node.propose_job(term, effect) => r,
            };
            match outcome.and_then(|applied| applied.outcome.map_err(Error::from)) {
                Ok(reply) => {
                    let changed = match reply {
                        Reply::Towed { plates, .. } => plates.len(),
                        Reply::Expired { keys } => keys.len(),
                        _ => 0,
                    } as u64;
                    node.jobs.update(job.name, |v| v.applied += changed);
                }
                // Fenced: this term is over even if the supervisor has not noticed yet.
                Err(e @ Error::Domain(DomainError::FailedPrecondition(_))) => {
                    tracing::warn!(job = job.name, term, "job effect refused: {e}");
                    node.jobs.update(job.name, |v| v.last_error = Some(e.to_string()));
                    return;
                }
                Err(e) => {
                    tracing::debug!(job = job.name, term, "job effect not applied: {e}");
                    node.jobs.update(job.name, |v| v.last_error = Some(e.to_string()));
                    break;
                }
            }
        }
        node.jobs.update(job.name, |v| v.runs += 1);
    }
}
