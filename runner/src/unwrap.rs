//! In-cluster credentials: the runner receives single-use wrapping tokens, not secrets.
//! Each token is looked up first and refused unless Vault created it for exactly the read
//! the plan names; then it is unwrapped once and the plaintext kept only in zeroizing
//! memory. A token Vault no longer knows before its expiry was unwrapped by someone else.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use ferry_api::contract::PlannedBinding;
use serde_json::Value;
use vaultrs::client::{Client, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use zeroize::{Zeroize, Zeroizing};

use crate::secrets::SecretFields;

/// No Vault request may hang the attempt's start for longer than this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a binding's credentials could not be unwrapped. Messages name the binding and paths,
/// never the token or a value.
#[derive(Debug, thiserror::Error)]
pub enum UnwrapError {
    /// The binding keeps no credentials in Vault.
    #[error("binding {binding} has no spec.vault, so it has no wrapped credentials")]
    NotInVault {
        /// The binding.
        binding: String,
    },
    /// The plan's creation path is missing or is not the one the binding's spec implies.
    #[error("binding {binding}: the plan expects tokens from {planned}, but the binding's spec implies {derived}")]
    PlanMismatch {
        /// The binding.
        binding: String,
        /// The plan's `secretCreationPath` (or `(none)`).
        planned: String,
        /// [`ferry_api::binding::VaultSecretReference::creation_path`].
        derived: String,
    },
    /// The token was created by another request than the plan names (such as
    /// `sys/wrapping/wrap` with content someone chose).
    #[error(
        "binding {binding}: the wrapping token was created by {actual}, not by {expected}; refusing credentials someone else chose"
    )]
    WrongCreationPath {
        /// The binding.
        binding: String,
        /// The path the plan names.
        expected: String,
        /// The token's `creation_path`.
        actual: String,
    },
    /// Vault no longer knows the token although it has not expired: someone else unwrapped it.
    #[error(
        "binding {binding}: the wrapping token was already unwrapped before it expired; someone else may hold these credentials: rotate them"
    )]
    AlreadyUsed {
        /// The binding.
        binding: String,
    },
    /// The token expired before the runner used it; the next attempt gets fresh tokens.
    #[error(
        "binding {binding}: the wrapping token expired before the runner could use it; the next attempt gets new ones"
    )]
    Expired {
        /// The binding.
        binding: String,
    },
    /// Vault does not know the token, and the plan gives no expiry to tell used from expired.
    #[error("binding {binding}: Vault does not know the wrapping token (used or expired; the plan gives no expiry)")]
    InvalidToken {
        /// The binding.
        binding: String,
    },
    /// The Vault client could not be set up (address, CA file).
    #[error("binding {binding}: cannot set up the Vault client: {detail}")]
    Client {
        /// The binding.
        binding: String,
        /// What was wrong.
        detail: String,
    },
    /// A Vault request failed for another reason (unreachable, refused).
    #[error("binding {binding}: {operation} the wrapping token failed: {detail}")]
    Vault {
        /// The binding.
        binding: String,
        /// `looking up` or `unwrapping`.
        operation: &'static str,
        /// What failed.
        detail: String,
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
        /// Vault's reason (or why the plaintext is unusable).
        reason: String,
    },
    /// The unwrapped response is not what the creation path promises.
    #[error("binding {binding}: unexpected content in the wrapped response from {path}: {detail}")]
    Malformed {
        /// The binding.
        binding: String,
        /// The creation path.
        path: String,
        /// What was wrong (never a value).
        detail: String,
    },
}

impl UnwrapError {
    /// Whether the credentials cannot be trusted (a token wrapped elsewhere, already used,
    /// or a plan that disagrees with its binding): the attempt ends as a security violation
    /// and is not retried.
    pub fn is_security_violation(&self) -> bool {
        matches!(self, Self::WrongCreationPath { .. } | Self::AlreadyUsed { .. } | Self::PlanMismatch { .. })
    }
}

