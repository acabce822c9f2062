//! Reading a binding's secret from Vault (or OpenBao) for local runs: a KV v2 read, and
//! Transit decryption when the binding names a key. Values go straight into zeroizing memory.

use std::collections::HashMap;

use base64::Engine;
use ferry_api::binding::VaultSecretReference;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use zeroize::Zeroizing;

use crate::secrets::SecretFields;

/// Why a secret could not be read. Messages name paths and fields, never values.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// No Vault address or token in the environment.
    #[error("binding {binding} keeps its credentials in Vault: set VAULT_ADDR and VAULT_TOKEN (or run in a cluster)")]
    NotConfigured {
        /// The binding.
        binding: String,
    },
    /// VAULT_ADDR is not a URL.
    #[error("VAULT_ADDR {0:?} is not an http:// or https:// URL")]
    BadAddress(String),
    /// The client could not be built (CA file, TLS).
    #[error("cannot set up the Vault client: {0}")]
    Client(String),
    /// The secret is not there.
    #[error(
        "binding {binding}: no secret at {mount}/{path} (spec.vault); write it with `bao kv put {mount}/{path} ...`"
    )]
    NotFound {
        /// The binding.
        binding: String,
        /// The KV mount.
        mount: String,
        /// The secret path.
        path: String,
    },
    /// The token may not read it.
    #[error("binding {binding}: permission denied reading {what}; grant the token's policy read access")]
    PermissionDenied {
        /// The binding.
        binding: String,
        /// The path refused.
        what: String,
    },
    /// A Transit-encrypted field did not decrypt.
    #[error("binding {binding}: field {field:?} did not decrypt with Transit key {key:?}: {reason}")]
    Decrypt {
        /// The binding.
        binding: String,
        /// The field.
        field: String,
        /// The Transit key.
        key: String,
        /// Vault's reason.
        reason: String,
    },
    /// Anything else Vault said.
    #[error("binding {binding}: Vault request failed: {reason}")]
    Other {
        /// The binding.
        binding: String,
        /// What failed.
        reason: String,
    },
}

