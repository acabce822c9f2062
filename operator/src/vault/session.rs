//! Logging in and keeping the token alive: lookup-self for a given token, the Kubernetes
//! auth method with the pod's service account, renew-self at two thirds of the TTL, and a
//! new login when renewal fails or the token reaches its maximum TTL.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use url::Url;
use zeroize::Zeroizing;

use super::transport::{self, Call, check_token, zeroizing_string};
use super::{Vault, VaultAuth, VaultError, json_problem};

/// The longest wait between retries of a failed renewal or login.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A token and what Vault said about its lifetime.
pub(super) struct Session {
    token: Zeroizing<String>,
    renewable: bool,
    /// The TTL left when `refreshed`; `None` for a token that never expires.
    ttl: Option<Duration>,
    /// The TTL the token was issued with: renewals ask for as much again.
    issued_ttl: Option<Duration>,
    refreshed: Instant,
}

impl Session {
    pub(super) fn token(&self) -> &str {
        &self.token
    }

    /// Logs in (Kubernetes) or validates the given token (lookup-self).
    pub(super) async fn establish(
        http: &rustify::clients::reqwest::Client,
        address: &Url,
        auth: &VaultAuth,
    ) -> Result<Session, VaultError> {
        match auth {
            VaultAuth::Token(token) => look_up(http, address, token).await,
            VaultAuth::Kubernetes { role, mount, jwt_file } => login(http, address, role, mount, jwt_file).await,
        }
    }

    /// When to renew: two thirds into the TTL, so a slow or failed attempt still has time.
    fn renew_at(&self) -> Option<Instant> {
        self.ttl.map(|ttl| self.refreshed + ttl * 2 / 3)
    }

    fn expires_at(&self) -> Option<Instant> {
        self.ttl.map(|ttl| self.refreshed + ttl)
    }
}

fn seconds(value: u64) -> Option<Duration> {
    (value > 0).then(|| Duration::from_secs(value))
}

fn address_text(address: &Url) -> String {
    address.as_str().trim_end_matches('/').to_owned()
}

#[derive(Deserialize)]
struct LookupBody {
    data: LookupData,
}

// Only the lifetime: lookup-self also returns the token itself (`id`), which is never parsed.
#[derive(Deserialize)]
struct LookupData {
    #[serde(default)]
    ttl: u64,
    #[serde(default)]
    creation_ttl: u64,
    #[serde(default)]
    renewable: bool,
}

async fn look_up(
    http: &rustify::clients::reqwest::Client,
    address: &Url,
    token: &Zeroizing<String>,
) -> Result<Session, VaultError> {
    const PATH: &str = "auth/token/lookup-self";
    let context = "validating the Vault token";
    check_token(token, "the Vault token")?;
    let body = transport::send(http, token, None, Call::get(PATH)).await.map_err(|error| {
        error.into_error(context, address_text(address), PATH, "the token is invalid, expired or revoked")
    })?;
    let parsed: LookupBody = serde_json::from_slice(&body).map_err(|error| VaultError::Malformed {
        context: context.to_owned(),
        path: PATH.to_owned(),
        detail: json_problem(&error),
    })?;
    Ok(Session {
        token: token.clone(),
        renewable: parsed.data.renewable,
        ttl: seconds(parsed.data.ttl),
        issued_ttl: seconds(parsed.data.creation_ttl).or(seconds(parsed.data.ttl)),
        refreshed: Instant::now(),
    })
}

#[derive(Deserialize)]
struct AuthBody {
    auth: AuthInfo,
}

#[derive(Deserialize)]
struct AuthInfo {
    #[serde(deserialize_with = "zeroizing_string")]
    client_token: Zeroizing<String>,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

#[derive(Serialize)]
struct LoginRequest<'a> {
    role: &'a str,
    jwt: &'a str,
}

async fn login(
    http: &rustify::clients::reqwest::Client,
    address: &Url,
    role: &str,
    mount: &str,
    jwt_file: &Path,
) -> Result<Session, VaultError> {
    let path = format!("auth/{mount}/login");
    let context = format!("Kubernetes login with role {role:?}");
    // Read at every login: the kubelet rotates projected service account tokens.
    let jwt = Zeroizing::new(
        tokio::fs::read_to_string(jwt_file)
            .await
            .map_err(|source| VaultError::ServiceAccountToken { path: jwt_file.to_path_buf(), source })?,
    );
    let request = LoginRequest { role, jwt: jwt.trim() };
    let body = Zeroizing::new(serde_json::to_vec(&request).map_err(|error| VaultError::Malformed {
        context: context.clone(),
        path: path.clone(),
        detail: json_problem(&error),
    })?);
    let hint =
        format!("check that role {role:?} exists on auth/{mount} and is bound to this service account and namespace");
    let answer = transport::send(http, "", None, Call::post(path.as_str(), body)).await;
    let body = match answer {
        // Vault reports a role or service account mismatch as 400 or 403: both are a refusal.
        Err(transport::CallError::Status { code: 400, errors }) => {
            return Err(VaultError::PermissionDenied {
                context,
                path,
                hint: format!("{hint} ({})", errors.join("; ")),
            });
        }
        Err(error) => return Err(error.into_error(&context, address_text(address), &path, &hint)),
        Ok(body) => body,
    };
    let parsed: AuthBody = serde_json::from_slice(&body).map_err(|error| VaultError::Malformed {
        context: context.clone(),
        path: path.clone(),
        detail: json_problem(&error),
    })?;
    check_token(&parsed.auth.client_token, "the token Vault issued")?;
    tracing::info!(role, mount, ttl_seconds = parsed.auth.lease_duration, "logged in to Vault");
    let ttl = seconds(parsed.auth.lease_duration);
    Ok(Session {
        token: parsed.auth.client_token,
        renewable: parsed.auth.renewable,
        ttl,
        issued_ttl: ttl,
        refreshed: Instant::now(),
    })
}

