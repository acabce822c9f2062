//! `ferry-runner run`: a whole job on this machine, from manifests.

use std::path::PathBuf;
use std::sync::Arc;

use ferry_api::MigrationJobSpec;
use ferry_api::contract::{Outcome, Shard};
use tokio::sync::watch;

use crate::accounting::Accounting;
use crate::deletion_gate::DeletionGate;
use crate::display::{self, Style};
use crate::durability::Durability;
use crate::engine::{self, Run};
use crate::manifest::{self, JobDocuments};
use crate::metrics::RunnerMetrics;
use crate::report::ReportSink;
use crate::safe_fs::SafeRoot;
use crate::secrets::SecretFields;
use crate::server_side::ServerSide;
use crate::spool::Spool;
use crate::storage::{self, PARTIAL_DIRECTORY, Store, StoreOptions};
use crate::throttle::Throttle;
use crate::transfer::Transfers;

/// The multipart part size (S3's minimum is 5 MiB).
pub const PART_SIZE: usize = 8 << 20;
/// Spool size when the job does not set `runner.spoolSize`.
pub const DEFAULT_SPOOL: u64 = 1 << 30;
/// Memory for small objects between download and upload.
pub const MEMORY_BUDGET: u64 = 32 << 20;

/// Process exit codes, documented in `ferry-runner --help`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// Every selected object is verified.
    Success = 0,
    /// Some objects failed, or the run stopped early (failure budget, listing error, deletion guard).
    ObjectsFailed = 1,
    /// The manifests or flags are invalid; nothing was touched.
    InvalidInput = 2,
    /// Interrupted (Ctrl-C / SIGTERM); running again resumes.
    Interrupted = 3,
    /// The run could not start: storage, Vault or spool unavailable.
    CannotStart = 4,
    /// The credentials could not be trusted (a wrapping token already used, or from the wrong path).
    SecurityViolation = 5,
}

/// The options of `run`.
#[derive(Debug)]
pub struct RunOptions {
    /// Manifest files or directories.
    pub files: Vec<PathBuf>,
    /// Where to write the per-object report.
    pub report: Option<PathBuf>,
    /// Change nothing.
    pub dry_run: bool,
    /// Progress as JSON on stdout.
    pub json: bool,
    /// This runner's shard.
    pub shard: Shard,
    /// Where the spool directory goes.
    pub spool_directory: PathBuf,
    /// Serve Prometheus metrics here while the run lasts.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Runs a job and returns the exit status.
pub async fn run(options: RunOptions) -> ExitStatus {
    let documents = match manifest::load(&options.files) {
        Ok(documents) => documents,
        Err(error) => {
            eprintln!("ferry-runner: {error}");
            return ExitStatus::InvalidInput;
        }
    };
    let spec = documents.job.spec.clone();
    let style = Style::detect(options.json);
    let accounting = Arc::new(Accounting::default());
    let metrics = match options.metrics_listen {
        None => None,
        Some(address) => match start_metrics(address, accounting.clone()).await {
            Ok(metrics) => Some(metrics),
            Err(message) => {
                eprintln!("ferry-runner: {message}");
                return ExitStatus::CannotStart;
            }
        },
    };
    let mut store_options = store_options(&spec);
    store_options.metrics = metrics.as_ref().map(RunnerMetrics::layer);
    let (source, destination) = match open_stores(&documents, store_options).await {
        Ok(stores) => stores,
        Err(message) => {
            eprintln!("ferry-runner: {message}");
            return ExitStatus::CannotStart;
        }
    };
    let report = match options.report.as_deref().map(open_report).transpose() {
        Ok(report) => report,
        Err(message) => {
            eprintln!("ferry-runner: {message}");
            return ExitStatus::CannotStart;
        }
    };
    let (done_sender, done) = watch::channel(false);
    let job_uid = documents.job.metadata.uid.clone().unwrap_or_else(|| "local".to_owned());
    let display = tokio::spawn(display::show(style, accounting.clone(), job_uid.clone(), options.shard, done));
    let execution = Execution {
        dry_run: options.dry_run || spec.dry_run,
        spec,
        source,
        destination,
        shard: options.shard,
        spool_directory: options.spool_directory,
        report,
        deletion_gate: None,
    };
    let result = execute(execution, accounting.clone(), stop_on_signal()).await;
    let _ = done_sender.send(true);
    let _ = display.await;
    match result {
        Ok((summary, _)) => {
            let seconds = accounting.elapsed_seconds();
            display::summary(style, &summary, &job_uid, options.shard, seconds, options.report.as_deref());
            exit_status(&summary.outcome)
        }
        Err((status, message)) => {
            eprintln!("ferry-runner: {message}");
            status
        }
    }
}

/// Opens the report file for appending, so a rerun adds to what an interrupted run wrote.
fn open_report(path: &std::path::Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|error| format!("cannot write the report {}: {error}", path.display()))
}

