//! `ferry-runner cluster`: one attempt of one shard inside a runner pod. The plan comes from
//! a file, credentials only as wrapping tokens that are unwrapped once into memory, and
//! progress goes to the operator; the final report is also left as the pod's termination
//! message, so the operator learns the outcome even if it missed the last post.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferry_api::Progress;
use ferry_api::contract::{
    DESTINATION_ROTATION_TOKEN_FILE, DESTINATION_TOKEN_FILE, Outcome, PLAN_DIGEST_FILE, PROGRESS_TOKEN_FILE,
    PendingDeletions, PlannedBinding, ProgressReport, RunnerPlan, SOURCE_ROTATION_TOKEN_FILE, SOURCE_TOKEN_FILE, Stage,
    plan_digest,
};
use ferry_api::reports::report_key;
use zeroize::Zeroizing;

use crate::accounting::Accounting;
use crate::deletion_gate::DeletionGate;
use crate::progress_client::ProgressPoster;
use crate::run::{self, Execution, ExitStatus};
use crate::secrets::SecretFields;
use crate::storage;
use crate::unwrap::{unwrap_credentials, unwrap_write_token};
use crate::vault::RotatedTokenToVault;

/// Kubernetes keeps at most this much of a termination message.
const TERMINATION_MESSAGE_LIMIT: usize = 4096;
/// How often progress is posted while copying.
const REPORT_EVERY: Duration = Duration::from_secs(2);

/// The options of `cluster`, each overridable so tests can run it outside a pod.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The plan file (JSON).
    pub plan: PathBuf,
    /// The directory holding the token files.
    pub credentials: PathBuf,
    /// Where the encrypted spool directory is created.
    pub spool_directory: PathBuf,
    /// Where the final report is written for Kubernetes (the termination message).
    pub termination_log: Option<PathBuf>,
    /// The CA bundle that signed the progress API's certificate.
    pub progress_ca: Option<PathBuf>,
    /// The CA bundle that signed Vault's certificate.
    pub vault_ca: Option<PathBuf>,
}

/// Numbers and sends this attempt's reports.
struct Reporter {
    plan_identity: (String, u32, ferry_api::contract::Shard),
    sequence: AtomicU64,
    poster: Option<ProgressPoster>,
    /// Once a sync counted its deletions, every later report carries the counts, so the
    /// operator never sees this shard's share vanish from its latest report.
    deletions: std::sync::Mutex<Option<PendingDeletions>>,
}

impl Reporter {
    fn report(
        &self,
        stage: Stage,
        progress: Progress,
        accounting: Option<&Accounting>,
        outcome: Option<Outcome>,
    ) -> ProgressReport {
        let (job_uid, attempt, shard) = self.plan_identity.clone();
        let deletions = *self.deletions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let stage = match (stage, deletions) {
            (Stage::Copying, Some(_)) => Stage::AwaitingDeletion,
            (stage, _) => stage,
        };
        ProgressReport {
            job_uid,
            attempt,
            shard,
            sequence: self.sequence.fetch_add(1, Ordering::Relaxed) + 1,
            stage,
            progress,
            recent_failures: accounting.map(Accounting::first_failures).unwrap_or_default(),
            outcome,
            deletions,
            report_objects: None,
        }
    }

    fn send(&self, report: ProgressReport) {
        if let Some(poster) = &self.poster {
            poster.send(report);
        }
    }

    /// Leaves the final report as the termination message and delivers it to the operator.
    async fn finish(self, report: ProgressReport, termination_log: Option<&Path>) {
        if let Some(path) = termination_log
            && let Err(error) = std::fs::write(path, termination_message(&report))
        {
            eprintln!("ferry-runner: cannot write the termination message to {}: {error}", path.display());
        }
        if let Some(poster) = self.poster
            && let Err(error) = poster.finish(report).await
        {
            eprintln!("ferry-runner: the operator did not take the final report: {error}");
        }
    }
}

