//! `ProgressHub`: who may report on which job, and the latest report of each shard.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ferry_api::contract::{DeletionVerdict, JobIdentity, ProgressReport, Shard, deletion_verdict};
use futures::future::BoxFuture;
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use super::{AttemptProgress, JobKey, token_hash};

/// How many earlier attempts' token hashes a job keeps, so their runners hear "superseded"
/// (403) rather than "unauthorized" (401).
const SUPERSEDED_KEPT: usize = 4;

/// Recovers a job's current attempt and its per-shard token hashes (in shard order) when the
/// hub does not know them, typically after an operator restart: the controller reads the job
/// and the current attempt's Secret. `None` when the job or its Secret does not exist.
pub type AttemptLookup =
    Arc<dyn Fn(JobKey) -> BoxFuture<'static, Result<Option<CurrentAttempt>, LookupError>> + Send + Sync>;

/// A job's current attempt as its Secret records it.
#[derive(Clone)]
pub struct CurrentAttempt {
    /// The job.
    pub job: JobIdentity,
    /// Its current attempt number.
    pub attempt: u32,
    /// Shard `i`'s progress token hash at index `i`.
    pub token_hashes: Vec<[u8; 32]>,
    /// The job's `spec.maxDelete`, for the job-wide deletion verdict.
    pub max_delete: Option<u64>,
}

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
    /// The report's shard makes no sense for this attempt, or is not the token's.
    #[error("{0}")]
    InvalidShard(String),
    /// The report's content cannot be taken (a counter larger than status can hold).
    #[error("{0}")]
    InvalidReport(String),
    /// The token could not be checked right now.
    #[error("the operator cannot check the token right now; retry")]
    Unavailable,
}

impl Rejection {
    /// A short name for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::WrongJob => "wrong_job",
            Self::WrongAttempt => "wrong_attempt",
            Self::UnknownJob => "unknown_job",
            Self::InvalidShard(_) => "invalid_shard",
            Self::InvalidReport(_) => "invalid_report",
            Self::Unavailable => "unavailable",
        }
    }
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
    /// Paces lookups per client address: see [`LOOKUPS_PER_SECOND`].
    lookups: governor::DefaultKeyedRateLimiter<IpAddr>,
    changed: Notify,
    /// Reports by result (`accepted`, `stale`, `rejected`) and reason.
    reports: prometheus::IntCounterVec,
}

/// Lookups one client address may cause per second, in bursts of up to [`LOOKUP_BURST`]. A
/// lookup costs the API server two reads, and anyone who can reach the progress port can ask
/// for one with a made-up job or token; beyond this pace that client hears "retry". Paced per
/// address, so one noisy client cannot use up the lookups that runners need after an operator
/// restart (one lookup registers every shard of an attempt).
const LOOKUPS_PER_SECOND: u32 = 2;

/// See [`LOOKUPS_PER_SECOND`].
const LOOKUP_BURST: u32 = 10;

/// Past this many client addresses the pacer forgets those whose quota has refilled.
const PACED_CLIENTS_KEPT: usize = 10_000;

#[derive(Default)]
struct State {
    jobs: HashMap<JobKey, Registration>,
    by_uid: HashMap<String, JobKey>,
    dirty: HashSet<String>,
}

/// The current attempt of one job. Holds token hashes, so it is deliberately not `Debug`.
struct Registration {
    job: JobIdentity,
    /// Shard `i`'s progress token hash at index `i`: a token speaks for its own shard only.
    token_hashes: Vec<[u8; 32]>,
    /// Earlier attempts' hashes, newest first.
    superseded: Vec<Vec<[u8; 32]>>,
    progress: AttemptProgress,
    /// The job's `spec.maxDelete` when the attempt was launched.
    max_delete: Option<u64>,
    /// The attempt's deletion verdict, kept once reached so every shard hears the same one
    /// (a shard's later reports, of deletions that failed say, must not change it).
    deletion: Option<DeletionVerdict>,
}

/// The index of the hash equal to `presented`, comparing every one in constant time.
fn shard_of(hashes: &[[u8; 32]], presented: &[u8; 32]) -> Option<u32> {
    let mut found = None;
    for (index, hash) in (0u32..).zip(hashes) {
        if bool::from(hash.ct_eq(presented)) {
            found = Some(index);
        }
    }
    found
}

/// What a token proves: the shard of a job's current attempt it was issued to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// The job, as the URL names it.
    pub job: JobKey,
    /// The job's UID when the attempt was registered.
    pub uid: String,
    /// The attempt the token belongs to.
    pub attempt: u32,
    /// The shard the token belongs to, and the attempt's shard count.
    pub shard: Shard,
}

/// Who a presented token is, decided without I/O.
#[derive(Debug, PartialEq, Eq)]
enum Identity {
    /// A shard of the job's current attempt.
    Current(Credential),
    /// A shard of one of the job's earlier attempts.
    Superseded,
    /// No attempt the hub knows; `known_job` says whether the job itself is known.
    Unknown { known_job: bool },
}

