//! Names and labels of the objects a job owns. Deterministic, so reconcile can find what an
//! earlier pass created, and bounded to Kubernetes' 63-character limits.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// The field manager for everything the operator applies.
pub const FIELD_MANAGER: &str = "ferry-operator";
/// Label: which job (by UID, since names can outlive a deleted job).
pub const JOB_UID_LABEL: &str = "ferry.dev/job-uid";
/// Label: the job's name (truncated to fit a label value), for humans and `kubectl -l`.
pub const JOB_NAME_LABEL: &str = "ferry.dev/job";
/// Label: the attempt number.
pub const ATTEMPT_LABEL: &str = "ferry.dev/attempt";
/// Label: the shard index.
pub const SHARD_LABEL: &str = "ferry.dev/shard";
/// Label that marks runner pods, for the operator's pod watch.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "ferry-operator");
/// The label the leading replica puts on its own pod; the progress API's Service selects it.
pub const LEADER_LABEL: (&str, &str) = ("ferry.dev/leader", "true");
/// The component label of runner pods.
pub const COMPONENT: (&str, &str) = ("app.kubernetes.io/name", "ferry-runner");

/// Shortens `name` to `limit` characters, keeping it unique with a hash of the whole.
fn bounded(name: &str, limit: usize) -> String {
    if name.len() <= limit {
        return name.to_owned();
    }
    let digest = hex::encode(&Sha256::digest(name.as_bytes())[..4]);
    let keep = limit - digest.len() - 1;
    // Job names are DNS-1123 (ASCII), so byte slicing is on a character boundary.
    let head = name[..keep].trim_end_matches('-');
    format!("{head}-{digest}")
}

/// The per-job NetworkPolicy.
pub fn network_policy(job: &str) -> String {
    bounded(&format!("ferry-{job}"), 253)
}

/// The per-attempt Secret and ConfigMap (same name: they live and die together).
pub fn attempt_object(job: &str, attempt: u32) -> String {
    bounded(&format!("ferry-{job}-a{attempt}"), 253)
}

/// A runner pod (63 characters, so it is also a valid hostname).
pub fn runner_pod(job: &str, attempt: u32, shard: u32) -> String {
    let suffix = format!("-a{attempt}-s{shard}");
    format!("{}{suffix}", bounded(&format!("ferry-{job}"), 63 - suffix.len()))
}

/// The label value for a job name.
pub fn job_label_value(job: &str) -> String {
    bounded(job, 63)
}

/// Labels every object of one job carries.
pub fn job_labels(job: &str, uid: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
        (COMPONENT.0.to_owned(), COMPONENT.1.to_owned()),
        (JOB_NAME_LABEL.to_owned(), job_label_value(job)),
        (JOB_UID_LABEL.to_owned(), uid.to_owned()),
    ])
}

/// Labels of one attempt's objects.
pub fn attempt_labels(job: &str, uid: &str, attempt: u32) -> BTreeMap<String, String> {
    let mut labels = job_labels(job, uid);
    labels.insert(ATTEMPT_LABEL.to_owned(), attempt.to_string());
    labels
}

/// A label selector for all of a job's objects.
pub fn job_selector(uid: &str) -> String {
    format!("{JOB_UID_LABEL}={uid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_stay_within_limits_and_distinct() {
        let long = "a".repeat(240);
        let other = format!("{}b", "a".repeat(239));
        assert!(runner_pod(&long, 12, 255).len() <= 63);
        assert_ne!(runner_pod(&long, 1, 0), runner_pod(&other, 1, 0));
        assert!(attempt_object(&long, 3).len() <= 253);
        assert_eq!(runner_pod("nightly", 2, 0), "ferry-nightly-a2-s0");
        assert_eq!(job_label_value(&long).len(), 63);
    }
}
