//! `ProgressHub`: who may report on which job, and the latest report of each shard.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ferry_api::contract::{JobIdentity, ProgressReport};
use futures::future::BoxFuture;
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use super::{AttemptProgress, JobKey, token_hash};

/// How many earlier attempts' token hashes a job keeps, so their runners hear "superseded"
/// (403) rather than "unauthorized" (401).
const SUPERSEDED_KEPT: usize = 4;

/// Recovers the token hash of an attempt the hub does not know, typically after an operator
/// restart: the controller reads the attempt's Secret. It must answer `None` unless `attempt`
/// is the job's current attempt, so a superseded runner can never become current again.
pub type AttemptLookup =
    Arc<dyn Fn(JobKey, u32) -> BoxFuture<'static, Result<Option<(JobIdentity, [u8; 32])>, LookupError>> + Send + Sync>;

/// The lookup could not answer (the API server is unreachable, ...); the runner should retry.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LookupError(pub String);

/// A report the hub took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// The report was newer than what its shard had sent and is now the latest.
    Applied,
    /// The shard already sent this sequence number or a higher one; nothing changed.
    Stale,
}

/// Why the hub refused a report.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The token is missing or matches no attempt of this job.
    #[error("missing or wrong progress token")]
    Unauthorized,
    /// The token is the current attempt's, but the report names another job UID.
    #[error("the report names another job")]
    WrongJob,
    /// The report belongs to an attempt that is not the job's current one.
    #[error("the report's attempt is not the job's current attempt")]
    WrongAttempt,
    /// No attempt of this job is known.
    #[error("no running MigrationJob of that name")]
    UnknownJob,
    /// The report's shard makes no sense for this attempt.
    #[error("{0}")]
    InvalidShard(String),
    /// The token could not be checked right now.
    #[error("the operator cannot check the token right now; retry")]
    Unavailable,
}

/// The attempts the controller launched and the progress their runners reported. Cheap to
/// clone; the controller, the server and the status writer share one.
#[derive(Clone)]
pub struct ProgressHub {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    lookup: Option<AttemptLookup>,
    /// Paces lookups: see [`LOOKUPS_PER_SECOND`].
    lookups: governor::DefaultDirectRateLimiter,
    changed: Notify,
}

/// Lookups allowed per second, in bursts of up to [`LOOKUP_BURST`]. A lookup costs the API
/// server two reads, and anyone who can reach the progress port can ask for one with a made-up
/// job or attempt; beyond this pace the runner hears "retry" (runners that lost their
/// registration in an operator restart get through within seconds).
const LOOKUPS_PER_SECOND: u32 = 10;

/// See [`LOOKUPS_PER_SECOND`].
const LOOKUP_BURST: u32 = 50;

#[derive(Default)]
struct State {
    jobs: HashMap<JobKey, Registration>,
    by_uid: HashMap<String, JobKey>,
    dirty: HashSet<String>,
}

/// The current attempt of one job. Holds token hashes, so it is deliberately not `Debug`.
struct Registration {
    job: JobIdentity,
    token_hash: [u8; 32],
    superseded: Vec<[u8; 32]>,
    progress: AttemptProgress,
}

/// What to do with a report, decided without I/O.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Apply,
    Stale,
    Reject(Rejection),
    /// The hub does not know the attempt the report claims; ask the lookup.
    LookUp,
}

/// Decides on a report for a job whose registration may be unknown.
fn decide(registration: Option<&Registration>, presented: &[u8; 32], report: &ProgressReport) -> Decision {
    let Some(registration) = registration else { return Decision::LookUp };
    let current = &registration.progress;
    if bool::from(registration.token_hash.ct_eq(presented)) {
        if report.job_uid != registration.job.uid {
            Decision::Reject(Rejection::WrongJob)
        } else if report.attempt != current.attempt {
            Decision::Reject(Rejection::WrongAttempt)
        } else if let Err(reason) = current.shard_fits(report) {
            Decision::Reject(Rejection::InvalidShard(reason))
        } else if current.is_newer(report) {
            Decision::Apply
        } else {
            Decision::Stale
        }
    } else if registration.superseded.iter().any(|hash| bool::from(hash.ct_eq(presented))) {
        Decision::Reject(Rejection::WrongAttempt)
    } else if report.attempt > current.attempt {
        // Perhaps an attempt launched by an operator instance that has since restarted.
        Decision::LookUp
    } else {
        Decision::Reject(Rejection::Unauthorized)
    }
}

impl State {
    /// Makes `attempt` current for `job` unless a newer attempt of the same job already is.
    fn register(&mut self, job: &JobIdentity, attempt: u32, token_hash: [u8; 32]) {
        let key = JobKey::new(&job.namespace, &job.name);
        match self.jobs.get_mut(&key) {
            Some(known) if known.job.uid == job.uid => {
                let current = known.progress.attempt;
                if attempt > current {
                    known.superseded.insert(0, known.token_hash);
                    known.superseded.truncate(SUPERSEDED_KEPT);
                    known.progress = AttemptProgress::new(attempt);
                }
                if attempt >= current {
                    known.token_hash = token_hash;
                }
                return;
            }
            Some(replaced) => {
                // The job was deleted and recreated under the same name: forget the old one,
                // and mark it so the status writer drops what it kept about it.
                let old_uid = replaced.job.uid.clone();
                self.by_uid.remove(&old_uid);
                self.dirty.insert(old_uid);
            }
            None => {}
        }
        let registration = Registration {
            job: job.clone(),
            token_hash,
            superseded: Vec::new(),
            progress: AttemptProgress::new(attempt),
        };
        self.by_uid.insert(job.uid.clone(), key.clone());
        self.jobs.insert(key, registration);
    }
}

