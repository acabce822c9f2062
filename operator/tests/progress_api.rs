//! The progress API over real HTTPS: a self-signed certificate made by `openssl`, the
//! runner's `ProgressPoster` as the client, raw requests for what a poster never sends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_api::contract::{JobIdentity, Outcome, ProgressReport, Shard, Stage};
use ferry_api::status::Progress;
use ferry_operator::progress::{
    AttemptLookup, IDLE_TIMEOUT, JobKey, Limits, MAX_REPORT_BYTES, ProgressHub, ProgressStatus, StatusSink,
    StatusSinkError, StatusWriter, TLS_RELOAD_INTERVAL, TlsFiles, new_attempt_token, serve, serve_with_limits,
    token_hash,
};
use ferry_runner::progress_client::{ProgressClientError, ProgressPoster};
use reqwest::StatusCode;
use tokio::sync::oneshot;
use tokio::time::Instant;
use zeroize::Zeroizing;

/// A self-signed certificate for 127.0.0.1 and localhost, valid as a server certificate.
struct SelfSigned {
    _dir: tempfile::TempDir,
    files: TlsFiles,
}

fn self_signed() -> SelfSigned {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ferry_e2e::self_signed_certificate(dir.path());
    SelfSigned { _dir: dir, files: TlsFiles { cert, key } }
}

/// A running progress server; stops when dropped.
struct Server {
    address: SocketAddr,
    cert: SelfSigned,
    /// A client for requests a poster would never make, trusting only `cert`.
    raw: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

impl Server {
    fn url(&self, namespace: &str, name: &str) -> String {
        format!("https://{}/v1/namespaces/{namespace}/migrationjobs/{name}/progress", self.address)
    }

