//! Vault (or OpenBao): operator authentication, binding checks and response-wrapped reads.
//!
//! `session` logs in and keeps the token alive, `binding_check` checks that a binding's
//! secret holds its provider's fields without keeping any value, and `wrap` asks Vault for
//! single-use wrapping tokens whose contents the operator never sees. `transport` sends one
//! request and hands back the body in zeroizing memory.

mod binding_check;
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
pub use wrap::WrappedCredentials;

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

/// Why a Vault operation failed. Messages name paths, fields and roles, never a secret
/// value or a token; [`VaultError::reason`] gives the condition reason.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The configuration cannot work (address, CA file, token format, TTL).
    #[error("Vault configuration: {0}")]
    Config(String),
    /// The Kubernetes service account token could not be read.
    #[error("cannot read the service account token {}: {source}", path.display())]
    ServiceAccountToken {
        /// The JWT file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The binding names no Vault secret.
    #[error("{context}: the binding has no spec.vault, so there is no secret to check or wrap")]
    NoSecretReference {
        /// What was being done.
        context: String,
    },
    /// There is no (live) secret at the path.
    #[error("{context}: no secret at {mount}/{path}; write it with `bao kv put -mount={mount} {path} <field>=...`")]
    SecretNotFound {
        /// What was being done.
        context: String,
        /// The KV v2 mount.
        mount: String,
        /// The secret's path inside the mount.
        path: String,
    },
    /// Vault refused the operator's token (or login) for this path.
    #[error("{context}: permission denied on {path}; {hint}")]
    PermissionDenied {
        /// What was being done.
        context: String,
        /// The API path refused.
        path: String,
        /// What to change.
        hint: String,
    },
    /// The secret lacks fields the provider needs.
    #[error("{context}: {}", missing_fields_message(.mount, .path, .missing, .transit_key.as_deref()))]
    MissingField {
        /// What was being done.
        context: String,
        /// The KV v2 mount.
        mount: String,
        /// The secret's path inside the mount.
        path: String,
        /// For every unmet requirement, its alternatives (one of them is enough).
        missing: Vec<Vec<String>>,
        /// The Transit key the values must be encrypted with, if any.
        transit_key: Option<String>,
    },
    /// Vault could not be reached or is unavailable (connection errors, 5xx, 429).
    #[error("{context}: Vault at {address} is unreachable: {detail}")]
    Unreachable {
        /// What was being done.
        context: String,
        /// The server's address.
        address: String,
        /// The connection error or status.
        detail: String,
    },
    /// Vault answered with another error.
    #[error("{context}: Vault answered HTTP {status} for {path}: {message}")]
    Api {
        /// What was being done.
        context: String,
        /// The API path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// Vault's error messages.
        message: String,
    },
    /// Vault answered something this client does not understand.
    #[error("{context}: unexpected response from {path}: {detail}")]
    Malformed {
        /// What was being done.
        context: String,
        /// The API path.
        path: String,
        /// What was wrong (never the body).
        detail: String,
    },
}

impl VaultError {
    /// The CamelCase condition reason: `SecretNotFound`, `PermissionDenied`, `MissingField`,
    /// `VaultUnreachable`, or `VaultError` for anything else.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::SecretNotFound { .. } => "SecretNotFound",
            Self::PermissionDenied { .. } => "PermissionDenied",
            Self::MissingField { .. } => "MissingField",
            Self::Unreachable { .. } => "VaultUnreachable",
            Self::Config(_)
            | Self::ServiceAccountToken { .. }
            | Self::NoSecretReference { .. }
            | Self::Api { .. }
            | Self::Malformed { .. } => "VaultError",
        }
    }
}

fn missing_fields_message(mount: &str, path: &str, missing: &[Vec<String>], transit_key: Option<&str>) -> String {
    let describe = |group: &Vec<String>| match group.split_first() {
        Some((first, [])) => format!("`{first}`"),
        Some((first, others)) => {
            let others: Vec<String> = others.iter().map(|name| format!("`{name}`")).collect();
            format!("`{first}` (or {})", others.join(", "))
        }
        None => String::new(),
    };
    let names: Vec<String> = missing.iter().map(describe).collect();
    let assignments: Vec<String> =
        missing.iter().filter_map(|group| group.first()).map(|name| format!("{name}=...")).collect();
    let (noun, pronoun) = if missing.len() == 1 { ("field", "it") } else { ("fields", "them") };
    let encrypted = match transit_key {
        Some(key) => format!(" (values encrypted with Transit key `{key}`)"),
        None => String::new(),
    };
    format!(
        "the secret at {mount}/{path} has no {noun} {}; add {pronoun}{encrypted} with `bao kv patch -mount={mount} {path} {}`",
        names.join(", "),
        assignments.join(" ")
    )
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

/// An error and its sources on one line (these never hold secrets: paths, URLs, causes).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Describes a JSON parse failure by its kind and position only: serde_json's own message
/// can quote the offending value, which may be a secret.
fn json_problem(error: &serde_json::Error) -> String {
    format!("{:?} JSON error at line {} column {}", error.classify(), error.line(), error.column())
}
