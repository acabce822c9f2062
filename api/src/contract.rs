//! The contract between the operator and a runner: the plan for one attempt (no secrets)
//! and the progress reports the runner sends back.

use serde::{Deserialize, Serialize};

use crate::binding::CredentialBindingSpec;
use crate::job::MigrationJobSpec;
use crate::status::{ObjectFailure, Progress};

/// The file holding the source binding's wrapping token (this shard's own).
pub const SOURCE_TOKEN_FILE: &str = "source-token";
/// The file holding the destination binding's wrapping token (this shard's own).
pub const DESTINATION_TOKEN_FILE: &str = "destination-token";
/// The file holding the wrapped write token for a rotated refresh token of the source
/// binding (providers that rotate them; [`PlannedBinding::rotation_creation_path`]).
pub const SOURCE_ROTATION_TOKEN_FILE: &str = "source-rotation-token";
/// Likewise for the destination binding.
pub const DESTINATION_ROTATION_TOKEN_FILE: &str = "destination-rotation-token";
/// The file holding this shard's progress token.
pub const PROGRESS_TOKEN_FILE: &str = "progress-token";
/// The file holding the hex SHA-256 of this shard's plan file, as the operator wrote it: the
/// runner refuses a plan that does not match (the plan sits in a ConfigMap, which more
/// people may be able to edit than the Secret beside the tokens).
pub const PLAN_DIGEST_FILE: &str = "plan-digest";
/// Every file a runner's credentials directory may hold.
pub const CREDENTIAL_FILES: [&str; 6] = [
    SOURCE_TOKEN_FILE,
    DESTINATION_TOKEN_FILE,
    SOURCE_ROTATION_TOKEN_FILE,
    DESTINATION_ROTATION_TOKEN_FILE,
    PROGRESS_TOKEN_FILE,
    PLAN_DIGEST_FILE,
];

/// The hex SHA-256 of a plan file's bytes, as [`PLAN_DIGEST_FILE`] holds it.
pub fn plan_digest(plan: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(plan))
}

/// Everything a runner needs for one attempt of one shard, except credentials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunnerPlan {
    /// The job this attempt belongs to.
    pub job: JobIdentity,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// Which part of the key space this runner moves.
    pub shard: Shard,
    /// The job's spec as the operator saw it.
    pub spec: MigrationJobSpec,
    /// The source binding.
    pub source: PlannedBinding,
    /// The destination binding.
    pub destination: PlannedBinding,
    /// Where to send progress reports; absent when running locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_url: Option<String>,
    /// The Vault server that issued the wrapping tokens; absent when no binding needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_address: Option<String>,
    /// When the wrapping tokens expire (RFC 3339). A token that Vault no longer knows before
    /// this moment was unwrapped by someone else; after it, it merely expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_expire_at: Option<String>,
}

/// Names a job across the operator and its runners.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobIdentity {
    /// The job's namespace.
    pub namespace: String,
    /// The job's name.
    pub name: String,
    /// The job's UID, so a report can never be applied to a recreated job of the same name.
    pub uid: String,
}

/// One runner's share of a job: shard `index` of `count`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Shard {
    /// From 0 to `count - 1`.
    pub index: u32,
    /// How many shards split the job.
    pub count: u32,
}

