//! What a job should do next, as a pure function of what the controller observed: launch
//! an attempt, wait, stop its runners, or finish. Reconcile only carries the decision out.

use ferry_api::contract::{JobIdentity, Outcome, ProgressReport};
use ferry_api::status::ReportLocation;
use ferry_api::{MigrationJobSpec, MigrationJobStatus, ObjectFailure, Phase, Progress, reports};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::conditions;

mod runs;

/// At most this many failures are kept in status.
pub const MAX_FAILURES_IN_STATUS: usize = 10;

/// Why a job cannot launch now; the message names the field to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocker {
    /// A CamelCase condition reason.
    pub reason: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Blocker reasons no waiting can cure: the spec itself is refused, so the job fails.
pub const REFUSALS: [&str; 1] = ["RunnerImageNotAllowed"];

impl Blocker {
    /// Whether the job must fail rather than wait (see [`REFUSALS`]).
    pub fn is_refusal(&self) -> bool {
        REFUSALS.contains(&self.reason)
    }
}

/// One shard of the current attempt, as its pod and last report show it.
#[derive(Clone, Debug, PartialEq)]
pub enum ShardState {
    /// No pod (never created, or deleted).
    Missing,
    /// Scheduled or starting.
    Pending,
    /// Copying.
    Running,
    /// The pod exited 0 and its final report says every object was verified.
    Succeeded {
        /// The runner's last report.
        report: Option<ProgressReport>,
    },
    /// The pod failed.
    Failed {
        /// Why, from the report's outcome or the pod's termination.
        reason: String,
        /// Whether another attempt may help.
        kind: FailureKind,
        /// The runner's last report.
        report: Option<ProgressReport>,
    },
}

/// What a shard's failure means for the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Another attempt may succeed.
    Retryable,
    /// The runner refused its credentials: never retried.
    Security,
    /// The provider refused the credentials for good: never retried.
    CredentialsRevoked,
}

impl ShardState {
    fn report(&self) -> Option<&ProgressReport> {
        match self {
            Self::Succeeded { report } | Self::Failed { report, .. } => report.as_ref(),
            _ => None,
        }
    }
}

/// What the controller saw this pass.
#[derive(Clone, Debug)]
pub struct Observation<'a> {
    /// Which job.
    pub job: &'a JobIdentity,
    /// The job's spec.
    pub spec: &'a MigrationJobSpec,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The status as last written.
    pub status: MigrationJobStatus,
    /// Whether the bindings allow a launch (checked only when one is due).
    pub bindings: Result<(), Blocker>,
    /// The versions of the bindings' Vault secrets, when both bindings could be read.
    pub credential_versions: Option<ferry_api::status::CredentialVersions>,
    /// Whether the current attempt's Secret exists, i.e. its children were created.
    pub attempt_launched: bool,
    /// The current attempt's shards, indexed by shard.
    pub shards: Vec<ShardState>,
    /// Objects failed so far in the current attempt, summed over every shard's latest report:
    /// `failureBudget` holds for the job, not per shard.
    pub objects_failed: u64,
    /// Now.
    pub now: Time,
}

/// What reconcile must do besides writing the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Create the children of attempt `status.attempts` (new tokens, new pods).
    Launch,
    /// Delete the current attempt's pods and tokens (suspend, deadline, security stop).
    StopRunners,
    /// The job is finished: remove the tokens that remain.
    Cleanup,
}

/// The decision: the next status, the action, and an event when the phase changes.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The status to write.
    pub status: MigrationJobStatus,
    /// What to do.
    pub action: Action,
    /// `(reason, message)` worth an Event: set when the phase or attempt changed.
    pub event: Option<(String, String)>,
    /// Whether the event is a warning.
    pub warning: bool,
}