/// The final report as JSON that fits Kubernetes' termination message limit: failures are
/// dropped first, since the counters and the outcome are what the operator needs.
pub fn termination_message(report: &ProgressReport) -> String {
    let mut report = report.clone();
    loop {
        let text = serde_json::to_string(&report).unwrap_or_default();
        if text.len() <= TERMINATION_MESSAGE_LIMIT || report.recent_failures.is_empty() {
            return text;
        }
        report.recent_failures.pop();
    }
}

/// Runs the attempt the plan describes and returns the exit status.
pub async fn run(options: ClusterOptions) -> ExitStatus {
    let plan = match read_plan(&options.plan, &options.credentials) {
        Ok(plan) => plan,
        Err(PlanError::Unreadable(message)) => {
            eprintln!("ferry-runner: {message}");
            return ExitStatus::InvalidInput;
        }
        Err(PlanError::NotTheOperators(reason)) => {
            // Nothing in this plan can be trusted, its progress URL included: the outcome goes
            // only to the termination message, never to a server the plan names.
            eprintln!("ferry-runner: {reason}");
            let report = ProgressReport {
                job_uid: String::new(),
                attempt: 0,
                shard: ferry_api::contract::Shard::WHOLE,
                sequence: 1,
                stage: Stage::Finished,
                progress: Progress::default(),
                recent_failures: Vec::new(),
                outcome: Some(Outcome::SecurityViolation { reason }),
                deletions: None,
                report_objects: None,
            };
            let reporter = Reporter {
                plan_identity: (String::new(), 0, report.shard),
                sequence: AtomicU64::new(1),
                poster: None,
                deletions: std::sync::Mutex::new(None),
            };
            reporter.finish(report, options.termination_log.as_deref()).await;
            return ExitStatus::SecurityViolation;
        }
    };
    let poster = match &plan.progress_url {
        None => None,
        Some(url) => {
            let started = read_token(&options.credentials, PROGRESS_TOKEN_FILE).and_then(|token| {
                ProgressPoster::new(url, token, options.progress_ca.as_deref()).map_err(|e| e.to_string())
            });
            match started {
                Ok(poster) => Some(poster),
                Err(message) => {
                    eprintln!("ferry-runner: cannot report progress: {message}");
                    return ExitStatus::CannotStart;
                }
            }
        }
    };
    let reporter = Reporter {
        plan_identity: (plan.job.uid.clone(), plan.attempt, plan.shard),
        sequence: AtomicU64::new(0),
        poster,
        deletions: std::sync::Mutex::new(None),
    };
    reporter.send(reporter.report(Stage::Starting, Progress::default(), None, None));

    let secrets = match unwrap_both(&plan, &options).await {
        Ok(secrets) => secrets,
        Err((status, outcome)) => {
            eprintln!("ferry-runner: {}", outcome_reason(&outcome));
            let report = reporter.report(Stage::Finished, Progress::default(), None, Some(outcome));
            reporter.finish(report, options.termination_log.as_deref()).await;
            return status;
        }
    };
    let writers = match write_tokens(&plan, &options).await {
        Ok(writers) => writers,
        Err((status, outcome)) => {
            eprintln!("ferry-runner: {}", outcome_reason(&outcome));
            let report = reporter.report(Stage::Finished, Progress::default(), None, Some(outcome));
            reporter.finish(report, options.termination_log.as_deref()).await;
            return status;
        }
    };
    let spec = plan.spec.clone();
    let mut stores = Vec::new();
    for (endpoint, binding, secret, writer) in [
        (&spec.source, &plan.source, &secrets.0, &writers[0]),
        (&spec.destination, &plan.destination, &secrets.1, &writers[1]),
    ] {
        let rotation = writer.clone().map(|writer| writer as Arc<dyn crate::backends::oauth::RotationStore>);
        match storage::open(
            &binding.name,
            &binding.spec,
            secret.as_ref(),
            None,
            rotation,
            &endpoint.path,
            run::store_options(&spec),
        )
        .await
        {
            Ok(store) => stores.push(Arc::new(store)),
            Err(error) => {
                let outcome = Outcome::Aborted { reason: error.to_string() };
                eprintln!("ferry-runner: {error}");
                let report = reporter.report(Stage::Finished, Progress::default(), None, Some(outcome));
                reporter.finish(report, options.termination_log.as_deref()).await;
                return ExitStatus::CannotStart;
            }
        }
    }
    drop(secrets);
    let (Some(destination), Some(source)) = (stores.pop(), stores.pop()) else { return ExitStatus::CannotStart };

    let accounting = Arc::new(Accounting::default());
    let reporter = Arc::new(reporter);
    let ticker = {
        let (reporter, accounting) = (reporter.clone(), accounting.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REPORT_EVERY).await;
                reporter.send(reporter.report(Stage::Copying, accounting.snapshot(), Some(&accounting), None));
            }
        })
    };
    // The report goes to an unnamed file in the pod's scratch space, then to the destination.
    let (report_writer, report_file) = match keep_report(&plan, &options.spool_directory) {
        Ok(Some(KeptReport { writer, reader, key })) => (Some(writer), Some((reader, key))),
        Ok(None) => (None, None),
        Err(message) => {
            eprintln!("ferry-runner: no per-object report for this attempt: {message}");
            (None, None)
        }
    };
    let report_destination = destination.clone();
    let execution = Execution {
        dry_run: spec.dry_run,
        spec,
        source,
        destination,
        shard: plan.shard,
        spool_directory: options.spool_directory.clone(),
        report: report_writer,
        deletion_gate: reporter.poster.is_some().then(|| ask_operator(reporter.clone(), accounting.clone())),
    };
    let result = run::execute(execution, accounting.clone(), run::stop_on_signal()).await;
    ticker.abort();
    let _ = ticker.await;
    let Ok(reporter) = Arc::try_unwrap(reporter) else { return ExitStatus::CannotStart };
    let (status, report) = match result {
        Ok((summary, records)) => {
            let mut progress = summary.progress.clone();
            progress.eta_seconds = None;
            let mut report =
                reporter.report(Stage::Finished, progress, Some(&accounting), Some(summary.outcome.clone()));
            if let (Some((file, key)), Some(records)) = (report_file, records) {
                report.report_objects = leave_report(&report_destination, &key, file, records).await;
            }
            (run::exit_status(&summary.outcome), report)
        }
        Err((status, message)) => {
            eprintln!("ferry-runner: {message}");
            let outcome = Outcome::Aborted { reason: message };
            (status, reporter.report(Stage::Finished, accounting.snapshot(), Some(&accounting), Some(outcome)))
        }
    };
    reporter.finish(report, options.termination_log.as_deref()).await;
    for writer in writers.iter().flatten() {
        writer.revoke().await;
    }
    status
}

