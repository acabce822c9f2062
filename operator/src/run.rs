//! Starting the operator: Kubernetes and Vault clients, the progress API, the status
//! writer, the metrics endpoint and both controllers, until SIGTERM.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_api::contract::JobIdentity;
use ferry_api::{CredentialBinding, MigrationJob};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use zeroize::Zeroizing;

use crate::children::RunnerEnvironment;
use crate::children::credentials::progress_token_of;
use crate::children::network_policy::{EgressTarget, PodPeer};
use crate::config::{Config, egress_for};
use crate::context::Context;
use crate::guard::{self, Guarded};
use crate::health::Health;
use crate::leader::Candidate;
use crate::metrics::Metrics;
use crate::progress::{self, AttemptLookup, CurrentAttempt, JobKey, LookupError, ProgressHub, StatusWriter, TlsFiles};
use crate::vault::{Vault, VaultAuth, VaultConfig};
use crate::{binding_controller, job_controller, names};

/// Why the operator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Kubernetes configuration or connection.
    #[error("Kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// Vault login.
    #[error("Vault: {0}")]
    Vault(#[from] crate::vault::VaultError),
    /// A file named by a flag cannot be read.
    #[error("{flag} {path}: {source}")]
    File {
        /// The flag.
        flag: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A listener could not bind.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// Anything else about the configuration.
    #[error("{0}")]
    Config(String),
}

/// Runs the operator until SIGTERM or Ctrl-C. With leader election, the controllers run only
/// while this replica holds the Lease; losing it ends the process (an error, so the pod
/// restarts as a standby) rather than risk two replicas reconciling at once.
pub async fn run(config: Config) -> Result<(), StartError> {
    let client = Client::try_default().await?;
    let vault = connect_vault(&config).await?;
    let environment = runner_environment(&config).await?;
    let metrics = Metrics::new().map_err(|e| StartError::Config(format!("metrics: {e}")))?;
    let hub = ProgressHub::new(attempt_lookup(client.clone()));
    let health = Health::new(vault.as_ref());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop = Arc::new(stop);
    let shutdown = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };

    let progress_listener = std::net::TcpListener::bind(config.progress_listen)
        .map_err(|source| StartError::Listen { address: config.progress_listen.to_string(), source })?;
    let tls = TlsFiles { cert: config.tls_cert.clone(), key: config.tls_key.clone() };
    let progress_server = tokio::spawn(progress::serve(progress_listener, tls, hub.clone(), shutdown()));
    let writer = StatusWriter::new(hub.clone(), progress::KubeStatusSink::new(client.clone()))
        .with_interval(Duration::from_secs(config.status_interval));
    for counter in [hub.report_counter(), writer.write_counter()] {
        metrics.register(counter).map_err(|e| StartError::Config(format!("metrics: {e}")))?;
    }
    let writer = tokio::spawn(writer.run(shutdown()));
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|source| StartError::Listen { address: config.metrics_listen.to_string(), source })?;
    let metrics_server =
        tokio::spawn(crate::metrics::serve(metrics_listener, metrics.clone(), health.clone(), shutdown()));
    let renewal = vault.as_ref().map(Vault::spawn_renewal);
    let vault_watch = vault.clone().map(|vault| health.watch_vault(vault));

    let context = Arc::new(
        Context::new(
            client.clone(),
            vault,
            hub,
            environment,
            Duration::from_secs(config.wrap_ttl),
            config.vault_path_prefix.clone(),
            metrics,
        )
        .with_tenancy(config.tenancy())
        .with_rotation_role(Some(config.vault_rotation_role.clone()))
        .with_progress_ca_file(config.tls_ca.clone().unwrap_or_else(|| config.tls_cert.clone()))
        .with_health(health.clone()),
    );
    let signalled = stop.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping");
        let _ = signalled.send(true);
    });
    tracing::info!(progress = %config.progress_listen, metrics = %config.metrics_listen, "ferry-operator started");

    let namespaces: Vec<Option<String>> = if config.watch_namespaces.is_empty() {
        vec![None]
    } else {
        config.watch_namespaces.iter().cloned().map(Some).collect()
    };
    let leadership = match candidate(&config)? {
        None => None,
        Some(candidate) => match crate::leader::acquire(client.clone(), candidate, shutdown()).await {
            Ok(Some(leadership)) => Some(leadership),
            Ok(None) => None,
            Err(error) => return Err(StartError::Config(format!("leader election: {error}"))),
        },
    };
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(leadership) = &leadership {
        let (mut leading, lost, stop) = (leadership.watch(), lost.clone(), stop.clone());
        tokio::spawn(async move {
            if leading.wait_for(|leading| !*leading).await.is_ok() {
                tracing::error!("lost the Lease: stopping, to start again as a standby");
                lost.store(true, std::sync::atomic::Ordering::SeqCst);
                let _ = stop.send(true);
            }
        });
    }
    let stopping = *stop.borrow();
    if !stopping {
        health.lead(namespaces.len() * 2);
        let mut controllers = Vec::new();
        for namespace in namespaces {
            controllers
                .push(run_job_controller(client.clone(), namespace.clone(), context.clone(), shutdown()).boxed());
            controllers.push(run_binding_controller(client.clone(), namespace, context.clone(), shutdown()).boxed());
        }
        futures::future::join_all(controllers).await;
    }
    if let Some(leadership) = leadership {
        leadership.release().await;
    }
    for task in [renewal, vault_watch].into_iter().flatten() {
        task.abort();
    }
    if let Ok(Err(error)) = progress_server.await {
        tracing::error!(%error, "the progress API stopped");
    }
    let _ = writer.await;
    let _ = metrics_server.await;
    if lost.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(StartError::Config("lost the leader election Lease".into()));
    }
    Ok(())
}