#[derive(Serialize)]
struct RenewRequest {
    increment: String,
}

impl Vault {
    /// Starts keeping the token alive in the background: renew-self at two thirds of its
    /// TTL, and (Kubernetes auth) a new login when renewal fails, the token is not
    /// renewable, or it nears its maximum TTL. A token without a TTL needs nothing; the task
    /// then ends at once.
    pub fn spawn_renewal(&self) -> tokio::task::JoinHandle<()> {
        let vault = self.clone();
        tokio::spawn(async move { vault.keep_alive().await })
    }

    async fn keep_alive(&self) {
        let mut failures: u32 = 0;
        loop {
            let session = self.session();
            let Some(renew_at) = session.renew_at() else {
                tracing::debug!("the Vault token has no TTL: no renewal needed");
                return;
            };
            if failures == 0 {
                tokio::time::sleep_until(renew_at).await;
            }
            match self.refresh(&session).await {
                Ok(()) => failures = 0,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let expired = session.expires_at().is_some_and(|at| at <= Instant::now());
                    if expired && matches!(self.inner.auth, VaultAuth::Token(_)) {
                        tracing::error!(%error, "the Vault token expired and cannot be renewed; give the operator a new one");
                        return;
                    }
                    let backoff = Duration::from_secs(1u64 << failures.min(6)).min(MAX_BACKOFF);
                    tracing::warn!(%error, retry_in_seconds = backoff.as_secs(), "keeping the Vault token alive failed");
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    /// Renews `session` or replaces it with a new login.
    async fn refresh(&self, session: &Session) -> Result<(), VaultError> {
        let can_login = matches!(self.inner.auth, VaultAuth::Kubernetes { .. });
        if session.renewable {
            match self.renew(session).await {
                Ok(renewed) => {
                    // A renewal granting much less than asked means the token nears its
                    // maximum TTL: a fresh login beats renewing ever shorter.
                    let capped = match (renewed.ttl, session.issued_ttl) {
                        (Some(ttl), Some(issued)) => ttl < issued / 2,
                        _ => false,
                    };
                    if !(capped && can_login) {
                        tracing::debug!(ttl_seconds = renewed.ttl.map(|ttl| ttl.as_secs()), "renewed the Vault token");
                        self.replace_session(renewed);
                        return Ok(());
                    }
                }
                Err(error) if can_login => tracing::info!(%error, "renewing the Vault token failed; logging in again"),
                Err(error) => return Err(error),
            }
        } else if !can_login {
            return Err(VaultError::Config(
                "the Vault token is not renewable and will expire; give the operator a renewable or periodic token"
                    .to_owned(),
            ));
        }
        let fresh = Session::establish(&self.inner.http, &self.inner.address, &self.inner.auth).await?;
        self.replace_session(fresh);
        Ok(())
    }

    async fn renew(&self, session: &Session) -> Result<Session, VaultError> {
        const PATH: &str = "auth/token/renew-self";
        let context = "renewing the Vault token";
        let increment = session.issued_ttl.or(session.ttl).map(|ttl| ttl.as_secs()).unwrap_or(0);
        let request = RenewRequest { increment: format!("{increment}s") };
        let body = Zeroizing::new(serde_json::to_vec(&request).map_err(|error| VaultError::Malformed {
            context: context.to_owned(),
            path: PATH.to_owned(),
            detail: json_problem(&error),
        })?);
        let answer = transport::send(&self.inner.http, session.token(), None, Call::post(PATH, body)).await;
        let body = answer.map_err(|error| {
            error.into_error(
                context,
                self.address_text(),
                PATH,
                "the token expired, was revoked or reached its max TTL",
            )
        })?;
        let parsed: RenewBody = serde_json::from_slice(&body).map_err(|error| VaultError::Malformed {
            context: context.to_owned(),
            path: PATH.to_owned(),
            detail: json_problem(&error),
        })?;
        Ok(Session {
            token: session.token.clone(),
            renewable: parsed.auth.renewable,
            ttl: seconds(parsed.auth.lease_duration),
            issued_ttl: session.issued_ttl,
            refreshed: Instant::now(),
        })
    }
}

#[derive(Deserialize)]
struct RenewBody {
    auth: RenewInfo,
}

// The answer repeats the token (`client_token`); it is deliberately not parsed.
#[derive(Deserialize)]
struct RenewInfo {
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}
