use ferry_api::contract::{Shard, Stage};

use super::*;
use crate::children::fixtures;

fn at(seconds: i64) -> Time {
    Time(jiff::Timestamp::from_second(1_800_000_000 + seconds).unwrap())
}

fn observe(spec: &MigrationJobSpec, status: MigrationJobStatus, launched: bool, shards: Vec<ShardState>) -> Decision {
    decide(Observation {
        job: &crate::children::fixtures::identity(),
        spec,
        generation: Some(1),
        status,
        bindings: Ok(()),
        credential_versions: None,
        attempt_launched: launched,
        shards,
        objects_failed: 0,
        now: at(100),
    })
}

fn status(phase: Phase, attempts: u32, failed: u32) -> MigrationJobStatus {
    MigrationJobStatus {
        phase: Some(phase),
        attempts,
        failed_attempts: failed,
        start_time: Some(at(0)),
        ..Default::default()
    }
}

fn report(verified: u64, outcome: Outcome) -> ProgressReport {
    ProgressReport {
        job_uid: "u-1".into(),
        attempt: 1,
        shard: Shard::WHOLE,
        sequence: 9,
        stage: Stage::Finished,
        progress: Progress { objects_total: verified, objects_verified: verified, ..Default::default() },
        recent_failures: vec![],
        outcome: Some(outcome),
        deletions: None,
        report_objects: None,
    }
}

fn spec(extra: &str) -> MigrationJobSpec {
    fixtures::job(&format!("{}{extra}", fixtures::S3_TO_PVC)).spec
}

#[test]
fn a_new_job_launches_attempt_one() {
    let spec = spec("");
    let decision = observe(&spec, MigrationJobStatus::default(), false, vec![]);
    assert_eq!(decision.action, Action::Launch);
    assert_eq!(decision.status.attempts, 1);
    assert_eq!(decision.status.phase, Some(Phase::Running));
    assert_eq!(decision.status.start_time, Some(at(100)));
    assert!(decision.event.is_some());
}

#[test]
fn a_blocked_binding_waits_without_launching() {
    let spec = spec("");
    let decision = decide(Observation {
        job: &crate::children::fixtures::identity(),
        spec: &spec,
        generation: Some(1),
        status: MigrationJobStatus::default(),
        bindings: Err(Blocker { reason: "BindingNotReady", message: "spec.source.binding legacy-s3: ...".into() }),
        credential_versions: None,
        attempt_launched: false,
        shards: vec![],
        objects_failed: 0,
        now: at(1),
    });
    assert_eq!(decision.action, Action::None);
    assert_eq!(decision.status.phase, Some(Phase::Waiting));
    assert_eq!(decision.status.attempts, 0);
    // Waiting is in progress for kstatus (a GitOps tool may apply the binding next), not
    // stalled: Ready=False and Reconciling=True carry the reason.
    let condition = |type_: &str| {
        let c = decision.status.conditions.iter().find(|c| c.type_ == type_).unwrap();
        (c.status.clone(), c.reason.clone())
    };
    assert_eq!(condition("Ready"), ("False".into(), "BindingNotReady".into()));
    assert_eq!(condition("Reconciling"), ("True".into(), "BindingNotReady".into()));
    assert_eq!(condition("Progressing"), ("True".into(), "BindingNotReady".into()));
    assert_eq!(condition("Stalled"), ("False".into(), "BindingNotReady".into()));
}

#[test]
fn running_shards_keep_running_quietly() {
    let spec = spec("");
    let decision = observe(&spec, status(Phase::Running, 1, 0), true, vec![ShardState::Running, ShardState::Pending]);
    assert_eq!(decision.action, Action::None);
    assert_eq!(decision.status.phase, Some(Phase::Running));
    assert!(decision.event.is_none(), "no event without a change");
}

#[test]
fn all_shards_verified_is_success_with_exact_counts() {
    let spec = spec("");
    let shards = vec![
        ShardState::Succeeded { report: Some(report(40, Outcome::Succeeded)) },
        ShardState::Succeeded { report: Some(report(2, Outcome::Succeeded)) },
    ];
    let decision = observe(&spec, status(Phase::Running, 1, 0), true, shards);
    assert_eq!(decision.status.phase, Some(Phase::Succeeded));
    assert_eq!(decision.action, Action::Cleanup);
    assert_eq!(decision.status.progress.as_ref().unwrap().objects_verified, 42);
    assert_eq!(decision.status.summary.as_ref().unwrap().objects, "42/42");
    assert_eq!(decision.status.completion_time, Some(at(100)));
    assert!(decision.status.conditions.iter().any(|c| c.type_ == "Complete" && c.status == "True"));
}

