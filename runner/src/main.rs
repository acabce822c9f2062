//! `ferry-runner`: runs a Ferry migration job on this machine.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferry_api::contract::Shard;
use ferry_runner::run::{ExitStatus, RunOptions};

/// Moves and verifies objects between storage providers, as a Ferry MigrationJob describes.
#[derive(Parser, Debug)]
#[command(
    name = "ferry-runner",
    version,
    after_help = "Exit codes: 0 every selected object verified; 1 some objects failed or the run stopped early; \
                  2 invalid manifests or flags (nothing touched); 3 interrupted (run again to resume); \
                  4 could not start (storage, Vault or spool unavailable); 5 credentials refused for security \
                  (a wrapping token already used, or not created by the read the plan names)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a MigrationJob manifest locally (bindings from the same or other -f files).
    Run {
        /// A manifest file or a directory of them; repeat for several.
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
        /// Write a JSON Lines record per object here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Decide and report what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print progress reports as JSON lines on stdout.
        #[arg(long)]
        json: bool,
        /// Move only shard INDEX of COUNT (written INDEX/COUNT, such as 0/4).
        #[arg(long, value_parser = Shard::parse, default_value = "0/1")]
        shard: Shard,
        /// Where the encrypted spool directory is created.
        #[arg(long, env = "FERRY_SPOOL_DIR")]
        spool_dir: Option<PathBuf>,
        /// Serve Prometheus metrics at http://ADDRESS/metrics while the run lasts.
        #[arg(long, env = "FERRY_METRICS_LISTEN", value_name = "ADDRESS")]
        metrics_listen: Option<std::net::SocketAddr>,
    },
    /// Run one attempt of one shard as a runner pod does: plan and tokens from files, progress to the operator.
    Cluster {
        /// The runner plan (JSON) the operator wrote.
        #[arg(long, env = "FERRY_PLAN", default_value = "/etc/ferry/plan/plan.json")]
        plan: PathBuf,
        /// The directory holding the wrapping tokens and the progress token.
        #[arg(long, env = "FERRY_CREDENTIALS_DIR", default_value = "/etc/ferry/credentials")]
        credentials: PathBuf,
        /// Where the encrypted spool directory is created.
        #[arg(long, env = "FERRY_SPOOL_DIR", default_value = "/spool")]
        spool_dir: PathBuf,
        /// Where the final report is left for Kubernetes (the termination message).
        #[arg(long, env = "FERRY_TERMINATION_LOG")]
        termination_log: Option<PathBuf>,
        /// PEM CA bundle that signed the progress API's certificate.
        #[arg(long, env = "FERRY_PROGRESS_CA")]
        progress_ca: Option<PathBuf>,
        /// PEM CA bundle that signed Vault's certificate.
        #[arg(long, env = "FERRY_VAULT_CA")]
        vault_ca: Option<PathBuf>,
    },
    /// Validate manifests as the API server would, and print every problem.
    Validate {
        /// A manifest file or a directory of them; repeat for several.
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { ExitStatus::InvalidInput as u8 } else { 0 });
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ferry-runner: cannot start the async runtime: {error}");
            return ExitCode::from(ExitStatus::CannotStart as u8);
        }
    };
    let status = match cli.command {
        Command::Run { files, report, dry_run, json, shard, spool_dir, metrics_listen } => {
            let spool_directory = spool_dir.unwrap_or_else(std::env::temp_dir);
            runtime.block_on(ferry_runner::run::run(RunOptions {
                files,
                report,
                dry_run,
                json,
                shard,
                spool_directory,
                metrics_listen,
            }))
        }
        Command::Cluster { plan, credentials, spool_dir, termination_log, progress_ca, vault_ca } => {
            runtime.block_on(ferry_runner::cluster::run(ferry_runner::cluster::ClusterOptions {
                plan,
                credentials,
                spool_directory: spool_dir,
                termination_log,
                progress_ca,
                vault_ca,
            }))
        }
        Command::Validate { files } => match ferry_runner::manifest::load(&files) {
            Ok(documents) => {
                println!(
                    "valid: MigrationJob {} and {} bindings",
                    documents.job.metadata.name.unwrap_or_default(),
                    documents.bindings.len()
                );
                ExitStatus::Success
            }
            Err(error) => {
                eprintln!("ferry-runner: {error}");
                ExitStatus::InvalidInput
            }
        },
    };
    ExitCode::from(status as u8)
}