/// The per-object report of a run in a pod: an unnamed file in its scratch space, written
/// through one handle and uploaded from the other to `key` at the destination.
struct KeptReport {
    writer: std::fs::File,
    reader: std::fs::File,
    key: String,
}

/// A file for the per-object report; `None` for a dry run, which changes nothing at the
/// destination (its counts are in the job's status).
fn keep_report(plan: &RunnerPlan, scratch: &Path) -> Result<Option<KeptReport>, String> {
    if plan.spec.dry_run {
        return Ok(None);
    }
    let unavailable = |error: std::io::Error| format!("{}: {error}", scratch.display());
    let writer = tempfile::tempfile_in(scratch).map_err(unavailable)?;
    let reader = writer.try_clone().map_err(unavailable)?;
    Ok(Some(KeptReport { writer, reader, key: report_key(&plan.job, plan.attempt, plan.shard.index) }))
}

/// Uploads the report and returns its record count, or `None` (logged) when it could not be left.
async fn leave_report(destination: &storage::Store, key: &str, file: std::fs::File, records: u64) -> Option<u64> {
    match crate::report_upload::upload(destination, key, file).await {
        Ok(()) => Some(records),
        Err(error) => {
            eprintln!("ferry-runner: the per-object report was not left at the destination ({key}): {error}");
            None
        }
    }
}

/// Why the plan cannot be used.
enum PlanError {
    /// It cannot be read or parsed.
    Unreadable(String),
    /// It is not the plan the operator launched this attempt with.
    NotTheOperators(String),
}