#[test]
fn status_says_where_every_shards_report_is_and_how_many_records_it_holds() {
    let spec = spec("");
    let left = |objects, index| {
        let mut report = report(objects, Outcome::Succeeded);
        report.shard = Shard { index, count: 2 };
        report.report_objects = Some(objects);
        ShardState::Succeeded { report: Some(report) }
    };
    let decision = observe(&spec, status(Phase::Running, 1, 0), true, vec![left(40, 0), left(2, 1)]);
    let report = decision.status.report.expect("every shard left its report");
    assert_eq!(report.location, "archive:in/.ferry/reports/team-a/nightly-u-1/1-*.jsonl");
    assert_eq!(report.objects, 42);

    // One shard's report is missing: a partial sum would mislead, so status names none.
    let missing = ShardState::Succeeded { report: Some(report_of_shard(1)) };
    let decision = observe(&spec, status(Phase::Running, 1, 0), true, vec![left(40, 0), missing]);
    assert_eq!(decision.status.report, None);
}

fn report_of_shard(index: u32) -> ProgressReport {
    let mut report = report(2, Outcome::Succeeded);
    report.shard = Shard { index, count: 2 };
    report
}

#[test]
fn a_failed_attempt_is_retried_then_the_job_fails() {
    let spec = spec("  retries: 1\n");
    let failed =
        || ShardState::Failed { reason: "3 objects failed".into(), kind: FailureKind::Retryable, report: None };
    let first =
        observe(&spec, status(Phase::Running, 1, 0), true, vec![failed(), ShardState::Succeeded { report: None }]);
    assert_eq!(first.action, Action::Launch);
    assert_eq!((first.status.attempts, first.status.failed_attempts), (2, 1));
    assert!(first.warning);
    let second = observe(&spec, first.status, true, vec![failed(), failed()]);
    assert_eq!(second.status.phase, Some(Phase::Failed));
    assert_eq!(second.action, Action::Cleanup);
    let failed_condition = second.status.conditions.iter().find(|c| c.type_ == "Failed").unwrap();
    assert_eq!(failed_condition.reason, "RetriesExhausted");
    assert!(failed_condition.message.contains("spec.retries"));
}

#[test]
fn waits_for_every_shard_before_judging() {
    let spec = spec("");
    let failed = ShardState::Failed { reason: "x".into(), kind: FailureKind::Retryable, report: None };
    let decision = observe(&spec, status(Phase::Running, 1, 0), true, vec![failed, ShardState::Running]);
    assert_eq!((decision.action, decision.status.failed_attempts), (Action::None, 0));
}

#[test]
fn a_security_violation_fails_at_once_and_stops_the_rest() {
    let spec = spec("  retries: 5\n");
    let bad =
        ShardState::Failed { reason: "token already unwrapped".into(), kind: FailureKind::Security, report: None };
    let decision = observe(&spec, status(Phase::Running, 1, 0), true, vec![bad, ShardState::Running]);
    assert_eq!(decision.status.phase, Some(Phase::Failed));
    assert_eq!(decision.action, Action::StopRunners);
    assert_eq!(conditions::reason_of(&decision.status.conditions, "Failed"), Some("SecurityViolation"));
}

#[test]
fn a_vanished_pod_fails_the_attempt() {
    let spec = spec("  retries: 2\n");
    let decision = observe(&spec, status(Phase::Running, 1, 0), true, vec![ShardState::Missing, ShardState::Missing]);
    assert_eq!((decision.action, decision.status.attempts), (Action::Launch, 2));
    assert!(decision.status.conditions[1].message.contains("disappeared"));
}

#[test]
fn suspend_stops_and_resume_starts_a_fresh_attempt_without_spending_a_retry() {
    let suspended_spec = spec("  suspend: true\n");
    let stop = observe(&suspended_spec, status(Phase::Running, 1, 0), true, vec![ShardState::Running]);
    assert_eq!((stop.action, stop.status.phase), (Action::StopRunners, Some(Phase::Suspended)));
    let resumed_spec = spec("");
    let resume = observe(&resumed_spec, stop.status, false, vec![]);
    assert_eq!(resume.action, Action::Launch);
    assert_eq!((resume.status.attempts, resume.status.failed_attempts), (2, 0));
}

#[test]
fn the_deadline_fails_the_job_and_stops_runners() {
    let spec = spec("  activeDeadlineSeconds: 60\n");
    let decision = observe(&spec, status(Phase::Running, 1, 0), true, vec![ShardState::Running]);
    assert_eq!((decision.action, decision.status.phase), (Action::StopRunners, Some(Phase::Failed)));
    assert_eq!(deadline_remaining(&spec, &status(Phase::Running, 1, 0), &at(30)), Some(30));
}

#[test]
fn finished_jobs_stay_finished() {
    let spec = spec("");
    let done = observe(&spec, status(Phase::Running, 1, 0), true, vec![ShardState::Succeeded { report: None }; 2]);
    let again = observe(&spec, done.status.clone(), false, vec![]);
    assert_eq!(again.status.phase, Some(Phase::Succeeded));
    assert_eq!(again.action, Action::Cleanup);
    assert!(again.event.is_none());
    assert_eq!(again.status.completion_time, done.status.completion_time);
}

