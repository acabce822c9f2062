//! Prometheus metrics of the operator, served at `/metrics`: reconciles, errors and their
//! durations, jobs by phase, verified objects and bytes per job, and Vault calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use ferry_api::{MigrationJob, Phase};
use kube::ResourceExt;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// The operator's metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    errors: IntCounterVec,
    durations: HistogramVec,
    jobs: IntGaugeVec,
    objects: IntGaugeVec,
    bytes: IntGaugeVec,
    vault_calls: IntCounterVec,
    attempts: IntGaugeVec,
    throughput: IntGaugeVec,
    eta: IntGaugeVec,
    info: IntGaugeVec,
    transitions: IntCounterVec,
    /// Each job's phase by namespace and name: counted for `jobs`, and the label its info
    /// series has, removed when the phase changes.
    phases: Arc<Mutex<HashMap<(String, String), Phase>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

const PHASES: [Phase; 6] =
    [Phase::Pending, Phase::Waiting, Phase::Running, Phase::Succeeded, Phase::Failed, Phase::Suspended];

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("ferry".into()), None)?;
        let reconciles = IntCounterVec::new(Opts::new("reconciles_total", "Reconcile passes"), &["kind"])?;
        let errors =
            IntCounterVec::new(Opts::new("reconcile_errors_total", "Failed reconcile passes"), &["kind", "reason"])?;
        let durations = HistogramVec::new(
            HistogramOpts::new("reconcile_duration_seconds", "Reconcile pass durations")
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0]),
            &["kind"],
        )?;
        let jobs = IntGaugeVec::new(Opts::new("jobs", "MigrationJobs by phase"), &["phase"])?;
        let objects = IntGaugeVec::new(
            Opts::new("job_objects", "Objects of a job by state (total, verified, skipped, failed)"),
            &["namespace", "job", "state"],
        )?;
        let bytes =
            IntGaugeVec::new(Opts::new("job_bytes", "Bytes of a job by state"), &["namespace", "job", "state"])?;
        let vault_calls =
            IntCounterVec::new(Opts::new("vault_requests_total", "Vault requests"), &["operation", "result"])?;
        let job = ["namespace", "job"];
        let attempts = IntGaugeVec::new(Opts::new("job_attempts", "Attempts a job has launched"), &job)?;
        let throughput = IntGaugeVec::new(
            Opts::new("job_throughput_bytes_per_second", "Recent throughput of verified bytes, as runners report it"),
            &job,
        )?;
        let eta = IntGaugeVec::new(Opts::new("job_eta_seconds", "Estimated seconds until a job completes"), &job)?;
        let info = IntGaugeVec::new(
            Opts::new("job_info", "1 for every job, labelled with its phase"),
            &["namespace", "job", "phase"],
        )?;
        let transitions = IntCounterVec::new(
            Opts::new("job_transitions_total", "Jobs' phase and attempt changes, by the reason the event names"),
            &["reason"],
        )?;
        for collector in [&reconciles, &errors, &vault_calls, &transitions] {
            registry.register(Box::new(collector.clone()))?;
        }
        registry.register(Box::new(durations.clone()))?;
        for gauge in [&jobs, &objects, &bytes, &attempts, &throughput, &eta, &info] {
            registry.register(Box::new(gauge.clone()))?;
        }
        Ok(Self {
            registry,
            reconciles,
            errors,
            durations,
            jobs,
            objects,
            bytes,
            vault_calls,
            attempts,
            throughput,
            eta,
            info,
            transitions,
            phases: Arc::default(),
        })
    }

    /// Registers a collector kept elsewhere (the progress API's and status writer's counters).
    pub fn register(&self, collector: impl prometheus::core::Collector + 'static) -> Result<(), prometheus::Error> {
        self.registry.register(Box::new(collector))
    }

    /// Counts a job's phase or attempt change, by the reason its event names.
    pub fn transition(&self, reason: &str) {
        self.transitions.with_label_values(&[reason]).inc();
    }

    /// Counts a reconcile pass and its duration.
    pub fn reconciled(&self, kind: &str, seconds: f64) {
        self.reconciles.with_label_values(&[kind]).inc();
        self.durations.with_label_values(&[kind]).observe(seconds);
    }

    /// Counts a failed pass.
    pub fn failed(&self, kind: &str, reason: &str) {
        self.errors.with_label_values(&[kind, reason]).inc();
    }

    /// Counts a Vault request.
    pub fn vault_call(&self, operation: &str, ok: bool) {
        self.vault_calls.with_label_values(&[operation, if ok { "ok" } else { "error" }]).inc();
    }

    /// Records a job's phase and progress as its status shows them.
    pub fn observe_job(&self, job: &MigrationJob) {
        let (namespace, name) = (job.namespace().unwrap_or_default(), job.name_any());
        let status = job.status.clone().unwrap_or_default();
        if let Some(progress) = &status.progress {
            for (state, value) in [
                ("total", progress.objects_total),
                ("copied", progress.objects_copied),
                ("verified", progress.objects_verified),
                ("skipped", progress.objects_skipped),
                ("failed", progress.objects_failed),
                ("deleted", progress.objects_deleted),
            ] {
                self.objects.with_label_values(&[&namespace, &name, state]).set(clamp(value));
            }
            for (state, value) in [
                ("total", progress.bytes_total),
                ("copied", progress.bytes_copied),
                ("verified", progress.bytes_verified),
            ] {
                self.bytes.with_label_values(&[&namespace, &name, state]).set(clamp(value));
            }
            self.throughput.with_label_values(&[&namespace, &name]).set(clamp(progress.bytes_per_second));
            match progress.eta_seconds {
                Some(eta) => self.eta.with_label_values(&[&namespace, &name]).set(clamp(eta)),
                None => {
                    let _ = self.eta.remove_label_values(&[&namespace, &name]);
                }
            }
        }
        self.attempts.with_label_values(&[&namespace, &name]).set(i64::from(status.attempts));
        let phase = status.phase.unwrap_or_default();
        let mut phases = self.phases.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(before) = phases.insert((namespace.clone(), name.clone()), phase)
            && before != phase
        {
            let _ = self.info.remove_label_values(&[&namespace, &name, &format!("{before:?}")]);
        }
        self.info.with_label_values(&[&namespace, &name, &format!("{phase:?}")]).set(1);
        self.publish_phases(&phases);
    }

    /// Forgets a deleted job.
    pub fn forget_job(&self, job: &MigrationJob) {
        let (namespace, name) = (job.namespace().unwrap_or_default(), job.name_any());
        for state in ["total", "copied", "verified", "skipped", "failed", "deleted"] {
            let _ = self.objects.remove_label_values(&[&namespace, &name, state]);
            let _ = self.bytes.remove_label_values(&[&namespace, &name, state]);
        }
        for gauge in [&self.attempts, &self.throughput, &self.eta] {
            let _ = gauge.remove_label_values(&[&namespace, &name]);
        }
        let mut phases = self.phases.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(phase) = phases.remove(&(namespace.clone(), name.clone())) {
            let _ = self.info.remove_label_values(&[&namespace, &name, &format!("{phase:?}")]);
        }
        self.publish_phases(&phases);
    }

    fn publish_phases(&self, phases: &HashMap<(String, String), Phase>) {
        for phase in PHASES {
            let count = phases.values().filter(|p| **p == phase).count();
            self.jobs.with_label_values(&[&format!("{phase:?}")]).set(count as i64);
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if TextEncoder::new().encode(&self.registry.gather(), &mut buffer).is_err() {
            return String::new();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Serves `/metrics`, `/healthz` and `/readyz` over plain HTTP until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    health: std::sync::Arc<crate::health::Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let ready = move || {
        let answer = match crate::health::readiness(health.signals()) {
            Ok(()) => (StatusCode::OK, "ready".to_owned()),
            Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why.to_owned()),
        };
        std::future::ready(answer)
    };
    let app = axum::Router::new()
        .route("/metrics", get(move || std::future::ready(metrics.render())))
        .route("/healthz", get(|| std::future::ready("ok")))
        .route("/readyz", get(ready));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_jobs_by_phase_and_progress() {
        let metrics = Metrics::new().unwrap();
        let mut job: MigrationJob = serde_yaml::from_str(
            "apiVersion: ferry.dev/v1alpha1\nkind: MigrationJob\nmetadata: {name: j, namespace: n, uid: u}\nspec: {source: {binding: a}, destination: {binding: b}}",
        )
        .unwrap();
        job.status = Some(ferry_api::MigrationJobStatus {
            phase: Some(Phase::Running),
            progress: Some(ferry_api::Progress {
                objects_total: 10,
                objects_verified: 4,
                bytes_total: 100,
                bytes_verified: 40,
                ..Default::default()
            }),
            ..Default::default()
        });
        metrics.observe_job(&job);
        metrics.reconciled("MigrationJob", 0.02);
        let text = metrics.render();
        assert!(text.contains(r#"ferry_jobs{phase="Running"} 1"#), "{text}");
        assert!(text.contains(r#"ferry_job_objects{job="j",namespace="n",state="verified"} 4"#), "{text}");
        assert!(text.contains("ferry_reconciles_total"));
        assert!(text.contains(r#"ferry_job_info{job="j",namespace="n",phase="Running"} 1"#), "{text}");
        assert!(text.contains(r#"ferry_job_attempts{job="j",namespace="n"} 0"#), "{text}");
        // A phase change moves the info series; it never keeps two for one job.
        let mut finished = job.clone();
        finished.status.as_mut().unwrap().phase = Some(Phase::Succeeded);
        metrics.observe_job(&finished);
        let text = metrics.render();
        assert!(!text.contains(r#"phase="Running"} 1"#) && text.contains(r#"phase="Succeeded"} 1"#), "{text}");
        // A deleted job leaves no series of its own behind.
        metrics.forget_job(&finished);
        let text = metrics.render();
        assert!(text.contains(r#"ferry_jobs{phase="Running"} 0"#));
        assert!(!text.contains(r#"job="j""#), "{text}");
    }
}
