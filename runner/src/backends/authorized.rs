//! Requests to an OAuth drive's API (OneDrive, Dropbox, Google Drive): each carries a current
//! access token, is sent once more with a fresh one after a 401, and waits out 429 and 503
//! answers for as long as their `Retry-After` says. What the answers mean is each drive's.

use std::sync::Arc;
use std::time::Duration;

use opendal::{Error, ErrorKind};

use ferry_api::binding::DriveSettings;
use ferry_api::binding::secret_field::{CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN};
use zeroize::Zeroizing;

use super::BackendInput;
use super::oauth::{Client, TokenError, Tokens};
use crate::storage::StorageError;

/// Throttled answers waited out per request before it fails (the retry layer may try again).
const THROTTLED_TRIES: u32 = 8;
/// The longest wait a `Retry-After` is granted.
const LONGEST_WAIT: Duration = Duration::from_secs(120);

/// An HTTP client for one drive binding.
pub struct Authorized {
    /// The provider, for messages (`onedrive`, `dropbox`, `gdrive`).
    provider: &'static str,
    tokens: Arc<Tokens>,
    http: reqwest::Client,
}

impl Authorized {
    /// A client for `provider` whose requests time out after ten minutes (a large fragment
    /// on a slow link).
    pub fn new(provider: &'static str, tokens: Arc<Tokens>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10 * 60)).build()?;
        Ok(Self { provider, tokens, http })
    }

    /// The client for a drive binding: the application's client ID and secret and the
    /// user's refresh token from its secret, exchanged at `settings.tokenEndpoint` (else
    /// `token_endpoint`) with `scope`; a rotated refresh token goes to the input's store.
    pub fn for_binding(
        provider: &'static str,
        input: &BackendInput<'_>,
        settings: &DriveSettings,
        token_endpoint: &str,
        scope: Option<&str>,
    ) -> Result<Self, StorageError> {
        let client = Client {
            binding: input.binding.to_owned(),
            token_endpoint: settings.token_endpoint.clone().unwrap_or_else(|| token_endpoint.to_owned()),
            client_id: input.required(CLIENT_ID)?.to_owned(),
            client_secret: Zeroizing::new(input.required(CLIENT_SECRET)?.to_owned()),
            scope: scope.map(str::to_owned),
        };
        let refresh_token = Zeroizing::new(input.required(REFRESH_TOKEN)?.to_owned());
        let tokens = Arc::new(Tokens::new(client, refresh_token, input.rotation.clone()));
        Self::new(provider, tokens).map_err(|error| StorageError::InvalidSettings {
            binding: input.binding.to_owned(),
            message: error.to_string(),
        })
    }

    /// Sends what `build` makes with a bearer token: again with a fresh one after a 401,
    /// and again after waiting out throttling.
    pub async fn send(
        &self,
        doing: &str,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        self.send_with(doing, true, |http, token| build(http, token.unwrap_or_default())).await
    }

    /// Sends what `build` makes to a URL that carries its own authorization (an upload
    /// session), waiting out throttling.
    pub async fn send_presigned(
        &self,
        doing: &str,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        self.send_with(doing, false, |http, _| build(http)).await
    }

    /// The one loop behind both: with `bearer`, a fresh token each time and one new token
    /// after a 401; throttling waited out either way.
    async fn send_with(
        &self,
        doing: &str,
        bearer: bool,
        build: impl Fn(&reqwest::Client, Option<&str>) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        let mut rejected_once = false;
        let mut throttled = 0;
        loop {
            let token = if bearer { Some(self.tokens.bearer().await.map_err(token_error)?) } else { None };
            let response = build(&self.http, token.as_ref().map(|token| token.as_str()))
                .send()
                .await
                .map_err(|error| self.request_error(doing, error))?;
            match (response.status().as_u16(), &token) {
                (401, Some(token)) if !rejected_once => {
                    rejected_once = true;
                    self.tokens.rejected(token).await;
                }
                (429 | 503, _) if throttled < THROTTLED_TRIES => {
                    throttled += 1;
                    self.wait_out(doing, &response).await;
                }
                _ => return Ok(response),
            }
        }
    }

    async fn wait_out(&self, doing: &str, response: &reqwest::Response) {
        let seconds = response.headers().get("retry-after").and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        let wait = Duration::from_secs(seconds.unwrap_or(5)).min(LONGEST_WAIT);
        tracing::info!(provider = self.provider, doing, seconds = wait.as_secs(), "the drive asked to slow down");
        tokio::time::sleep(wait).await;
    }

    /// A request that got no answer, as OpenDAL's (temporary) error; the URL, which may
    /// carry a session's authorization, is left out.
    pub fn request_error(&self, doing: &str, error: reqwest::Error) -> Error {
        Error::new(ErrorKind::Unexpected, format!("{}: {doing}: {}", self.provider, error.without_url()))
            .set_temporary()
    }

    /// An answer that is not a success, as OpenDAL's error: `code` is the drive's own name
    /// for the failure. Server errors and throttling are temporary.
    pub fn failure(&self, doing: &str, status: reqwest::StatusCode, code: &str) -> Error {
        let kind = match status.as_u16() {
            404 => ErrorKind::NotFound,
            401 | 403 => ErrorKind::PermissionDenied,
            _ => ErrorKind::Unexpected,
        };
        let error = Error::new(kind, format!("{}: {doing}: {status} {code}", self.provider));
        if status.is_server_error() || status.as_u16() == 429 { error.set_temporary() } else { error }
    }
}

/// `request` asking for `length` bytes from `offset` (`None`: to the end); no `Range` header
/// when that is the whole file.
pub fn with_range(request: reqwest::RequestBuilder, offset: u64, length: Option<u64>) -> reqwest::RequestBuilder {
    match length {
        Some(length) if length > 0 => request.header("range", format!("bytes={offset}-{}", offset + length - 1)),
        None if offset > 0 => request.header("range", format!("bytes={offset}-")),
        _ => request,
    }
}

/// No access token: a revoked or refused credential is permanent, an unreachable endpoint not.
fn token_error(error: TokenError) -> Error {
    let kind = if error.temporary() { ErrorKind::Unexpected } else { ErrorKind::PermissionDenied };
    let converted = Error::new(kind, error.to_string());
    if error.temporary() { converted.set_temporary() } else { converted }
}

/// A download's body, as OpenDAL reads it.
pub struct ResponseStream {
    /// The provider, for messages.
    pub provider: &'static str,
    /// The answer whose body is the content.
    pub response: reqwest::Response,
}

impl opendal::raw::oio::ReadStream for ResponseStream {
    async fn read(&mut self) -> opendal::Result<opendal::Buffer> {
        let chunk = self.response.chunk().await.map_err(|error| {
            Error::new(ErrorKind::Unexpected, format!("{}: downloading: {}", self.provider, error.without_url()))
                .set_temporary()
        })?;
        Ok(chunk.map(opendal::Buffer::from).unwrap_or_default())
    }
}