/// Decides the next step of a job.
pub fn decide(observed: Observation<'_>) -> Decision {
    let Observation {
        job,
        spec,
        generation,
        status: previous,
        bindings,
        credential_versions,
        attempt_launched,
        shards,
        objects_failed,
        now,
    } = observed;
    let mut next = previous.clone();
    next.observed_generation = generation;
    let phase = previous.phase.unwrap_or_default();

    let rerun = if phase.is_finished() {
        runs::rerun(spec, &previous, generation, credential_versions, &now)
    } else {
        runs::Rerun::NotYet
    };
    let (phase, reason, message, action) = if let runs::Rerun::Due(reason, message) = rerun {
        runs::start_next_run(spec, &mut next, &now);
        launch(&mut next, bindings, reason, message)
    } else if phase.is_finished() {
        if let Some(skipped) = runs::skip_missed(spec, &previous, &now) {
            next.next_run_time = skipped;
        }
        if next.next_run_time.is_none() {
            // A job that finished before it had a scheduled time counts from its end.
            let from = previous.completion_time.clone().unwrap_or_else(|| now.clone());
            next.next_run_time = runs::next_run_time(spec, &from).ok().flatten();
        }
        let reason = conditions::reason_of(&previous.conditions, "Ready").unwrap_or("Finished").to_owned();
        let message = previous.conditions.first().map(|c| c.message.clone()).unwrap_or_default();
        (phase, reason, message, Action::Cleanup)
    } else if let Some(message) = deadline_passed(spec, &previous, &now) {
        (Phase::Failed, "DeadlineExceeded".to_owned(), message, Action::StopRunners)
    } else if spec.suspend {
        let message = "spec.suspend is true: runners stopped; set it to false to resume".to_owned();
        (Phase::Suspended, "Suspended".to_owned(), message, Action::StopRunners)
    } else if previous.attempts == 0 || phase == Phase::Suspended {
        launch(&mut next, bindings, "Starting", "launching runners".to_owned())
    } else if !attempt_launched {
        launch(&mut next, bindings, "Starting", format!("launching attempt {}", previous.attempts))
    } else {
        judge_attempt(spec, &mut next, bindings, &shards, objects_failed)
    };

    let finished = phase.is_finished() && !previous.phase.is_some_and(Phase::is_finished);
    if finished {
        next.completion_time = Some(now.clone());
        let reports: Vec<&ProgressReport> = shards.iter().filter_map(ShardState::report).collect();
        if !reports.is_empty() {
            let mut progress = Progress::default();
            for report in &reports {
                progress.accumulate(&report.progress);
            }
            progress.bytes_per_second = 0;
            progress.eta_seconds = None;
            next.summary = Some(progress.summary());
            next.progress = Some(progress);
            next.failures = reports
                .iter()
                .flat_map(|r| r.recent_failures.iter().cloned())
                .take(MAX_FAILURES_IN_STATUS)
                .collect::<Vec<ObjectFailure>>();
        }
        next.report = report_location(job, spec, next.attempts, &reports);
    }
    if action == Action::Launch && next.start_time.is_none() {
        next.start_time = Some(now.clone());
    }
    if action == Action::Launch {
        next.credential_versions = credential_versions;
    }
    if action == Action::Launch && next.run == 0 {
        // The first run: from its start the schedule counts the next one.
        next.run = 1;
        next.next_run_time = runs::next_run_time(spec, &now).ok().flatten();
    }
    if spec.schedule.is_none() {
        next.next_run_time = None;
    }
    next.phase = Some(phase);
    next.conditions = conditions::job_conditions(phase, &reason, &message, generation, &previous.conditions, &now);
    let changed = previous.phase != Some(phase) || previous.attempts != next.attempts;
    let warning = matches!(phase, Phase::Failed | Phase::Waiting) || next.failed_attempts > previous.failed_attempts;
    Decision { event: changed.then_some((reason, message)), warning, status: next, action }
}

/// Where the finished attempt's per-object reports are and how many records they hold: only
/// when every shard left its report, since a sum over some shards would mislead.
fn report_location(
    job: &JobIdentity,
    spec: &MigrationJobSpec,
    attempt: u32,
    reports: &[&ProgressReport],
) -> Option<ReportLocation> {
    let shards = spec.shards.max(1);
    let from_this_attempt = reports.iter().filter(|report| report.attempt == attempt);
    if from_this_attempt.clone().count() != shards as usize {
        return None;
    }
    let objects = from_this_attempt.map(|report| report.report_objects).sum::<Option<u64>>()?;
    let destination = &spec.destination;
    let location = reports::report_location(&destination.binding, &destination.path, job, attempt, shards);
    Some(ReportLocation { location, objects })
}