    fn poster(&self, name: &str, token: &str) -> ProgressPoster {
        ProgressPoster::new(&self.url("ns", name), Zeroizing::new(token.to_owned()), Some(&self.cert.files.cert))
            .unwrap()
    }
}

fn start_on(listener: TcpListener, cert: SelfSigned, hub: &ProgressHub) -> Server {
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let files = cert.files.clone();
    tokio::spawn(serve(listener, files, hub.clone(), async move {
        stopped.await.ok();
    }));
    let pem = std::fs::read(&cert.files.cert).unwrap();
    let certs = reqwest::Certificate::from_pem_bundle(&pem).unwrap();
    let raw = reqwest::Client::builder().tls_certs_only(certs).build().unwrap();
    Server { address, cert, raw, _stop: stop }
}

fn start(hub: &ProgressHub) -> Server {
    start_on(TcpListener::bind("127.0.0.1:0").unwrap(), self_signed(), hub)
}

fn job(uid: &str) -> JobIdentity {
    JobIdentity { namespace: "ns".into(), name: "copy".into(), uid: uid.into() }
}

/// A hub with attempt `attempt` of job `u1` registered under a fresh token.
fn hub_with_attempt(attempt: u32) -> (ProgressHub, Zeroizing<String>) {
    let hub = ProgressHub::without_lookup();
    let token = new_attempt_token().unwrap();
    hub.register_attempt(&job("u1"), attempt, vec![token_hash(&token)]);
    (hub, token)
}

fn report(attempt: u32, sequence: u64) -> ProgressReport {
    ProgressReport {
        job_uid: "u1".into(),
        attempt,
        shard: Shard::WHOLE,
        sequence,
        stage: Stage::Copying,
        progress: Progress { objects_total: 100, objects_verified: sequence, ..Default::default() },
        recent_failures: Vec::new(),
        outcome: None,
        deletions: None,
        report_objects: None,
    }
}

async fn post(server: &Server, token: Option<&str>, body: impl Into<reqwest::Body>) -> (StatusCode, String) {
    let mut request = server.raw.post(server.url("ns", "copy")).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.body(body).send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

async fn post_report(server: &Server, token: &str, report: &ProgressReport) -> StatusCode {
    post(server, Some(token), serde_json::to_vec(report).unwrap()).await.0
}

fn latest_sequence(hub: &ProgressHub) -> Option<u64> {
    hub.latest("u1")?.shards.get(&0).map(|report| report.sequence)
}

#[tokio::test]
async fn reports_from_the_poster_reach_the_hub() {
    let (hub, token) = hub_with_attempt(1);
    let server = start(&hub);
    let poster = server.poster("copy", &token);
    poster.send(report(1, 1));
    let deadline = Instant::now() + Duration::from_secs(10);
    while latest_sequence(&hub) != Some(1) {
        assert!(Instant::now() < deadline, "the background post never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut last = report(1, 2);
    last.stage = Stage::Finished;
    last.outcome = Some(Outcome::Succeeded);
    poster.finish(last).await.unwrap();
    let latest = hub.latest("u1").unwrap();
    assert_eq!(latest.attempt, 1);
    assert_eq!(latest.combined().objects_verified, 2);
    assert_eq!(latest.outcomes().get(&0), Some(&Some(&Outcome::Succeeded)));
    let (status, body) = {
        let response = server.raw.get(format!("https://{}/healthz", server.address)).send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    };
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
}

#[tokio::test]
async fn missing_and_wrong_tokens_are_unauthorized() {
    let (hub, token) = hub_with_attempt(1);
    let server = start(&hub);
    let body = serde_json::to_vec(&report(1, 1)).unwrap();
    assert_eq!(post(&server, None, body.clone()).await.0, StatusCode::UNAUTHORIZED);
    let (status, text) = post(&server, Some("not-the-token"), body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!text.contains("not-the-token"));

    let error = server.poster("copy", "not-the-token").finish(report(1, 1)).await.unwrap_err();
    assert!(matches!(error, ProgressClientError::Refused { status: 401, .. }), "{error}");
    assert!(!error.to_string().contains("not-the-token"));
    assert_eq!(latest_sequence(&hub), None);
    assert_eq!(post_report(&server, &token, &report(1, 1)).await, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn other_jobs_and_superseded_attempts_are_refused() {
    let (hub, old_token) = hub_with_attempt(1);
    let new_token = new_attempt_token().unwrap();
    hub.register_attempt(&job("u1"), 2, vec![token_hash(&new_token)]);
    let server = start(&hub);

    // The first attempt's runner learns it was superseded, and does not retry.
    let error = server.poster("copy", &old_token).finish(report(1, 9)).await.unwrap_err();
    assert!(matches!(error, ProgressClientError::Refused { status: 403, .. }), "{error}");
    // The current token, but a report about another job UID or another attempt.
    let mut other_job = report(2, 1);
    other_job.job_uid = "u-other".into();
    assert_eq!(post_report(&server, &new_token, &other_job).await, StatusCode::FORBIDDEN);
    assert_eq!(post_report(&server, &new_token, &report(1, 1)).await, StatusCode::FORBIDDEN);
    // A job the operator does not run.
    let error = server.poster("unknown", &new_token).finish(report(2, 1)).await.unwrap_err();
    assert!(matches!(error, ProgressClientError::Refused { status: 404, .. }), "{error}");
    assert_eq!(latest_sequence(&hub), None);

    assert_eq!(post_report(&server, &new_token, &report(2, 1)).await, StatusCode::NO_CONTENT);
    assert_eq!(hub.latest("u1").unwrap().attempt, 2);
}

#[tokio::test]
async fn stale_and_duplicate_reports_are_acknowledged_and_ignored() {
    let (hub, token) = hub_with_attempt(1);
    let server = start(&hub);
    assert_eq!(post_report(&server, &token, &report(1, 5)).await, StatusCode::NO_CONTENT);
    assert_eq!(post_report(&server, &token, &report(1, 5)).await, StatusCode::OK);
    let mut older = report(1, 3);
    older.progress.objects_verified = 99;
    assert_eq!(post_report(&server, &token, &older).await, StatusCode::OK);
    let latest = hub.latest("u1").unwrap();
    assert_eq!(latest.shards[&0].sequence, 5);
    assert_eq!(latest.combined().objects_verified, 5);
    // A poster treats the 200 as delivered: no retry, no error.
    server.poster("copy", &token).finish(report(1, 4)).await.unwrap();
    assert_eq!(latest_sequence(&hub), Some(5));
}

#[tokio::test]
async fn oversized_and_malformed_bodies_are_refused() {
    let (hub, token) = hub_with_attempt(1);
    let server = start(&hub);
    let mut huge = report(1, 1);
    huge.recent_failures = (0..MAX_REPORT_BYTES / 16)
        .map(|i| ferry_api::status::ObjectFailure { path: format!("object-{i}"), reason: "denied".into() })
        .collect();
    let body = serde_json::to_vec(&huge).unwrap();
    assert!(body.len() > MAX_REPORT_BYTES);
    assert_eq!(post(&server, Some(&token), body).await.0, StatusCode::PAYLOAD_TOO_LARGE);

    let (status, message) = post(&server, Some(&token), r#"{"jobUid": "u1", "attempt": "#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.starts_with("malformed progress report"), "{message}");
    assert!(message.len() <= 200, "{message}");
    assert_eq!(latest_sequence(&hub), None);
}

#[tokio::test]
async fn the_token_is_checked_before_the_body_is_read() {
    let (hub, _token) = hub_with_attempt(1);
    let server = start(&hub);
    // A malformed body with a wrong token is "unauthorized", not "malformed": it was never parsed.
    let (status, _) = post(&server, Some("not-the-token"), r#"{"jobUid": "#).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = post(&server, None, r#"{"jobUid": "#).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn names_that_are_not_kubernetes_names_cost_no_lookup() {
    let lookups = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = lookups.clone();
    let lookup: AttemptLookup = Arc::new(move |_key: JobKey| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async { Ok(None) })
    });
    let hub = ProgressHub::new(lookup);
    let server = start(&hub);
    let body = serde_json::to_vec(&report(1, 1)).unwrap();
    for (namespace, name) in [("NS", "copy"), ("ns", "Copy_1"), ("ns", "a..b"), (&"n".repeat(64)[..], "copy")] {
        let url = server.url(namespace, name);
        let response = server.raw.post(url).bearer_auth("guess").body(body.clone()).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{namespace}/{name}");
    }
    assert_eq!(lookups.load(std::sync::atomic::Ordering::SeqCst), 0);
    // A well-formed name does cost one (paced) lookup.
    assert_eq!(post(&server, Some("guess"), body).await.0, StatusCode::NOT_FOUND);
    assert_eq!(lookups.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn connections_are_bounded_in_number_and_idle_time() {
    use tokio::io::AsyncReadExt;
    let (hub, _token) = hub_with_attempt(1);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let cert = self_signed();
    let (_stop, stopped) = oneshot::channel::<()>();
    let idle = Duration::from_millis(800);
    let limits = Limits { max_connections: 2, idle_timeout: idle, tls_reload: TLS_RELOAD_INTERVAL };
    tokio::spawn(serve_with_limits(
        listener,
        cert.files.clone(),
        hub.clone(),
        async move {
            stopped.await.ok();
        },
        limits,
    ));
    let closed_within = |mut stream: tokio::net::TcpStream, within: Duration| async move {
        let mut byte = [0u8; 1];
        matches!(tokio::time::timeout(within, stream.read(&mut byte)).await, Ok(Ok(0) | Err(_)))
    };
    // Two silent connections hold both places; a third is closed at once.
    let first = tokio::net::TcpStream::connect(address).await.unwrap();
    let _second = tokio::net::TcpStream::connect(address).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = tokio::net::TcpStream::connect(address).await.unwrap();
    assert!(closed_within(third, Duration::from_millis(500)).await, "a third connection was kept");
    // A connection that says nothing is closed once the idle time passed.
    let started = Instant::now();
    assert!(closed_within(first, idle * 4).await, "an idle connection was kept");
    assert!(started.elapsed() >= idle / 2);
}

#[tokio::test]
async fn finish_waits_for_a_server_that_starts_late() {
    let (hub, token) = hub_with_attempt(1);
    let address = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let cert = self_signed();
    let url = format!("https://{address}/v1/namespaces/ns/migrationjobs/copy/progress");
    let poster = ProgressPoster::new(&url, token.clone(), Some(&cert.files.cert))
        .unwrap()
        .with_give_up_after(Duration::from_secs(30));
    let started = Instant::now();
    let mut last = report(1, 7);
    last.outcome = Some(Outcome::ObjectsFailed);
    let delivery = tokio::spawn(poster.finish(last));

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!delivery.is_finished(), "the poster gave up while the operator was away");
    let _server = start_on(TcpListener::bind(address).unwrap(), cert, &hub);
    delivery.await.unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(latest_sequence(&hub), Some(7));
}

#[tokio::test]
async fn finish_gives_up_after_the_configured_time() {
    let (_, token) = hub_with_attempt(1);
    let address = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("https://{address}/v1/namespaces/ns/migrationjobs/copy/progress");
    let poster = ProgressPoster::new(&url, token, None).unwrap().with_give_up_after(Duration::from_secs(1));
    let started = Instant::now();
    let error = poster.finish(report(1, 1)).await.unwrap_err();
    assert!(matches!(error, ProgressClientError::GaveUp { tries: 2.., .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Records every status write.
#[derive(Clone, Default)]
struct RecordingSink {
    writes: Arc<Mutex<Vec<(Instant, JobKey, ProgressStatus)>>>,
}

impl StatusSink for RecordingSink {
    async fn write(&self, job: &JobKey, status: &ProgressStatus) -> Result<(), StatusSinkError> {
        self.writes.lock().unwrap().push((Instant::now(), job.clone(), status.clone()));
        Ok(())
    }
}

#[tokio::test]
async fn a_burst_of_reports_becomes_one_status_write_per_interval() {
    let interval = Duration::from_secs(2);
    let (hub, token) = hub_with_attempt(1);
    let server = start(&hub);
    let sink = RecordingSink::default();
    let (stop_writer, writer_stopped) = oneshot::channel::<()>();
    let writer = StatusWriter::new(hub.clone(), sink.clone()).with_interval(interval);
    let writer = tokio::spawn(writer.run(async move {
        writer_stopped.await.ok();
    }));

    let burst = Instant::now();
    for sequence in 1..=50 {
        assert_eq!(post_report(&server, &token, &report(1, sequence)).await, StatusCode::NO_CONTENT);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let burst_took = burst.elapsed();
    tokio::time::sleep(interval + Duration::from_millis(500)).await;
    stop_writer.send(()).unwrap();
    writer.await.unwrap();

    let writes = sink.writes.lock().unwrap().clone();
    // About a second of reports: the first is written at once, the latest one interval later.
    // On a loaded machine the burst may take longer; the bound holds whatever it took.
    let most = 1 + (burst_took.as_millis() / interval.as_millis()) as usize + 1;
    assert!((2..=most).contains(&writes.len()), "{} writes for a burst of {burst_took:?}", writes.len());
    for pair in writes.windows(2) {
        assert!(pair[1].0 - pair[0].0 >= interval, "two writes within one interval");
    }
    let (_, job, last) = writes.last().unwrap();
    assert_eq!(job, &JobKey::new("ns", "copy"));
    assert_eq!(last.progress.objects_verified, 50);
    assert_eq!(last.summary.objects, "50/100");
}

#[tokio::test]
async fn a_renewed_certificate_is_presented_without_a_restart() {
    let (hub, _token) = hub_with_attempt(1);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let cert = self_signed();
    let (_stop, stopped) = oneshot::channel::<()>();
    let limits = Limits { max_connections: 16, idle_timeout: IDLE_TIMEOUT, tls_reload: Duration::from_millis(100) };
    let stop = async move {
        stopped.await.ok();
    };
    tokio::spawn(serve_with_limits(listener, cert.files.clone(), hub.clone(), stop, limits));
    let trusting = |pem: &[u8]| {
        let certs = reqwest::Certificate::from_pem_bundle(pem).unwrap();
        reqwest::Client::builder().tls_certs_only(certs).pool_max_idle_per_host(0).build().unwrap()
    };
    let health = format!("https://{address}/healthz");
    let first = trusting(&std::fs::read(&cert.files.cert).unwrap());
    assert!(first.get(&health).send().await.is_ok(), "the first certificate is presented");

    // A half-written pair (the key of another certificate) is not loaded: the first stays.
    let renewed = self_signed();
    std::fs::copy(&renewed.files.key, &cert.files.key).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(first.get(&health).send().await.is_ok(), "a mismatched pair replaced the working one");

    // As the kubelet does: the new files replace the old ones.
    std::fs::copy(&renewed.files.cert, &cert.files.cert).unwrap();
    let second = trusting(&std::fs::read(&renewed.files.cert).unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while second.get(&health).send().await.is_err() {
        assert!(Instant::now() < deadline, "the renewed certificate was not presented");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(first.get(&health).send().await.is_err(), "the old certificate is no longer presented");
}
