//! One OpenDAL operator per side of a job, built from a binding and its secret, with
//! tracing, timeout, retry and bandwidth behaviour added as layers. The engine sees only a [`Store`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_api::{CredentialBindingSpec, Provider};
use opendal::Operator;
use opendal::layers::{PrometheusLayer, RetryLayer, ThrottleLayer, TimeoutLayer, TracingLayer};

use crate::backends::oauth::RotationStore;
use crate::backends::server_side_copy::ServerSideAccount;
use crate::backends::streaming_put::StreamingPut;
use crate::backends::{self, Backend, BackendInput, Capabilities};
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
    pub capabilities: Capabilities,
    /// The directory behind a filesystem store, for listing and copying without OpenDAL.
    pub local_root: Option<PathBuf>,
    /// A bandwidth limit applies (in the operator's layers, so paths around it must not run).
    pub throttled: bool,
    /// Uploads over one part, for providers that take an upload only in one request.
    pub streaming_put: Option<std::sync::Arc<StreamingPut>>,
    /// The account behind the bucket or container, for copies on the server.
    pub server_side_copy: Option<std::sync::Arc<ServerSideAccount>>,
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
    #[error("binding {binding}: provider {provider} is not supported by this runner yet")]
    Unsupported {
        /// The binding.
        binding: String,
        /// Its provider.
        provider: Provider,
    },
    /// The provider's settings cannot be used.
    #[error("binding {binding}: {message}")]
    InvalidSettings {
        /// The binding.
        binding: String,
        /// What is wrong.
        message: String,
    },
    /// The binding lacks its provider's settings block.
    #[error("binding {binding}: spec.{block} is missing; a {block} binding needs its settings there")]
    MissingSettings {
        /// The binding.
        binding: String,
        /// The block, named after the provider.
        block: &'static str,
    },
    /// `fs.root` is relative and there is no manifest directory to resolve it against.
    #[error("binding {binding}: spec.fs.root {root:?} is relative; write an absolute path")]
    RelativeRoot {
        /// The binding.
        binding: String,
        /// The root as written.
        root: String,
    },
    /// The credential was refused when exchanged for a token.
    #[error("binding {binding}: {message}")]
    CredentialRefused {
        /// The binding.
        binding: String,
        /// Why, and what to do.
        message: String,
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

/// Builds the store for one side of a job, and proves a credential that is exchanged for
/// tokens (before any listing, so a refused one stops the run with its reason).
pub async fn open(
    binding: &str,
    spec: &CredentialBindingSpec,
    secret: Option<&SecretFields>,
    manifest_directory: Option<&Path>,
    rotation: Option<std::sync::Arc<dyn RotationStore>>,
    path: &str,
    options: StoreOptions,
) -> Result<Store, StorageError> {
    let input = BackendInput { binding, spec, secret, manifest_directory, rotation };
    let Backend { operator, capabilities, local_root, streaming_put, server_side_copy, credential_check } =
        backends::build(&input)?;
    if let Some(check) = credential_check {
        check
            .check()
            .await
            .map_err(|message| StorageError::CredentialRefused { binding: binding.to_owned(), message })?;
    }
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
    let streaming_put = streaming_put.map(std::sync::Arc::new);
    Ok(Store {
        binding: binding.to_owned(),
        operator,
        base: base_prefix(path),
        capabilities,
        local_root,
        throttled,
        streaming_put,
        server_side_copy: server_side_copy.map(std::sync::Arc::new),
    })
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
}
