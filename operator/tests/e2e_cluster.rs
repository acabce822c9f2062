//! End to end against a real Kubernetes API server: the operator binary reconciles a
//! MigrationJob between two S3 buckets (SeaweedFS) with credentials in Vault (OpenBao), runner
//! pods move and verify every object, and deleting the job removes everything it owned.
//!
//! Run it with any cluster's kubeconfig, even a bare control plane without nodes (envtest's
//! kube-apiserver and etcd):
//!
//! ```text
//! FERRY_E2E_KUBECONFIG=~/.kube/config FERRY_E2E_REQUIRE=1 scripts/test-all.sh
//! # or, with the test servers already started (eval "$(scripts/test-servers.sh start)"):
//! cargo build -p ferry-runner && FERRY_E2E_KUBECONFIG=~/.kube/config cargo nextest run -p ferry-operator -E 'binary(e2e_cluster)'
//! ```
//!
//! Without `FERRY_E2E_KUBECONFIG` the test says so on stderr and passes, unless
//! `FERRY_E2E_REQUIRE=1`. The servers and the runner pods run on this machine: the job's
//! runners select a node label no node has (`ferry.dev/e2e-local-runner`), so no real kubelet
//! starts them, and the test's own stand-in kubelet (`support/kubelet.rs`) runs each pod's
//! container as a local `ferry-runner` process with its ConfigMap, Secret and emptyDir volumes
//! as directories, then writes the pod's phase and exit into its status. Nothing else in the
//! cluster needs to run: no scheduler, controller-manager or garbage collector (the operator's
//! finalizer deletes the job's objects itself). The cluster must reach nothing on this machine;
//! this machine must reach the cluster's API server.
//!
//! A second scenario, independent of the first (its own namespace and operator), proves that a
//! binding naming another tenant's Transit key is refused: the binding never turns Ready, its
//! job waits, and the operator never sends Vault a request naming that key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support {
    //! The modules this suite uses: its own, and the fake API server its kubelet is tested against.
    pub mod cluster;
    #[allow(dead_code)] // the controllers' tests use the rest of it
    pub mod fake_api;
    pub mod kubelet;
}

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_api::{CredentialBinding, MigrationJob, Phase};
use ferry_operator::names;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use support::cluster::{
    Gate, OperatorProcess, SecretView, condition_status, credential_problems, free_ports, gate, log_tail,
};
use support::kubelet::LocalKubelet;

/// The field manager of everything this test applies.
const FIELD_MANAGER: &str = "ferry-e2e";
/// Objects in the source bucket.
const SMALL_FILES: usize = 300;
/// How long the job may take.
const JOB_TIMEOUT: Duration = Duration::from_secs(300);

async fn client(kubeconfig: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("cannot read the kubeconfig {}: {e}", kubeconfig.display()));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("cannot use the kubeconfig: {e}"));
    Client::try_from(config).unwrap_or_else(|e| panic!("cannot build a Kubernetes client: {e}"))
}

/// Applies the checked-in CRDs (server-side, taking ownership) and waits until both are served.
async fn apply_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    for crd in support::cluster::crds(&directory).unwrap() {
        let name = crd.name_any();
        crds.patch(&name, &apply, &Patch::Apply(&crd)).await.unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        let established = await_condition(crds.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(Duration::from_secs(60), established)
            .await
            .unwrap_or_else(|_| panic!("CRD {name} not Established within 60 s"))
            .unwrap_or_else(|e| panic!("watching CRD {name}: {e}"));
    }
}

/// Server-side applies a manifest; retries while a just-established CRD is not yet served.
async fn apply<K>(api: &Api<K>, manifest: &serde_json::Value) -> K
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let name = manifest["metadata"]["name"].as_str().unwrap().to_owned();
    let started = Instant::now();
    loop {
        match api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(manifest)).await {
            Ok(object) => return object,
            Err(kube::Error::Api(status)) if status.is_not_found() && started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => panic!("applying {name}: {error}"),
        }
    }
}

