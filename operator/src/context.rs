//! What both controllers share: the Kubernetes client, Vault, the progress hub, the
//! runner environment, events and metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};

use crate::children::RunnerEnvironment;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::progress::ProgressHub;
use crate::tenancy::TenancyPolicy;
use crate::vault::Vault;

/// Shared state of the controllers.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Vault, when configured; jobs whose bindings need it wait without it.
    pub vault: Option<Vault>,
    /// Where runners' reports arrive.
    pub hub: ProgressHub,
    /// How runners are built and reach things.
    pub environment: RunnerEnvironment,
    /// How long a wrapping token lives.
    pub wrap_ttl: Duration,
    /// The Vault path prefix template (`{namespace}` is replaced).
    pub vault_path_prefix: String,
    /// The Vault token role write tokens for rotated refresh tokens are minted through;
    /// `None`: none are, and a rotated token serves its run only.
    pub rotation_role: Option<String>,
    /// What each namespace may name besides paths: Vault mounts, Transit keys, runner images.
    pub tenancy: TenancyPolicy,
    /// The file the progress CA was read from, read again at each launch.
    progress_ca_file: Option<std::path::PathBuf>,
    /// The CA that file last held, for a launch that catches it unreadable.
    progress_ca_read: Mutex<Option<String>>,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// What `/readyz` says; the controllers report their caches' sync here.
    pub health: Arc<Health>,
    /// Consecutive failures per object, for the requeue backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context; events are reported as `ferry-operator`.
    pub fn new(
        client: Client,
        vault: Option<Vault>,
        hub: ProgressHub,
        environment: RunnerEnvironment,
        wrap_ttl: Duration,
        vault_path_prefix: String,
        metrics: Metrics,
    ) -> Self {
        let reporter = Reporter { controller: "ferry-operator".into(), instance: std::env::var("POD_NAME").ok() };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            vault,
            hub,
            environment,
            wrap_ttl,
            vault_path_prefix,
            rotation_role: None,
            tenancy: TenancyPolicy::default(),
            progress_ca_file: None,
            progress_ca_read: Mutex::default(),
            metrics,
            health: Arc::default(),
            failures: Mutex::default(),
        }
    }

    /// The same context with these allowances instead of the defaults.
    pub fn with_tenancy(mut self, tenancy: TenancyPolicy) -> Self {
        self.tenancy = tenancy;
        self
    }

    /// The same context reporting to `health`.
    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = health;
        self
    }

    /// The same context minting write tokens through the token role `role`.
    pub fn with_rotation_role(mut self, role: Option<String>) -> Self {
        self.rotation_role = role.filter(|role| !role.is_empty());
        self
    }

    /// The same context reading the progress CA from `file` again at each launch.
    pub fn with_progress_ca_file(mut self, file: std::path::PathBuf) -> Self {
        self.progress_ca_file = Some(file);
        self
    }

    /// The runner environment for a launch, with the progress CA as its file holds it now: a
    /// CA rotated by cert-manager (or an administrator) reaches new plans without a restart,
    /// as the renewed certificate reaches the server (`progress::tls_reload`). A file caught
    /// unreadable or without a certificate leaves the CA it last held.
    pub async fn launch_environment(&self) -> std::borrow::Cow<'_, RunnerEnvironment> {
        use std::borrow::Cow;
        let Some(file) = &self.progress_ca_file else { return Cow::Borrowed(&self.environment) };
        let read = match tokio::fs::read_to_string(file).await {
            Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => Some(pem),
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(%error, file = %file.display(), "cannot read the progress CA again; using the one read before");
                None
            }
        };
        let mut last = self.progress_ca_read.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if read.is_some() {
            *last = read;
        }
        match last.as_ref() {
            Some(pem) if Some(pem) != self.environment.progress_ca_pem.as_ref() => {
                Cow::Owned(RunnerEnvironment { progress_ca_pem: Some(pem.clone()), ..self.environment.clone() })
            }
            _ => Cow::Borrowed(&self.environment),
        }
    }

    /// Publishes an Event about `object`; a failure to publish is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(&self, object: &K, warning: bool, reason: &str, note: String) {
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(%error, reason, "cannot publish an event");
        }
    }

    /// The delay before retrying `key` after another failure: 5 s doubling to 5 minutes.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = failures.entry(key.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        Duration::from_secs((5u64 << (*count - 1).min(6)).min(300))
    }

    /// Forgets the failures of `key` after a successful pass.
    pub fn succeeded(&self, key: &str) {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key);
    }
}