/// Who this replica is in the leader election, when it takes part.
fn candidate(config: &Config) -> Result<Option<Candidate>, StartError> {
    if !config.leader_election {
        return Ok(None);
    }
    let namespace = config.leader_election_namespace.clone().or_else(|| std::env::var("POD_NAMESPACE").ok());
    let Some(namespace) = namespace.filter(|namespace| !namespace.is_empty()) else {
        return Err(StartError::Config(
            "--leader-election needs the Lease's namespace: set --leader-election-namespace or POD_NAMESPACE".into(),
        ));
    };
    let pod = std::env::var("POD_NAME").ok().filter(|pod| !pod.is_empty()).ok_or_else(|| {
        StartError::Config("--leader-election needs POD_NAME (the downward API's metadata.name)".into())
    })?;
    Ok(Some(Candidate { namespace, lease: config.leader_election_lease.clone(), pod }))
}

fn api<K>(client: Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client, namespace),
        None => Api::all(client),
    }
}

/// Runs the MigrationJob controller for one namespace (all when `None`) until `shutdown`.
/// Jobs and bindings are watched as [`Guarded`], so an object that does not decode is
/// reported on itself instead of failing the list every other object is in.
pub async fn run_job_controller(
    client: Client,
    namespace: Option<String>,
    context: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let namespace = namespace.as_deref();
    let jobs: Api<Guarded<MigrationJob>> = api(client.clone(), namespace);
    let pods: Api<Pod> = api(client.clone(), namespace);
    let bindings: Api<Guarded<CredentialBinding>> = api(client, namespace);
    let controller = Controller::new(jobs, watcher::Config::default());
    let store = controller.store();
    report_synced(store.clone(), &context);
    let runner_pods = watcher::Config::default().labels(&format!("{}={}", names::MANAGED_BY.0, names::MANAGED_BY.1));
    controller
        .owns(pods, runner_pods)
        // A binding turning Ready (or readable) wakes the jobs that wait for it.
        .watches(bindings, watcher::Config::default(), move |binding| {
            let namespace = binding.namespace();
            let name = binding.name_any();
            store
                .state()
                .into_iter()
                .filter(|object| {
                    object.0.as_ref().is_ok_and(|job| {
                        job.namespace() == namespace
                            && (job.spec.source.binding == name || job.spec.destination.binding == name)
                    })
                })
                .map(|object| ObjectRef::from_obj(object.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(job_controller::reconcile_guarded, job_controller::error_policy, context)
        .for_each(|_| std::future::ready(()))
        .await;
}

/// Runs the CredentialBinding controller for one namespace (all when `None`) until `shutdown`.
pub async fn run_binding_controller(
    client: Client,
    namespace: Option<String>,
    context: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let bindings: Api<Guarded<CredentialBinding>> = api(client, namespace.as_deref());
    let controller = Controller::new(bindings, watcher::Config::default());
    report_synced(controller.store(), &context);
    controller
        .graceful_shutdown_on(shutdown)
        .run(binding_controller::reconcile_guarded, binding_controller::error_policy, context)
        .for_each(|_| std::future::ready(()))
        .await;
}

/// Tells the context's health once a controller's cache holds its first full listing.
fn report_synced<K>(store: kube::runtime::reflector::Store<K>, context: &Context)
where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let health = context.health.clone();
    tokio::spawn(async move {
        if store.wait_until_ready().await.is_ok() {
            health.synced();
        }
    });
}

/// Recovers a job's current attempt and its per-shard token hashes from the attempt's Secret
/// (after an operator restart).
fn attempt_lookup(client: Client) -> AttemptLookup {
    Arc::new(move |key: JobKey| {
        let client = client.clone();
        async move {
            // Untyped: only the UID and status.attempts are needed, and a job whose spec
            // does not decode must not turn every report into a failed lookup.
            let jobs = guard::untyped_api::<MigrationJob>(client.clone(), &key.namespace);
            let failed = |e: kube::Error| LookupError(e.to_string());
            let Some(job) = jobs.get_opt(&key.name).await.map_err(failed)? else { return Ok(None) };
            let attempt = job.data.pointer("/status/attempts").and_then(serde_json::Value::as_u64).unwrap_or(0);
            let Ok(attempt) = u32::try_from(attempt) else { return Ok(None) };
            let max_delete = job.data.pointer("/spec/maxDelete").and_then(serde_json::Value::as_u64);
            let Some(uid) = job.uid().filter(|_| attempt > 0) else { return Ok(None) };
            let secrets: Api<Secret> = Api::namespaced(client, &key.namespace);
            let Some(secret) = secrets.get_opt(&names::attempt_object(&key.name, attempt)).await.map_err(failed)?
            else {
                return Ok(None);
            };
            let token_hashes: Vec<[u8; 32]> = (0u32..)
                .map_while(|shard| progress_token_of(&secret, shard))
                .map(|token| progress::token_hash(&token))
                .collect();
            if token_hashes.is_empty() {
                return Ok(None);
            }
            let job = JobIdentity { namespace: key.namespace.clone(), name: key.name.clone(), uid };
            Ok(Some(CurrentAttempt { job, attempt, token_hashes, max_delete }))
        }
        .boxed()
    })
}

async fn connect_vault(config: &Config) -> Result<Option<Vault>, StartError> {
    let Some(address) = config.vault_addr.clone() else {
        tracing::warn!("no VAULT_ADDR: bindings that keep credentials in Vault will not become Ready");
        return Ok(None);
    };
    let auth = match (&config.vault_role, std::env::var("VAULT_TOKEN")) {
        (Some(role), _) => VaultAuth::Kubernetes {
            role: role.clone(),
            mount: config.vault_auth_mount.clone(),
            jwt_file: config.vault_jwt_file.clone(),
        },
        (None, Ok(token)) => VaultAuth::Token(Zeroizing::new(token)),
        (None, Err(_)) => {
            return Err(StartError::Config(
                "VAULT_ADDR is set: give --vault-role (Kubernetes auth) or VAULT_TOKEN".into(),
            ));
        }
    };
    let vault = Vault::connect(VaultConfig { address, ca_file: config.vault_cacert.clone(), auth }).await?;
    Ok(Some(vault))
}

async fn read(flag: &'static str, path: &std::path::Path) -> Result<String, StartError> {
    tokio::fs::read_to_string(path).await.map_err(|source| StartError::File {
        flag,
        path: path.display().to_string(),
        source,
    })
}

/// Where runners reach DNS, Vault and the progress API: pods by selector where the flags say
/// they run in the cluster, else the `--*-egress` blocks, else the URLs' resolved addresses.
async fn runner_environment(config: &Config) -> Result<RunnerEnvironment, StartError> {
    let vault_url = config.runner_vault_addr.clone().or_else(|| config.vault_addr.clone());
    let vault_pods = match (&config.vault_pod_namespace, &config.vault_pod_labels) {
        (Some(namespace), Some(labels)) => {
            let port = config.vault_pod_port.or_else(|| vault_url.as_ref().and_then(url::Url::port_or_known_default));
            let port = port.ok_or_else(|| {
                StartError::Config("--vault-pod-namespace: give --vault-pod-port or a Vault address".into())
            })?;
            Some(PodPeer { namespace: namespace.clone(), labels: labels.0.clone(), port })
        }
        _ => None,
    };
    let progress_pods = match (&config.progress_pod_namespace, &config.progress_pod_labels) {
        (Some(namespace), Some(labels)) => Some(PodPeer {
            namespace: namespace.clone(),
            labels: labels.0.clone(),
            port: config.progress_listen.port(),
        }),
        _ => None,
    };
    let progress_ca = read("--tls-ca/--tls-cert", config.tls_ca.as_ref().unwrap_or(&config.tls_cert)).await?;
    let vault_ca = match &config.vault_cacert {
        Some(path) => Some(read("VAULT_CACERT", path).await?),
        None => None,
    };
    let vault_egress = match (&vault_url, config.vault_egress.is_empty(), &vault_pods) {
        (Some(url), true, None) => egress_of(url).await?,
        _ => config.vault_egress.clone(),
    };
    let progress_egress = if config.progress_egress.is_empty() && progress_pods.is_none() {
        egress_of(&config.progress_url).await?
    } else {
        config.progress_egress.clone()
    };
    Ok(RunnerEnvironment {
        image: config.runner_image.clone(),
        progress_url: config.progress_url.as_str().trim_end_matches('/').to_owned(),
        vault_address: vault_url.map(|u| u.as_str().trim_end_matches('/').to_owned()),
        progress_ca_pem: Some(progress_ca),
        vault_ca_pem: vault_ca,
        vault_egress,
        progress_egress,
        dns: PodPeer { namespace: config.dns_pod_namespace.clone(), labels: config.dns_pod_labels.0.clone(), port: 53 },
        vault_pods,
        progress_pods,
    })
}

/// The egress targets of a URL: its host's addresses at its port.
async fn egress_of(url: &url::Url) -> Result<Vec<EgressTarget>, StartError> {
    let port = url.port_or_known_default().ok_or_else(|| StartError::Config(format!("{url}: no port")))?;
    let host = url.host_str().ok_or_else(|| StartError::Config(format!("{url}: no host")))?;
    let addresses: Vec<IpAddr> = match host.trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(address) => vec![address],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| StartError::Config(format!("cannot resolve {host} for the runners' NetworkPolicy: {e}")))?
            .map(|socket| socket.ip())
            .collect(),
    };
    Ok(egress_for(&addresses, port))
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
