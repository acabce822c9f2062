//! Access tokens for a GCS service account: a JWT signed with the key from Vault, exchanged
//! at the key file's own `token_uri` (as Google's client libraries do), cached until shortly
//! before it expires. One source serves both OpenDAL's requests and the copies on the server,
//! and because it honours `token_uri` a local token endpoint can stand in for Google's.

use std::sync::Arc;
use std::time::Duration;

use reqsign_core::time::Timestamp;
use reqsign_core::{Context, ProvideCredential};
use reqsign_google::{Credential, Token};
use tokio::sync::Mutex;
use zeroize::Zeroizing;

/// Google's token endpoint, for key files that name none.
const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// Read and write objects: what copies, deletes and rewrites between buckets need.
const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
/// A token this close to its end is replaced before use, so no request starts with one
/// that expires on the way.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// How long Google's tokens live when the answer does not say.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// What is wrong with a key file; never quotes the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not JSON, or a field of the wrong type.
    #[error("credentialsJson is not a service account key file (JSON): {0}")]
    NotJson(String),
    /// A field the exchange needs is missing or empty.
    #[error("credentialsJson has no {0}; download the service account's key file again and put it in Vault whole")]
    Missing(&'static str),
    /// The HTTP client for the token endpoint could not be built (its TLS setup).
    #[error("building the HTTP client for the token endpoint: {0}")]
    Client(String),
}

#[derive(serde::Deserialize)]
struct KeyFile {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    client_email: String,
    #[serde(default)]
    private_key: Zeroizing<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

/// The claims Google's JWT bearer grant takes (RFC 7523).
#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(serde::Serialize)]
struct Header {
    alg: &'static str,
    typ: &'static str,
}

#[derive(serde::Deserialize)]
struct Granted {
    access_token: Zeroizing<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// A cached token and when it must be replaced.
struct Cached {
    token: Zeroizing<String>,
    expires_at: Timestamp,
}

struct Inner {
    client_email: String,
    private_key: Zeroizing<String>,
    token_uri: String,
    client: reqwest::Client,
    cached: Mutex<Option<Cached>>,
}

/// Tokens for one service account, shared by every clone.
#[derive(Clone)]
pub struct ServiceAccountTokens {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ServiceAccountTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountTokens")
            .field("client_email", &self.inner.client_email)
            .field("token_uri", &self.inner.token_uri)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountTokens {
    /// Reads a key file; `Ok(None)` for the other kinds of Google credential file, which
    /// OpenDAL exchanges itself.
    pub fn from_key_file(json: &str) -> Result<Option<Self>, KeyError> {
        let key: KeyFile = serde_json::from_str(json).map_err(|error| {
            // serde_json's message names a line and column, never the text there.
            KeyError::NotJson(error.to_string())
        })?;
        if !key.kind.is_empty() && key.kind != "service_account" {
            return Ok(None);
        }
        if key.client_email.is_empty() {
            return Err(KeyError::Missing("client_email"));
        }
        if key.private_key.is_empty() {
            return Err(KeyError::Missing("private_key"));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|error| KeyError::Client(error.to_string()))?;
        Ok(Some(Self {
            inner: Arc::new(Inner {
                client_email: key.client_email,
                private_key: key.private_key,
                token_uri: key.token_uri.filter(|uri| !uri.is_empty()).unwrap_or_else(|| GOOGLE_TOKEN_URI.to_owned()),
                client,
                cached: Mutex::new(None),
            }),
        }))
    }

    /// Whether `other` acts as the same service account: then it reads what this one reads.
    pub fn same_account(&self, other: &ServiceAccountTokens) -> bool {
        self.inner.client_email == other.inner.client_email && self.inner.token_uri == other.inner.token_uri
    }

    /// A token valid for at least a few minutes, from the cache or a new exchange.
    pub async fn access_token(&self) -> Result<(Zeroizing<String>, Timestamp), String> {
        let mut cached = self.inner.cached.lock().await;
        if let Some(current) = cached.as_ref()
            && current.expires_at > Timestamp::now() + REFRESH_BEFORE_EXPIRY
        {
            return Ok((current.token.clone(), current.expires_at));
        }
        let fresh = self.exchange().await?;
        let answer = (fresh.token.clone(), fresh.expires_at);
        *cached = Some(fresh);
        Ok(answer)
    }

    async fn exchange(&self) -> Result<Cached, String> {
        let inner = &self.inner;
        let now = Timestamp::now().as_second().max(0) as u64;
        let claims =
            Claims { iss: &inner.client_email, scope: SCOPE, aud: &inner.token_uri, iat: now, exp: now + 3600 };
        let assertion = reqsign_core::jwt::encode_rs256_pem(
            &Header { alg: "RS256", typ: "JWT" },
            &claims,
            inner.private_key.as_bytes(),
        )
        .map_err(|error| format!("gcs: signing with the private_key of credentialsJson: {error}"))?;
        let form = [("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", assertion.as_str())];
        let response = inner
            .client
            .post(&inner.token_uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(super::oauth::form_body(&form))
            .send()
            .await
            .map_err(|error| {
                format!(
                    "gcs: asking {} for a token for {}: {}",
                    inner.token_uri,
                    inner.client_email,
                    error.without_url()
                )
            })?;
        let status = response.status();
        if !status.is_success() {
            // The body is an OAuth error (`invalid_grant`: the key was deleted or disabled),
            // never a credential; it is cut short all the same.
            let body = response.text().await.unwrap_or_default();
            let reason: String = body.chars().take(300).collect();
            return Err(format!(
                "gcs: {} refused the key of service account {} ({status}: {reason}); if the key was deleted or \
                 disabled, create a new one and put it in Vault",
                inner.token_uri, inner.client_email
            ));
        }
        let granted: Granted = response
            .json()
            .await
            .map_err(|error| format!("gcs: reading the token from {}: {}", inner.token_uri, error.without_url()))?;
        let lifetime = granted.expires_in.map(Duration::from_secs).unwrap_or(DEFAULT_LIFETIME);
        Ok(Cached { token: granted.access_token, expires_at: Timestamp::now() + lifetime })
    }
}

impl super::CredentialCheck for ServiceAccountTokens {
    fn check(&self) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move { self.access_token().await.map(|_| ()) })
    }
}

impl ProvideCredential for ServiceAccountTokens {
    type Credential = Credential;

