//! OAuth 2.0 access tokens for the drives, from the refresh token in Vault: refreshed a
//! minute before they expire and after a rejection, held in memory only, and a revoked
//! refresh token recognised as such (no retry can fix it). A provider that rotates refresh
//! tokens hands the new one to a [`RotationStore`], so it is not lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use zeroize::Zeroizing;

/// The first refusal for good in this process. A runner runs one job, so a refused
/// credential is the run's outcome: the engine reports it instead of the failures it caused.
static REVOKED: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Why a credential was refused for good in this run, if one was.
pub fn revoked() -> Option<String> {
    REVOKED.lock().ok().and_then(|revoked| revoked.clone())
}

/// How long before its expiry an access token is replaced.
const EARLY: Duration = Duration::from_secs(60);

/// Keeps a rotated refresh token (in Vault, for local runs).
pub trait RotationStore: Send + Sync {
    /// Stores `refresh_token`, replacing the one the run started with.
    fn store<'a>(&'a self, refresh_token: &'a str) -> BoxFuture<'a, Result<(), String>>;
}

/// Why no access token could be had.
#[derive(Clone, Debug, thiserror::Error)]
pub enum TokenError {
    /// The refresh token no longer works: the user withdrew consent, or it expired.
    #[error(
        "binding {binding}: the refresh token was refused ({reason}): the user withdrew consent or it expired. Run the \
         consent flow again and write the new refreshToken to the binding's Vault secret; retrying cannot help"
    )]
    Revoked {
        /// The binding.
        binding: String,
        /// The token endpoint's `error_description`, or its `error`.
        reason: String,
    },
    /// The client is not accepted (`invalid_client`, `unauthorized_client`).
    #[error("binding {binding}: the token endpoint refused the client ({reason}); check clientId and clientSecret")]
    ClientRefused {
        /// The binding.
        binding: String,
        /// What the endpoint said.
        reason: String,
    },
    /// The endpoint could not be reached or failed: worth retrying.
    #[error("binding {binding}: the token endpoint failed: {reason}")]
    Unavailable {
        /// The binding.
        binding: String,
        /// What failed.
        reason: String,
    },
}

impl TokenError {
    /// Whether trying again later may succeed.
    pub fn temporary(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// The application's credentials and where to exchange them.
pub struct Client {
    /// The binding, for messages.
    pub binding: String,
    /// The token endpoint.
    pub token_endpoint: String,
    /// The application's client ID.
    pub client_id: String,
    /// The application's secret.
    pub client_secret: Zeroizing<String>,
    /// Scopes to ask for (some providers want them on every refresh).
    pub scope: Option<String>,
}

/// An access token and when it stops working.
struct Access {
    token: Arc<Zeroizing<String>>,
    expires: Instant,
}

struct State {
    refresh: Zeroizing<String>,
    access: Option<Access>,
    /// Once refused for good, every later call says so without asking again.
    revoked: Option<TokenError>,
}

/// Access tokens for one binding, shared by its transfers.
pub struct Tokens {
    client: Client,
    http: reqwest::Client,
    state: tokio::sync::Mutex<State>,
    rotation: Option<Arc<dyn RotationStore>>,
}

#[derive(serde::Deserialize)]
struct Granted {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
}

#[derive(serde::Deserialize)]
struct Refused {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl Tokens {
    /// Tokens from `refresh_token`; a rotated one goes to `rotation`.
    pub fn new(client: Client, refresh_token: Zeroizing<String>, rotation: Option<Arc<dyn RotationStore>>) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap_or_default();
        let state = State { refresh: refresh_token, access: None, revoked: None };
        Self { client, http, state: tokio::sync::Mutex::new(state), rotation }
    }

    /// A current access token, refreshed first if it expires within a minute.
    pub async fn bearer(&self) -> Result<Arc<Zeroizing<String>>, TokenError> {
        let mut state = self.state.lock().await;
        if let Some(revoked) = &state.revoked {
            return Err(revoked.clone());
        }
        if let Some(access) = &state.access
            && access.expires > Instant::now() + EARLY
        {
            return Ok(access.token.clone());
        }
        self.refresh(&mut state).await
    }

    /// `token` was rejected (401): the next [`Tokens::bearer`] refreshes, unless another
    /// transfer has already replaced it.
    pub async fn rejected(&self, token: &Arc<Zeroizing<String>>) {
        let mut state = self.state.lock().await;
        if state.access.as_ref().is_some_and(|access| Arc::ptr_eq(&access.token, token)) {
            state.access = None;
        }
    }

    async fn refresh(&self, state: &mut State) -> Result<Arc<Zeroizing<String>>, TokenError> {
        let client = &self.client;
        let unavailable = |reason: String| TokenError::Unavailable { binding: client.binding.clone(), reason };
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", state.refresh.as_str()),
            ("client_id", client.client_id.as_str()),
            ("client_secret", client.client_secret.as_str()),
        ];
        if let Some(scope) = &client.scope {
            form.push(("scope", scope));
        }
        let body = Zeroizing::new(form_body(&form));
        let response = self
            .http
            .post(&client.token_endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string())
            .send()
            .await
            .map_err(|error| unavailable(error.without_url().to_string()))?;
        let status = response.status();
        let text = Zeroizing::new(response.text().await.map_err(|error| unavailable(error.without_url().to_string()))?);
        if !status.is_success() {
            let refused: Option<Refused> = serde_json::from_str(&text).ok();
            let error = match refused {
                Some(Refused { error, error_description }) if error == "invalid_grant" => {
                    let revoked = TokenError::Revoked {
                        binding: client.binding.clone(),
                        reason: error_description.unwrap_or(error),
                    };
                    state.revoked = Some(revoked.clone());
                    if let Ok(mut first) = REVOKED.lock() {
                        first.get_or_insert_with(|| revoked.to_string());
                    }
                    revoked
                }
                Some(Refused { error, .. }) if error == "invalid_client" || error == "unauthorized_client" => {
                    TokenError::ClientRefused { binding: client.binding.clone(), reason: error }
                }
                Some(Refused { error, .. }) => unavailable(format!("{status}: {error}")),
                None => unavailable(status.to_string()),
            };
            return Err(error);
        }
        let granted: Granted =
            serde_json::from_str(&text).map_err(|_| unavailable("the answer is not a token response".to_owned()))?;
        let token = Arc::new(Zeroizing::new(granted.access_token));
        let lifetime = Duration::from_secs(granted.expires_in.unwrap_or(3600));
        state.access = Some(Access { token: token.clone(), expires: Instant::now() + lifetime });
        if let Some(rotated) = granted.refresh_token.map(Zeroizing::new)
            && *rotated != *state.refresh
        {
            match &self.rotation {
                Some(store) => match store.store(&rotated).await {
                    Ok(()) => tracing::info!(binding = %client.binding, "stored the rotated refresh token"),
                    Err(reason) => {
                        tracing::warn!(binding = %client.binding, reason, "the rotated refresh token could not be stored")
                    }
                },
                None => tracing::warn!(
                    binding = %client.binding,
                    "the provider rotated the refresh token; it is used for this run but not stored"
                ),
            }
            state.refresh = rotated;
        }
        Ok(token)
    }
}

/// `application/x-www-form-urlencoded` of the pairs.
pub(crate) fn form_body(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}
