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
                  4 could not start (storage, Vault or spool unavailable)."
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
        Command::Run { files, report, dry_run, json, shard, spool_dir } => {
            let spool_directory = spool_dir.unwrap_or_else(std::env::temp_dir);
            runtime.block_on(ferry_runner::run::run(RunOptions {
                files,
                report,
                dry_run,
                json,
                shard,
                spool_directory,
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