/// Reads the plan and checks it against the digest the operator put beside the tokens.
fn read_plan(path: &Path, credentials: &Path) -> Result<RunnerPlan, PlanError> {
    let bytes = std::fs::read(path)
        .map_err(|e| PlanError::Unreadable(format!("cannot read the plan {}: {e}", path.display())))?;
    let expected = read_token(credentials, PLAN_DIGEST_FILE).map_err(|message| {
        PlanError::NotTheOperators(format!("{message}: without the operator's digest the plan cannot be trusted"))
    })?;
    if plan_digest(&bytes) != expected.as_str() {
        return Err(PlanError::NotTheOperators(format!(
            "the plan {} is not the one the operator launched this attempt with (its digest differs from {PLAN_DIGEST_FILE}); \
             someone changed the attempt's ConfigMap",
            path.display()
        )));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| PlanError::Unreadable(format!("the plan {} is not a runner plan: {e}", path.display())))
}

/// The deletion gate of a shard in a cluster: the operator, which sees every shard, decides.
fn ask_operator(reporter: Arc<Reporter>, accounting: Arc<Accounting>) -> DeletionGate {
    DeletionGate::Operator(Box::new(move |pending| {
        let (reporter, accounting) = (reporter.clone(), accounting.clone());
        Box::pin(async move {
            *reporter.deletions.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(pending);
            let report = reporter.report(Stage::AwaitingDeletion, accounting.snapshot(), Some(&accounting), None);
            let Some(poster) = &reporter.poster else { return Err("no progress API to ask".to_owned()) };
            poster.ask(&report).await.map(|answer| answer.deletion)
        })
    }))
}

fn outcome_reason(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Aborted { reason } | Outcome::SecurityViolation { reason } => reason,
        _ => "",
    }
}

/// Each binding's store for a rotated refresh token, where the plan hands it a write token:
/// unwrapped once, checked like the reads. A token that cannot be trusted stops the attempt;
/// one that merely cannot be had leaves a rotated token to serve this run only, said loudly.
async fn write_tokens(
    plan: &RunnerPlan,
    options: &ClusterOptions,
) -> Result<[Option<Arc<RotatedTokenToVault>>; 2], (ExitStatus, Outcome)> {
    let expires_at = plan.credentials_expire_at.as_deref().and_then(|text| text.parse::<jiff::Timestamp>().ok());
    let mut writers = [None, None];
    for (slot, binding, file) in
        [(0, &plan.source, SOURCE_ROTATION_TOKEN_FILE), (1, &plan.destination, DESTINATION_ROTATION_TOKEN_FILE)]
    {
        let (Some(_), Some(reference), Some(vault)) =
            (&binding.rotation_creation_path, &binding.spec.vault, plan.vault_address.as_deref())
        else {
            continue;
        };
        let unwrapped = match read_token(&options.credentials, file) {
            Ok(token) => unwrap_write_token(vault, options.vault_ca.as_deref(), binding, token, expires_at).await,
            Err(message) => {
                eprintln!(
                    "ferry-runner: binding {}: no write token ({message}); a rotated refresh token serves this run only",
                    binding.name
                );
                continue;
            }
        };
        let token = match unwrapped {
            Ok(token) => token,
            Err(error) if error.is_security_violation() => {
                return Err((ExitStatus::SecurityViolation, Outcome::SecurityViolation { reason: error.to_string() }));
            }
            Err(error) => {
                eprintln!("ferry-runner: {error}; a rotated refresh token serves this run only");
                continue;
            }
        };
        match crate::vault::client_with_token(vault, &token, options.vault_ca.as_deref()) {
            Ok(client) => writers[slot] = Some(Arc::new(RotatedTokenToVault::new(client, &binding.name, reference))),
            Err(error) => eprintln!(
                "ferry-runner: binding {}: {error}; a rotated refresh token serves this run only",
                binding.name
            ),
        }
    }
    Ok(writers)
}

