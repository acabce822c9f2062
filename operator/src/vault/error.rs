//! The errors of the Vault client and the condition reasons they map to.

use std::path::PathBuf;

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

/// Describes a JSON parse failure by its kind and position only: serde_json's own message
/// can quote the offending value, which may be a secret.
pub(super) fn json_problem(error: &serde_json::Error) -> String {
    format!("{:?} JSON error at line {} column {}", error.classify(), error.line(), error.column())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing(groups: &[&[&str]], transit_key: Option<&str>) -> String {
        VaultError::MissingField {
            context: "binding b".into(),
            mount: "secret".into(),
            path: "tenants/a/x".into(),
            missing: groups.iter().map(|group| group.iter().map(|name| (*name).to_owned()).collect()).collect(),
            transit_key: transit_key.map(str::to_owned),
        }
        .to_string()
    }

    #[test]
    fn missing_fields_are_named_with_the_command_that_adds_them() {
        assert_eq!(
            missing(&[&["accountKey", "sasToken"]], None),
            "binding b: the secret at secret/tenants/a/x has no field `accountKey` (or `sasToken`); \
             add it with `bao kv patch -mount=secret tenants/a/x accountKey=...`"
        );
        assert_eq!(
            missing(&[&["clientId"], &["refreshToken"]], Some("tenant-a")),
            "binding b: the secret at secret/tenants/a/x has no fields `clientId`, `refreshToken`; add them \
             (values encrypted with Transit key `tenant-a`) with `bao kv patch -mount=secret tenants/a/x clientId=... refreshToken=...`"
        );
    }
}
