//! The HTTPS front end of the progress API.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_server::Handle;
use axum_server::accept::Accept;
use axum_server::tls_rustls::RustlsConfig;
use ferry_api::contract::{ProgressAnswer, ProgressReport, Stage};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use zeroize::Zeroizing;

use super::tls_reload::{TLS_RELOAD_INTERVAL, reload_when_changed};
use super::{Accepted, ProgressHub, Rejection};

/// The largest report body accepted; reports carry counters and a few failures, nothing more.
pub const MAX_REPORT_BYTES: usize = 64 * 1024;

/// How long in-flight requests may finish after shutdown was asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How much of a JSON error the runner is told.
const MAX_ERROR_CHARS: usize = 200;

/// The PEM files the server presents (the Helm chart mounts them from a Secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why the progress server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProgressServerError {
    /// A TLS file could not be read.
    #[error("reading the TLS file {}", path.display())]
    ReadTls {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A TLS file held no usable PEM.
    #[error("the TLS file {} holds no usable PEM {what}: {reason}", path.display())]
    BadPem {
        /// The file.
        path: PathBuf,
        /// "certificate" or "private key".
        what: &'static str,
        /// What the parser said.
        reason: String,
    },
    /// The certificate and key do not work together.
    #[error("the TLS certificate {} and key {} do not form a TLS configuration", cert.display(), key.display())]
    TlsConfig {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// The listening socket could not be used.
    #[error("preparing the progress API's listening socket")]
    Listener(#[source] std::io::Error),
    /// Serving failed.
    #[error("serving the progress API")]
    Serve(#[source] std::io::Error),
}

/// At most this many connections are open at once; beyond it new ones are closed at once.
/// Runners keep one connection each, so this is the number of shards reporting at a time.
pub const MAX_CONNECTIONS: usize = 4096;

/// A connection closes after this long without a complete request header (an idle
/// keep-alive connection as well as a client that sends its header slowly) or without
/// finishing its TLS handshake.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an authenticated request may take to send its body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the progress API over HTTPS on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish for a few seconds.
pub async fn serve(
    listener: std::net::TcpListener,
    tls: TlsFiles,
    hub: ProgressHub,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProgressServerError> {
    let limits =
        Limits { max_connections: MAX_CONNECTIONS, idle_timeout: IDLE_TIMEOUT, tls_reload: TLS_RELOAD_INTERVAL };
    serve_with_limits(listener, tls, hub, shutdown, limits).await
}

/// The server's bounds and timings.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once ([`MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// How long a connection may idle or take over its handshake ([`IDLE_TIMEOUT`]).
    pub idle_timeout: Duration,
    /// How often the certificate files are compared with the loaded ones ([`TLS_RELOAD_INTERVAL`]).
    pub tls_reload: Duration,
}

/// [`serve`] with explicit bounds (tests use small ones).
pub async fn serve_with_limits(
    listener: std::net::TcpListener,
    tls: TlsFiles,
    hub: ProgressHub,
    shutdown: impl Future<Output = ()>,
    Limits { max_connections, idle_timeout, tls_reload }: Limits,
) -> Result<(), ProgressServerError> {
    let config = RustlsConfig::from_config(tls_config(&tls)?);
    // Stopped with the server: aborted when this function returns (also early).
    let _reloading = AbortOnDrop(tokio::spawn(reload_when_changed(tls.clone(), config.clone(), tls_reload)));
    // Tokio adopts the socket as is; it must not block the runtime.
    listener.set_nonblocking(true).map_err(ProgressServerError::Listener)?;
    let handle: Handle<SocketAddr> = Handle::new();
    let mut server = axum_server::from_tcp_rustls(listener, config)
        .map_err(ProgressServerError::Listener)?
        .map(|tls| tls.handshake_timeout(idle_timeout).acceptor(LimitedAcceptor::new(max_connections)))
        .handle(handle.clone())
        .http1_only();
    server.http_builder().http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(idle_timeout);
    let server = server.serve(router(hub).into_make_service_with_connect_info::<SocketAddr>());
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.map_err(ProgressServerError::Serve),
        () = shutdown => handle.graceful_shutdown(Some(SHUTDOWN_GRACE)),
    }
    server.await.map_err(ProgressServerError::Serve)
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads the PEM files into a rustls config with an explicit crypto provider, so nothing
/// depends on which providers happen to be compiled in.
pub(super) fn tls_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, ProgressServerError> {
    let cert_pem = read(&files.cert)?;
    let key_pem = Zeroizing::new(read(&files.key)?);
    let bad_pem =
        |path: &FsPath, what, reason: String| ProgressServerError::BadPem { path: path.to_owned(), what, reason };
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| bad_pem(&files.cert, "certificate", error.to_string()))?;
    if certs.is_empty() {
        return Err(bad_pem(&files.cert, "certificate", "no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|error| bad_pem(&files.key, "private key", error.to_string()))?;
    let config_error =
        |source| ProgressServerError::TlsConfig { cert: files.cert.clone(), key: files.key.clone(), source };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(config_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(path: &FsPath) -> Result<Vec<u8>, ProgressServerError> {
    std::fs::read(path).map_err(|source| ProgressServerError::ReadTls { path: path.to_owned(), source })
}

fn router(hub: ProgressHub) -> Router {
    Router::new()
        .route("/v1/namespaces/{namespace}/migrationjobs/{name}/progress", post(post_progress))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_REPORT_BYTES))
        .with_state(hub)
}

async fn post_progress(
    State(hub): State<ProgressHub>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Checked before any lookup: a made-up name must not cost the API server a read.
    if !is_dns_label(&namespace) || !is_dns_subdomain(&name) {
        hub.count_report("rejected", "bad_name");
        return (StatusCode::NOT_FOUND, "not a Kubernetes namespace and MigrationJob name").into_response();
    }
    let Some(token) = bearer_token(&headers) else {
        hub.count_report("rejected", Rejection::Unauthorized.reason());
        return rejection_response(&Rejection::Unauthorized);
    };
    let job = format!("{namespace}/{name}");
    let credential = match hub.authenticate(peer.ip(), &namespace, &name, token).await {
        Ok(credential) => credential,
        Err(rejection) => {
            tracing::info!(%job, client = %peer.ip(), %rejection, "progress report refused");
            hub.count_report("rejected", rejection.reason());
            return rejection_response(&rejection);
        }
    };
    // Only an authenticated runner's body is read and parsed.
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_REPORT_BYTES)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            hub.count_report("rejected", "too_large");
            return (StatusCode::PAYLOAD_TOO_LARGE, "the report is too large").into_response();
        }
        Err(_) => {
            hub.count_report("rejected", "timeout");
            return (StatusCode::REQUEST_TIMEOUT, "the report body did not arrive in time").into_response();
        }
    };
    let report: ProgressReport = match serde_json::from_slice(&bytes) {
        Ok(report) => report,
        Err(error) => {
            let message: String = format!("malformed progress report: {error}").chars().take(MAX_ERROR_CHARS).collect();
            hub.count_report("rejected", "malformed");
            return (StatusCode::BAD_REQUEST, message).into_response();
        }
    };
    let (attempt, shard, sequence) = (report.attempt, report.shard, report.sequence);
    let awaiting_deletion = report.stage == Stage::AwaitingDeletion;
    let applied = hub.apply(&credential, report);
    match &applied {
        Ok(Accepted::Applied) => hub.count_report("accepted", "ok"),
        Ok(Accepted::Stale) => hub.count_report("stale", "ok"),
        Err(rejection) => hub.count_report("rejected", rejection.reason()),
    }
    match applied {
        // A shard waiting to delete hears the job-wide verdict (or nothing yet) either way.
        Ok(_) if awaiting_deletion => {
            let answer = ProgressAnswer { deletion: hub.deletion_verdict(&credential) };
            (StatusCode::OK, axum::Json(answer)).into_response()
        }
        Ok(Accepted::Applied) => {
            tracing::debug!(%job, attempt, %shard, sequence, "progress applied");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Accepted::Stale) => (StatusCode::OK, "stale or duplicate report ignored").into_response(),
        Err(rejection) => {
            tracing::info!(%job, attempt, %shard, %rejection, "progress report refused");
            rejection_response(&rejection)
        }
    }
}

/// A DNS-1123 label: the form of a namespace name.
fn is_dns_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// A DNS-1123 subdomain: the form of an object name.
fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(is_dns_label)
}

/// Admits at most a fixed number of connections at once: past it a new connection is
/// closed before its TLS handshake, so a flood cannot exhaust the operator's memory or
/// file descriptors. The permit lives as long as the connection.
#[derive(Clone, Debug)]
struct LimitedAcceptor {
    permits: Arc<tokio::sync::Semaphore>,
}

impl LimitedAcceptor {
    fn new(max_connections: usize) -> Self {
        Self { permits: Arc::new(tokio::sync::Semaphore::new(max_connections.max(1))) }
    }
}

impl<S> Accept<tokio::net::TcpStream, S> for LimitedAcceptor {
    type Stream = Held<tokio::net::TcpStream>;
    type Service = S;
    type Future = std::future::Ready<std::io::Result<(Self::Stream, S)>>;

    fn accept(&self, stream: tokio::net::TcpStream, service: S) -> Self::Future {
        std::future::ready(match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => Ok((Held { stream, _permit: permit }, service)),
            Err(_) => {
                tracing::warn!("progress API: too many connections; closing a new one");
                Err(std::io::Error::other("too many connections"))
            }
        })
    }
}