/// The exit status an outcome maps to.
pub fn exit_status(outcome: &Outcome) -> ExitStatus {
    match outcome {
        Outcome::Succeeded => ExitStatus::Success,
        Outcome::Interrupted => ExitStatus::Interrupted,
        Outcome::ObjectsFailed | Outcome::Aborted { .. } => ExitStatus::ObjectsFailed,
        Outcome::SecurityViolation { .. } => ExitStatus::SecurityViolation,
        Outcome::CredentialsRevoked { .. } => ExitStatus::CannotStart,
    }
}

/// Store options from the job's spec.
pub fn store_options(spec: &MigrationJobSpec) -> StoreOptions {
    StoreOptions { bandwidth: spec.bandwidth_limit.as_ref().map(|q| q.bytes()), part_size: PART_SIZE, metrics: None }
}

async fn start_metrics(address: std::net::SocketAddr, accounting: Arc<Accounting>) -> Result<RunnerMetrics, String> {
    let metrics = RunnerMetrics::new().map_err(|e| format!("metrics: {e}"))?;
    let listener =
        tokio::net::TcpListener::bind(address).await.map_err(|e| format!("--metrics-listen {address}: {e}"))?;
    tokio::spawn(crate::metrics::serve(listener, metrics.clone(), accounting));
    Ok(metrics)
}

/// One attempt's work, whoever started it (the CLI or a runner pod).
pub struct Execution {
    /// The job's spec.
    pub spec: MigrationJobSpec,
    /// The source store.
    pub source: Arc<Store>,
    /// The destination store.
    pub destination: Arc<Store>,
    /// This runner's shard.
    pub shard: Shard,
    /// Change nothing.
    pub dry_run: bool,
    /// Where the spool directory is created.
    pub spool_directory: PathBuf,
    /// The file the per-object report is appended to.
    pub report: Option<std::fs::File>,
    /// Who decides whether a sync may delete; `None`: this run alone, by the job's rules.
    pub deletion_gate: Option<DeletionGate>,
}