/// Looks up, checks and unwraps one binding's wrapping `token` and returns the secret's
/// fields: a KV v2 read's `data.data`, or a Transit batch decryption's plaintexts named by
/// `binding.secret_fields` in batch order. `expires_at` (from the plan) tells a used token
/// from an expired one.
pub async fn unwrap_credentials(
    vault_address: &str,
    ca_file: Option<&Path>,
    binding: &PlannedBinding,
    token: Zeroizing<String>,
    expires_at: Option<jiff::Timestamp>,
) -> Result<SecretFields, UnwrapError> {
    let name = binding.name.clone();
    let reference = binding.spec.vault.as_ref().ok_or_else(|| UnwrapError::NotInVault { binding: name.clone() })?;
    let derived = reference.creation_path();
    let expected = match binding.secret_creation_path.as_deref() {
        Some(planned) if planned == derived => planned,
        planned => {
            return Err(UnwrapError::PlanMismatch {
                binding: name,
                planned: planned.unwrap_or("(none)").to_owned(),
                derived,
            });
        }
    };
    let client = checked_client(vault_address, ca_file, &name, expected, &token, expires_at).await?;

    // Unwrapping authenticates with the wrapping token itself (a token in the body would need
    // a token of the runner's own). Someone may unwrap it between the lookup and here: that
    // too reads as an unknown token.
    let mut unwrapping = TokenClient(client);
    unwrapping.0.set_token(&token);
    drop(token);
    let answer = vaultrs::sys::wrapping::unwrap::<Value>(&unwrapping.0, None).await;
    drop(unwrapping);
    let mut response = match answer {
        Ok(response) => response,
        Err(error) if is_unknown_token(&error) => return Err(gone(vault_address, ca_file, &name, expires_at).await),
        Err(error) => {
            return Err(UnwrapError::Vault { binding: name, operation: "unwrapping", detail: describe(&error) });
        }
    };
    let fields = match &reference.transit_key {
        None => kv_fields(&name, expected, &mut response),
        Some(key) => transit_fields(&name, expected, key, &binding.secret_fields, &mut response),
    };
    zeroize_json(&mut response);
    fields
}

/// A client for `vault_address`, once the wrapping `token` is known to Vault and was created
/// by `expected`, the request the plan names.
async fn checked_client(
    vault_address: &str,
    ca_file: Option<&Path>,
    name: &str,
    expected: &str,
    token: &str,
    expires_at: Option<jiff::Timestamp>,
) -> Result<VaultClient, UnwrapError> {
    let client =
        client(vault_address, ca_file).map_err(|detail| UnwrapError::Client { binding: name.to_owned(), detail })?;
    let info = match vaultrs::sys::wrapping::lookup(&client, token).await {
        Ok(info) => info,
        Err(error) if is_unknown_token(&error) => return Err(gone(vault_address, ca_file, name, expires_at).await),
        Err(error) => {
            let detail = describe(&error);
            return Err(UnwrapError::Vault { binding: name.to_owned(), operation: "looking up", detail });
        }
    };
    if info.creation_path != expected {
        return Err(UnwrapError::WrongCreationPath {
            binding: name.to_owned(),
            expected: expected.to_owned(),
            actual: info.creation_path,
        });
    }
    Ok(client)
}