async fn create_namespace(client: &Client, name: &str) {
    let namespace: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "ferry-e2e"}}
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await.unwrap();
    // A control plane without the controller-manager creates no `default` ServiceAccount, and
    // the ServiceAccount admission plugin (where enabled) refuses pods until one exists.
    let account: ServiceAccount = serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}})).unwrap();
    match Api::<ServiceAccount>::namespaced(client.clone(), name).create(&PostParams::default(), &account).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_already_exists() => {}
        Err(error) => panic!("creating the default ServiceAccount: {error}"),
    }
}

/// Lists everything of type `K` in the namespace matching `selector`, by name.
async fn names_of<K>(client: &Client, namespace: &str, selector: &str) -> Vec<String>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.list(&ListParams::default().labels(selector)).await.unwrap().items.iter().map(ResourceExt::name_any).collect()
}

/// Every Secret in the namespace, as the credential check sees it.
async fn secrets_now(secrets: &Api<Secret>, job_uid: &str) -> Vec<SecretView> {
    secrets.list(&ListParams::default()).await.unwrap().items.iter().map(|s| SecretView::of(s, job_uid)).collect()
}

/// Printed when the test fails after the namespace exists: what the runners said and how to
/// clean up (a job whose finalizer no operator will remove keeps its namespace Terminating).
struct OnFailure {
    namespace: String,
    runner_logs: PathBuf,
}

