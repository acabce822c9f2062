//! The progress API: runners post verified progress here, and it reaches job status at a bounded rate.
//!
//! `hub` authenticates and keeps the latest report per shard, `server` is the HTTPS front end
//! (`tls_reload` keeps its certificate current), `status_writer` copies the hub's state into `MigrationJob` status without flooding the API server.

use std::fmt;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

mod attempt;
mod hub;
mod server;
mod status_writer;
mod tls_reload;

pub use attempt::AttemptProgress;
pub use hub::{Accepted, AttemptLookup, Credential, CurrentAttempt, LookupError, ProgressHub, Rejection};
pub use server::{
    IDLE_TIMEOUT, Limits, MAX_CONNECTIONS, MAX_REPORT_BYTES, ProgressServerError, TlsFiles, serve, serve_with_limits,
};
pub use status_writer::{
    DEFAULT_STATUS_INTERVAL, KubeStatusSink, MAX_STATUS_FAILURES, ProgressStatus, StatusSink, StatusSinkError,
    StatusWriter,
};
pub use tls_reload::TLS_RELOAD_INTERVAL;

/// A job by namespace and name, as the progress URL names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKey {
    /// The job's namespace.
    pub namespace: String,
    /// The job's name.
    pub name: String,
}

impl JobKey {
    /// A key from borrowed parts.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self { namespace: namespace.to_owned(), name: name.to_owned() }
    }
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The system's random source failed, so no token could be made.
#[derive(Debug, thiserror::Error)]
#[error("generating a progress token: the system random source failed: {0}")]
pub struct TokenError(String);

/// A fresh per-attempt token: 32 random bytes, hex-encoded. Hand it to the runner and keep
/// only [`token_hash`] of it.
pub fn new_attempt_token() -> Result<Zeroizing<String>, TokenError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut_slice()).map_err(|error| TokenError(error.to_string()))?;
    Ok(Zeroizing::new(hex::encode(bytes.as_slice())))
}

/// SHA-256 of a token: what the operator stores and compares instead of the token itself.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fresh_hex_and_hash_stably() {
        let a = new_attempt_token().unwrap();
        let b = new_attempt_token().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_ne!(*a, *b);
        assert_eq!(token_hash(&a), token_hash(&a.clone()));
        assert_ne!(token_hash(&a), token_hash(&b));
    }
}
