//! The controllers' errors. Each becomes a condition reason on the object and a requeue
//! with backoff, never only a log line.

use crate::progress::TokenError;
use crate::vault::VaultError;

/// Why a reconcile pass failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Vault refused or failed a request.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// A binding needs Vault but the operator has none configured.
    #[error("CredentialBinding {0} keeps its credentials in Vault, but the operator has no VAULT_ADDR")]
    VaultNotConfigured(String),
    /// No random token could be made.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// An object could not be serialized.
    #[error("serializing {0}: {1}")]
    Serialize(&'static str, serde_json::Error),
    /// The object has no namespace or UID (it was not read from the API server).
    #[error("{0} has no namespace or UID")]
    Incomplete(String),
    /// An attempt could not be launched; the job already shows why (Waiting, with the reason).
    #[error("cannot launch attempt {attempt}: {source}")]
    Launch {
        /// The attempt.
        attempt: u32,
        /// Why.
        source: Box<Error>,
    },
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube(_) => "KubernetesApiError",
            Self::Vault(error) => error.reason(),
            Self::VaultNotConfigured(_) => "VaultNotConfigured",
            Self::Token(_) => "RandomSourceFailed",
            Self::Serialize(..) | Self::Incomplete(_) => "InternalError",
            Self::Finalizer(_) => "FinalizerError",
            Self::Launch { source, .. } => source.reason(),
        }
    }
}

/// An error and its sources on one line, for logs and conditions (sources here hold paths,
/// URLs and causes, never secrets).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
