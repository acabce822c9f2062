//! `ferry-operator`: not runnable yet; the controllers arrive with the operator issue.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("ferry-operator: not yet implemented; run migrations locally with `ferry-runner run`");
    ExitCode::FAILURE
}