/// Launches the current attempt (numbering a new one when none is current), unless a binding blocks it.
fn launch(
    next: &mut MigrationJobStatus,
    bindings: Result<(), Blocker>,
    reason: &str,
    message: String,
) -> (Phase, String, String, Action) {
    match bindings {
        Err(blocker) if blocker.is_refusal() => {
            (Phase::Failed, blocker.reason.to_owned(), blocker.message, Action::None)
        }
        Err(blocker) => (Phase::Waiting, blocker.reason.to_owned(), blocker.message, Action::None),
        Ok(()) => {
            let resuming = next.phase == Some(Phase::Suspended);
            if next.attempts == 0 || resuming {
                next.attempts += 1;
            }
            (Phase::Running, reason.to_owned(), message, Action::Launch)
        }
    }
}

/// The reason of the first shard that failed in this way.
fn failure_of_kind(shards: &[ShardState], wanted: FailureKind) -> Option<String> {
    shards.iter().find_map(|shard| match shard {
        ShardState::Failed { kind, reason, .. } if *kind == wanted => Some(reason.clone()),
        _ => None,
    })
}

/// Judges a launched attempt from its shards.
fn judge_attempt(
    spec: &MigrationJobSpec,
    next: &mut MigrationJobStatus,
    bindings: Result<(), Blocker>,
    shards: &[ShardState],
    objects_failed: u64,
) -> (Phase, String, String, Action) {
    let attempt = next.attempts;
    if let Some(reason) = failure_of_kind(shards, FailureKind::Security) {
        let message = format!("attempt {attempt} refused its credentials: {reason}; not retried");
        next.failed_attempts += 1;
        return (Phase::Failed, "SecurityViolation".to_owned(), message, Action::StopRunners);
    }
    if let Some(reason) = failure_of_kind(shards, FailureKind::CredentialsRevoked) {
        // Every retry would be refused the same way: stop, and say what brings it back.
        let message = format!("attempt {attempt}: {reason}; not retried");
        next.failed_attempts += 1;
        return (Phase::Failed, "CredentialsRevoked".to_owned(), message, Action::StopRunners);
    }
    if objects_failed > spec.failure_budget {
        // Each runner stops at its own count; only the operator sees the job's. Not retried:
        // failures on this scale are systemic, and a retry would pay for the egress again.
        let message = format!(
            "attempt {attempt}: {objects_failed} objects failed across its shards, more than spec.failureBudget ({}); \
             runners stopped (see status.failures, fix the cause, raise spec.failureBudget to tolerate more)",
            spec.failure_budget
        );
        next.failed_attempts += 1;
        return (Phase::Failed, "FailureBudgetExceeded".to_owned(), message, Action::StopRunners);
    }
    if shards.iter().any(|s| matches!(s, ShardState::Pending | ShardState::Running)) {
        let running = shards.iter().filter(|s| matches!(s, ShardState::Running)).count();
        let message = format!("attempt {attempt}: {running} of {} runners running", shards.len());
        return (Phase::Running, "Running".to_owned(), message, Action::None);
    }
    if shards.iter().all(|s| matches!(s, ShardState::Succeeded { .. })) {
        let message = format!("attempt {attempt} verified every selected object");
        return (Phase::Succeeded, "Succeeded".to_owned(), message, Action::Cleanup);
    }
    let why = shards
        .iter()
        .enumerate()
        .find_map(|(index, s)| match s {
            ShardState::Failed { reason, .. } => Some(format!("shard {index}: {reason}")),
            ShardState::Missing => Some(format!("shard {index}: the runner pod disappeared")),
            _ => None,
        })
        .unwrap_or_default();
    next.failed_attempts += 1;
    if next.failed_attempts > spec.retries {
        let message = format!("attempt {attempt} failed ({why}); spec.retries ({}) exhausted", spec.retries);
        return (Phase::Failed, "RetriesExhausted".to_owned(), message, Action::Cleanup);
    }
    let message = format!("attempt {attempt} failed ({why}); retrying with new credentials");
    next.attempts += 1;
    match bindings {
        Ok(()) => (Phase::Running, "Retrying".to_owned(), message, Action::Launch),
        Err(blocker) if blocker.is_refusal() => {
            (Phase::Failed, blocker.reason.to_owned(), blocker.message, Action::Cleanup)
        }
        Err(blocker) => (Phase::Waiting, blocker.reason.to_owned(), blocker.message, Action::None),
    }
}

