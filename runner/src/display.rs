//! What a person (or a program) sees while a run goes: a progress bar on a terminal, a line
//! every few seconds on a pipe, JSON progress reports with `--json`; and the final summary.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use ferry_api::Progress;
use ferry_api::contract::{Outcome, ProgressReport, Shard, Stage};
use ferry_api::status::human_bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use crate::accounting::Accounting;
use crate::engine::Summary;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// A progress bar (stderr is a terminal).
    Bar,
    /// A line every few seconds on stderr.
    Lines,
    /// JSON progress reports on stdout.
    Json,
}

impl Style {
    /// Picks the style for this process.
    pub fn detect(json: bool) -> Self {
        if json {
            Self::Json
        } else if std::io::stderr().is_terminal() {
            Self::Bar
        } else {
            Self::Lines
        }
    }
}

/// One line of counts.
pub fn describe(progress: &Progress) -> String {
    let eta = progress.eta_seconds.map(|s| format!(", ETA {s}s")).unwrap_or_default();
    format!(
        "{}/{} objects verified ({} skipped, {} failed), {}/{} verified, {}/s{eta}",
        progress.objects_verified,
        progress.objects_total,
        progress.objects_skipped,
        progress.objects_failed,
        human_bytes(progress.bytes_verified),
        human_bytes(progress.bytes_total),
        human_bytes(progress.bytes_per_second),
    )
}

/// Shows progress until `done` turns true.
pub async fn show(
    style: Style,
    accounting: Arc<Accounting>,
    job_uid: String,
    shard: Shard,
    mut done: watch::Receiver<bool>,
) {
    let (every, bar) = match style {
        Style::Bar => {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            let template = "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}";
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            (Duration::from_millis(200), Some(bar))
        }
        Style::Lines => (Duration::from_secs(5), None),
        Style::Json => (Duration::from_secs(2), None),
    };
    let mut sequence = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = done.changed() => break,
        }
        let progress = accounting.snapshot();
        sequence += 1;
        match (&bar, style) {
            (Some(bar), _) => {
                bar.set_length(progress.bytes_total);
                bar.set_position(progress.bytes_verified);
                bar.set_message(format!("{}/{} objects", progress.objects_verified, progress.objects_total));
            }
            (None, Style::Json) => {
                let report = ProgressReport {
                    job_uid: job_uid.clone(),
                    attempt: 1,
                    shard,
                    sequence,
                    stage: Stage::Copying,
                    progress,
                    recent_failures: accounting.first_failures(),
                    outcome: None,
                    deletions: None,
                    report_objects: None,
                };
                if let Ok(line) = serde_json::to_string(&report) {
                    println!("{line}");
                }
            }
            _ => eprintln!("ferry: {}", describe(&progress)),
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

/// The final report: a table for people, or the last JSON progress report.
pub fn summary(
    style: Style,
    summary: &Summary,
    job_uid: &str,
    shard: Shard,
    seconds: f64,
    report: Option<&std::path::Path>,
) {
    let progress = &summary.progress;
    if style == Style::Json {
        let report = ProgressReport {
            job_uid: job_uid.to_owned(),
            attempt: 1,
            shard,
            sequence: u64::MAX / 2,
            stage: Stage::Finished,
            progress: progress.clone(),
            recent_failures: Vec::new(),
            outcome: Some(summary.outcome.clone()),
            deletions: None,
            report_objects: None,
        };
        if let Ok(line) = serde_json::to_string(&report) {
            println!("{line}");
        }
        return;
    }
    let outcome = match &summary.outcome {
        Outcome::Succeeded => "succeeded: every selected object is verified at the destination".to_owned(),
        Outcome::ObjectsFailed => format!("{} objects failed (see the report)", progress.objects_failed),
        Outcome::Aborted { reason } => format!("stopped: {reason}"),
        Outcome::SecurityViolation { reason } => format!("refused for security: {reason}"),
        Outcome::CredentialsRevoked { reason } => format!("credentials refused: {reason}"),
        Outcome::Interrupted => "interrupted: run the same command again to resume".to_owned(),
    };
    println!("Ferry run summary");
    println!("  outcome    {outcome}");
    println!(
        "  objects    {} listed, {} copied, {} skipped, {} verified, {} failed, {} deleted",
        progress.objects_total,
        progress.objects_copied,
        progress.objects_skipped,
        progress.objects_verified,
        progress.objects_failed,
        progress.objects_deleted
    );
    println!(
        "  bytes      {} listed, {} copied, {} verified",
        human_bytes(progress.bytes_total),
        human_bytes(progress.bytes_copied),
        human_bytes(progress.bytes_verified)
    );
    if summary.would_copy + summary.would_delete > 0 {
        println!("  dry run    would copy {}, would delete {}", summary.would_copy, summary.would_delete);
    }
    println!("  time       {seconds:.1}s");
    if let Some(report) = report {
        println!("  report     {}", report.display());
    }
}
