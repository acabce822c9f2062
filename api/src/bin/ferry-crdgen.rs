//! Writes the CRDs from `api/` into `crds/` and the Helm chart's `charts/ferry/crds/` (or
//! into the one directory given as the only argument).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let directories = match std::env::args_os().nth(1) {
        Some(directory) => vec![PathBuf::from(directory)],
        None => vec![root.join("crds"), root.join("charts/ferry/crds")],
    };
    for (directory, (file, crd)) in
        directories.iter().flat_map(|directory| ferry_api::crd::definitions().into_iter().map(move |d| (directory, d)))
    {
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
