//! Reading the current attempt's state from its pods and the runners' reports (pure).

use std::collections::BTreeMap;

use ferry_api::contract::ProgressReport;
use k8s_openapi::api::core::v1::Pod;

use crate::lifecycle::{ShardState, finished_shard};
use crate::names;

/// The state of each of `count` shards, from the attempt's pods and the latest reports the
/// progress API received (`reports`, by shard). A pod's termination message (the runner's
/// final report) wins over the API's copy, since it is written after the last post.
pub fn shard_states(pods: &[Pod], count: u32, reports: &BTreeMap<u32, ProgressReport>) -> Vec<ShardState> {
    let mut states = vec![ShardState::Missing; count as usize];
    for pod in pods {
        let Some(index) = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(names::SHARD_LABEL))
            .and_then(|value| value.parse::<u32>().ok())
            .filter(|index| *index < count)
        else {
            continue;
        };
        states[index as usize] = pod_state(pod, reports.get(&index).cloned());
    }
    states
}

fn pod_state(pod: &Pod, reported: Option<ProgressReport>) -> ShardState {
    let status = pod.status.clone().unwrap_or_default();
    let terminated = status
        .container_statuses
        .as_ref()
        .and_then(|statuses| statuses.first())
        .and_then(|container| container.state.as_ref())
        .and_then(|state| state.terminated.clone());
    match status.phase.as_deref() {
        Some("Succeeded") | Some("Failed") => {
            let final_report = terminated
                .as_ref()
                .and_then(|t| t.message.as_deref())
                .and_then(|message| serde_json::from_str::<ProgressReport>(message).ok());
            let report = match (final_report, reported) {
                (Some(last), Some(posted)) if posted.sequence > last.sequence => Some(posted),
                (Some(last), _) => Some(last),
                (None, posted) => posted,
            };
            let exit_code = terminated.as_ref().map_or(-1, |t| t.exit_code);
            let why = terminated.as_ref().and_then(|t| t.reason.clone()).or(status.reason.clone());
            finished_shard(exit_code, report, why.as_deref())
        }
        Some("Running") => ShardState::Running,
        _ => ShardState::Pending,
    }
}

#[cfg(test)]
mod tests {
    use ferry_api::Progress;
    use ferry_api::contract::{Outcome, Shard, Stage};

    use super::*;

    fn pod(shard: u32, phase: &str, exit: Option<(i32, Option<String>)>) -> Pod {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("p{shard}"), "labels": {names::SHARD_LABEL: shard.to_string()}},
            "status": {"phase": phase}
        }))
        .unwrap();
        if let Some((code, message)) = exit {
            pod.status.as_mut().unwrap().container_statuses = Some(vec![
                serde_json::from_value(serde_json::json!({
                    "name": "runner", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": code, "message": message, "reason": "Completed"}}
                }))
                .unwrap(),
            ]);
        }
        pod
    }

    fn report(shard: u32, sequence: u64, verified: u64, outcome: Option<Outcome>) -> ProgressReport {
        ProgressReport {
            job_uid: "u".into(),
            attempt: 1,
            shard: Shard { index: shard, count: 3 },
            sequence,
            stage: Stage::Finished,
            progress: Progress { objects_verified: verified, ..Default::default() },
            recent_failures: vec![],
            outcome,
            deletions: None,
            report_objects: None,
        }
    }

    #[test]
    fn pods_and_reports_become_shard_states() {
        let final_message = serde_json::to_string(&report(0, 7, 10, Some(Outcome::Succeeded))).unwrap();
        let pods =
            [pod(0, "Succeeded", Some((0, Some(final_message)))), pod(1, "Running", None), pod(9, "Running", None)];
        let reports = BTreeMap::from([(0, report(0, 5, 8, None)), (1, report(1, 3, 1, None))]);
        let states = shard_states(&pods, 3, &reports);
        let ShardState::Succeeded { report: Some(last) } = &states[0] else { panic!("{:?}", states[0]) };
        assert_eq!(last.progress.objects_verified, 10, "the termination message is newer than the posted report");
        assert_eq!(states[1], ShardState::Running);
        assert_eq!(states[2], ShardState::Missing);
    }

    #[test]
    fn a_failed_pod_without_a_report_names_its_exit() {
        let states = shard_states(&[pod(0, "Failed", Some((137, None)))], 1, &BTreeMap::new());
        let ShardState::Failed { reason, kind, .. } = &states[0] else { panic!() };
        assert!(reason.contains("137") && *kind == crate::lifecycle::FailureKind::Retryable);
    }
}