impl ProgressHub {
    /// A hub that recovers unknown attempts with `lookup`.
    pub fn new(lookup: AttemptLookup) -> Self {
        Self::build(Some(lookup))
    }

    /// A hub that knows only the attempts registered with it.
    pub fn without_lookup() -> Self {
        Self::build(None)
    }

    fn build(lookup: Option<AttemptLookup>) -> Self {
        let quota = governor::Quota::per_second(nonzero(LOOKUPS_PER_SECOND)).allow_burst(nonzero(LOOKUP_BURST));
        let lookups = governor::RateLimiter::direct(quota);
        let inner = Inner { state: Mutex::new(State::default()), lookup, lookups, changed: Notify::new() };
        Self { inner: Arc::new(inner) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the maps consistent, so a panic elsewhere cannot
        // have left them half-updated.
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `attempt` of `job` was launched with a token hashing to `token_hash`; it
    /// replaces older attempts of the job.
    pub fn register_attempt(&self, job: &JobIdentity, attempt: u32, token_hash: [u8; 32]) {
        self.state().register(job, attempt, token_hash);
        self.inner.changed.notify_one();
    }

    /// Forgets a job (deleted, or finished and recorded).
    pub fn forget_job(&self, job_uid: &str) {
        let mut state = self.state();
        if let Some(key) = state.by_uid.remove(job_uid) {
            state.jobs.remove(&key);
        }
        // Marked so the status writer drops what it kept about the job.
        state.dirty.insert(job_uid.to_owned());
        drop(state);
        self.inner.changed.notify_one();
    }

    /// The current attempt's progress of a job, if the job is registered.
    pub fn latest(&self, job_uid: &str) -> Option<AttemptProgress> {
        self.snapshot(job_uid).map(|(_, progress)| progress)
    }

    /// The job's key and current attempt's progress.
    pub(crate) fn snapshot(&self, job_uid: &str) -> Option<(JobKey, AttemptProgress)> {
        let state = self.state();
        let key = state.by_uid.get(job_uid)?;
        let registration = state.jobs.get(key)?;
        Some((key.clone(), registration.progress.clone()))
    }

    /// Takes the UIDs of jobs whose progress changed since the last call.
    pub(crate) fn take_dirty(&self) -> Vec<String> {
        self.state().dirty.drain().collect()
    }

    /// Resolves once progress changed after the last [`Self::take_dirty`] (or is pending).
    pub(crate) async fn changed(&self) {
        self.inner.changed.notified().await;
    }

    /// Authenticates `report` for the job at `namespace`/`name` and keeps it if it is the
    /// newest of its shard.
    pub async fn accept(
        &self,
        namespace: &str,
        name: &str,
        presented_token: &str,
        report: ProgressReport,
    ) -> Result<Accepted, Rejection> {
        let key = JobKey::new(namespace, name);
        let presented = token_hash(presented_token);
        if let Some(verdict) = self.try_apply(&key, &presented, &report) {
            return verdict;
        }
        let Some(lookup) = &self.inner.lookup else { return self.no_lookup(&key) };
        if self.inner.lookups.check().is_err() {
            tracing::debug!(job = %key, "attempt lookups are being paced; the runner will retry");
            return Err(Rejection::Unavailable);
        }
        match lookup(key.clone(), report.attempt).await {
            Ok(Some((job, hash))) if job.namespace == key.namespace && job.name == key.name => {
                self.register_attempt(&job, report.attempt, hash);
            }
            Ok(Some((job, _))) => {
                let returned = JobKey::new(&job.namespace, &job.name);
                tracing::warn!(job = %key, %returned, "attempt lookup answered for another job");
            }
            Ok(None) => {}
            Err(error) => {
                let attempt = report.attempt;
                tracing::warn!(job = %key, attempt, %error, "recovering an attempt's token hash failed");
                return Err(Rejection::Unavailable);
            }
        }
        // One lookup per report: if the hub still cannot place the token, it is wrong.
        self.try_apply(&key, &presented, &report).unwrap_or_else(|| self.no_lookup(&key))
    }

    fn no_lookup(&self, key: &JobKey) -> Result<Accepted, Rejection> {
        Err(if self.state().jobs.contains_key(key) { Rejection::Unauthorized } else { Rejection::UnknownJob })
    }

    /// Decides and applies under the lock; `None` when a lookup should be tried first.
    fn try_apply(
        &self,
        key: &JobKey,
        presented: &[u8; 32],
        report: &ProgressReport,
    ) -> Option<Result<Accepted, Rejection>> {
        let mut state = self.state();
        let registration = state.jobs.get_mut(key);
        match decide(registration.as_deref(), presented, report) {
            Decision::Apply => {
                let registration = registration?;
                let uid = registration.job.uid.clone();
                registration.progress.shards.insert(report.shard.index, report.clone());
                registration.progress.last_report_at = Some(jiff::Timestamp::now());
                state.dirty.insert(uid);
                drop(state);
                self.inner.changed.notify_one();
                Some(Ok(Accepted::Applied))
            }
            Decision::Stale => Some(Ok(Accepted::Stale)),
            Decision::Reject(rejection) => Some(Err(rejection)),
            Decision::LookUp => None,
        }
    }
}

fn nonzero(value: u32) -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(value).unwrap_or(std::num::NonZeroU32::MIN)
}

impl fmt::Debug for ProgressHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressHub").field("jobs", &self.state().jobs.len()).finish_non_exhaustive()
    }
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
