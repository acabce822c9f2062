//! Posts progress reports to the operator's progress API over HTTPS with the attempt's token.
//!
//! Reports are cumulative, so only the latest matters: `send` replaces whatever is waiting
//! and never blocks copying; `finish` delivers the final report, retrying while the operator
//! is away (restarting, say) for a bounded time.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferry_api::contract::{ProgressAnswer, ProgressReport};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use zeroize::Zeroizing;

/// How long `finish` keeps trying, unless configured otherwise.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(120);

/// The first pause between two tries of the final report; it doubles up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(200);

/// The longest pause between two tries.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// The longest one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// How much of the operator's answer an error quotes.
const MAX_MESSAGE_CHARS: usize = 200;

/// Why progress could not be set up or delivered. Never contains the token.
#[derive(Debug, thiserror::Error)]
pub enum ProgressClientError {
    /// The progress URL is unusable.
    #[error("progress URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA file could not be read.
    #[error("reading the progress CA file {}", path.display())]
    ReadCa {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("the progress CA file {} holds no usable PEM certificate", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
    },
    /// The token contains characters an HTTP header cannot carry.
    #[error("the progress token is not a valid HTTP header value")]
    BadToken,
    /// No Tokio runtime is running to post in the background.
    #[error("the progress client must be created inside a Tokio runtime")]
    NoRuntime,
    /// The HTTP client could not be built.
    #[error("building the progress HTTP client")]
    Client(#[source] reqwest::Error),
    /// The operator refused the report; retrying would not help.
    #[error("the operator refused the final progress report: HTTP {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The start of the operator's explanation.
        message: String,
    },
    /// The operator could not be reached in time.
    #[error("the final progress report was not delivered within {after:?} ({tries} tries); last error: {last}")]
    GaveUp {
        /// How long it tried.
        after: Duration,
        /// How many requests were made.
        tries: u32,
        /// The last failure.
        last: String,
    },
}

/// Sends one attempt's progress reports to the operator.
pub struct ProgressPoster {
    endpoint: Arc<Endpoint>,
    latest: watch::Sender<Option<ProgressReport>>,
    background: JoinHandle<()>,
    give_up_after: Duration,
}

/// Where and how reports go.
struct Endpoint {
    client: reqwest::Client,
    url: reqwest::Url,
    authorization: HeaderValue,
}

/// Why one request did not deliver a report.
#[derive(Debug, PartialEq, Eq)]
enum PostError {
    /// The operator may accept it later.
    Transient(String),
    /// The operator will never accept it.
    Refused { status: u16, message: String },
}

impl ProgressPoster {
    /// A poster for `url` (the job's progress endpoint) that trusts only `ca_file` when given,
    /// else the system's roots. Must be called inside a Tokio runtime.
    pub fn new(url: &str, token: Zeroizing<String>, ca_file: Option<&Path>) -> Result<Self, ProgressClientError> {
        let bad_url = |reason: &str| ProgressClientError::BadUrl { url: url.to_owned(), reason: reason.to_owned() };
        let parsed = reqwest::Url::parse(url).map_err(|error| bad_url(&error.to_string()))?;
        if parsed.scheme() != "https" {
            return Err(bad_url("must be https: the token must never travel in the clear"));
        }
        let mut authorization = HeaderValue::from_str(&Zeroizing::new(format!("Bearer {}", token.as_str())))
            .map_err(|_| ProgressClientError::BadToken)?;
        authorization.set_sensitive(true);

        let mut builder = reqwest::Client::builder()
            .https_only(true)
            // A redirect could carry the token elsewhere; the operator never redirects.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            // One connection, reused between reports and closed soon after the last.
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(Duration::from_secs(10));
        if let Some(path) = ca_file {
            builder = builder.tls_certs_only(read_ca(path)?);
        }
        let client = builder.build().map_err(ProgressClientError::Client)?;

        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ProgressClientError::NoRuntime)?;
        let endpoint = Arc::new(Endpoint { client, url: parsed, authorization });
        let (latest, pending) = watch::channel(None);
        let background = runtime.spawn(post_latest(endpoint.clone(), pending));
        Ok(Self { endpoint, latest, background, give_up_after: DEFAULT_GIVE_UP_AFTER })
    }

    /// Sets how long [`Self::finish`] keeps trying.
    pub fn with_give_up_after(mut self, after: Duration) -> Self {
        self.give_up_after = after;
        self
    }

    /// Posts `report` now and returns the operator's answer (a shard awaiting deletion learns
    /// the job-wide verdict this way). Transient failures are the caller's to retry.
    pub async fn ask(&self, report: &ProgressReport) -> Result<ProgressAnswer, String> {
        match self.endpoint.post(report, REQUEST_TIMEOUT).await {
            Ok(body) if body.trim().is_empty() => Ok(ProgressAnswer::default()),
            Ok(body) => serde_json::from_str(&body).map_err(|error| format!("the operator's answer: {error}")),
            Err(PostError::Transient(error)) => Err(error),
            Err(PostError::Refused { status, message }) => Err(format!("HTTP {status}: {message}")),
        }
    }

    /// Queues `report`, replacing any report not yet posted. Never waits.
    pub fn send(&self, report: ProgressReport) {
        self.latest.send_replace(Some(report));
    }

