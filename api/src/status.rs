//! What the operator reports about a `MigrationJob`: phase, kstatus conditions and
//! verified progress.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Where a job is in its life.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Accepted, nothing launched yet.
    #[default]
    Pending,
    /// Waiting for something outside the job (a binding that is not Ready, the next schedule).
    Waiting,
    /// Runners are moving data.
    Running,
    /// Every selected object was verified at the destination.
    Succeeded,
    /// The job stopped without verifying every object.
    Failed,
    /// `spec.suspend` is set.
    Suspended,
}

impl Phase {
    /// Whether no more work will happen without a change to the spec.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// The observed state of a `MigrationJob`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MigrationJobStatus {
    /// Where the job is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Attempts started so far.
    #[serde(default)]
    #[schemars(range(max = u32::MAX))]
    pub attempts: u32,
    /// Attempts that ended without verifying every object (suspensions do not count);
    /// the job fails when this exceeds `spec.retries`.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(max = u32::MAX))]
    pub failed_attempts: u32,
    /// When the first attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the job finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// When a runner last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<Time>,
    /// kstatus conditions: Ready, Progressing, Complete, Failed, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Verified progress, summed over shards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// Short human-readable totals for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// The first few objects that failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<ObjectFailure>,
    /// Where the per-object report was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ReportLocation>,
    /// The current run's number (1 for the first; a schedule or a spec change starts another).
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(max = u32::MAX))]
    pub run: u32,
    /// When `spec.schedule` runs the job again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<Time>,
    /// The versions of the bindings' Vault secrets the current attempt was launched with: a
    /// job that failed with `CredentialsRevoked` runs again once one of them changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_versions: Option<CredentialVersions>,
    /// The last few finished runs, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub runs: Vec<RunRecord>,
}

/// The KV versions of a job's two binding secrets (absent for a binding without one).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CredentialVersions {
    /// The source binding's secret version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<u64>,
    /// The destination binding's secret version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<u64>,
}

/// How many finished runs status keeps.
pub const RUNS_KEPT: usize = 5;

/// One finished run of a job.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// The run's number.
    #[schemars(range(max = u32::MAX))]
    pub run: u32,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// How it ended: `Succeeded` or `Failed`.
    pub outcome: Phase,
    /// Objects written to the destination.
    pub objects_copied: u64,
    /// Objects proven identical at the destination.
    pub objects_verified: u64,
    /// Objects left alone as already there.
    pub objects_skipped: u64,
    /// Objects that could not be moved.
    pub objects_failed: u64,
    /// Bytes written to the destination.
    pub bytes_copied: u64,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// Cumulative counters of one attempt (or of all shards, summed).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Objects selected at the source so far.
    pub objects_total: u64,
    /// Objects whose bytes were written to the destination.
    pub objects_copied: u64,
    /// Objects proven identical at the destination (copied or already there).
    pub objects_verified: u64,
    /// Objects left alone because the destination already had them.
    pub objects_skipped: u64,
    /// Objects that could not be moved after every retry.
    pub objects_failed: u64,
    /// Destination objects deleted (or moved to the trash path) by sync.
    #[serde(default)]
    pub objects_deleted: u64,
    /// Bytes selected at the source so far.
    pub bytes_total: u64,
    /// Bytes written to the destination.
    pub bytes_copied: u64,
    /// Bytes proven identical at the destination.
    pub bytes_verified: u64,
    /// Recent throughput of verified bytes.
    #[serde(default)]
    pub bytes_per_second: u64,
    /// Estimated seconds to completion, when it can be estimated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
}

/// The largest counter status can hold: Kubernetes stores integers as int64.
pub const COUNTER_LIMIT: u64 = i64::MAX as u64;

/// Adds two counters, saturating at [`COUNTER_LIMIT`] instead of overflowing.
fn add_counter(a: u64, b: u64) -> u64 {
    a.saturating_add(b).min(COUNTER_LIMIT)
}

