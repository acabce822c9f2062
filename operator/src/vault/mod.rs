//! Vault (or OpenBao): operator authentication, binding checks and response-wrapped reads.
//!
//! `session` logs in and keeps the token alive, `binding_check` checks that a binding's
//! secret holds its provider's fields without keeping any value, and `wrap` asks Vault for
//! single-use wrapping tokens whose contents the operator never sees, and `revoke` revokes
//! the ones no runner used. `transport` sends one request and hands back the body in
//! zeroizing memory.

mod binding_check;
mod error;
mod revoke;
mod rotation;
mod session;
mod transport;
mod wrap;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use url::Url;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use zeroize::Zeroizing;

pub use binding_check::SecretCheck;
pub use error::VaultError;
pub use revoke::Revocation;
pub use rotation::{policy as write_token_policy, policy_name as write_token_policy_name};
pub use wrap::WrappedCredentials;

use crate::error::error_chain;
use error::json_problem;
use session::Session;
use transport::{Call, CallError};

/// A Kubernetes pod's own service account token, for [`VaultAuth::Kubernetes`].
pub const SERVICE_ACCOUNT_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// No single Vault request may hang the controllers for longer than this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where Vault is and how the operator logs in.
#[derive(Clone, Debug)]
pub struct VaultConfig {
    /// The server's address, such as `https://vault.vault.svc:8200`.
    pub address: Url,
    /// A PEM bundle of CAs to trust for an `https` address, instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// How to authenticate.
    pub auth: VaultAuth,
}

/// How the operator authenticates to Vault.
#[derive(Clone)]
pub enum VaultAuth {
    /// A token given directly (development).
    Token(Zeroizing<String>),
    /// The Kubernetes auth method with the pod's service account token.
    Kubernetes {
        /// The Vault role to log in as.
        role: String,
        /// The auth method's mount (usually `kubernetes`).
        mount: String,
        /// The service account token (JWT) file, read again at every login since it rotates.
        jwt_file: PathBuf,
    },
}

impl VaultAuth {
    /// Kubernetes auth with the default mount (`kubernetes`) and the pod's own token file.
    pub fn kubernetes(role: impl Into<String>) -> Self {
        Self::Kubernetes {
            role: role.into(),
            mount: "kubernetes".to_owned(),
            jwt_file: PathBuf::from(SERVICE_ACCOUNT_TOKEN_FILE),
        }
    }
}

impl fmt::Debug for VaultAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Never the token itself, not even a prefix.
            Self::Token(_) => f.write_str("Token(..)"),
            Self::Kubernetes { role, mount, jwt_file } => f
                .debug_struct("Kubernetes")
                .field("role", role)
                .field("mount", mount)
                .field("jwt_file", jwt_file)
                .finish(),
        }
    }
}

/// The operator's Vault client: cheap to clone, always using the latest token.
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

struct Inner {
    address: Url,
    http: rustify::clients::reqwest::Client,
    auth: VaultAuth,
    // Replaced whole on re-login or renewal; readers clone the Arc and never hold the lock
    // across an await.
    session: RwLock<Arc<Session>>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault").field("address", &self.inner.address.as_str()).field("auth", &self.inner.auth).finish()
    }
}

impl Vault {
    /// Logs in: a token is validated with lookup-self (learning its TTL); Kubernetes auth
    /// logs in with the service account token and the role.
    pub async fn connect(config: VaultConfig) -> Result<Vault, VaultError> {
        let http = http_client(&config)?;
        let session = Session::establish(&http, &config.address, &config.auth).await?;
        Ok(Vault {
            inner: Arc::new(Inner {
                address: config.address,
                http,
                auth: config.auth,
                session: RwLock::new(Arc::new(session)),
            }),
        })
    }

    /// The server's address, for the runner's plan.
    pub fn address(&self) -> &Url {
        &self.inner.address
    }

    fn session(&self) -> Arc<Session> {
        // A writer that panicked left a complete Arc behind: the data cannot be torn.
        let guard = self.inner.session.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(&guard)
    }

    fn replace_session(&self, session: Session) {
        let mut guard = self.inner.session.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = Arc::new(session);
    }

    /// Sends one request with the current token, optionally asking Vault to wrap the response.
    async fn send(&self, call: Call, wrap_ttl: Option<String>) -> Result<Zeroizing<Vec<u8>>, CallError> {
        let session = self.session();
        transport::send(&self.inner.http, session.token(), wrap_ttl, call).await
    }

    /// Whether Vault answers as a working server: `sys/health` says it is initialized and
    /// unsealed (a standby node answers for its active one).
    pub async fn answers(&self) -> bool {
        self.send(Call::get("sys/health?standbyok=true&perfstandbyok=true"), None).await.is_ok()
    }

    fn address_text(&self) -> String {
        self.inner.address.as_str().trim_end_matches('/').to_owned()
    }
}

fn http_client(config: &VaultConfig) -> Result<rustify::clients::reqwest::Client, VaultError> {
    if !matches!(config.address.scheme(), "http" | "https") {
        return Err(VaultError::Config(format!("the address {} is not an http:// or https:// URL", config.address)));
    }
    let mut ca_certs = Vec::new();
    if let Some(ca_file) = &config.ca_file {
        let path = ca_file
            .to_str()
            .ok_or_else(|| VaultError::Config(format!("the CA file path {} is not UTF-8", ca_file.display())))?;
        ca_certs.push(path.to_owned());
    }
    // Every setting is explicit: vaultrs would otherwise fill gaps from VAULT_* variables.
    let settings = VaultClientSettingsBuilder::default()
        .address(config.address.as_str())
        .token("")
        .ca_certs(ca_certs)
        .identity(None)
        .verify(true)
        .timeout(Some(REQUEST_TIMEOUT))
        .build()
        .map_err(|error| VaultError::Config(error.to_string()))?;
    let client = VaultClient::new(settings).map_err(|error| VaultError::Config(error_chain(&error)))?;
    Ok(client.http)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let auth = VaultAuth::Token(Zeroizing::new("s.dev-root-token".into()));
        assert_eq!(format!("{auth:?}"), "Token(..)");
        let kubernetes = format!("{:?}", VaultAuth::kubernetes("ferry"));
        assert!(
            kubernetes.contains("\"kubernetes\"") && kubernetes.contains(SERVICE_ACCOUNT_TOKEN_FILE),
            "{kubernetes}"
        );
    }
}