    /// Delivers the attempt's final report, retrying transient failures with exponential
    /// backoff until it is accepted, refused, or the time is up.
    pub async fn finish(self, report: ProgressReport) -> Result<(), ProgressClientError> {
        // An earlier report still in flight would only be stale once the final one lands.
        self.background.abort();
        let started = Instant::now();
        let deadline = started + self.give_up_after;
        let mut delay = FIRST_RETRY_DELAY;
        let mut tries = 0;
        loop {
            tries += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let last = match self.endpoint.post(&report, remaining.min(REQUEST_TIMEOUT)).await {
                Ok(_) => return Ok(()),
                Err(PostError::Refused { status, message }) => {
                    return Err(ProgressClientError::Refused { status, message });
                }
                Err(PostError::Transient(last)) => last,
            };
            let Some(pause) = next_pause(Instant::now(), deadline, delay) else {
                return Err(ProgressClientError::GaveUp { after: started.elapsed(), tries, last });
            };
            tracing::debug!(tries, error = %last, ?pause, "final progress report not delivered yet");
            tokio::time::sleep(pause).await;
            delay = (delay * 2).min(MAX_RETRY_DELAY);
        }
    }
}

impl Drop for ProgressPoster {
    fn drop(&mut self) {
        self.background.abort();
    }
}

impl fmt::Debug for ProgressPoster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressPoster").field("url", &self.endpoint.url.as_str()).finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Posts one report; on success returns the answer's body (empty for most reports).
    async fn post(&self, report: &ProgressReport, timeout: Duration) -> Result<String, PostError> {
        let response = self
            .client
            .post(self.url.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .json(report)
            .timeout(timeout)
            .send()
            .await
            .map_err(|error| PostError::Transient(error_chain(&error)))?;
        let status = response.status();
        if status.is_success() {
            // Only a JSON answer matters; the text of a "stale" answer is not one.
            let json = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
            return Ok(if json { response.text().await.unwrap_or_default() } else { String::new() });
        }
        let message: String = response.text().await.unwrap_or_default().chars().take(MAX_MESSAGE_CHARS).collect();
        if is_transient(status) {
            Err(PostError::Transient(format!("HTTP {status}: {message}")))
        } else {
            Err(PostError::Refused { status: status.as_u16(), message })
        }
    }
}

/// Posts whatever report is latest, one at a time; a failed one is simply superseded by the
/// next, which carries the same counters and more.
async fn post_latest(endpoint: Arc<Endpoint>, mut pending: watch::Receiver<Option<ProgressReport>>) {
    while pending.changed().await.is_ok() {
        let Some(report) = pending.borrow_and_update().clone() else { continue };
        match endpoint.post(&report, REQUEST_TIMEOUT).await {
            Ok(_) => {}
            Err(PostError::Transient(error)) => tracing::debug!(%error, "progress report not delivered"),
            Err(PostError::Refused { status, message }) => {
                tracing::warn!(status, %message, "the operator refused a progress report");
            }
        }
    }
}

/// Whether the operator may accept the same report later: it is away, overloaded or slow.
fn is_transient(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS
}

/// How long to wait before the next try, or `None` when that would pass the deadline.
fn next_pause(now: Instant, deadline: Instant, delay: Duration) -> Option<Duration> {
    let remaining = deadline.saturating_duration_since(now);
    // Too little time left for a pause and a request: give up rather than overshoot.
    (remaining > delay).then_some(delay)
}

/// The certificates of a PEM CA bundle, for a client that trusts only them.
pub fn read_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, ProgressClientError> {
    let pem = std::fs::read(path).map_err(|source| ProgressClientError::ReadCa { path: path.to_owned(), source })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).unwrap_or_default();
    if certs.is_empty() {
        return Err(ProgressClientError::BadCa { path: path.to_owned() });
    }
    Ok(certs)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailability_and_overload_are_retried() {
        for status in [500, 502, 503, 408, 429] {
            assert!(is_transient(StatusCode::from_u16(status).unwrap()), "{status}");
        }
        for status in [400, 401, 403, 404, 413, 301] {
            assert!(!is_transient(StatusCode::from_u16(status).unwrap()), "{status}");
        }
    }

    #[test]
    fn pauses_stop_at_the_deadline() {
        let now = Instant::now();
        let second = Duration::from_secs(1);
        assert_eq!(next_pause(now, now + 5 * second, second), Some(second));
        assert_eq!(next_pause(now, now + second, second), None);
        assert_eq!(next_pause(now + 9 * second, now, second), None);
    }

    #[tokio::test]
    async fn refuses_plain_http_and_never_shows_the_token() {
        let token = Zeroizing::new("s3cr3t-token".to_owned());
        let error = ProgressPoster::new("http://operator:8443/x", token.clone(), None).unwrap_err();
        assert!(matches!(error, ProgressClientError::BadUrl { .. }));
        let poster = ProgressPoster::new("https://operator:8443/x", token, None).unwrap();
        assert!(!format!("{poster:?}").contains("s3cr3t"));
    }

    #[tokio::test]
    async fn a_ca_file_without_certificates_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "nothing here").unwrap();
        let error = ProgressPoster::new("https://operator/x", Zeroizing::new("t".into()), Some(&path)).unwrap_err();
        assert!(error.to_string().contains("ca.pem"), "{error}");
    }
}