/// A client from `VAULT_ADDR`, `VAULT_TOKEN` and `VAULT_CACERT`.
pub fn client_from_environment(binding: &str) -> Result<VaultClient, VaultError> {
    let (Ok(address), Ok(token)) = (std::env::var("VAULT_ADDR"), std::env::var("VAULT_TOKEN")) else {
        return Err(VaultError::NotConfigured { binding: binding.to_owned() });
    };
    let parsed = url::Url::parse(&address).map_err(|_| VaultError::BadAddress(address.clone()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(VaultError::BadAddress(address));
    }
    let settings = VaultClientSettingsBuilder::default()
        .address(parsed.as_str())
        .token(token)
        .build()
        .map_err(|error| VaultError::Client(error.to_string()))?;
    VaultClient::new(settings).map_err(|error| VaultError::Client(error.to_string()))
}

/// A client for `address` with `token` (a write token unwrapped in a cluster), trusting only
/// the CAs in `ca_file` when one is given.
pub fn client_with_token(
    address: &str,
    token: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<VaultClient, VaultError> {
    let parsed = url::Url::parse(address).map_err(|_| VaultError::BadAddress(address.to_owned()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(VaultError::BadAddress(address.to_owned()));
    }
    let ca_certs = match ca_file {
        Some(path) => {
            vec![path.to_str().ok_or_else(|| VaultError::Client("the CA file path is not UTF-8".into()))?.to_owned()]
        }
        None => Vec::new(),
    };
    // Every setting is explicit: vaultrs would otherwise fill gaps from VAULT_* variables.
    let settings = VaultClientSettingsBuilder::default()
        .address(parsed.as_str())
        .token(token)
        .ca_certs(ca_certs)
        .identity(None)
        .verify(true)
        .build()
        .map_err(|error| VaultError::Client(error.to_string()))?;
    VaultClient::new(settings).map_err(|error| VaultError::Client(error.to_string()))
}

fn classify(binding: &str, what: String, error: ClientError, not_found: impl FnOnce() -> VaultError) -> VaultError {
    let code = match &error {
        ClientError::APIError { code, .. } => Some(*code),
        ClientError::RestClientError { source: rustify_error } => server_code(rustify_error),
        _ => None,
    };
    match code {
        Some(404) => not_found(),
        Some(403) => VaultError::PermissionDenied { binding: binding.to_owned(), what },
        _ => VaultError::Other { binding: binding.to_owned(), reason: error.to_string() },
    }
}

fn server_code(error: &impl std::fmt::Display) -> Option<u16> {
    // rustify reports non-JSON error bodies as "Server returned error: <code>"; read the code.
    let text = error.to_string();
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse::<u16>().ok())
        .find(|code| (400..600).contains(code))
}

/// Reads (and, with a Transit key, decrypts) the fields of a binding's secret.
pub async fn read_secret(
    client: &VaultClient,
    binding: &str,
    reference: &VaultSecretReference,
) -> Result<SecretFields, VaultError> {
    let (mount, path) = (&reference.mount, &reference.path);
    let raw: HashMap<String, serde_json::Value> = vaultrs::kv2::read(client, mount, path).await.map_err(|error| {
        classify(binding, format!("{mount}/data/{path}"), error, || VaultError::NotFound {
            binding: binding.to_owned(),
            mount: mount.clone(),
            path: path.clone(),
        })
    })?;
    let mut fields = SecretFields::default();
    for (name, value) in raw {
        let serde_json::Value::String(text) = value else { continue };
        let text = Zeroizing::new(text);
        let plain = match &reference.transit_key {
            None => text,
            Some(key) => decrypt(client, binding, reference, key, &name, &text).await?,
        };
        fields.insert(name, plain);
    }
    Ok(fields)
}

async fn decrypt(
    client: &VaultClient,
    binding: &str,
    reference: &VaultSecretReference,
    key: &str,
    field: &str,
    ciphertext: &str,
) -> Result<Zeroizing<String>, VaultError> {
    let failure = |reason: String| VaultError::Decrypt {
        binding: binding.to_owned(),
        field: field.to_owned(),
        key: key.to_owned(),
        reason,
    };
    let response = vaultrs::transit::data::decrypt(client, &reference.transit_mount, key, ciphertext, None)
        .await
        .map_err(|error| failure(error.to_string()))?;
    let encoded = Zeroizing::new(response.plaintext);
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map_err(|error| failure(error.to_string()))?,
    );
    let text = std::str::from_utf8(&bytes).map_err(|_| failure("the plaintext is not UTF-8".into()))?;
    Ok(Zeroizing::new(text.to_owned()))
}

/// Writes a rotated OAuth refresh token back to the binding's secret (local runs, with the
/// run's own Vault token): the other fields are kept, a Transit-encrypted secret gets the
/// token encrypted under its key, and the write is check-and-set on the version just read,
/// so a concurrent change is never overwritten.
pub struct RotatedTokenToVault {
    client: VaultClient,
    binding: String,
    reference: VaultSecretReference,
}

impl RotatedTokenToVault {
    /// A store for `binding`'s secret at `reference`.
    pub fn new(client: VaultClient, binding: &str, reference: &VaultSecretReference) -> Self {
        Self { client, binding: binding.to_owned(), reference: reference.clone() }
    }

    async fn write(&self, refresh_token: &str) -> Result<(), String> {
        use ferry_api::binding::secret_field::REFRESH_TOKEN;
        let (mount, path) = (&self.reference.mount, &self.reference.path);
        let metadata = vaultrs::kv2::read_metadata(&self.client, mount, path).await.map_err(|e| e.to_string())?;
        let mut data: HashMap<String, serde_json::Value> =
            vaultrs::kv2::read(&self.client, mount, path).await.map_err(|e| e.to_string())?;
        let stored = match &self.reference.transit_key {
            None => Zeroizing::new(refresh_token.to_owned()),
            Some(key) => {
                let plain = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(refresh_token));
                let encrypted =
                    vaultrs::transit::data::encrypt(&self.client, &self.reference.transit_mount, key, &plain, None)
                        .await
                        .map_err(|e| format!("encrypting with Transit key {key:?}: {e}"))?;
                Zeroizing::new(encrypted.ciphertext)
            }
        };
        data.insert(REFRESH_TOKEN.to_owned(), serde_json::Value::String(stored.to_string()));
        let options = vaultrs::api::kv2::requests::SetSecretRequestOptions {
            cas: u32::try_from(metadata.current_version).unwrap_or(u32::MAX),
        };
        let written = vaultrs::kv2::set_with_options(&self.client, mount, path, &data, options).await;
        // The map held the other fields' values too: clear it before it is dropped.
        for value in data.values_mut() {
            if let serde_json::Value::String(text) = value {
                zeroize::Zeroize::zeroize(text);
            }
        }
        written.map(|_| ()).map_err(|e| format!("{mount}/{path} ({}): {e}", self.binding))
    }
}

impl RotatedTokenToVault {
    /// Revokes the client's token (a cluster's write token, at the end of the attempt).
    pub async fn revoke(&self) {
        if let Err(error) = vaultrs::token::revoke_self(&self.client).await {
            tracing::warn!(binding = %self.binding, %error, "could not revoke the write token; it expires at its TTL");
        }
    }
}

impl Drop for RotatedTokenToVault {
    /// vaultrs keeps the client's token in plain `String`s: wipe them.
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.client.settings.token);
        zeroize::Zeroize::zeroize(&mut self.client.middle.token);
    }
}

impl crate::backends::oauth::RotationStore for RotatedTokenToVault {
    fn store<'a>(&'a self, refresh_token: &'a str) -> futures::future::BoxFuture<'a, Result<(), String>> {
        Box::pin(self.write(refresh_token))
    }
}
