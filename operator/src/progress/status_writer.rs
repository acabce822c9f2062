//! Copies the hub's progress into `MigrationJob` status: at most one write per job per
//! interval, always the latest state, and nothing when nothing changed.

use crate::error::error_chain;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use ferry_api::job::MigrationJob;
use ferry_api::status::{ObjectFailure, Progress, Summary};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PatchParams;
use serde::Serialize;
use tokio::time::Instant;

use super::{AttemptProgress, JobKey, ProgressHub};

/// How often one job's status is written at most, unless configured otherwise.
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(2);

/// How many recent failures status lists.
pub const MAX_STATUS_FAILURES: usize = 10;

/// The status fields the progress API owns; everything else belongs to the controller.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProgressStatus {
    /// Counters summed over the shards.
    pub progress: Progress,
    /// The printer columns' totals.
    pub summary: Summary,
    /// When the operator last heard from a runner.
    pub last_heartbeat_time: Option<Time>,
    /// Recent failures; always written, so a new attempt clears the previous one's.
    pub failures: Vec<ObjectFailure>,
}

impl ProgressStatus {
    /// The status of an attempt; `None` until a runner reported.
    pub fn from_attempt(attempt: &AttemptProgress) -> Option<Self> {
        if attempt.shards.is_empty() {
            return None;
        }
        let progress = attempt.combined();
        let mut failures = attempt.recent_failures();
        failures.truncate(MAX_STATUS_FAILURES);
        Some(Self {
            summary: progress.summary(),
            progress,
            last_heartbeat_time: attempt.last_report_at.map(Time),
            failures,
        })
    }

    /// The JSON merge patch for the status subresource.
    pub fn merge_patch(&self) -> serde_json::Value {
        serde_json::json!({ "status": self })
    }
}

/// Why a status write failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusSinkError {
    /// The job no longer exists; stop writing to it.
    #[error("MigrationJob {0} no longer exists")]
    Gone(JobKey),
    /// The write failed and is worth retrying.
    #[error("patching the status of MigrationJob {job}")]
    Patch {
        /// The job.
        job: JobKey,
        /// What the API server or client said.
        #[source]
        source: kube::Error,
    },
}

/// Where status goes: the Kubernetes API, or a fake in tests.
pub trait StatusSink: Send + Sync + 'static {
    /// Writes `status` into the job's status.
    fn write(&self, job: &JobKey, status: &ProgressStatus) -> impl Future<Output = Result<(), StatusSinkError>> + Send;
}

/// Writes status with a JSON merge patch through the status subresource.
#[derive(Clone)]
pub struct KubeStatusSink {
    client: kube::Client,
}

impl KubeStatusSink {
    /// A sink that writes with `client`.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

impl StatusSink for KubeStatusSink {
    async fn write(&self, job: &JobKey, status: &ProgressStatus) -> Result<(), StatusSinkError> {
        let params = PatchParams { field_manager: Some("ferry-operator".into()), ..PatchParams::default() };
        // The response is not decoded as a MigrationJob: a job whose spec does not decode
        // still gets its progress, and a write that succeeded is never retried as failed.
        let patch = status.merge_patch();
        match crate::guard::patch_status::<MigrationJob>(
            self.client.clone(),
            &job.namespace,
            &job.name,
            &params,
            &patch,
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(response)) if response.code == 404 => Err(StatusSinkError::Gone(job.clone())),
            Err(source) => Err(StatusSinkError::Patch { job: job.clone(), source }),
        }
    }
}

/// Which jobs need a write and when each may be written next (pure bookkeeping).
#[derive(Debug, Default)]
struct Schedule {
    pending: HashSet<String>,
    next_allowed: HashMap<String, Instant>,
    written: HashMap<String, ProgressStatus>,
}