impl Drop for OnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for entry in std::fs::read_dir(&self.runner_logs).into_iter().flatten().flatten() {
            let log = entry.path().join("runner.log");
            if log.is_file() {
                eprintln!("--- {}, last 60 lines ---\n{}", log.display(), log_tail(&log, 60));
            }
        }
        eprintln!(
            "namespace {ns} is left for inspection; remove it with:\n  kubectl -n {ns} patch mj --all --type=merge -p '{{\"metadata\":{{\"finalizers\":null}}}}'; kubectl delete ns {ns} --wait=false",
            ns = self.namespace
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_job_moves_and_verifies_every_object_on_a_real_cluster() {
    let kubeconfig = match gate(
        std::env::var_os(support::cluster::KUBECONFIG_VARIABLE),
        std::env::var_os(support::cluster::REQUIRE_VARIABLE),
    ) {
        Gate::Run(path) => path,
        Gate::Skip(message) => {
            // Straight to the process's stderr: the test harness captures `eprintln!`.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED e2e_cluster: {message}");
            return;
        }
        Gate::Fail(message) => panic!("{message}"),
    };
    // Several TLS stacks link rustls with both providers; choose one, as the operator does.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let operator_binary = PathBuf::from(env!("CARGO_BIN_EXE_ferry-operator"));
    let runner = support::cluster::runner_binary(&operator_binary).unwrap_or_else(|e| panic!("{e}"));
    support::cluster::require_cluster_mode(&runner).unwrap_or_else(|e| panic!("{e}"));
    let servers = ferry_e2e::servers();
    let client = client(&kubeconfig).await;
    let work = tempfile::tempdir().unwrap();

    apply_crds(&client).await;
    let namespace = ferry_e2e::unique("ferry-e2e").to_lowercase();
    create_namespace(&client, &namespace).await;
    let _on_failure = OnFailure { namespace: namespace.clone(), runner_logs: work.path().join("pods") };
    eprintln!("e2e: namespace {namespace}");

    // The data and its credentials, at the path the operator's default prefix allows.
    let source_tree = work.path().join("source");
    ferry_e2e::write_small_files(&source_tree, SMALL_FILES, 1500);
    ferry_e2e::write_tricky_tree(&source_tree.join("tricky"));
    let expected = ferry_e2e::tree_hashes(&source_tree);
    let objects = expected.len();
    let (source_bucket, destination_bucket) = (servers.bucket("e2e-src"), servers.bucket("e2e-dst"));
    servers.rclone(&["copy", &source_tree.to_string_lossy(), &servers.s3_remote(&source_bucket)]);
    let vault_path = format!("tenants/{namespace}/s3");
    servers.put_secret(
        &vault_path,
        &[("accessKeyId", &servers.s3_access_key), ("secretAccessKey", &servers.s3_secret_key)],
    );

    // The operator, as it runs on a laptop against a kubeconfig.
    let (certificate, key) = ferry_e2e::self_signed_certificate(work.path());
    let [progress_port, metrics_port] = free_ports(2).unwrap()[..] else { unreachable!() };
    let kubeconfig_text = kubeconfig.to_string_lossy().into_owned();
    let mut operator = OperatorProcess::start(
        &operator_binary,
        &[
            format!("--progress-listen=127.0.0.1:{progress_port}"),
            format!("--progress-url=https://127.0.0.1:{progress_port}"),
            format!("--tls-cert={}", certificate.display()),
            format!("--tls-key={}", key.display()),
            format!("--metrics-listen=127.0.0.1:{metrics_port}"),
            format!("--watch-namespace={namespace}"),
            "--runner-image=ferry-runner:e2e".into(),
        ],
        &[
            ("KUBECONFIG", &kubeconfig_text),
            ("VAULT_ADDR", &servers.vault_address),
            ("VAULT_TOKEN", &servers.vault_token),
            ("FERRY_LOG", "info"),
        ],
        work.path().join("operator.log"),
    )
    .unwrap();

    let job_name = "e2e-copy";
    let kubelet = LocalKubelet::start(
        client.clone(),
        &namespace,
        format!("{}={}", names::JOB_NAME_LABEL, names::job_label_value(job_name)),
        runner,
        work.path().join("pods"),
    );

    let bindings: Api<CredentialBinding> = Api::namespaced(client.clone(), &namespace);
    for (name, bucket) in [("e2e-source", &source_bucket), ("e2e-destination", &destination_bucket)] {
        let manifest = support::cluster::s3_binding(name, &namespace, &servers.s3_endpoint, bucket, &vault_path);
        apply(&bindings, &manifest.unwrap()).await;
    }
    let jobs: Api<MigrationJob> = Api::namespaced(client.clone(), &namespace);
    let manifest = support::cluster::migration_job(job_name, &namespace, "e2e-source", "e2e-destination", 2);
    let uid = apply(&jobs, &manifest).await.uid().unwrap();

    // Until the job finishes: no Secret may hold the credential at any moment.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let started = Instant::now();
    let finished = loop {
        if let Some(exit) = operator.exited() {
            panic!("the operator exited early ({exit})");
        }
        let problems = credential_problems(&secrets_now(&secrets, &uid).await, servers.s3_secret_key.as_bytes());
        assert!(problems.is_empty(), "while the job runs: {problems:?}");
        let job = jobs.get(job_name).await.unwrap();
        let conditions = job.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
        if condition_status(&conditions, "Failed") == Some("True") {
            panic!("the job failed: {:#?}\nkubelet: {:#?}", job.status, kubelet.record());
        }
        if condition_status(&conditions, "Complete") == Some("True") {
            break job;
        }
        assert!(
            started.elapsed() < JOB_TIMEOUT,
            "the job did not complete within {JOB_TIMEOUT:?}: {:#?}\nkubelet: {:#?}",
            job.status,
            kubelet.record()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };

    let status = finished.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    assert_eq!(status.summary.as_ref().map(|s| s.objects.as_str()), Some(format!("{objects}/{objects}").as_str()));
    assert_eq!(status.progress.as_ref().map(|p| p.objects_verified), Some(objects as u64), "{status:#?}");
    let record = kubelet.record();
    assert_eq!(record.started.len(), 2, "one runner pod per shard: {record:#?}");
    assert!(record.exits.values().all(|code| *code == 0), "{record:#?}");
    assert!(record.scheduled_elsewhere.is_empty(), "a node ran runner pods: {record:#?}");

    // The destination holds exactly the source's bytes, by an independent hash.
    let downloaded = work.path().join("destination");
    servers.download(&destination_bucket, &downloaded);
    assert_eq!(ferry_e2e::tree_hashes(&downloaded), expected);

    // The Secret the runners were given held only the attempt's tokens; none is left holding more.
    let mounted: Vec<SecretView> = record
        .mounted_secrets
        .iter()
        .map(|(name, data)| SecretView { name: name.clone(), owned_by_job: true, data: data.clone() })
        .collect();
    assert!(!mounted.is_empty(), "the runners were given no Secret");
    let problems = credential_problems(&mounted, servers.s3_secret_key.as_bytes());
    assert!(problems.is_empty(), "the runners' Secret: {problems:?}");
    let problems = credential_problems(&secrets_now(&secrets, &uid).await, servers.s3_secret_key.as_bytes());
    assert!(problems.is_empty(), "after the job: {problems:?}");
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    for map in config_maps.list(&ListParams::default()).await.unwrap() {
        let values = support::kubelet::config_map_data(&map);
        let key = servers.s3_secret_key.as_bytes();
        assert!(
            values.values().all(|v| !v.windows(key.len()).any(|w| w == key)),
            "ConfigMap {} holds the S3 secret key",
            map.name_any()
        );
    }

    // Deleting the job deletes everything it owned, by the operator's finalizer.
    jobs.delete(job_name, &DeleteParams::default()).await.unwrap();
    let selector = names::job_selector(&uid);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left: BTreeMap<&str, Vec<String>> = BTreeMap::from([
            ("pods", names_of::<Pod>(&client, &namespace, &selector).await),
            ("secrets", names_of::<Secret>(&client, &namespace, &selector).await),
            ("configmaps", names_of::<ConfigMap>(&client, &namespace, &selector).await),
            ("networkpolicies", names_of::<NetworkPolicy>(&client, &namespace, &selector).await),
            ("migrationjobs", jobs.get_opt(job_name).await.unwrap().map(|j| j.name_any()).into_iter().collect()),
        ]);
        if left.values().all(Vec::is_empty) {
            break;
        }
        assert!(Instant::now() < deadline, "not deleted within 60 s: {left:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    drop(kubelet);
    drop(operator);
    // Not awaited: without a namespace controller (envtest) it stays Terminating for good.
    Api::<Namespace>::all(client.clone()).delete(&namespace, &DeleteParams::default()).await.unwrap();
}

/// Waits up to `limit` for `check` to return `Some`, panicking with `what` and the last state.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(value) => return value,
            Err(state) if started.elapsed() > limit => panic!("{what} within {limit:?}; last: {state}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_naming_another_tenants_transit_key_is_refused_on_a_real_cluster() {
    let kubeconfig = match gate(
        std::env::var_os(support::cluster::KUBECONFIG_VARIABLE),
        std::env::var_os(support::cluster::REQUIRE_VARIABLE),
    ) {
        Gate::Run(path) => path,
        Gate::Skip(message) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED e2e_cluster (tenant isolation): {message}");
            return;
        }
        Gate::Fail(message) => panic!("{message}"),
    };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let operator_binary = PathBuf::from(env!("CARGO_BIN_EXE_ferry-operator"));
    let servers = ferry_e2e::servers();
    let client = client(&kubeconfig).await;
    let work = tempfile::tempdir().unwrap();
    apply_crds(&client).await;
    let namespace = ferry_e2e::unique("ferry-e2e-tenant").to_lowercase();
    create_namespace(&client, &namespace).await;
    let _on_failure = OnFailure { namespace: namespace.clone(), runner_logs: work.path().join("pods") };
    eprintln!("e2e (tenant isolation): namespace {namespace}");

    // Another tenant's key (named after its namespace, as the default allowance expects), and
    // that tenant's credentials encrypted under it, copied into a secret under this
    // namespace's own (allowed) path.
    let theirs = servers.transit_key("ferry-e2e-other");
    let stolen = format!("tenants/{namespace}/stolen");
    servers.put_secret(
        &stolen,
        &[
            ("accessKeyId", &servers.transit_encrypt(&theirs, &servers.s3_access_key)),
            ("secretAccessKey", &servers.transit_encrypt(&theirs, &servers.s3_secret_key)),
        ],
    );

    // The operator reaches Vault only through a proxy that keeps every request it sends.
    let upstream = servers.vault_address.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let proxy = ferry_e2e::proxy::RecordingProxy::start(upstream).await.unwrap();
    let (certificate, key) = ferry_e2e::self_signed_certificate(work.path());
    let [progress_port, metrics_port] = free_ports(2).unwrap()[..] else { unreachable!() };
    let kubeconfig_text = kubeconfig.to_string_lossy().into_owned();
    let vault_address = format!("http://{}", proxy.address);
    let mut operator = OperatorProcess::start(
        &operator_binary,
        &[
            format!("--progress-listen=127.0.0.1:{progress_port}"),
            format!("--progress-url=https://127.0.0.1:{progress_port}"),
            format!("--tls-cert={}", certificate.display()),
            format!("--tls-key={}", key.display()),
            format!("--metrics-listen=127.0.0.1:{metrics_port}"),
            format!("--watch-namespace={namespace}"),
            "--runner-image=ferry-runner:e2e".into(),
        ],
        &[
            ("KUBECONFIG", &kubeconfig_text),
            ("VAULT_ADDR", &vault_address),
            ("VAULT_TOKEN", &servers.vault_token),
            ("FERRY_LOG", "info"),
        ],
        work.path().join("operator.log"),
    )
    .unwrap();

    let bindings: Api<CredentialBinding> = Api::namespaced(client.clone(), &namespace);
    for name in ["e2e-stolen", "e2e-destination"] {
        let mut manifest =
            support::cluster::s3_binding(name, &namespace, &servers.s3_endpoint, &servers.bucket(name), &stolen)
                .unwrap();
        manifest["spec"]["vault"]["transitKey"] = serde_json::json!(theirs);
        apply(&bindings, &manifest).await;
    }
    let jobs: Api<MigrationJob> = Api::namespaced(client.clone(), &namespace);
    let job_name = "e2e-stolen-key";
    let manifest = support::cluster::migration_job(job_name, &namespace, "e2e-stolen", "e2e-destination", 1);
    let uid = apply(&jobs, &manifest).await.uid().unwrap();

    let message = eventually(Duration::from_secs(60), "the binding was not refused", || {
        let bindings = bindings.clone();
        async move {
            let binding = bindings.get("e2e-stolen").await.map_err(|e| e.to_string())?;
            let conditions = binding.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
            match conditions.iter().find(|c| c.type_ == "Ready") {
                Some(ready) if ready.status == "False" && ready.reason == "TransitKeyNotAllowed" => {
                    Ok(ready.message.clone())
                }
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert!(message.contains("spec.vault.transitKey") && message.contains("--vault-transit-keys"), "{message}");
    eventually(Duration::from_secs(60), "the job did not wait for its binding", || {
        let jobs = jobs.clone();
        async move {
            let job = jobs.get(job_name).await.map_err(|e| e.to_string())?;
            let conditions = job.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
            match conditions.iter().find(|c| c.type_ == "Stalled") {
                Some(stalled) if stalled.status == "True" && stalled.message.contains("TransitKeyNotAllowed") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    if let Some(exit) = operator.exited() {
        panic!("the operator exited early ({exit})");
    }

    let selector = names::job_selector(&uid);
    assert!(names_of::<Secret>(&client, &namespace, &selector).await.is_empty(), "a token Secret exists");
    assert!(names_of::<Pod>(&client, &namespace, &selector).await.is_empty(), "a runner pod exists");
    let sent = proxy.sent();
    assert!(sent.contains("/v1/"), "the operator never reached Vault through the proxy");
    assert!(!sent.contains(&theirs), "the operator sent Vault a request naming the other tenant's key");
    assert!(!sent.contains("/decrypt/") && !sent.contains(&stolen), "the refused binding was read or decrypted");

    jobs.delete(job_name, &DeleteParams::default()).await.unwrap();
    eventually(Duration::from_secs(60), "the job was not deleted", || {
        let jobs = jobs.clone();
        async move {
            match jobs.get_opt(job_name).await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(job) => Err(format!("{:?}", job.metadata.finalizers)),
            }
        }
    })
    .await;
    drop(operator);
    Api::<Namespace>::all(client.clone()).delete(&namespace, &DeleteParams::default()).await.unwrap();
}