impl Shard {
    /// The whole job in one piece.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Parses `i/N` as written on the command line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (index, count) =
            text.split_once('/').ok_or_else(|| format!("--shard {text:?}: write it as INDEX/COUNT, such as 0/4"))?;
        let index: u32 = index.trim().parse().map_err(|_| format!("--shard {text:?}: INDEX must be a whole number"))?;
        let count: u32 = count.trim().parse().map_err(|_| format!("--shard {text:?}: COUNT must be a whole number"))?;
        if count == 0 || count > 256 || index >= count {
            return Err(format!("--shard {text:?}: COUNT must be 1..=256 and INDEX below COUNT"));
        }
        Ok(Self { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// A binding as the runner sees it: its settings and where its credentials were read.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlannedBinding {
    /// The binding's name.
    pub name: String,
    /// The binding's spec.
    pub spec: CredentialBindingSpec,
    /// The Vault path the wrapping token must have been created by (its `creation_path`);
    /// absent for bindings without credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_creation_path: Option<String>,
    /// For Transit-encrypted secrets: the field names, in the order of the batch decryption
    /// whose response the wrapping token holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_fields: Vec<String>,
    /// For a provider that rotates refresh tokens: the Vault path the wrapped write token
    /// must have been created by (`auth/token/create/<role>`); the runner stores a rotated
    /// refresh token with it. Absent: a rotated token serves the run only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_creation_path: Option<String>,
}

/// A cumulative, sequence-numbered report of one attempt of one shard. Reports are
/// idempotent: the receiver keeps the one with the highest sequence number.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProgressReport {
    /// The job's UID.
    pub job_uid: String,
    /// The attempt number.
    pub attempt: u32,
    /// The shard that sent it.
    pub shard: Shard,
    /// Increases by one with every report of this attempt and shard.
    pub sequence: u64,
    /// What the runner is doing.
    pub stage: Stage,
    /// Counters since the attempt started.
    pub progress: Progress,
    /// The attempt's first failures (a few at most; the field name predates that).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_failures: Vec<ObjectFailure>,
    /// Set on the last report of the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Sync with `deleteExtraneous`: what this shard would delete, set once its copying is
    /// done and verified (stage `awaitingDeletion` and after).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletions: Option<PendingDeletions>,
    /// On the final report: the records of the per-object report this runner left at the
    /// destination (at [`crate::reports::report_key`]); absent when it left none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_objects: Option<u64>,
}

/// One shard's share of a sync's deletions, counted before anything is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PendingDeletions {
    /// Destination objects the shard's source part lacks (within the job's filter).
    pub extraneous: u64,
    /// Objects the shard listed at its source, selected or not: the empty-source guard
    /// holds for the job, so one shard's empty part of the key space is no alarm.
    pub source_objects: u64,
}

/// The operator's answer to a progress report.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProgressAnswer {
    /// For a shard awaiting deletion: the job-wide verdict, absent while other shards are
    /// still copying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion: Option<DeletionVerdict>,
}

/// Whether a sync's shards may delete what they found extraneous.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "verdict", deny_unknown_fields)]
pub enum DeletionVerdict {
    /// Every shard verified every object and the job's deletions stay within `maxDelete`.
    Granted,
    /// Nothing is deleted, anywhere in the job.
    Refused {
        /// Why, naming the field to change.
        reason: String,
    },
}

/// The job-wide deletion verdict from the latest report of each of `shard_count` shards:
/// `None` until every shard has counted its deletions. The rules hold for the whole job, not
/// per shard: no shard deletes unless every shard verified every object, the job's source
/// listed at least one object, and the sum stays within `max_delete`.
pub fn deletion_verdict<'a>(
    max_delete: Option<u64>,
    shard_count: u32,
    reports: impl IntoIterator<Item = &'a ProgressReport>,
) -> Option<DeletionVerdict> {
    let refuse = |reason: String| Some(DeletionVerdict::Refused { reason });
    let (mut counted, mut extraneous, mut source_objects) = (0u32, 0u64, 0u64);
    for report in reports {
        let shard = report.shard;
        if report.progress.objects_failed > 0 {
            return refuse(format!(
                "shard {shard}: {} objects failed; sync deletes nothing unless every object of every shard was verified",
                report.progress.objects_failed
            ));
        }
        if let Some(outcome) = report.outcome.as_ref().filter(|o| **o != Outcome::Succeeded) {
            return refuse(format!("shard {shard} stopped ({outcome:?}); sync deletes nothing"));
        }
        if let Some(pending) = report.deletions {
            counted += 1;
            extraneous = extraneous.saturating_add(pending.extraneous);
            source_objects = source_objects.saturating_add(pending.source_objects);
        }
    }
    if counted < shard_count {
        return None;
    }
    if extraneous == 0 {
        return Some(DeletionVerdict::Granted);
    }
    if source_objects == 0 {
        return refuse(format!(
            "the source listed no objects; refusing to delete {extraneous} destination objects (check spec.source.path)"
        ));
    }
    match max_delete {
        Some(limit) if extraneous > limit => refuse(format!(
            "sync would delete {extraneous} objects across the job, more than spec.maxDelete ({limit}); nothing was \
             deleted (raise spec.maxDelete to proceed)"
        )),
        _ => Some(DeletionVerdict::Granted),
    }
}