/// A connection holding its place under the connection limit.
#[derive(Debug)]
struct Held<T> {
    stream: T,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl<T: AsyncRead + Unpin> AsyncRead for Held<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(context, buffer)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Held<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(context, buffer)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(context)
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The HTTP status of a refusal: the runner retries only `Unavailable`.
fn rejection_status(rejection: &Rejection) -> StatusCode {
    match rejection {
        Rejection::Unauthorized => StatusCode::UNAUTHORIZED,
        Rejection::WrongJob | Rejection::WrongAttempt => StatusCode::FORBIDDEN,
        Rejection::UnknownJob => StatusCode::NOT_FOUND,
        Rejection::InvalidShard(_) | Rejection::InvalidReport(_) => StatusCode::BAD_REQUEST,
        Rejection::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn rejection_response(rejection: &Rejection) -> Response {
    let status = rejection_status(rejection);
    if status == StatusCode::UNAUTHORIZED {
        (status, [(WWW_AUTHENTICATE, "Bearer")], rejection.to_string()).into_response()
    } else {
        (status, rejection.to_string()).into_response()
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(authorization).unwrap());
        headers
    }

    #[test]
    fn reads_bearer_tokens_only() {
        assert_eq!(bearer_token(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(&headers("Basic abc")), None);
        assert_eq!(bearer_token(&headers("Bearer ")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn only_unavailability_is_worth_a_retry() {
        assert_eq!(rejection_status(&Rejection::Unavailable), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(rejection_status(&Rejection::WrongAttempt), StatusCode::FORBIDDEN);
        assert_eq!(rejection_status(&Rejection::UnknownJob), StatusCode::NOT_FOUND);
    }

    #[test]
    fn path_segments_must_be_kubernetes_names() {
        assert!(is_dns_label("team-a") && is_dns_subdomain("nightly.copy-2"));
        for bad in ["", "Team", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad:?}");
        }
        for bad in ["", "a..b", ".a", "A", &format!("{}.b", "a".repeat(64)), &"a.".repeat(127)] {
            assert!(!is_dns_subdomain(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_missing_tls_file_is_named() {
        let files = TlsFiles { cert: "/nonexistent/tls.crt".into(), key: "/nonexistent/tls.key".into() };
        let error = tls_config(&files).unwrap_err().to_string();
        assert!(error.contains("/nonexistent/tls.crt"), "{error}");
    }

    #[test]
    fn a_file_without_pem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("tls.crt");
        std::fs::write(&cert, "not pem").unwrap();
        let files = TlsFiles { cert: cert.clone(), key: cert.clone() };
        let error = tls_config(&files).unwrap_err().to_string();
        assert!(error.contains("tls.crt") && error.contains("certificate"), "{error}");
    }
}
