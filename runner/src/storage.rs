//! One OpenDAL operator per side of a job, built from a binding and its secret, with
//! tracing, timeout, retry and bandwidth behaviour added as layers. The engine sees only a [`Store`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_api::{CredentialBindingSpec, Provider};
use opendal::Operator;
use opendal::layers::{PrometheusLayer, RetryLayer, ThrottleLayer, TimeoutLayer, TracingLayer};

use crate::secrets::SecretFields;

/// Where Ferry stages filesystem writes so a half-written file never appears at its final
/// path; it lives inside the binding's root (same filesystem, so the final rename is atomic).
/// Source keys inside it are refused (`destination_path`).
pub const PARTIAL_DIRECTORY: &str = ".ferry-partial/";

/// A storage location as the engine sees it.
#[derive(Clone, Debug)]
pub struct Store {
    /// The binding's name, for messages.
    pub binding: String,
    /// The configured operator.
    pub operator: Operator,
    /// The job's path inside the binding: `""` or ending with `/`.
    pub base: String,
    /// What the engine may rely on.
    pub traits: StoreTraits,
    /// The directory behind a filesystem store, for listing and copying without OpenDAL.
    pub local_root: Option<PathBuf>,
    /// A bandwidth limit applies (in the operator's layers, so paths around it must not run).
    pub throttled: bool,
}

/// The few facts about a backend that the engine's decisions depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreTraits {
    /// Reading costs no network transfer (a filesystem): content can be hashed cheaply.
    pub local: bool,
    /// A recursive listing comes back in byte order of the keys.
    pub sorted_listing: bool,
    /// ETags of single-part uploads are the content's MD5, and multipart ETags follow S3's formula.
    pub md5_etags: bool,
}

/// Settings that apply to every store of a run.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Bytes per second for writes; `None` for unlimited.
    pub bandwidth: Option<u64>,
    /// The multipart part size.
    pub part_size: usize,
    /// Per-operation Prometheus metrics (local runs with `--metrics-listen`).
    pub metrics: Option<PrometheusLayer>,
}

/// Why a store could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The binding's secret lacks a field its provider needs.
    #[error(
        "binding {binding}: the Vault secret has no field {field:?}; add it to the secret at the path spec.vault names"
    )]
    MissingField {
        /// The binding.
        binding: String,
        /// The missing field.
        field: &'static str,
    },
    /// The binding needs credentials but none were resolved.
    #[error("binding {binding}: provider {provider} needs credentials from Vault; set VAULT_ADDR and VAULT_TOKEN")]
    NoCredentials {
        /// The binding.
        binding: String,
        /// Its provider.
        provider: Provider,
    },
    /// This build of the runner cannot reach the provider yet.
    #[error("binding {binding}: provider {provider} is not supported by this runner yet; supported: fs, s3")]
    Unsupported {
        /// The binding.
        binding: String,
        /// Its provider.
        provider: Provider,
    },
    /// `fs.root` is relative and there is no manifest directory to resolve it against.
    #[error("binding {binding}: spec.fs.root {root:?} is relative; write an absolute path")]
    RelativeRoot {
        /// The binding.
        binding: String,
        /// The root as written.
        root: String,
    },
    /// OpenDAL refused the configuration.
    #[error("binding {binding}: {source}")]
    Build {
        /// The binding.
        binding: String,
        /// OpenDAL's error.
        source: opendal::Error,
    },
}

/// Normalizes a job path into a prefix: `""` or `dir/`.
pub fn base_prefix(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() { String::new() } else { format!("{trimmed}/") }
}

