//! `ferry-runner`: runs migrations (the engine lands with the runner issue).

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("ferry-runner: not yet implemented");
    ExitCode::from(2)
}