/// Looks up, checks and unwraps a binding's wrapped write token (for a rotated refresh
/// token): a token creation by the plan's `rotationCreationPath` (`auth/token/create/<role>`).
/// Returns the token it holds. vaultrs hands over only an answer's `data`, and a creation's
/// token is in `auth`, so the unwrap is sent here.
pub async fn unwrap_write_token(
    vault_address: &str,
    ca_file: Option<&Path>,
    binding: &PlannedBinding,
    token: Zeroizing<String>,
    expires_at: Option<jiff::Timestamp>,
) -> Result<Zeroizing<String>, UnwrapError> {
    let name = binding.name.clone();
    let expected = match binding.rotation_creation_path.as_deref() {
        Some(planned) if planned.starts_with("auth/token/create/") => planned,
        planned => {
            return Err(UnwrapError::PlanMismatch {
                binding: name,
                planned: planned.unwrap_or("(none)").to_owned(),
                derived: "auth/token/create/<role>".to_owned(),
            });
        }
    };
    checked_client(vault_address, ca_file, &name, expected, &token, expires_at).await?;
    let http = http_client(ca_file).map_err(|detail| UnwrapError::Client { binding: name.clone(), detail })?;
    let failed = |detail: String| UnwrapError::Vault { binding: name.clone(), operation: "unwrapping", detail };
    let response = http
        .post(format!("{}/v1/sys/wrapping/unwrap", vault_address.trim_end_matches('/')))
        .header("x-vault-token", token.as_str())
        .send()
        .await
        .map_err(|error| failed(error.without_url().to_string()))?;
    drop(token);
    if response.status().as_u16() == 400 {
        return Err(gone(vault_address, ca_file, &name, expires_at).await);
    }
    if !response.status().is_success() {
        return Err(failed(format!("HTTP {}", response.status())));
    }
    let body =
        Zeroizing::new(response.bytes().await.map_err(|error| failed(error.without_url().to_string()))?.to_vec());
    let mut answer: Value =
        serde_json::from_slice(&body).map_err(|_| malformed(&name, expected, "the answer is not JSON"))?;
    let written = match answer.pointer_mut("/auth/client_token") {
        Some(Value::String(client_token)) if !client_token.is_empty() => {
            Ok(Zeroizing::new(std::mem::take(client_token)))
        }
        _ => Err(malformed(&name, expected, "no auth.client_token (a token creation was expected)")),
    };
    zeroize_json(&mut answer);
    written
}

/// Why Vault no longer knows a token, judged by Vault's own clock: before the token's expiry
/// (Vault's creation time plus the TTL it granted) someone else unwrapped it; after it, it
/// merely expired. The runner's clock never decides, so a skewed node cannot turn an expired
/// token into a theft alarm; when Vault's time cannot be had, nothing is claimed either way.
async fn gone(
    vault_address: &str,
    ca_file: Option<&Path>,
    binding: &str,
    expires_at: Option<jiff::Timestamp>,
) -> UnwrapError {
    let binding = binding.to_owned();
    let Some(expires_at) = expires_at else { return UnwrapError::InvalidToken { binding } };
    match verdict(vault_time(vault_address, ca_file).await, expires_at) {
        Some(TokenFate::Used) => UnwrapError::AlreadyUsed { binding },
        Some(TokenFate::Expired) => UnwrapError::Expired { binding },
        None => UnwrapError::InvalidToken { binding },
    }
}

/// Vault's current time, from `sys/health` (unauthenticated; a standby answers too).
/// vaultrs's health type requires fields OpenBao does not send, so only the one field is read.
async fn vault_time(vault_address: &str, ca_file: Option<&Path>) -> Option<jiff::Timestamp> {
    let url = format!("{}/v1/sys/health?standbyok=true&perfstandbyok=true", vault_address.trim_end_matches('/'));
    let response = http_client(ca_file).ok()?.get(url).send().await.ok()?;
    let health: serde_json::Value = response.json().await.ok()?;
    jiff::Timestamp::from_second(health.get("server_time_utc")?.as_i64()?).ok()
}

/// A plain HTTP client for Vault's own answers (vaultrs cannot give them), trusting only the
/// CAs in `ca_file` when one is given.
fn http_client(ca_file: Option<&Path>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().timeout(REQUEST_TIMEOUT);
    if let Some(path) = ca_file {
        builder = builder.tls_certs_only(crate::progress_client::read_ca(path).map_err(|error| error.to_string())?);
    }
    builder.build().map_err(|error| error.without_url().to_string())
}

/// What became of a token Vault no longer knows.
#[derive(Debug, PartialEq, Eq)]
enum TokenFate {
    /// Unwrapped by someone before it expired.
    Used,
    /// Expired unused.
    Expired,
}

