//! Where runners in a cluster leave their per-object reports: under `.ferry/` at the top of the
//! job's destination path, a directory Ferry owns (never listed, compared, copied or deleted).
//! Both sides use these functions: the runner to write, the operator to say where in status.

use crate::contract::JobIdentity;

/// The directory, relative to a job's source or destination path, that Ferry reserves.
pub const RESERVED_DIRECTORY: &str = ".ferry/";

/// The key of one shard's report, relative to the job's destination path:
/// `.ferry/reports/<namespace>/<job>-<uid>/<attempt>-<shard>.jsonl`. The UID keeps a job
/// recreated under the same name from replacing its predecessor's reports.
pub fn report_key(job: &JobIdentity, attempt: u32, shard_index: u32) -> String {
    format!("{}{attempt}-{shard_index}.jsonl", attempt_directory(job))
}

/// Where an attempt's reports are, for status: `<binding>:<path>/.ferry/reports/.../<attempt>-0.jsonl`
/// for one shard, or the same ending in `<attempt>-*.jsonl` (one file per shard) for several.
pub fn report_location(binding: &str, destination_path: &str, job: &JobIdentity, attempt: u32, shards: u32) -> String {
    let base = destination_path.trim_matches('/');
    let base = if base.is_empty() { String::new() } else { format!("{base}/") };
    let file = match shards {
        0 | 1 => format!("{attempt}-0.jsonl"),
        _ => format!("{attempt}-*.jsonl"),
    };
    format!("{binding}:{base}{}{file}", attempt_directory(job))
}

/// Whether a key relative to a job's path lies in the reserved directory.
pub fn is_reserved(key: &str) -> bool {
    key.starts_with(RESERVED_DIRECTORY)
}

fn attempt_directory(job: &JobIdentity) -> String {
    format!("{RESERVED_DIRECTORY}reports/{}/{}-{}/", job.namespace, job.name, job.uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobIdentity {
        JobIdentity { namespace: "team-a".into(), name: "nightly".into(), uid: "0b1c".into() }
    }

    #[test]
    fn each_shard_of_each_attempt_has_its_own_key() {
        assert_eq!(report_key(&job(), 2, 1), ".ferry/reports/team-a/nightly-0b1c/2-1.jsonl");
        assert!(is_reserved(&report_key(&job(), 1, 0)));
        assert!(!is_reserved("data/.ferry/x") && !is_reserved(".ferry-partial/x") && !is_reserved(".ferryx"));
    }

    #[test]
    fn locations_name_the_binding_the_path_and_every_shard() {
        assert_eq!(
            report_location("archive", "/imported/", &job(), 3, 1),
            "archive:imported/.ferry/reports/team-a/nightly-0b1c/3-0.jsonl"
        );
        assert_eq!(
            report_location("archive", "", &job(), 1, 4),
            "archive:.ferry/reports/team-a/nightly-0b1c/1-*.jsonl"
        );
    }
}