#[test]
fn exit_codes_and_reports_combine() {
    assert!(matches!(finished_shard(0, Some(report(1, Outcome::Succeeded)), None), ShardState::Succeeded { .. }));
    let ShardState::Failed { kind, .. } = finished_shard(5, None, None) else { panic!() };
    assert_eq!(kind, FailureKind::Security);
    let ShardState::Failed { reason, kind, .. } =
        finished_shard(1, Some(report(1, Outcome::Aborted { reason: "budget".into() })), None)
    else {
        panic!()
    };
    assert_eq!((reason.as_str(), kind), ("budget", FailureKind::Retryable));
    let ShardState::Failed { reason, .. } = finished_shard(137, None, Some("OOMKilled")) else { panic!() };
    assert!(reason.contains("OOMKilled"));
}

#[test]
fn revoked_credentials_fail_the_job_at_once_with_what_to_do() {
    let reason = "binding drive: the refresh token was refused (AADSTS50173); run the consent flow again";
    let revoked = finished_shard(1, Some(report(0, Outcome::CredentialsRevoked { reason: reason.into() })), None);
    assert!(matches!(&revoked, ShardState::Failed { kind: FailureKind::CredentialsRevoked, .. }), "{revoked:?}");
    let job = fixtures::job(fixtures::S3_TO_PVC);
    let mut next = MigrationJobStatus { attempts: 1, ..MigrationJobStatus::default() };
    let (phase, condition, message, action) =
        judge_attempt(&job.spec, &mut next, Ok(()), &[revoked, ShardState::Running], 0);
    assert_eq!((phase, condition.as_str(), action), (Phase::Failed, "CredentialsRevoked", Action::StopRunners));
    assert!(message.contains("consent flow again") && message.contains("not retried"), "{message}");
}

#[test]
fn exit_zero_without_a_final_report_is_not_success() {
    let ShardState::Failed { reason, kind, .. } = finished_shard(0, None, Some("Completed")) else { panic!() };
    assert!(reason.contains("without a final report") && kind == FailureKind::Retryable, "{reason}");
    // A report that is not final (no outcome yet) proves nothing either.
    let mut unfinished = report(5, Outcome::Succeeded);
    unfinished.outcome = None;
    let ShardState::Failed { report: kept, .. } = finished_shard(0, Some(unfinished), None) else { panic!() };
    assert_eq!(kept.map(|r| r.progress.objects_verified), Some(5), "the counters are kept for status");
    // A final report of success with a non-zero exit is not success either.
    assert!(matches!(finished_shard(1, Some(report(1, Outcome::Succeeded)), None), ShardState::Failed { .. }));
}

#[test]
fn an_attempt_whose_runner_exited_zero_silently_is_retried() {
    let spec = spec("");
    let silent = finished_shard(0, None, None);
    let decision = observe(&spec, status(Phase::Running, 1, 0), true, vec![silent]);
    assert_eq!(decision.status.phase, Some(Phase::Running));
    assert_eq!((decision.status.attempts, decision.status.failed_attempts), (2, 1));
    assert_eq!(decision.action, Action::Launch);
}

#[test]
fn the_failure_budget_holds_for_the_whole_job() {
    let spec: MigrationJobSpec =
        serde_yaml::from_str("source: {binding: a}\ndestination: {binding: b}\nshards: 4\nfailureBudget: 10\n")
            .unwrap();
    let running = || vec![ShardState::Running; 4];
    let observe_failed = |failed| {
        decide(Observation {
            job: &crate::children::fixtures::identity(),
            spec: &spec,
            generation: Some(1),
            status: status(Phase::Running, 1, 0),
            bindings: Ok(()),
            credential_versions: None,
            attempt_launched: true,
            shards: running(),
            objects_failed: failed,
            now: at(100),
        })
    };
    // 4 shards with 3 failures each: within each shard's view of the budget, not the job's.
    assert_eq!(observe_failed(10).action, Action::None);
    let decision = observe_failed(12);
    assert_eq!(decision.action, Action::StopRunners);
    assert_eq!(decision.status.phase, Some(Phase::Failed));
    let ready = decision.status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason, "FailureBudgetExceeded");
    assert!(ready.message.contains("spec.failureBudget (10)"), "{}", ready.message);
}

#[test]
fn the_pods_of_the_three_latest_attempts_are_kept() {
    assert!(attempts_to_prune([1, 2], 3).is_empty(), "the third attempt keeps both before it");
    assert_eq!(attempts_to_prune([1, 2, 3], 4).into_iter().collect::<Vec<_>>(), [1]);
    assert_eq!(attempts_to_prune([2, 5, 7, 8, 9], 10).into_iter().collect::<Vec<_>>(), [2, 5, 7]);
    assert!(attempts_to_prune([], 1).is_empty());
    assert!(attempts_to_prune([u32::MAX - 1], u32::MAX).is_empty(), "no overflow at the top");
}