/// Identifies the token hashing to `presented` among the job's registered attempts.
fn identify(key: &JobKey, registration: Option<&Registration>, presented: &[u8; 32]) -> Identity {
    let Some(registration) = registration else { return Identity::Unknown { known_job: false } };
    if let Some(index) = shard_of(&registration.token_hashes, presented) {
        let count = u32::try_from(registration.token_hashes.len()).unwrap_or(u32::MAX);
        return Identity::Current(Credential {
            job: key.clone(),
            uid: registration.job.uid.clone(),
            attempt: registration.progress.attempt,
            shard: Shard { index, count },
        });
    }
    if registration.superseded.iter().any(|hashes| shard_of(hashes, presented).is_some()) {
        Identity::Superseded
    } else {
        Identity::Unknown { known_job: true }
    }
}

/// What to do with an authenticated report, decided without I/O.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Apply,
    Stale,
    Reject(Rejection),
}

/// Judges a report sent with `credential` against the job's current registration.
fn judge(registration: &Registration, credential: &Credential, report: &ProgressReport) -> Decision {
    let current = &registration.progress;
    if registration.job.uid != credential.uid || current.attempt != credential.attempt {
        // Superseded between authentication and now.
        Decision::Reject(Rejection::WrongAttempt)
    } else if report.job_uid != credential.uid {
        Decision::Reject(Rejection::WrongJob)
    } else if report.attempt != credential.attempt {
        Decision::Reject(Rejection::WrongAttempt)
    } else if report.shard != credential.shard {
        Decision::Reject(Rejection::InvalidShard(format!(
            "the token belongs to shard {}, but the report names shard {}",
            credential.shard, report.shard
        )))
    } else if let Err(reason) = current.shard_fits(report) {
        Decision::Reject(Rejection::InvalidShard(reason))
    } else if !report.progress.fits_kubernetes() {
        Decision::Reject(Rejection::InvalidReport(format!(
            "a counter exceeds {}, the largest status can hold",
            ferry_api::status::COUNTER_LIMIT
        )))
    } else if current.is_newer(report) {
        Decision::Apply
    } else {
        Decision::Stale
    }
}