/// Opens the spool, runs the engine, and flushes the report. Returns the summary and how many
/// records the report holds (`None` if writing it failed), or the exit status and message of a run that could not start.
pub async fn execute(
    execution: Execution,
    accounting: Arc<Accounting>,
    stop: watch::Receiver<bool>,
) -> Result<(crate::engine::Summary, Option<u64>), (ExitStatus, String)> {
    let Execution { spec, source, destination, shard, dry_run, spool_directory, report, deletion_gate } = execution;
    let deletion_gate = deletion_gate.unwrap_or(DeletionGate::Local { max_delete: spec.max_delete, shard });
    let spool_size = spec.runner.as_ref().and_then(|r| r.spool_size.as_ref()).map_or(DEFAULT_SPOOL, |q| q.bytes());
    let spool = Spool::open(&spool_directory, spool_size, MEMORY_BUDGET)
        .map_err(|error| (ExitStatus::CannotStart, error.to_string()))?;
    let (report, report_writer) = ReportSink::open(report);
    let upload_memory = Arc::new(tokio::sync::Semaphore::new(crate::transfer::UPLOAD_MEMORY_KIB));
    // A dry run changes nothing, so it neither creates the destination root nor opens it.
    let destination_root = match (&destination.local_root, dry_run) {
        (Some(root), false) => Some(Arc::new(SafeRoot::open(root).map_err(|error| {
            (ExitStatus::CannotStart, format!("cannot open the destination {}: {error}", root.display()))
        })?)),
        _ => None,
    };
    let durability = match &destination_root {
        Some(root) => Durability::for_directory(root.path()).map_err(|error| {
            (ExitStatus::CannotStart, format!("cannot open the destination {}: {error}", root.path().display()))
        })?,
        None => None,
    };
    // Other destinations are throttled in their OpenDAL layers, which streaming PUTs bypass.
    let throttled_here = destination_root.is_some() || destination.streaming_put.is_some();
    let throttle = (spec.bandwidth_limit.as_ref())
        .filter(|_| throttled_here)
        .map(|limit| Arc::new(Throttle::new(limit.bytes(), PART_SIZE as u64)));
    let server_side = ServerSide::between(&source, &destination).map(Arc::new);
    let transfers = Transfers {
        source,
        destination,
        spool,
        verify: spec.verify,
        part_size: PART_SIZE,
        attempts: 3,
        stop,
        upload_memory,
        durability,
        destination_root: destination_root.clone(),
        throttle,
        server_side,
    };
    if let Some(root) = &destination_root {
        let removed = root.remove_stale(PARTIAL_DIRECTORY, crate::local_copy::STALE_STAGED_AFTER);
        if removed > 0 {
            tracing::info!(removed, root = %root.path().display(), "removed staged files left by a killed run");
        }
    }
    // The spool's own private directory; the list inside it is an unnamed file.
    let scratch_directory = transfers.spool.directory().to_owned();
    let run = Run { transfers, spec, shard, dry_run, scratch_directory, deletion_gate };
    let result = engine::run(run, accounting, report).await;
    if let Some(root) = destination_root {
        // Empty once every copy is in place; files of another shard still running (or of a
        // killed run) keep it.
        root.remove_empty_directory(PARTIAL_DIRECTORY);
    }
    let records =
        report_writer.finish().await.map_err(|error| eprintln!("ferry-runner: writing the report failed: {error}"));
    let summary = result.map_err(|error| (ExitStatus::InvalidInput, error.to_string()))?;
    Ok((summary, records.ok()))
}

/// A stop signal that turns true on Ctrl-C or SIGTERM.
pub fn stop_on_signal() -> watch::Receiver<bool> {
    let (stop_sender, stop) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!("ferry-runner: stopping: aborting uploads in flight and flushing the report");
        let _ = stop_sender.send(true);
    });
    stop
}

async fn open_stores(documents: &JobDocuments, options: StoreOptions) -> Result<(Arc<Store>, Arc<Store>), String> {
    let spec = &documents.job.spec;
    let mut stores = Vec::new();
    for endpoint in [&spec.source, &spec.destination] {
        let (binding, directory) = &documents.bindings[&endpoint.binding];
        let secret = match &binding.vault {
            Some(reference) => Some(fetch_secret(&endpoint.binding, reference).await?),
            None => None,
        };
        // A local run writes a rotated refresh token back with its own Vault token.
        let rotation = match &binding.vault {
            Some(reference) => {
                let client = crate::vault::client_from_environment(&endpoint.binding).map_err(|e| e.to_string())?;
                let store = crate::vault::RotatedTokenToVault::new(client, &endpoint.binding, reference);
                Some(Arc::new(store) as Arc<dyn crate::backends::oauth::RotationStore>)
            }
            None => None,
        };
        let store = storage::open(
            &endpoint.binding,
            binding,
            secret.as_ref(),
            Some(directory),
            rotation,
            &endpoint.path,
            options.clone(),
        )
        .await
        .map_err(|error| error.to_string())?;
        stores.push(Arc::new(store));
    }
    let destination = stores.pop().ok_or("no destination")?;
    let source = stores.pop().ok_or("no source")?;
    Ok((source, destination))
}

async fn fetch_secret(
    binding: &str,
    reference: &ferry_api::binding::VaultSecretReference,
) -> Result<SecretFields, String> {
    let client = crate::vault::client_from_environment(binding).map_err(|e| e.to_string())?;
    crate::vault::read_secret(&client, binding, reference).await.map_err(|e| e.to_string())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