/// Why the attempt's sync deletions cannot happen any more: a shard failed or its pod is
/// gone, so it will never count its part. `None` while every shard may still do so.
pub fn deletion_blocker(shards: &[ShardState]) -> Option<String> {
    shards.iter().enumerate().find_map(|(index, shard)| match shard {
        ShardState::Failed { reason, .. } => Some(format!("shard {index} failed ({reason}); sync deletes nothing")),
        ShardState::Missing => Some(format!("shard {index}'s runner pod is gone; sync deletes nothing")),
        _ => None,
    })
}

/// How many attempts keep their runner pods: the one launching and the two before it, so
/// `kubectl logs` reaches the latest failures (as a CronJob keeps three jobs) while a
/// scheduled job's finished pods stay bounded instead of growing with every run.
pub const RUNNER_POD_ATTEMPTS_KEPT: u32 = 3;

/// The attempts, among those that still have pods, whose pods go when `launching` starts.
pub fn attempts_to_prune(present: impl IntoIterator<Item = u32>, launching: u32) -> std::collections::BTreeSet<u32> {
    present
        .into_iter()
        .filter(|attempt| launching.checked_sub(*attempt).is_some_and(|behind| behind >= RUNNER_POD_ATTEMPTS_KEPT))
        .collect()
}

/// The deadline message, once `activeDeadlineSeconds` has passed since the first attempt started.
fn deadline_passed(spec: &MigrationJobSpec, status: &MigrationJobStatus, now: &Time) -> Option<String> {
    let limit = spec.active_deadline_seconds?;
    let started = status.start_time.as_ref()?;
    let elapsed = now.0.as_second() - started.0.as_second();
    (elapsed >= limit).then(|| format!("spec.activeDeadlineSeconds ({limit}) passed before every object was verified"))
}

/// Seconds left before the deadline, for the pods' own `activeDeadlineSeconds`.
pub fn deadline_remaining(spec: &MigrationJobSpec, status: &MigrationJobStatus, now: &Time) -> Option<i64> {
    let limit = spec.active_deadline_seconds?;
    let started = status.start_time.as_ref().map_or(now.0.as_second(), |t| t.0.as_second());
    Some((started + limit - now.0.as_second()).max(1))
}

/// The shard state from a finished pod's exit code and the runner's final report: success
/// needs both exit code 0 and a final report whose outcome is `Succeeded`.
pub fn finished_shard(exit_code: i32, report: Option<ProgressReport>, termination_reason: Option<&str>) -> ShardState {
    let outcome = report.as_ref().and_then(|r| r.outcome.clone());
    match (exit_code, outcome) {
        (0, Some(Outcome::Succeeded)) => ShardState::Succeeded { report },
        (_, Some(Outcome::SecurityViolation { reason })) => {
            ShardState::Failed { reason, kind: FailureKind::Security, report }
        }
        (5, _) => ShardState::Failed {
            reason: "the runner refused its credentials".into(),
            kind: FailureKind::Security,
            report,
        },
        (_, Some(Outcome::CredentialsRevoked { reason })) => {
            ShardState::Failed { reason, kind: FailureKind::CredentialsRevoked, report }
        }
        (_, Some(Outcome::Aborted { reason })) => ShardState::Failed { reason, kind: FailureKind::Retryable, report },
        (_, Some(Outcome::ObjectsFailed)) => {
            let failed = report.as_ref().map_or(0, |r| r.progress.objects_failed);
            ShardState::Failed { reason: format!("{failed} objects failed"), kind: FailureKind::Retryable, report }
        }
        // Exit 0 proves only that the process ended; success is the runner's own final
        // report saying every object was verified. Without it (killed between its last
        // post and the end, a truncated termination message, a foreign image), nothing
        // says the copy is complete, so the attempt failed and is retried.
        (0, _) => ShardState::Failed {
            reason: "the runner exited 0 without a final report, so nothing proves every object was verified".into(),
            kind: FailureKind::Retryable,
            report,
        },
        (code, _) => {
            let why = termination_reason.unwrap_or("Error");
            ShardState::Failed {
                reason: format!("runner exited with code {code} ({why})"),
                kind: FailureKind::Retryable,
                report,
            }
        }
    }
}

#[cfg(test)]
mod tests;