impl State {
    /// Makes `attempt` current for `job` unless a newer attempt of the same job already is.
    fn register(&mut self, job: &JobIdentity, attempt: u32, token_hashes: Vec<[u8; 32]>, max_delete: Option<u64>) {
        let key = JobKey::new(&job.namespace, &job.name);
        match self.jobs.get_mut(&key) {
            Some(known) if known.job.uid == job.uid => {
                let current = known.progress.attempt;
                if attempt > current {
                    let previous = std::mem::take(&mut known.token_hashes);
                    known.superseded.insert(0, previous);
                    known.superseded.truncate(SUPERSEDED_KEPT);
                    known.progress = AttemptProgress::new(attempt);
                    known.deletion = None;
                }
                if attempt >= current {
                    known.token_hashes = token_hashes;
                    known.max_delete = max_delete;
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
            token_hashes,
            superseded: Vec::new(),
            progress: AttemptProgress::new(attempt),
            max_delete,
            deletion: None,
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
        let lookups = governor::RateLimiter::keyed(quota);
        let reports = prometheus::IntCounterVec::new(
            prometheus::Opts::new("progress_reports_total", "Progress reports by result and reason"),
            &["result", "reason"],
        )
        .unwrap_or_else(|error| unreachable!("a constant metric description: {error}"));
        let inner = Inner { state: Mutex::new(State::default()), lookup, lookups, changed: Notify::new(), reports };
        Self { inner: Arc::new(inner) }
    }

    /// Counts a report the progress API answered: `result` is `accepted`, `stale` or
    /// `rejected`, `reason` why (`ok` for an accepted one).
    pub fn count_report(&self, result: &str, reason: &str) {
        self.inner.reports.with_label_values(&[result, reason]).inc();
    }

    /// The report counter, for the operator's metrics registry.
    pub fn report_counter(&self) -> prometheus::IntCounterVec {
        self.inner.reports.clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the maps consistent, so a panic elsewhere cannot
        // have left them half-updated.
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `attempt` of `job` was launched with shard `i`'s progress token hashing to
    /// `token_hashes[i]`; it replaces older attempts of the job.
    pub fn register_attempt(&self, job: &JobIdentity, attempt: u32, token_hashes: Vec<[u8; 32]>) {
        self.register_attempt_with_limit(job, attempt, token_hashes, None);
    }

    /// [`Self::register_attempt`] for a sync job whose deletions `max_delete` bounds.
    pub fn register_attempt_with_limit(
        &self,
        job: &JobIdentity,
        attempt: u32,
        token_hashes: Vec<[u8; 32]>,
        max_delete: Option<u64>,
    ) {
        self.state().register(job, attempt, token_hashes, max_delete);
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

    /// Authenticates and applies `report` in one step (see [`Self::authenticate`] and
    /// [`Self::apply`]).
    pub async fn accept(
        &self,
        client: IpAddr,
        namespace: &str,
        name: &str,
        presented_token: &str,
        report: ProgressReport,
    ) -> Result<Accepted, Rejection> {
        let credential = self.authenticate(client, namespace, name, presented_token).await?;
        self.apply(&credential, report)
    }

    /// Finds which shard of the job at `namespace`/`name` the token was issued to, before
    /// anything the sender wrote is parsed. A token the hub does not know costs one lookup
    /// of the job's current attempt, paced per `client` address.
    pub async fn authenticate(
        &self,
        client: IpAddr,
        namespace: &str,
        name: &str,
        presented_token: &str,
    ) -> Result<Credential, Rejection> {
        let key = JobKey::new(namespace, name);
        let presented = token_hash(presented_token);
        let known_job = match self.identify(&key, &presented) {
            Identity::Current(credential) => return Ok(credential),
            Identity::Superseded => return Err(Rejection::WrongAttempt),
            Identity::Unknown { known_job } => known_job,
        };
        let unknown = if known_job { Rejection::Unauthorized } else { Rejection::UnknownJob };
        let Some(lookup) = &self.inner.lookup else { return Err(unknown) };
        if self.inner.lookups.check_key(&client).is_err() {
            tracing::debug!(job = %key, %client, "attempt lookups are being paced; the client will retry");
            return Err(Rejection::Unavailable);
        }
        if self.inner.lookups.len() > PACED_CLIENTS_KEPT {
            self.inner.lookups.retain_recent();
        }
        match lookup(key.clone()).await {
            Ok(Some(current)) if current.job.namespace == key.namespace && current.job.name == key.name => {
                self.register_attempt_with_limit(
                    &current.job,
                    current.attempt,
                    current.token_hashes,
                    current.max_delete,
                );
            }
            Ok(Some(current)) => {
                let returned = JobKey::new(&current.job.namespace, &current.job.name);
                tracing::warn!(job = %key, %returned, "attempt lookup answered for another job");
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(job = %key, %error, "recovering an attempt's token hashes failed");
                return Err(Rejection::Unavailable);
            }
        }
        // One lookup per request: if the hub still cannot place the token, it is wrong.
        match self.identify(&key, &presented) {
            Identity::Current(credential) => Ok(credential),
            Identity::Superseded => Err(Rejection::WrongAttempt),
            Identity::Unknown { known_job: true } => Err(Rejection::Unauthorized),
            Identity::Unknown { known_job: false } => Err(Rejection::UnknownJob),
        }
    }

    /// The job-wide deletion verdict for the attempt `credential` belongs to; `None` while
    /// some shard has not counted its deletions yet.
    pub fn deletion_verdict(&self, credential: &Credential) -> Option<DeletionVerdict> {
        let mut state = self.state();
        let registration = state.jobs.get_mut(&credential.job)?;
        if registration.progress.attempt != credential.attempt {
            return None;
        }
        if registration.deletion.is_none() {
            let shards = registration.progress.shards.values();
            registration.deletion = deletion_verdict(registration.max_delete, credential.shard.count, shards);
        }
        registration.deletion.clone()
    }

    /// Settles attempt `attempt` of a job on "nothing is deleted" (unless a verdict was already
    /// reached): a shard's pod failed or vanished without a final report, so the shards
    /// waiting to delete must not wait for it.
    pub fn refuse_deletions(&self, job_uid: &str, attempt: u32, reason: &str) {
        let mut state = self.state();
        let Some(key) = state.by_uid.get(job_uid).cloned() else { return };
        if let Some(registration) = state.jobs.get_mut(&key)
            && registration.progress.attempt == attempt
            && registration.deletion.is_none()
        {
            registration.deletion = Some(DeletionVerdict::Refused { reason: reason.to_owned() });
        }
    }

    fn identify(&self, key: &JobKey, presented: &[u8; 32]) -> Identity {
        identify(key, self.state().jobs.get(key), presented)
    }

    /// Keeps `report`, sent with `credential`, if it is the newest of its shard.
    pub fn apply(&self, credential: &Credential, report: ProgressReport) -> Result<Accepted, Rejection> {
        let mut state = self.state();
        let Some(registration) = state.jobs.get_mut(&credential.job) else { return Err(Rejection::UnknownJob) };
        match judge(registration, credential, &report) {
            Decision::Apply => {
                let uid = registration.job.uid.clone();
                registration.progress.shards.insert(report.shard.index, report);
                registration.progress.last_report_at = Some(jiff::Timestamp::now());
                state.dirty.insert(uid);
                drop(state);
                self.inner.changed.notify_one();
                Ok(Accepted::Applied)
            }
            Decision::Stale => Ok(Accepted::Stale),
            Decision::Reject(rejection) => Err(rejection),
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