    async fn provide_credential(&self, _context: &Context) -> reqsign_core::Result<Option<Credential>> {
        let (token, expires_at) = self.access_token().await.map_err(|reason| {
            // The signer passes on only "failed to load signing credential"; the log keeps why.
            tracing::warn!("{reason}");
            reqsign_core::Error::credential_invalid(reason)
        })?;
        Ok(Some(Credential::with_token(Token { access_token: token.to_string(), expires_at: Some(expires_at) })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_are_read_and_what_is_missing_is_named_without_the_key() {
        let key = r#"{"type": "service_account", "client_email": "ferry@p.iam.gserviceaccount.com",
                      "private_key": "-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n"}"#;
        let tokens = ServiceAccountTokens::from_key_file(key).unwrap().unwrap();
        assert_eq!(tokens.inner.token_uri, GOOGLE_TOKEN_URI);
        assert!(!format!("{tokens:?}").contains("secret"));

        let elsewhere = key.replace("\"type\"", "\"token_uri\": \"http://127.0.0.1:1/token\", \"type\"");
        let other = ServiceAccountTokens::from_key_file(&elsewhere).unwrap().unwrap();
        assert_eq!(other.inner.token_uri, "http://127.0.0.1:1/token");
        assert!(!tokens.same_account(&other), "another token endpoint is another account");
        assert!(tokens.same_account(&ServiceAccountTokens::from_key_file(key).unwrap().unwrap()));

        let no_email = key.replace("ferry@p.iam.gserviceaccount.com", "");
        let error = ServiceAccountTokens::from_key_file(&no_email).unwrap_err().to_string();
        assert!(error.contains("client_email"), "{error}");
        let no_key = r#"{"type": "service_account", "client_email": "a@b"}"#;
        assert!(ServiceAccountTokens::from_key_file(no_key).unwrap_err().to_string().contains("private_key"));
        let broken = key.replace('}', "");
        let error = ServiceAccountTokens::from_key_file(&broken).unwrap_err().to_string();
        assert!(error.contains("not a service account key file") && !error.contains("secret"), "{error}");
        let user = r#"{"type": "authorized_user", "client_id": "x", "refresh_token": "y"}"#;
        assert!(ServiceAccountTokens::from_key_file(user).unwrap().is_none());
    }
}