impl Schedule {
    /// Jobs that may be written at `now`; all pending ones when `now` is `None` (shutdown).
    fn due(&self, now: Option<Instant>) -> Vec<String> {
        let allowed = |uid: &String| match (now, self.next_allowed.get(uid)) {
            (Some(now), Some(next)) => *next <= now,
            _ => true,
        };
        self.pending.iter().filter(|uid| allowed(uid)).cloned().collect()
    }

    /// The earliest moment a pending job may be written.
    fn next_deadline(&self) -> Option<Instant> {
        self.pending.iter().filter_map(|uid| self.next_allowed.get(uid)).min().copied()
    }

    /// Whether `status` is what was last written for the job.
    fn unchanged(&self, uid: &str, status: &ProgressStatus) -> bool {
        self.written.get(uid) == Some(status)
    }

    /// A write was attempted at `at`; the job waits an interval before the next one.
    fn attempted(&mut self, uid: &str, at: Instant, interval: Duration) {
        self.next_allowed.insert(uid.to_owned(), at + interval);
    }

    fn forget(&mut self, uid: &str) {
        self.pending.remove(uid);
        self.next_allowed.remove(uid);
        self.written.remove(uid);
    }
}

/// Runs the bounded-rate status writes for every job the hub knows.
pub struct StatusWriter<S> {
    hub: ProgressHub,
    sink: S,
    interval: Duration,
    /// Writes by result (`ok`, `gone`, `error`).
    writes: prometheus::IntCounterVec,
}

impl<S: StatusSink> StatusWriter<S> {
    /// A writer with the default interval.
    pub fn new(hub: ProgressHub, sink: S) -> Self {
        let writes = prometheus::IntCounterVec::new(
            prometheus::Opts::new("status_writes_total", "Progress writes to MigrationJob status by result"),
            &["result"],
        )
        .unwrap_or_else(|error| unreachable!("a constant metric description: {error}"));
        Self { hub, sink, interval: DEFAULT_STATUS_INTERVAL, writes }
    }

    /// The write counter, for the operator's metrics registry.
    pub fn write_counter(&self) -> prometheus::IntCounterVec {
        self.writes.clone()
    }

    /// Sets the minimum time between two writes of one job.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Writes until `shutdown` resolves, then writes whatever is still pending once.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut schedule = Schedule::default();
        loop {
            let deadline = schedule.next_deadline();
            tokio::select! {
                () = &mut shutdown => break,
                () = self.hub.changed() => {}
                () = sleep_until(deadline) => {}
            }
            schedule.pending.extend(self.hub.take_dirty());
            self.write_due(&mut schedule, Some(Instant::now())).await;
        }
        // The last report before a restart must not be lost for the rate limit's sake.
        schedule.pending.extend(self.hub.take_dirty());
        self.write_due(&mut schedule, None).await;
    }

    async fn write_due(&self, schedule: &mut Schedule, now: Option<Instant>) {
        for uid in schedule.due(now) {
            let Some((job, attempt)) = self.hub.snapshot(&uid) else {
                schedule.forget(&uid);
                continue;
            };
            let status = ProgressStatus::from_attempt(&attempt);
            match status {
                Some(status) if !schedule.unchanged(&uid, &status) => {
                    schedule.attempted(&uid, Instant::now(), self.interval);
                    let written = self.sink.write(&job, &status).await;
                    let result = match &written {
                        Ok(()) => "ok",
                        Err(StatusSinkError::Gone(_)) => "gone",
                        Err(_) => "error",
                    };
                    self.writes.with_label_values(&[result]).inc();
                    match written {
                        Ok(()) => {
                            schedule.pending.remove(&uid);
                            schedule.written.insert(uid, status);
                        }
                        Err(error @ StatusSinkError::Gone(_)) => {
                            tracing::info!(%error, "dropping progress status writes");
                            schedule.forget(&uid);
                        }
                        // Stays pending: retried once the interval has passed.
                        Err(error) => tracing::warn!(error = %error_chain(&error), "writing progress status failed"),
                    }
                }
                _ => {
                    schedule.pending.remove(&uid);
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "status_writer_tests.rs"]
mod tests;