/// Builds the store for one side of a job.
pub fn open(
    binding: &str,
    spec: &CredentialBindingSpec,
    secret: Option<&SecretFields>,
    manifest_directory: Option<&Path>,
    path: &str,
    options: StoreOptions,
) -> Result<Store, StorageError> {
    let build = |source| StorageError::Build { binding: binding.to_owned(), source };
    let mut local_root = None;
    let (operator, traits) = match (spec.provider, &spec.fs, &spec.s3) {
        (Provider::Fs, Some(fs), _) => {
            let root = resolve_root(binding, &fs.root, manifest_directory)?;
            // No OpenDAL writes reach a filesystem: its writer follows links under the root,
            // so Ferry writes through `safe_fs` (staged in `PARTIAL_DIRECTORY`) instead.
            let builder = opendal::services::Fs::default().root(&root.to_string_lossy());
            let traits = StoreTraits { local: true, sorted_listing: false, md5_etags: false };
            local_root = Some(root.clone());
            (Operator::new(builder).map_err(build)?, traits)
        }
        (Provider::S3, _, Some(s3)) => {
            let secret = secret
                .ok_or_else(|| StorageError::NoCredentials { binding: binding.to_owned(), provider: spec.provider })?;
            let field = |name: &'static str| {
                secret.get(name).ok_or(StorageError::MissingField { binding: binding.to_owned(), field: name })
            };
            let mut builder = opendal::services::S3::default()
                .bucket(&s3.bucket)
                .region(&s3.region)
                .access_key_id(field("accessKeyId")?)
                .secret_access_key(field("secretAccessKey")?)
                .disable_config_load()
                .disable_ec2_metadata();
            if let Some(token) = secret.get("sessionToken") {
                builder = builder.session_token(token);
            }
            if let Some(endpoint) = &s3.endpoint {
                builder = builder.endpoint(endpoint);
            }
            if !s3.force_path_style {
                builder = builder.enable_virtual_host_style();
            }
            opendal::install_default();
            let traits = StoreTraits { local: false, sorted_listing: true, md5_etags: true };
            (Operator::new(builder).map_err(build)?, traits)
        }
        (provider, _, _) => return Err(StorageError::Unsupported { binding: binding.to_owned(), provider }),
    };
    // Tracing innermost, so every retried attempt shows as its own span (FERRY_LOG=opendal=debug).
    let mut operator = operator
        .layer(TracingLayer::new())
        .layer(TimeoutLayer::new().with_timeout(Duration::from_secs(60)).with_io_timeout(Duration::from_secs(120)))
        .layer(
            RetryLayer::new()
                .with_max_times(4)
                .with_jitter()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(10)),
        );
    if let Some(metrics) = options.metrics {
        // Outside the retries: one sample per operation the engine asked for.
        operator = operator.layer(metrics);
    }
    if let Some(bandwidth) = options.bandwidth {
        // OpenDAL throttles writes; a burst must hold a whole part.
        let rate = u32::try_from(bandwidth).unwrap_or(u32::MAX).max(1);
        let burst = u32::try_from(options.part_size).unwrap_or(u32::MAX).max(rate);
        operator = operator.layer(ThrottleLayer::new(rate, burst));
    }
    let throttled = options.bandwidth.is_some();
    Ok(Store { binding: binding.to_owned(), operator, base: base_prefix(path), traits, local_root, throttled })
}

fn resolve_root(binding: &str, root: &str, manifest_directory: Option<&Path>) -> Result<PathBuf, StorageError> {
    if let Some(relative) = root.strip_prefix("./") {
        let directory = manifest_directory
            .ok_or_else(|| StorageError::RelativeRoot { binding: binding.to_owned(), root: root.to_owned() })?;
        let joined = directory.join(relative);
        return Ok(std::path::absolute(&joined).unwrap_or(joined));
    }
    Ok(PathBuf::from(root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_paths_become_prefixes() {
        assert_eq!(base_prefix(""), "");
        assert_eq!(base_prefix("/"), "");
        assert_eq!(base_prefix("reports"), "reports/");
        assert_eq!(base_prefix("imported/reports/"), "imported/reports/");
    }

    #[test]
    fn relative_roots_need_a_manifest_directory() {
        assert!(resolve_root("b", "./data", None).is_err());
        assert_eq!(resolve_root("b", "./data", Some(Path::new("/m"))).unwrap(), PathBuf::from("/m/data"));
        assert_eq!(resolve_root("b", "/abs", None).unwrap(), PathBuf::from("/abs"));
    }
}