/// What a runner is doing.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Stage {
    /// Unwrapping credentials and connecting.
    Starting,
    /// Listing, copying and verifying.
    Copying,
    /// Copying done and verified; waiting for the job-wide deletion verdict (sync).
    AwaitingDeletion,
    /// Deleting extraneous destination objects (sync).
    Deleting,
    /// Done.
    Finished,
}

/// How an attempt ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "result", deny_unknown_fields)]
pub enum Outcome {
    /// Every selected object was verified.
    Succeeded,
    /// The attempt ran to the end, but some objects failed.
    ObjectsFailed,
    /// The attempt stopped early: failure budget exceeded, credentials refused, ...
    Aborted {
        /// Why, in words an operator can act on (never a secret).
        reason: String,
    },
    /// The provider refused the credentials for good (an OAuth refresh token revoked or
    /// expired): no retry can help until new ones are in Vault.
    CredentialsRevoked {
        /// What the provider said and what to do (never a secret).
        reason: String,
    },
    /// The runner was told to stop.
    Interrupted,
    /// The credentials could not be trusted: a wrapping token was already unwrapped by
    /// someone else, or was not created by the read the plan names. Never retried.
    SecurityViolation {
        /// What was wrong (never a secret).
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_reject_nonsense() {
        assert_eq!(Shard::parse("2/4"), Ok(Shard { index: 2, count: 4 }));
        for bad in ["4/4", "1/0", "x/2", "3", "0/257"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    fn counted(index: u32, extraneous: u64, source_objects: u64) -> ProgressReport {
        ProgressReport {
            job_uid: "u".into(),
            attempt: 1,
            shard: Shard { index, count: 4 },
            sequence: 1,
            stage: Stage::AwaitingDeletion,
            progress: crate::status::Progress::default(),
            recent_failures: Vec::new(),
            outcome: None,
            deletions: Some(PendingDeletions { extraneous, source_objects }),
            report_objects: None,
        }
    }

    #[test]
    fn deletion_limits_hold_for_the_whole_job() {
        let reports: Vec<_> = (0..4).map(|i| counted(i, 3, 5)).collect();
        // Three shards counted: wait for the fourth.
        assert_eq!(deletion_verdict(Some(10), 4, &reports[..3]), None);
        // 4 x 3 = 12 deletions: within 12, not within 10, although each shard's 3 is.
        assert_eq!(deletion_verdict(Some(12), 4, &reports), Some(DeletionVerdict::Granted));
        let Some(DeletionVerdict::Refused { reason }) = deletion_verdict(Some(10), 4, &reports) else { panic!() };
        assert!(reason.contains("12") && reason.contains("spec.maxDelete"), "{reason}");
        assert_eq!(deletion_verdict(None, 4, &reports), Some(DeletionVerdict::Granted));
    }

    #[test]
    fn the_empty_source_guard_is_job_wide() {
        // Shard 0's part of the key space is empty: no alarm while another shard listed objects.
        let mut reports = vec![counted(0, 2, 0), counted(1, 0, 7)];
        reports.iter_mut().for_each(|r| r.shard.count = 2);
        assert_eq!(deletion_verdict(None, 2, &reports), Some(DeletionVerdict::Granted));
        reports[1].deletions = Some(PendingDeletions { extraneous: 0, source_objects: 0 });
        assert!(matches!(deletion_verdict(None, 2, &reports), Some(DeletionVerdict::Refused { .. })));
    }

    #[test]
    fn one_failed_object_anywhere_refuses_every_deletion() {
        let mut reports: Vec<_> = (0..4).map(|i| counted(i, 1, 1)).collect();
        reports[2].progress.objects_failed = 1;
        assert!(matches!(deletion_verdict(None, 4, &reports), Some(DeletionVerdict::Refused { .. })));
        reports[2].progress.objects_failed = 0;
        reports[3].deletions = None;
        reports[3].outcome = Some(Outcome::Interrupted);
        assert!(matches!(deletion_verdict(None, 4, &reports), Some(DeletionVerdict::Refused { .. })));
    }

    #[test]
    fn outcomes_are_tagged() {
        let json = serde_json::to_string(&Outcome::Aborted { reason: "failure budget exceeded".into() }).unwrap();
        assert_eq!(json, r#"{"result":"aborted","reason":"failure budget exceeded"}"#);
    }
}
