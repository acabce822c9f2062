//! The contract between the operator and a runner: the plan for one attempt (no secrets)
//! and the progress reports the runner sends back.

use serde::{Deserialize, Serialize};

use crate::binding::CredentialBindingSpec;
use crate::job::MigrationJobSpec;
use crate::status::{ObjectFailure, Progress};

/// The file (Secret key) holding the source binding's wrapping token.
pub const SOURCE_TOKEN_FILE: &str = "source-token";
/// The file (Secret key) holding the destination binding's wrapping token.
pub const DESTINATION_TOKEN_FILE: &str = "destination-token";
/// The file (Secret key) holding the attempt's progress token.
pub const PROGRESS_TOKEN_FILE: &str = "progress-token";

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
    /// The most recent failures (a few at most).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_failures: Vec<ObjectFailure>,
    /// Set on the last report of the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

/// What a runner is doing.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Stage {
    /// Unwrapping credentials and connecting.
    Starting,
    /// Listing, copying and verifying.
    Copying,
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

    #[test]
    fn outcomes_are_tagged() {
        let json = serde_json::to_string(&Outcome::Aborted { reason: "failure budget exceeded".into() }).unwrap();
        assert_eq!(json, r#"{"result":"aborted","reason":"failure budget exceeded"}"#);
    }
}