impl Progress {
    /// Adds another shard's counters to these (rates and ETAs take the slowest view).
    pub fn accumulate(&mut self, other: &Progress) {
        self.objects_total = add_counter(self.objects_total, other.objects_total);
        self.objects_copied = add_counter(self.objects_copied, other.objects_copied);
        self.objects_verified = add_counter(self.objects_verified, other.objects_verified);
        self.objects_skipped = add_counter(self.objects_skipped, other.objects_skipped);
        self.objects_failed = add_counter(self.objects_failed, other.objects_failed);
        self.objects_deleted = add_counter(self.objects_deleted, other.objects_deleted);
        self.bytes_total = add_counter(self.bytes_total, other.bytes_total);
        self.bytes_copied = add_counter(self.bytes_copied, other.bytes_copied);
        self.bytes_verified = add_counter(self.bytes_verified, other.bytes_verified);
        self.bytes_per_second = add_counter(self.bytes_per_second, other.bytes_per_second);
        self.eta_seconds = match (self.eta_seconds, other.eta_seconds) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// Whether every counter fits what Kubernetes stores (an int64): a report claiming more
    /// is refused rather than breaking every later status write of its job.
    pub fn fits_kubernetes(&self) -> bool {
        [
            self.objects_total,
            self.objects_copied,
            self.objects_verified,
            self.objects_skipped,
            self.objects_failed,
            self.objects_deleted,
            self.bytes_total,
            self.bytes_copied,
            self.bytes_verified,
            self.bytes_per_second,
            self.eta_seconds.unwrap_or(0),
        ]
        .iter()
        .all(|counter| *counter <= COUNTER_LIMIT)
    }

    /// `verified/total` objects and verified bytes, as `kubectl get mj` shows them.
    pub fn summary(&self) -> Summary {
        Summary {
            objects: format!("{}/{}", self.objects_verified, self.objects_total),
            bytes: human_bytes(self.bytes_verified),
        }
    }
}

/// Short human-readable totals shown as printer columns.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// `verified/total` objects.
    pub objects: String,
    /// Verified bytes, such as `1.5GiB`.
    pub bytes: String,
}

/// Formats a byte count with a binary unit (`1.5GiB`).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes}B") } else { format!("{value:.1}{}", UNITS[unit]) }
}

/// An object that could not be moved, and why.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectFailure {
    /// The object's path relative to the job's source path.
    pub path: String,
    /// What went wrong on the last try.
    pub reason: String,
}

/// Where a per-object report was written and how many records it holds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReportLocation {
    /// A path or URL of the JSON Lines report.
    pub location: String,
    /// Records in the report.
    pub objects: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(1023), "1023B");
        assert_eq!(human_bytes(1536), "1.5KiB");
        assert_eq!(human_bytes(10 << 30), "10.0GiB");
    }

    #[test]
    fn accumulate_sums_counters_and_keeps_the_slowest_eta() {
        let mut total = Progress { objects_total: 2, eta_seconds: Some(5), ..Default::default() };
        total.accumulate(&Progress { objects_total: 3, eta_seconds: Some(9), ..Default::default() });
        assert_eq!(total.objects_total, 5);
        assert_eq!(total.eta_seconds, Some(9));
        assert_eq!(total.summary().objects, "0/5");
    }

    #[test]
    fn accumulate_saturates_instead_of_overflowing() {
        // A runner's counters are its own claims: a forged huge one must not wrap or panic.
        let mut total = Progress { bytes_verified: COUNTER_LIMIT - 1, objects_total: u64::MAX, ..Default::default() };
        assert!(!total.fits_kubernetes());
        total.accumulate(&Progress { bytes_verified: 5, objects_total: 1, ..Default::default() });
        assert_eq!((total.bytes_verified, total.objects_total), (COUNTER_LIMIT, COUNTER_LIMIT));
    }
}
