//! `MigrationJob`: move the objects under one binding's path to another's.

// kube-derive expands every `printcolumn(...)` into sibling attributes that clippy mistakes
// for duplicates.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::quantity::ByteQuantity;
use crate::status::MigrationJobStatus;

/// What to move, how to compare and verify it, and how much to run at once.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "MigrationJob",
    namespaced,
    shortname = "mj",
    category = "ferry",
    status = "MigrationJobStatus",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Verified",
        type_ = "string",
        description = "verified/total objects",
        json_path = ".status.summary.objects"
    ),
    printcolumn(name = "Bytes", type_ = "string", description = "bytes verified", json_path = ".status.summary.bytes"),
    printcolumn(
        name = "Last Run",
        type_ = "date",
        description = "when the last finished run ended",
        json_path = ".status.runs[0].completionTime"
    ),
    printcolumn(
        name = "Next Run",
        type_ = "date",
        description = "when spec.schedule runs the job again",
        json_path = ".status.nextRunTime"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(
    validation = crate::rules::delete_only_when_syncing(),
    validation = crate::rules::needs_delete_extraneous("maxDelete"),
    validation = crate::rules::needs_delete_extraneous("trashPath"),
    validation = crate::rules::source_and_destination_differ()
)]
pub struct MigrationJobSpec {
    /// Where the objects come from.
    #[x_kube(validation = crate::rules::immutable("spec.source", "create a new MigrationJob to move other data"))]
    pub source: Endpoint,
    /// Where the objects go.
    #[x_kube(validation = crate::rules::immutable("spec.destination", "create a new MigrationJob to write elsewhere"))]
    pub destination: Endpoint,
    /// `copy` adds and updates; `sync` also makes the destination match (see `deleteExtraneous`).
    #[serde(default)]
    #[x_kube(validation = crate::rules::immutable("spec.mode", "create a new MigrationJob to change the mode"))]
    pub mode: Mode,
    /// Sync only: delete destination objects that are absent at the source.
    #[serde(default)]
    pub delete_extraneous: bool,
    /// Sync only: stop before deleting more than this many objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_delete: Option<u64>,
    /// Sync only: move deleted objects under this destination path instead of deleting them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = crate::rules::relative_path())]
    pub trash_path: Option<String>,
    /// What to do when the destination already has an object at the same path.
    #[serde(default)]
    pub conflict: Conflict,
    /// How every copied object is proven identical.
    #[serde(default)]
    pub verify: VerifyMode,
    /// Which source objects take part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// Objects in flight per runner.
    #[serde(default = "default_transfers")]
    #[schemars(range(min = 1, max = 512))]
    pub transfers: u32,
    /// Bytes per second per runner; absent means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = crate::rules::positive_quantity("spec.bandwidthLimit"))]
    pub bandwidth_limit: Option<ByteQuantity>,
    /// Runner pods that split the key space between them.
    #[serde(default = "default_shards")]
    #[schemars(range(min = 1, max = 256))]
    pub shards: u32,
    /// Failed objects tolerated before the job stops early.
    #[serde(default = "default_failure_budget")]
    #[schemars(range(min = 0, max = 1_000_000_000))]
    pub failure_budget: u64,
    /// New attempts (new pods, new tokens) after a failed one.
    #[serde(default = "default_retries")]
    #[schemars(range(min = 0, max = 100))]
    pub retries: u32,
    /// Seconds an attempt may run before it is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 31_536_000))]
    pub active_deadline_seconds: Option<i64>,
    /// Report what would be copied, skipped and deleted, and change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Stop the runners (and start no new ones) until set back to false.
    #[serde(default)]
    pub suspend: bool,
    /// A cron schedule: re-run as a delta pass (only what changed) at these times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = crate::names::CRON))]
    pub schedule: Option<String>,
    /// The IANA time zone `schedule` is read in (such as `Europe/Berlin`); UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_+/-]+$"))]
    pub time_zone: Option<String>,
    /// What to do with scheduled runs missed while the operator was down or a run was still
    /// going: run once as soon as possible, or skip to the next scheduled time.
    #[serde(default, skip_serializing_if = "MissedRunPolicy::is_default")]
    pub missed_run_policy: MissedRunPolicy,
    /// How runner pods are built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<RunnerSettings>,
}

/// What happens to scheduled runs that could not start on time.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissedRunPolicy {
    /// Run once, as soon as possible, however many were missed.
    #[default]
    RunOnce,
    /// Skip them; the next run is at the next scheduled time.
    Skip,
}

impl MissedRunPolicy {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn default_transfers() -> u32 {
    16
}
fn default_shards() -> u32 {
    1
}
fn default_failure_budget() -> u64 {
    10
}
fn default_retries() -> u32 {
    3
}

/// A binding and a path inside it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// The name of a CredentialBinding in the job's namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = crate::names::DNS_SUBDOMAIN))]
    pub binding: String,
    /// A directory or key prefix relative to the binding's root; empty means the root.
    #[serde(default)]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = crate::rules::relative_path())]
    pub path: String,
}

/// Copy or sync.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// Add and update objects at the destination; never delete.
    #[default]
    Copy,
    /// Like copy, and with `deleteExtraneous` also delete what the source no longer has.
    Sync,
}

/// What to do with an object that already exists at the destination.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Conflict {
    /// Skip it when it is identical by the verify mode's measure, otherwise overwrite it.
    #[default]
    SkipIdentical,
    /// Always overwrite it.
    Overwrite,
    /// Overwrite it only when the source is newer; otherwise keep it.
    Newer,
}

/// How a copied object is proven identical.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum VerifyMode {
    /// Sizes match.
    Size,
    /// A hash of the source bytes matches the destination's own checksum, or a read-back hash.
    #[default]
    Checksum,
    /// The destination is read back and hashed, always.
    Readback,
}

/// Which source objects take part in the job.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(
    validation = crate::rules::min_size_not_above_max_size(),
    validation = crate::rules::time_window_in_order()
)]
pub struct Filter {
    /// Glob patterns (`**/*.pdf`) of paths to take; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 512)))]
    pub include: Vec<String>,
    /// Glob patterns of paths to leave out; they win over `include`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 512)))]
    pub exclude: Vec<String>,
    /// The smallest object size to take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<ByteQuantity>,
    /// The largest object size to take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<ByteQuantity>,
    /// Take only objects modified at or after this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::names::RFC3339_TIME))]
    pub modified_after: Option<Time>,
    /// Take only objects modified before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::names::RFC3339_TIME))]
    pub modified_before: Option<Time>,
}

/// How runner pods are built.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunnerSettings {
    /// The runner image; absent means the operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// CPU and memory for the runner container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The size limit of the encrypted spool (an emptyDir).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = crate::rules::positive_quantity("spec.runner.spoolSize"))]
    pub spool_size: Option<ByteQuantity>,
    /// Node labels runner pods must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints runner pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}
