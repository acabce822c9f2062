//! Runs: a job's attempts until it finishes make one run; `spec.schedule` and spec changes
//! start the next. A new run is a delta pass: its runners skip what is already verified at
//! the destination, so only what changed is copied. One run at a time: a scheduled time that
//! passes during a run is caught up once it ends (`missedRunPolicy: RunOnce`) or skipped.

use ferry_api::job::MissedRunPolicy;
use ferry_api::status::{CredentialVersions, RUNS_KEPT, RunRecord};
use ferry_api::{MigrationJobSpec, MigrationJobStatus, Phase};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::schedule::Schedule;

/// A scheduled time more than this late counts as missed under `missedRunPolicy: Skip`.
const MISSED_AFTER_SECONDS: i64 = 60;

/// Whether a finished job starts another run now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rerun {
    /// Yes: the event's reason and message.
    Due(&'static str, String),
    /// Not now.
    NotYet,
}

/// The next time `spec.schedule` fires after `after` (`None` without a schedule); `Err` says
/// why the schedule cannot be read.
pub fn next_run_time(spec: &MigrationJobSpec, after: &Time) -> Result<Option<Time>, String> {
    let Some(expression) = &spec.schedule else { return Ok(None) };
    let schedule = Schedule::parse(expression, spec.time_zone.as_deref())?;
    Ok(schedule.next_after(after.0).map(Time))
}

/// Whether a finished job runs again: its spec changed since the run (a new generation), a
/// binding's secret has a new version since it failed with `CredentialsRevoked`, or its
/// scheduled time has come. A suspended job never does.
pub fn rerun(
    spec: &MigrationJobSpec,
    previous: &MigrationJobStatus,
    generation: Option<i64>,
    credentials: Option<CredentialVersions>,
    now: &Time,
) -> Rerun {
    if spec.suspend {
        return Rerun::NotYet;
    }
    let revoked = previous.phase == Some(Phase::Failed)
        && crate::conditions::reason_of(&previous.conditions, "Ready") == Some("CredentialsRevoked");
    if revoked && credentials.is_some() && credentials != previous.credential_versions {
        let message = "a binding's Vault secret has a new version since its credentials were refused: a new run starts";
        return Rerun::Due("CredentialsRenewed", message.to_owned());
    }
    if generation.is_some() && previous.observed_generation.is_some() && generation != previous.observed_generation {
        return Rerun::Due("SpecChanged", "the spec changed: a new run copies what differs".to_owned());
    }
    match &previous.next_run_time {
        Some(due) if now.0 >= due.0 => {
            Rerun::Due("Scheduled", format!("spec.schedule fired at {}: a new run copies what changed", due.0))
        }
        _ => Rerun::NotYet,
    }
}

/// Under `missedRunPolicy: Skip`, a scheduled time that passed long ago is skipped: the next
/// one after `now` replaces it. `None`: nothing to skip.
pub fn skip_missed(spec: &MigrationJobSpec, previous: &MigrationJobStatus, now: &Time) -> Option<Option<Time>> {
    let due = previous.next_run_time.as_ref()?;
    let late = now.0.as_second() - due.0.as_second();
    (spec.missed_run_policy == MissedRunPolicy::Skip && late > MISSED_AFTER_SECONDS)
        .then(|| next_run_time(spec, now).ok().flatten())
}

