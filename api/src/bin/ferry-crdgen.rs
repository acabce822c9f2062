//! Writes the CRDs from `api/` into `crds/` (or the directory given as the only argument).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let directory = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds"));
    for (file, crd) in ferry_api::crd::definitions() {
        let path = directory.join(file);
        let written = ferry_api::crd::to_yaml(&crd)
            .map_err(|error| error.to_string())
            .and_then(|yaml| std::fs::write(&path, yaml).map_err(|error| error.to_string()));
        if let Err(error) = written {
            eprintln!("ferry-crdgen: cannot write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