/// Decides from Vault's current time (`None`: unknown) and the token's expiry, both Vault's.
/// A second of slack covers the token's TTL being counted from its creation's whole second.
fn verdict(vault_now: Option<jiff::Timestamp>, expires_at: jiff::Timestamp) -> Option<TokenFate> {
    let now = vault_now?;
    let slack = jiff::SignedDuration::from_secs(1);
    Some(if now.checked_add(slack).is_ok_and(|later| later < expires_at) {
        TokenFate::Used
    } else {
        TokenFate::Expired
    })
}

/// vaultrs keeps the client's token in plain `String`s: wipe them when the client goes.
struct TokenClient(VaultClient);

impl Drop for TokenClient {
    fn drop(&mut self) {
        self.0.settings.token.zeroize();
        self.0.middle.token.zeroize();
    }
}

fn client(vault_address: &str, ca_file: Option<&Path>) -> Result<VaultClient, String> {
    let address = url::Url::parse(vault_address).map_err(|_| format!("{vault_address:?} is not a URL"))?;
    if !matches!(address.scheme(), "http" | "https") {
        return Err(format!("{vault_address:?} is not an http:// or https:// URL"));
    }
    let mut ca_certs = Vec::new();
    if let Some(ca_file) = ca_file {
        let path = ca_file.to_str().ok_or_else(|| format!("the CA file path {} is not UTF-8", ca_file.display()))?;
        ca_certs.push(path.to_owned());
    }
    // Every setting is explicit: vaultrs would otherwise fill gaps from VAULT_* variables,
    // and the lookup and unwrap need no token of the runner's own.
    let settings = VaultClientSettingsBuilder::default()
        .address(address.as_str())
        .token("")
        .ca_certs(ca_certs)
        .identity(None)
        .verify(true)
        .timeout(Some(REQUEST_TIMEOUT))
        .build()
        .map_err(|error| error.to_string())?;
    VaultClient::new(settings).map_err(|error| describe(&error))
}

/// Vault answers 400 when a wrapping token is unknown: never issued, used, or expired (the
/// request carries nothing but the token, so nothing else in it can be wrong).
fn is_unknown_token(error: &ClientError) -> bool {
    matches!(error, ClientError::APIError { code: 400, .. })
}

fn describe(error: &ClientError) -> String {
    let mut text = match error {
        ClientError::APIError { code, errors } => format!("HTTP {code}: {}", errors.join("; ")),
        // A JSON error's message may quote a value: keep only its position.
        ClientError::JsonParseError { source } => {
            format!("{:?} JSON error at line {} column {}", source.classify(), source.line(), source.column())
        }
        other => other.to_string(),
    };
    if !matches!(error, ClientError::JsonParseError { .. }) {
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
    }
    text
}

fn malformed(binding: &str, path: &str, detail: impl Into<String>) -> UnwrapError {
    UnwrapError::Malformed { binding: binding.to_owned(), path: path.to_owned(), detail: detail.into() }
}

/// A KV v2 read: its `data.data` holds the fields. Strings are moved out, never copied.
fn kv_fields(binding: &str, path: &str, response: &mut Value) -> Result<SecretFields, UnwrapError> {
    // vaultrs hands over the response's `data`: for a KV v2 read, `{"data": {...}, "metadata": ...}`.
    let Some(Value::Object(data)) = response.get_mut("data") else {
        return Err(malformed(binding, path, "no `data` object (a KV v2 read was expected)"));
    };
    let mut fields = SecretFields::default();
    for (name, value) in data.iter_mut() {
        if let Value::String(text) = value {
            fields.insert(name.clone(), Zeroizing::new(std::mem::take(text)));
        }
    }
    Ok(fields)
}