/// Closes the finished run in `next` (recorded, newest first, the last [`RUNS_KEPT`] kept)
/// and opens the next: counters, failures and times reset, a new attempt number (children
/// are named by it), the next scheduled time counted from now.
pub fn start_next_run(spec: &MigrationJobSpec, next: &mut MigrationJobStatus, now: &Time) {
    let progress = next.progress.clone().unwrap_or_default();
    let finished = RunRecord {
        run: next.run.max(1),
        start_time: next.start_time.clone(),
        completion_time: next.completion_time.clone(),
        outcome: next.phase.unwrap_or(Phase::Succeeded),
        objects_copied: progress.objects_copied,
        objects_verified: progress.objects_verified,
        objects_skipped: progress.objects_skipped,
        objects_failed: progress.objects_failed,
        bytes_copied: progress.bytes_copied,
    };
    next.runs.insert(0, finished);
    next.runs.truncate(RUNS_KEPT);
    next.run = next.run.max(1) + 1;
    next.attempts += 1;
    next.failed_attempts = 0;
    next.progress = None;
    next.summary = None;
    next.failures.clear();
    next.report = None;
    next.start_time = Some(now.clone());
    next.completion_time = None;
    next.next_run_time = next_run_time(spec, now).ok().flatten();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::fixtures;
    use ferry_api::Progress;

    fn at(text: &str) -> Time {
        Time(text.parse().unwrap())
    }

    fn spec(extra: &str) -> MigrationJobSpec {
        fixtures::job(&format!("{}{extra}", fixtures::S3_TO_PVC)).spec
    }

    fn finished(next_run: Option<&str>) -> MigrationJobStatus {
        MigrationJobStatus {
            phase: Some(Phase::Succeeded),
            observed_generation: Some(1),
            attempts: 2,
            run: 1,
            start_time: Some(at("2026-12-01T02:00:00Z")),
            completion_time: Some(at("2026-12-01T02:30:00Z")),
            next_run_time: next_run.map(at),
            progress: Some(Progress {
                objects_copied: 7,
                objects_verified: 9,
                objects_skipped: 2,
                ..Progress::default()
            }),
            ..MigrationJobStatus::default()
        }
    }

    #[test]
    fn a_schedule_or_a_spec_change_starts_the_next_run_and_nothing_else_does() {
        let nightly = spec("  schedule: \"0 2 * * *\"\n");
        let status = finished(Some("2026-12-02T02:00:00Z"));
        assert_eq!(rerun(&nightly, &status, Some(1), None, &at("2026-12-02T01:59:59Z")), Rerun::NotYet);
        assert!(matches!(
            rerun(&nightly, &status, Some(1), None, &at("2026-12-02T02:00:00Z")),
            Rerun::Due("Scheduled", _)
        ));
        assert!(matches!(
            rerun(&nightly, &status, Some(2), None, &at("2026-12-01T03:00:00Z")),
            Rerun::Due("SpecChanged", _)
        ));
        // The same manifest applied again leaves the generation, and so the job, as it is.
        assert_eq!(rerun(&spec(""), &finished(None), Some(1), None, &at("2026-12-09T00:00:00Z")), Rerun::NotYet);
        let suspended = spec("  schedule: \"0 2 * * *\"\n  suspend: true\n");
        assert_eq!(rerun(&suspended, &status, Some(2), None, &at("2026-12-03T00:00:00Z")), Rerun::NotYet);
    }

    #[test]
    fn refused_credentials_run_again_once_the_secret_has_a_new_version() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
        let mut failed = finished(None);
        failed.phase = Some(Phase::Failed);
        failed.credential_versions = Some(CredentialVersions { source: Some(3), destination: Some(1) });
        failed.conditions = vec![Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: "CredentialsRevoked".into(),
            message: "m".into(),
            last_transition_time: at("2026-12-01T02:30:00Z"),
            observed_generation: Some(1),
        }];
        let now = at("2026-12-01T09:00:00Z");
        let same = Some(CredentialVersions { source: Some(3), destination: Some(1) });
        assert_eq!(rerun(&spec(""), &failed, Some(1), same, &now), Rerun::NotYet, "the same secret fails the same way");
        assert_eq!(rerun(&spec(""), &failed, Some(1), None, &now), Rerun::NotYet, "versions unknown");
        let renewed = Some(CredentialVersions { source: Some(4), destination: Some(1) });
        assert!(matches!(rerun(&spec(""), &failed, Some(1), renewed, &now), Rerun::Due("CredentialsRenewed", _)));
        // Another failure is not brought back by a new secret version.
        failed.conditions[0].reason = "RetriesExhausted".into();
        assert_eq!(rerun(&spec(""), &failed, Some(1), renewed, &now), Rerun::NotYet);
    }

    #[test]
    fn a_missed_time_is_run_once_or_skipped_as_the_policy_says() {
        let status = finished(Some("2026-12-02T02:00:00Z"));
        let once = spec("  schedule: \"0 2 * * *\"\n");
        assert_eq!(skip_missed(&once, &status, &at("2026-12-04T09:00:00Z")), None);
        let skip = spec("  schedule: \"0 2 * * *\"\n  missedRunPolicy: Skip\n");
        assert_eq!(skip_missed(&skip, &status, &at("2026-12-02T02:00:30Z")), None, "on time");
        assert_eq!(
            skip_missed(&skip, &status, &at("2026-12-04T09:00:00Z")),
            Some(Some(at("2026-12-05T02:00:00Z"))),
            "days late: the next time after now"
        );
    }

    #[test]
    fn the_next_run_keeps_the_last_one_and_starts_clean() {
        let nightly = spec("  schedule: \"0 2 * * *\"\n");
        let mut next = finished(Some("2026-12-02T02:00:00Z"));
        next.runs = (0..RUNS_KEPT as u32).map(|run| RunRecord { run, ..RunRecord::default() }).collect();
        start_next_run(&nightly, &mut next, &at("2026-12-02T02:00:05Z"));
        assert_eq!((next.run, next.attempts, next.failed_attempts), (2, 3, 0));
        assert_eq!(next.runs.len(), RUNS_KEPT);
        let last = &next.runs[0];
        assert_eq!((last.run, last.outcome, last.objects_copied, last.objects_skipped), (1, Phase::Succeeded, 7, 2));
        assert_eq!(last.completion_time, Some(at("2026-12-01T02:30:00Z")));
        assert!(next.progress.is_none() && next.completion_time.is_none());
        assert_eq!(next.next_run_time, Some(at("2026-12-03T02:00:00Z")));
    }
}