fn read_token(directory: &Path, name: &str) -> Result<Zeroizing<String>, String> {
    let path = directory.join(name);
    let bytes = Zeroizing::new(std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?);
    let text = std::str::from_utf8(&bytes).map_err(|_| format!("{} is not text", path.display()))?;
    Ok(Zeroizing::new(text.trim().to_owned()))
}

type Credentials = (Option<SecretFields>, Option<SecretFields>);

/// Unwraps each binding's token; a token that cannot be trusted stops the attempt loudly.
async fn unwrap_both(plan: &RunnerPlan, options: &ClusterOptions) -> Result<Credentials, (ExitStatus, Outcome)> {
    let expires_at = plan.credentials_expire_at.as_deref().and_then(|text| text.parse::<jiff::Timestamp>().ok());
    let source = match unwrap_one(plan, &plan.source, SOURCE_TOKEN_FILE, expires_at, options).await {
        Ok(source) => source,
        Err(failure) => {
            // The attempt is over: use up the destination's token too, so no one else can.
            discard(plan, &plan.destination, DESTINATION_TOKEN_FILE, options).await;
            return Err(failure);
        }
    };
    let destination = unwrap_one(plan, &plan.destination, DESTINATION_TOKEN_FILE, expires_at, options).await?;
    Ok((source, destination))
}

/// Unwraps a binding's token and drops what it held at once (zeroized): a runner cannot
/// revoke a wrapping token by accessor, but using it up leaves nothing for anyone else.
async fn discard(plan: &RunnerPlan, binding: &PlannedBinding, file: &str, options: &ClusterOptions) {
    let (Some(_), Some(vault)) = (&binding.spec.vault, plan.vault_address.as_deref()) else { return };
    let Ok(token) = read_token(&options.credentials, file) else { return };
    match unwrap_credentials(vault, options.vault_ca.as_deref(), binding, token, None).await {
        Ok(fields) => drop(fields),
        Err(error) => eprintln!("ferry-runner: could not use up binding {}'s unused token: {error}", binding.name),
    }
}

async fn unwrap_one(
    plan: &RunnerPlan,
    binding: &PlannedBinding,
    file: &str,
    expires_at: Option<jiff::Timestamp>,
    options: &ClusterOptions,
) -> Result<Option<SecretFields>, (ExitStatus, Outcome)> {
    let cannot_start = |reason: String| (ExitStatus::CannotStart, Outcome::Aborted { reason });
    if binding.spec.vault.is_none() {
        return Ok(None);
    }
    let vault = plan
        .vault_address
        .as_deref()
        .ok_or_else(|| cannot_start(format!("binding {}: the plan names no Vault address", binding.name)))?;
    let token = read_token(&options.credentials, file).map_err(cannot_start)?;
    match unwrap_credentials(vault, options.vault_ca.as_deref(), binding, token, expires_at).await {
        Ok(fields) => Ok(Some(fields)),
        Err(error) if error.is_security_violation() => {
            Err((ExitStatus::SecurityViolation, Outcome::SecurityViolation { reason: error.to_string() }))
        }
        Err(error) => Err(cannot_start(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use ferry_api::ObjectFailure;
    use ferry_api::contract::Shard;

    use super::*;

    #[test]
    fn termination_messages_fit_by_dropping_failures_first() {
        let failure = ObjectFailure { path: "p".repeat(200), reason: "r".repeat(200) };
        let report = ProgressReport {
            job_uid: "u".into(),
            attempt: 1,
            shard: Shard::WHOLE,
            sequence: 3,
            stage: Stage::Finished,
            progress: Progress { objects_failed: 30, ..Default::default() },
            recent_failures: vec![failure; 30],
            outcome: Some(Outcome::ObjectsFailed),
            deletions: None,
            report_objects: None,
        };
        let message = termination_message(&report);
        assert!(message.len() <= TERMINATION_MESSAGE_LIMIT);
        let back: ProgressReport = serde_json::from_str(&message).unwrap();
        assert_eq!(back.outcome, Some(Outcome::ObjectsFailed));
        assert!(!back.recent_failures.is_empty() && back.recent_failures.len() < 30);
    }
}
