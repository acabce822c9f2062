//! Loading a job and its bindings from manifest files, validated exactly as the API server
//! would validate them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferry_api::validate::{Manifest, ManifestError, parse_manifests};
use ferry_api::{CredentialBindingSpec, MigrationJob};

/// A job with the bindings it names.
#[derive(Debug)]
pub struct JobDocuments {
    /// The job.
    pub job: MigrationJob,
    /// Bindings by name, each with the directory of the file it came from.
    pub bindings: BTreeMap<String, (CredentialBindingSpec, PathBuf)>,
}

/// Why the manifests cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file is invalid.
    #[error("{path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: ManifestError,
    },
    /// There is not exactly one job.
    #[error("the files hold {0} MigrationJobs; give exactly one")]
    JobCount(usize),
    /// A binding the job names is missing.
    #[error("spec.{side}.binding: no CredentialBinding named {name:?} in the files given; add it with another -f")]
    MissingBinding {
        /// `source` or `destination`.
        side: &'static str,
        /// The name.
        name: String,
    },
    /// The same binding name appears twice.
    #[error("CredentialBinding {0:?} is defined twice")]
    DuplicateBinding(String),
}

/// Reads and validates every file (a directory means its `*.yaml` files).
pub fn load(paths: &[PathBuf]) -> Result<JobDocuments, LoadError> {
    let mut jobs = Vec::new();
    let mut bindings = BTreeMap::new();
    for path in expand(paths)? {
        let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Read { path: path.clone(), source })?;
        let directory = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let manifests = parse_manifests(&text).map_err(|source| LoadError::Invalid { path: path.clone(), source })?;
        for manifest in manifests {
            match manifest {
                Manifest::MigrationJob(job) => jobs.push(*job),
                Manifest::CredentialBinding(binding) => {
                    let name = binding.metadata.name.clone().unwrap_or_default();
                    if bindings.insert(name.clone(), (binding.spec, directory.clone())).is_some() {
                        return Err(LoadError::DuplicateBinding(name));
                    }
                }
            }
        }
    }
    if jobs.len() != 1 {
        return Err(LoadError::JobCount(jobs.len()));
    }
    let job = jobs.remove(0);
    for (side, name) in [("source", &job.spec.source.binding), ("destination", &job.spec.destination.binding)] {
        if !bindings.contains_key(name) {
            return Err(LoadError::MissingBinding { side, name: name.clone() });
        }
    }
    Ok(JobDocuments { job, bindings })
}

fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LoadError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|source| LoadError::Read { path: path.clone(), source })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}
