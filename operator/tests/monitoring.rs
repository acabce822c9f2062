//! The operator's metrics, the chart's alerts and its Grafana dashboard, against the real
//! tools (Debian's `prometheus` package, installed by `scripts/install-test-deps.sh`):
//! `promtool check metrics` finds nothing wrong with a scrape, and a real Prometheus scraping
//! the operator's endpoint evaluates every dashboard query and every alert expression
//! without error, each returning data.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_api::{MigrationJob, Phase, Progress};
use ferry_operator::health::Health;
use ferry_operator::metrics::Metrics;
use ferry_operator::progress::ProgressHub;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn job(name: &str, phase: Phase, verified: u64) -> MigrationJob {
    let mut job: MigrationJob = serde_yaml::from_str(&format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: MigrationJob\nmetadata: {{name: {name}, namespace: team-a, uid: {name}}}\n\
         spec: {{source: {{binding: a}}, destination: {{binding: b}}}}"
    ))
    .unwrap();
    job.status = Some(ferry_api::MigrationJobStatus {
        phase: Some(phase),
        attempts: 1,
        progress: Some(Progress {
            objects_total: 10,
            objects_copied: verified,
            objects_verified: verified,
            objects_failed: u64::from(phase == Phase::Failed),
            bytes_total: 1000,
            bytes_copied: verified * 100,
            bytes_verified: verified * 100,
            bytes_per_second: 4096,
            eta_seconds: Some(120),
            ..Progress::default()
        }),
        ..Default::default()
    });
    job
}

/// The operator's metrics with a running job, a failed one, reconciles (some failing), Vault
/// calls (all failing: Vault is down), progress reports and status writes.
fn metrics() -> Metrics {
    let metrics = Metrics::new().unwrap();
    metrics.observe_job(&job("nightly", Phase::Running, 4));
    metrics.observe_job(&job("archive", Phase::Failed, 2));
    metrics.reconciled("MigrationJob", 0.02);
    metrics.reconciled("CredentialBinding", 0.3);
    metrics.transition("Starting");
    let hub = ProgressHub::without_lookup();
    hub.count_report("accepted", "ok");
    hub.count_report("rejected", "unauthorized");
    metrics.register(hub.report_counter()).unwrap();
    metrics
}

#[test]
fn a_scrape_passes_promtool_check_metrics() {
    let metrics = metrics();
    metrics.failed("MigrationJob", "VaultUnavailable");
    metrics.vault_call("wrap", false);
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package): run scripts/install-test-deps.sh");
    check.stdin.take().unwrap().write_all(metrics.render().as_bytes()).unwrap();
    let output = check.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && said.trim().is_empty(), "promtool check metrics: {said}");
}

#[test]
fn promtool_accepts_the_alert_rules_and_their_tests() {
    for args in
        [["check", "rules", "charts/ferry/files/alerts.yaml"], ["test", "rules", "charts/ferry/files/alerts_test.yaml"]]
    {
        let output = Command::new("promtool").args(args).current_dir(repository()).output().unwrap();
        assert!(output.status.success(), "promtool {args:?}: {}", String::from_utf8_lossy(&output.stdout));
    }
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Asks Prometheus for `query` now; returns its result array, panicking on an error.
fn query(port: u16, query: &str) -> Vec<serde_json::Value> {
    let output = Command::new("curl")
        .args(["-s", "-G", "--data-urlencode", &format!("query={query}")])
        .arg(format!("http://127.0.0.1:{port}/api/v1/query"))
        .output()
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("{query}: {}", String::from_utf8_lossy(&output.stdout)));
    assert_eq!(answer["status"], "success", "{query}: {answer}");
    answer["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// Every `expr` of the dashboard's panels, with its variables set to "every value".
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(repository().join("charts/ferry/files/dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|target| target["expr"].as_str().map(|expr| expr.replace("$namespace", ".*").replace("$job", ".*")))
        .collect()
}

/// Every alert's expression in the chart's rules file.
fn alert_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repository().join("charts/ferry/files/alerts.yaml")).unwrap();
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|rule| Some((rule["alert"].as_str()?.to_owned(), rule["expr"].as_str()?.to_owned())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_evaluates_every_dashboard_query_and_alert_with_data() {
    let metrics = metrics();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap().port();
    let health = Arc::new(Health::default());
    tokio::spawn(ferry_operator::metrics::serve(listener, metrics.clone(), health, std::future::pending()));
    // Failures keep coming while Prometheus scrapes, so their rates are above zero.
    let failing = metrics.clone();
    tokio::spawn(async move {
        loop {
            failing.failed("MigrationJob", "VaultUnavailable");
            failing.vault_call("wrap", false);
            failing.reconciled("MigrationJob", 0.05);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });

    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("prometheus.yml");
    let rules = repository().join("charts/ferry/files/alerts.yaml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [\"{}\"]\nscrape_configs:\n  - job_name: ferry\n    honor_labels: true\n    static_configs: [{{targets: [\"127.0.0.1:{target}\"]}}]\n",
            rules.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", work.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.path().join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus (Debian's package): run scripts/install-test-deps.sh");

    // Until the scrapes have given every rate two samples.
    let started = Instant::now();
    loop {
        let scraped = tokio::task::spawn_blocking(move || query(port, "count_over_time(ferry_reconciles_total[1m])"));
        let ready = scraped.await.is_ok_and(|result| {
            result.iter().any(|series| series["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()) >= Some(4.0))
        });
        if ready {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "Prometheus scraped nothing within 60 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let checked = tokio::task::spawn_blocking(move || {
        let mut empty = Vec::new();
        for expr in dashboard_queries() {
            if query(port, &expr).is_empty() {
                empty.push(format!("dashboard: {expr}"));
            }
        }
        for (alert, expr) in alert_expressions() {
            if query(port, &expr).is_empty() {
                empty.push(format!("alert {alert}: {expr}"));
            }
        }
        empty
    })
    .await
    .unwrap();
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert!(checked.is_empty(), "queries that returned no data: {checked:#?}");
}

/// `/readyz` answers 503 with the reason until the leader's caches have synced, and 200 for a
/// standby ready to take over; `/healthz` answers while the process serves.
#[tokio::test]
async fn readiness_follows_leadership_and_cache_sync() {
    let health = Health::new(None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(ferry_operator::metrics::serve(
        listener,
        Metrics::new().unwrap(),
        health.clone(),
        std::future::pending(),
    ));
    let get = |path: &'static str| {
        tokio::task::spawn_blocking(move || {
            let output = Command::new("curl")
                .args(["-s", "-w", "\n%{http_code}"])
                .arg(format!("http://127.0.0.1:{port}{path}"))
                .output()
                .unwrap();
            String::from_utf8_lossy(&output.stdout).into_owned()
        })
    };
    assert!(get("/healthz").await.unwrap().ends_with("\n200"));
    assert!(get("/readyz").await.unwrap().ends_with("\n200"), "a standby is ready");
    health.lead(1);
    let answer = get("/readyz").await.unwrap();
    assert!(answer.ends_with("\n503") && answer.contains("synced"), "{answer}");
    health.synced();
    assert!(get("/readyz").await.unwrap().ends_with("\n200"));
}