/// A Transit batch decryption: `batch_results[i].plaintext` (base64) is field `names[i]`.
fn transit_fields(
    binding: &str,
    path: &str,
    key: &str,
    names: &[String],
    response: &mut Value,
) -> Result<SecretFields, UnwrapError> {
    let Some(Value::Array(results)) = response.get_mut("batch_results") else {
        return Err(malformed(binding, path, "no `batch_results` (a Transit batch decryption was expected)"));
    };
    if results.len() != names.len() {
        return Err(malformed(
            binding,
            path,
            format!("{} results for the plan's {} fields", results.len(), names.len()),
        ));
    }
    let failure = |field: &str, reason: String| UnwrapError::Decrypt {
        binding: binding.to_owned(),
        field: field.to_owned(),
        key: key.to_owned(),
        reason,
    };
    let mut fields = SecretFields::default();
    for (name, result) in names.iter().zip(results.iter_mut()) {
        if let Some(Value::String(error)) = result.get("error")
            && !error.is_empty()
        {
            return Err(failure(name, error.clone()));
        }
        let Some(Value::String(encoded)) = result.get_mut("plaintext") else {
            return Err(failure(name, "the result has no plaintext".to_owned()));
        };
        let encoded = Zeroizing::new(std::mem::take(encoded));
        let mut bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|_| failure(name, "the plaintext is not base64".to_owned()))?,
        );
        let text = match String::from_utf8(std::mem::take(&mut *bytes)) {
            Ok(text) => Zeroizing::new(text),
            Err(error) => {
                error.into_bytes().zeroize();
                return Err(failure(name, "the plaintext is not UTF-8".to_owned()));
            }
        };
        fields.insert(name.clone(), text);
    }
    Ok(fields)
}

/// Wipes every string left in a JSON value (keys are field names, not secrets).
fn zeroize_json(value: &mut Value) {
    match value {
        Value::String(text) => text.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(zeroize_json),
        Value::Object(map) => map.values_mut().for_each(zeroize_json),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_or_expired_is_vaults_clock_against_vaults_expiry() {
        let expires: jiff::Timestamp = "2026-12-01T10:05:00Z".parse().unwrap();
        let at = |text: &str| Some(text.parse::<jiff::Timestamp>().unwrap());
        assert_eq!(verdict(at("2026-12-01T10:00:00Z"), expires), Some(TokenFate::Used));
        assert_eq!(verdict(at("2026-12-01T10:04:59.5Z"), expires), Some(TokenFate::Expired), "within the slack");
        assert_eq!(verdict(at("2026-12-01T10:06:00Z"), expires), Some(TokenFate::Expired));
        assert_eq!(verdict(None, expires), None, "no claim without Vault's time");
    }

    #[test]
    fn transit_results_follow_the_plan_order() {
        let mut response = serde_json::json!({"batch_results": [{"plaintext": "YQ=="}, {"plaintext": "Yg=="}]});
        let names = vec!["second".to_owned(), "first".to_owned()];
        let fields = transit_fields("b", "transit/decrypt/k", "k", &names, &mut response).unwrap();
        assert_eq!(fields.get("second"), Some("a"));
        assert_eq!(fields.get("first"), Some("b"));
        assert_eq!(response["batch_results"][0]["plaintext"], "");
    }

    #[test]
    fn transit_errors_name_the_field() {
        let mut response = serde_json::json!({"batch_results": [{"plaintext": "", "error": "invalid ciphertext"}]});
        let error = transit_fields("b", "p", "k", &["accountKey".to_owned()], &mut response).unwrap_err();
        assert!(error.to_string().contains("accountKey"), "{error}");
        assert!(!error.is_security_violation());
    }

    #[test]
    fn kv_strings_are_moved_out_and_the_rest_wiped() {
        let mut response = serde_json::json!({"data": {"a": "one", "n": 2, "s": "two"}, "metadata": {"version": 1}});
        let fields = kv_fields("b", "secret/data/x", &mut response).unwrap();
        assert_eq!(fields.get("a"), Some("one"));
        assert_eq!(fields.names().collect::<Vec<_>>(), ["a", "s"]);
        assert_eq!(response["data"]["a"], "");
    }
}
