//! Prometheus metrics of a local run (`ferry-runner run --metrics-listen`): OpenDAL's
//! per-operation metrics for both stores, and the run's object and byte counters.

use std::sync::Arc;

use ferry_api::Progress;
use opendal::layers::PrometheusLayer;
use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::accounting::Accounting;

/// The run's metrics registry.
#[derive(Clone)]
pub struct RunnerMetrics {
    registry: Registry,
    layer: PrometheusLayer,
    objects: IntGaugeVec,
    bytes: IntGaugeVec,
}

impl std::fmt::Debug for RunnerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunnerMetrics")
    }
}

impl RunnerMetrics {
    /// Registers the storage layer's metrics and the run's counters.
    pub fn new() -> Result<Self, String> {
        let registry = Registry::new();
        let layer = PrometheusLayer::builder().register(&registry).map_err(|e| e.to_string())?;
        let objects = IntGaugeVec::new(Opts::new("ferry_run_objects", "Objects of this run by state"), &["state"])
            .map_err(|e| e.to_string())?;
        let bytes = IntGaugeVec::new(Opts::new("ferry_run_bytes", "Bytes of this run by state"), &["state"])
            .map_err(|e| e.to_string())?;
        registry.register(Box::new(objects.clone())).map_err(|e| e.to_string())?;
        registry.register(Box::new(bytes.clone())).map_err(|e| e.to_string())?;
        Ok(Self { registry, layer, objects, bytes })
    }

    /// The layer to add to each store.
    pub fn layer(&self) -> PrometheusLayer {
        self.layer.clone()
    }

    /// The text exposition, with the counters as of `progress`.
    pub fn render(&self, progress: &Progress) -> String {
        let clamp = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        for (state, value) in [
            ("total", progress.objects_total),
            ("copied", progress.objects_copied),
            ("verified", progress.objects_verified),
            ("skipped", progress.objects_skipped),
            ("failed", progress.objects_failed),
            ("deleted", progress.objects_deleted),
        ] {
            self.objects.with_label_values(&[state]).set(clamp(value));
        }
        for (state, value) in
            [("total", progress.bytes_total), ("copied", progress.bytes_copied), ("verified", progress.bytes_verified)]
        {
            self.bytes.with_label_values(&[state]).set(clamp(value));
        }
        let mut buffer = Vec::new();
        if TextEncoder::new().encode(&self.registry.gather(), &mut buffer).is_err() {
            return String::new();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// Serves `/metrics` on `listener` for as long as the run lasts.
pub async fn serve(listener: tokio::net::TcpListener, metrics: RunnerMetrics, accounting: Arc<Accounting>) {
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(move || std::future::ready(metrics.render(&accounting.snapshot()))));
    if let Err(error) = axum::serve(listener, app).await {
        eprintln!("ferry-runner: the metrics endpoint stopped: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counters_and_storage_operations_are_exposed() {
        let metrics = RunnerMetrics::new().unwrap();
        let directory = tempfile::tempdir().unwrap();
        let builder = opendal::services::Fs::default().root(&directory.path().to_string_lossy());
        let operator = opendal::Operator::new(builder).unwrap().layer(metrics.layer());
        operator.write("a", vec![1u8; 10]).await.unwrap();
        let text = metrics.render(&Progress { objects_verified: 3, bytes_verified: 30, ..Default::default() });
        assert!(text.contains(r#"ferry_run_objects{state="verified"} 3"#), "{text}");
        assert!(text.contains("opendal_operation_duration_seconds"), "{text}");
    }
}
