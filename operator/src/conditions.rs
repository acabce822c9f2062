//! kstatus conditions (Ready, Progressing, Complete, Failed, Stalled) from a phase, so
//! Argo CD, Flux and `kubectl wait --for=condition=Complete` read a job's state.

use ferry_api::Phase;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The condition types a job carries, in the order they are written.
pub const JOB_CONDITIONS: [&str; 5] = ["Ready", "Progressing", "Complete", "Failed", "Stalled"];

/// Which conditions are true in a phase.
fn truth(phase: Phase, condition: &str) -> bool {
    match condition {
        "Ready" | "Complete" => phase == Phase::Succeeded,
        "Progressing" => matches!(phase, Phase::Pending | Phase::Running),
        "Failed" => phase == Phase::Failed,
        "Stalled" => matches!(phase, Phase::Waiting | Phase::Failed),
        _ => false,
    }
}

/// The job's conditions for `phase`, keeping each condition's `lastTransitionTime` when its
/// status did not change (so conditions never flap in the eyes of a watcher).
pub fn job_conditions(
    phase: Phase,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Vec<Condition> {
    JOB_CONDITIONS
        .iter()
        .map(|type_| {
            let status = truth(phase, type_);
            condition(type_, status, reason, message, generation, previous, now)
        })
        .collect()
}

/// One condition, keeping the previous transition time when the status is unchanged.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_owned();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message: message.chars().take(1024).collect(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// The reason of a condition, if present.
pub fn reason_of<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions.iter().find(|c| c.type_ == type_).map(|c| c.reason.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn succeeded_is_ready_and_complete() {
        let conditions = job_conditions(Phase::Succeeded, "Succeeded", "all verified", Some(3), &[], &at(10));
        let true_ones: Vec<_> = conditions.iter().filter(|c| c.status == "True").map(|c| c.type_.as_str()).collect();
        assert_eq!(true_ones, ["Ready", "Complete"]);
        assert!(conditions.iter().all(|c| c.observed_generation == Some(3)));
    }

    #[test]
    fn waiting_is_stalled_and_failed_is_failed() {
        let waiting = job_conditions(Phase::Waiting, "BindingNotReady", "m", None, &[], &at(1));
        assert_eq!(waiting.iter().find(|c| c.type_ == "Stalled").unwrap().status, "True");
        let failed = job_conditions(Phase::Failed, "RetriesExhausted", "m", None, &[], &at(1));
        assert_eq!(failed.iter().find(|c| c.type_ == "Failed").unwrap().status, "True");
        assert_eq!(failed.iter().find(|c| c.type_ == "Complete").unwrap().status, "False");
    }

    #[test]
    fn transition_times_move_only_on_change() {
        let first = job_conditions(Phase::Running, "Running", "m", None, &[], &at(1));
        let second = job_conditions(Phase::Running, "Running", "m2", None, &first, &at(2));
        assert_eq!(second[1].last_transition_time, at(1));
        let third = job_conditions(Phase::Succeeded, "Succeeded", "m", None, &second, &at(3));
        assert_eq!(third[1].last_transition_time, at(3), "Progressing went False");
        assert_eq!(third[3].last_transition_time, at(1), "Failed stayed False");
    }
}
