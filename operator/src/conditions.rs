//! kstatus conditions (Ready, Progressing, Complete, Failed, Stalled) from a phase, so
//! Argo CD, Flux and `kubectl wait --for=condition=Complete` read a job's state.

use ferry_api::Phase;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The condition types a job carries, in the order they are written. `Reconciling` is the
/// one kstatus (Flux, `kubectl wait`, cli-utils) reads for "in progress"; `Progressing` is
/// kept for the Deployment-style readers.
pub const JOB_CONDITIONS: [&str; 6] = ["Ready", "Progressing", "Reconciling", "Complete", "Failed", "Stalled"];

/// Which conditions are true in a phase. kstatus reads `Stalled=True` as a failure that
/// needs a person, so only a terminal failure sets it: a job waiting for a binding (which
/// GitOps tools may simply not have applied yet) is still in progress.
pub fn truth(phase: Phase, condition: &str) -> bool {
    match condition {
        "Ready" | "Complete" => phase == Phase::Succeeded,
        "Progressing" | "Reconciling" => matches!(phase, Phase::Pending | Phase::Running | Phase::Waiting),
        "Failed" | "Stalled" => phase == Phase::Failed,
        _ => false,
    }
}

/// The conditions of an object the operator cannot read at all (its spec does not decode):
/// not Ready, not in progress, and Stalled, because only a person editing the named field
/// can make it readable again.
pub fn unreadable_conditions(
    types: &[&str],
    reason: &str,
    message: &str,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Vec<Condition> {
    types
        .iter()
        .map(|type_| condition(type_, *type_ == "Stalled", reason, message, generation, previous, now))
        .collect()
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

    fn true_ones(phase: Phase) -> Vec<String> {
        let conditions = job_conditions(phase, "R", "m", None, &[], &at(1));
        conditions.iter().filter(|c| c.status == "True").map(|c| c.type_.clone()).collect()
    }

    #[test]
    fn waiting_for_a_binding_is_in_progress_not_stalled() {
        assert_eq!(true_ones(Phase::Waiting), ["Progressing", "Reconciling"]);
        let waiting = job_conditions(Phase::Waiting, "BindingNotReady", "m", None, &[], &at(1));
        let ready = waiting.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "BindingNotReady"));
    }

    #[test]
    fn only_a_terminal_failure_is_stalled() {
        assert_eq!(true_ones(Phase::Failed), ["Failed", "Stalled"]);
        for phase in [Phase::Pending, Phase::Waiting, Phase::Running, Phase::Succeeded, Phase::Suspended] {
            assert!(!true_ones(phase).contains(&"Stalled".to_owned()), "{phase:?}");
        }
    }

    #[test]
    fn pending_and_running_are_reconciling() {
        assert_eq!(true_ones(Phase::Pending), ["Progressing", "Reconciling"]);
        assert_eq!(true_ones(Phase::Running), ["Progressing", "Reconciling"]);
        assert!(true_ones(Phase::Suspended).is_empty(), "a suspended job is at rest");
    }

    #[test]
    fn an_unreadable_object_is_stalled_and_not_ready() {
        let conditions = unreadable_conditions(&JOB_CONDITIONS, "InvalidSpec", "spec.x: bad", Some(2), &[], &at(1));
        let true_ones: Vec<_> = conditions.iter().filter(|c| c.status == "True").map(|c| c.type_.as_str()).collect();
        assert_eq!(true_ones, ["Stalled"]);
        assert!(conditions.iter().all(|c| c.reason == "InvalidSpec" && c.observed_generation == Some(2)));
    }

    #[test]
    fn transition_times_move_only_on_change() {
        let first = job_conditions(Phase::Running, "Running", "m", None, &[], &at(1));
        let second = job_conditions(Phase::Running, "Running", "m2", None, &first, &at(2));
        assert_eq!(second[1].last_transition_time, at(1));
        let third = job_conditions(Phase::Succeeded, "Succeeded", "m", None, &second, &at(3));
        assert_eq!(third[1].last_transition_time, at(3), "Progressing went False");
        assert_eq!(third[4].last_transition_time, at(1), "Failed stayed False");
    }
}
