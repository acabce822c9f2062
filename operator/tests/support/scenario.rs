//! One end-to-end scenario's own world on a real cluster: its namespace, its operator process
//! (own ports, watching only that namespace), its stand-in kubelet, its Vault secrets under
//! `tenants/<namespace>/`, its buckets, bindings and jobs; waits with deadlines whose panic
//! messages show the job's status, what the kubelet did and the operator's last log lines;
//! and clean-up when dropped. Scenarios share nothing, so they run in parallel and a failure
//! names its own test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_api::{CredentialBinding, MigrationJob, Phase, Progress};
use ferry_e2e::Servers;
use ferry_e2e::google_token::GoogleTokenEndpoint;
use ferry_operator::names;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::cluster::{
    self, Gate, OperatorProcess, SecretView, condition_status, credential_problems, free_ports, gate, log_tail,
};
use super::kubelet::{KubeletRecord, LocalKubelet};

/// The field manager of everything the suite applies.
pub const FIELD_MANAGER: &str = "ferry-e2e";
/// The source binding every scenario applies.
pub const SOURCE_BINDING: &str = "e2e-source";
/// The destination binding every scenario applies.
pub const DESTINATION_BINDING: &str = "e2e-destination";
/// How long a job may take to complete.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a job may take to reach the middle of its run, or to react to a change.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// How often waits look again.
const POLL: Duration = Duration::from_millis(500);

/// Files to migrate, and their SHA-256 by relative path for the final comparison.
pub struct SourceData {
    /// The local tree.
    pub tree: PathBuf,
    /// SHA-256 of every file, by path relative to `tree`.
    pub hashes: BTreeMap<String, String>,
}

impl SourceData {
    /// How many objects the job must verify.
    pub fn objects(&self) -> u64 {
        self.hashes.len() as u64
    }
}

/// The buckets of an S3 → S3 scenario.
pub struct S3Pair {
    /// Holds the source data.
    pub source_bucket: String,
    /// Starts empty.
    pub destination_bucket: String,
    /// Where in Vault the source binding's credentials are (`tenants/<namespace>/...`).
    pub source_vault_path: String,
    /// Where the destination binding's are (the same path unless asked for separate secrets).
    pub destination_vault_path: String,
}

/// How the operator process is started (again, after a restart).
struct OperatorLaunch {
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// A scenario's namespace, operator, kubelet and data; see the module documentation.
pub struct Scenario {
    /// The cluster.
    pub client: Client,
    /// OpenBao and SeaweedFS.
    pub servers: Servers,
    /// This scenario's namespace (`ferry-e2e-<label>-...`).
    pub namespace: String,
    /// The stand-in kubelet running this namespace's runner pods.
    pub kubelet: LocalKubelet,
    /// Local files: data, pod roots, operator logs.
    pub work: tempfile::TempDir,
    operator: Option<OperatorProcess>,
    launch: OperatorLaunch,
    operator_logs: Vec<PathBuf>,
    jobs: Api<MigrationJob>,
    /// Namespaces the operator watches besides [`Scenario::namespace`].
    other_namespaces: Vec<String>,
}

/// A client for the kubeconfig at `path`.
pub async fn client(path: &Path) -> Client {
    let kubeconfig =
        Kubeconfig::read_from(path).unwrap_or_else(|e| panic!("cannot read the kubeconfig {}: {e}", path.display()));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("cannot use the kubeconfig: {e}"));
    Client::try_from(config).unwrap_or_else(|e| panic!("cannot build a Kubernetes client: {e}"))
}

/// Applies the checked-in CRDs (server-side, taking ownership) and waits until both are served.
pub async fn apply_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    for crd in cluster::crds(&directory).unwrap() {
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
pub async fn apply<K>(api: &Api<K>, manifest: &Value) -> K
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let name = manifest["metadata"]["name"].as_str().unwrap().to_owned();
    let started = Instant::now();
    loop {
        match api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(manifest)).await {
            Ok(object) => return object,
            Err(kube::Error::Api(status)) if status.is_not_found() && started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(POLL).await;
            }
            Err(error) => panic!("applying {name}: {error}"),
        }
    }
}

async fn create_namespace(client: &Client, name: &str) {
    let namespace: Namespace = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "ferry-e2e"}}
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    // A control plane without the controller-manager creates no `default` ServiceAccount, and
    // the ServiceAccount admission plugin (where enabled) refuses pods until one exists.
    let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
    match Api::<ServiceAccount>::namespaced(client.clone(), name).create(&PostParams::default(), &account).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_already_exists() => {}
        Err(error) => panic!("creating the default ServiceAccount: {error}"),
    }
}

/// Names of everything of type `K` in `namespace` matching `selector`.
async fn names_of<K>(client: &Client, namespace: &str, selector: &str) -> Vec<String>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let list = api.list(&ListParams::default().labels(selector)).await;
    list.unwrap_or_else(|e| panic!("listing in {namespace}: {e}")).items.iter().map(ResourceExt::name_any).collect()
}

/// The job's progress as last written into its status (zeros before any).
pub fn progress(job: &MigrationJob) -> Progress {
    job.status.as_ref().and_then(|s| s.progress.clone()).unwrap_or_default()
}

/// Whether condition `type_` of the job is `True`.
pub fn condition_is_true(job: &MigrationJob, type_: &str) -> bool {
    let conditions = job.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    condition_status(conditions, type_) == Some("True")
}

/// The job's phase (Pending before any status).
pub fn phase(job: &MigrationJob) -> Phase {
    job.status.as_ref().and_then(|s| s.phase).unwrap_or_default()
}

impl Scenario {
    /// Sets up a scenario, or returns `None` (having said why on stderr) when no cluster is
    /// configured. `label` goes into the namespace's name: lowercase letters, digits and `-`.
    pub async fn start(label: &str) -> Option<Self> {
        let kubeconfig =
            match gate(std::env::var_os(cluster::KUBECONFIG_VARIABLE), std::env::var_os(cluster::REQUIRE_VARIABLE)) {
                Gate::Run(path) => path,
                Gate::Skip(message) => {
                    // Straight to the process's stderr: the test harness captures `eprintln!`.
                    use std::io::Write;
                    let _ = writeln!(std::io::stderr(), "SKIPPED e2e_cluster ({label}): {message}");
                    return None;
                }
                Gate::Fail(message) => panic!("{message}"),
            };
        // Several TLS stacks link rustls with both providers; choose one, as the operator does.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let operator_binary = PathBuf::from(env!("CARGO_BIN_EXE_ferry-operator"));
        let runner = cluster::runner_binary(&operator_binary).unwrap_or_else(|e| panic!("{e}"));
        cluster::require_cluster_mode(&runner).unwrap_or_else(|e| panic!("{e}"));
        let servers = ferry_e2e::servers();
        let client = client(&kubeconfig).await;
        let work = tempfile::tempdir().unwrap();

        apply_crds(&client).await;
        let namespace = ferry_e2e::unique(&format!("ferry-e2e-{label}")).to_lowercase();
        assert!(namespace.len() <= 63, "namespace {namespace} is too long: shorten the label {label:?}");
        create_namespace(&client, &namespace).await;
        eprintln!("e2e {label}: namespace {namespace}");

        // The operator, as it runs on a laptop against a kubeconfig.
        let (certificate, key) = ferry_e2e::self_signed_certificate(work.path());
        let [progress_port, metrics_port] = free_ports(2).unwrap()[..] else { unreachable!() };
        let launch = OperatorLaunch {
            binary: operator_binary,
            args: vec![
                format!("--progress-listen=127.0.0.1:{progress_port}"),
                format!("--progress-url=https://127.0.0.1:{progress_port}"),
                format!("--tls-cert={}", certificate.display()),
                format!("--tls-key={}", key.display()),
                format!("--metrics-listen=127.0.0.1:{metrics_port}"),
                format!("--watch-namespace={namespace}"),
                "--runner-image=ferry-runner:e2e".into(),
            ],
            env: vec![
                ("KUBECONFIG".into(), kubeconfig.to_string_lossy().into_owned()),
                ("VAULT_ADDR".into(), servers.vault_address.clone()),
                ("VAULT_TOKEN".into(), servers.vault_token.clone()),
                ("FERRY_LOG".into(), "info".into()),
            ],
        };
        // Every runner pod of the namespace: each scenario has its own namespace.
        let selector = format!("{}={}", names::COMPONENT.0, names::COMPONENT.1);
        let kubelet = LocalKubelet::start(client.clone(), &namespace, selector, runner, work.path().join("pods"));
        let mut scenario = Self {
            jobs: Api::namespaced(client.clone(), &namespace),
            client,
            servers,
            namespace,
            kubelet,
            work,
            operator: None,
            launch,
            operator_logs: Vec::new(),
            other_namespaces: Vec::new(),
        };
        scenario.start_operator();
        Some(scenario)
    }

    fn start_operator(&mut self) {
        let log = self.work.path().join(format!("operator-{}.log", self.operator_logs.len() + 1));
        let env: Vec<(&str, &str)> = self.launch.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let process = OperatorProcess::start(&self.launch.binary, &self.launch.args, &env, log.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        self.operator_logs.push(log);
        self.operator = Some(process);
    }

    /// Kills the operator (SIGKILL: no clean shutdown) and starts a new one with the same
    /// flags, ports and environment; returns once the new one has run for a second.
    pub async fn restart_operator(&mut self) {
        drop(self.operator.take());
        self.start_operator();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(1) {
            self.assert_operator_runs();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates another namespace for the operator to watch (no kubelet runs its pods) and
    /// restarts the operator watching both; returns its name.
    pub async fn watch_another_namespace(&mut self, label: &str) -> String {
        let namespace = ferry_e2e::unique(&format!("ferry-e2e-{label}")).to_lowercase();
        assert!(namespace.len() <= 63, "namespace {namespace} is too long: shorten the label {label:?}");
        create_namespace(&self.client, &namespace).await;
        self.other_namespaces.push(namespace.clone());
        let watched = format!("--watch-namespace={},{}", self.namespace, self.other_namespaces.join(","));
        for argument in &mut self.launch.args {
            if argument.starts_with("--watch-namespace=") {
                argument.clone_from(&watched);
            }
        }
        self.restart_operator().await;
        namespace
    }

    /// Points the operator at another Vault address (a recording proxy, say) and restarts it.
    pub async fn restart_operator_with_vault(&mut self, address: &str) {
        for (name, value) in &mut self.launch.env {
            if name == "VAULT_ADDR" {
                *value = address.to_owned();
            }
        }
        self.restart_operator().await;
    }

    /// Restarts the operator as replica `a` taking part in leader election (the Lease in the
    /// scenario's namespace) and starts replica `b` beside it with ports of its own; returns
    /// b's process and both metrics ports. Replica a starts first, so it leads.
    pub async fn start_replicas(&mut self) -> (OperatorProcess, [u16; 2]) {
        let election = [
            ("FERRY_LEADER_ELECTION".to_owned(), "true".to_owned()),
            ("FERRY_LEADER_ELECTION_NAMESPACE".to_owned(), self.namespace.clone()),
            ("FERRY_LEADER_ELECTION_LEASE".to_owned(), "ferry-e2e".to_owned()),
        ];
        self.launch.env.extend(election.iter().cloned());
        self.launch.env.push(("POD_NAME".to_owned(), "replica-a".to_owned()));
        self.restart_operator().await;
        let metrics_a = port_of(&self.launch.args, "--metrics-listen=").unwrap_or_else(|| panic!("no metrics port"));
        let [progress, metrics] = free_ports(2).unwrap()[..] else { unreachable!() };
        let args: Vec<String> = self
            .launch
            .args
            .iter()
            .map(|argument| match argument.split_once('=') {
                Some(("--progress-listen", _)) => format!("--progress-listen=127.0.0.1:{progress}"),
                Some(("--progress-url", _)) => format!("--progress-url=https://127.0.0.1:{progress}"),
                Some(("--metrics-listen", _)) => format!("--metrics-listen=127.0.0.1:{metrics}"),
                _ => argument.clone(),
            })
            .collect();
        let env: Vec<(&str, &str)> = self
            .launch
            .env
            .iter()
            .map(|(k, v)| if k == "POD_NAME" { (k.as_str(), "replica-b") } else { (k.as_str(), v.as_str()) })
            .collect();
        let log = self.work.path().join("operator-replica-b.log");
        let b = OperatorProcess::start(&self.launch.binary, &args, &env, log).unwrap_or_else(|e| panic!("{e}"));
        (b, [metrics_a, metrics])
    }

    /// Stops the current operator with SIGTERM (a clean shutdown) and forgets it.
    pub fn terminate_operator(&mut self) {
        let mut operator = self.operator.take().unwrap_or_else(|| panic!("no operator runs"));
        let status = operator.terminate().unwrap_or_else(|e| panic!("{e}"));
        assert!(status.success(), "the operator stopped with {status}:\n{}", self.operator_log_tail(40));
    }

    /// Makes `process` (a replica started beside the first) the scenario's operator.
    pub fn adopt_operator(&mut self, process: OperatorProcess) {
        self.operator_logs.push(process.log.clone());
        self.operator = Some(process);
    }

    /// Who holds the Lease `name` in the scenario's namespace.
    pub async fn lease_holder(&self, name: &str) -> Option<String> {
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let lease = leases.get_opt(name).await.unwrap_or_else(|e| panic!("reading Lease {name}: {e}"))?;
        lease.spec?.holder_identity
    }

    fn assert_operator_runs(&mut self) {
        if let Some(exit) = self.operator.as_mut().and_then(OperatorProcess::exited) {
            panic!("the operator exited ({exit}); its log:\n{}", self.operator_log_tail(60));
        }
    }

    fn operator_log_tail(&self, lines: usize) -> String {
        self.operator_logs.last().map(|log| log_tail(log, lines)).unwrap_or_default()
    }

    /// Renders the Helm chart for this namespace (namespaced RBAC watching only it, leader
    /// election), applies every rendered manifest with `kubectl apply --server-side`, and
    /// restarts the operator with a kubeconfig holding nothing but a token of the chart's
    /// ServiceAccount: from then on it can do only what the chart's RBAC grants.
    pub async fn run_operator_as_the_charts_service_account(&mut self) {
        let tools = std::env::var_os("FERRY_TOOLS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/ferry/tools"));
        let (helm, kubectl) = (tools.join("bin/helm"), tools.join("bin/kubectl"));
        let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ferry");
        let namespace = self.namespace.clone();
        let rendered = std::process::Command::new(&helm)
            .args(["template", "ferry"])
            .arg(&chart)
            .args(["--namespace", &namespace, "--set", "rbac.namespaced=true", "--set"])
            .arg(format!("watchNamespaces={{{namespace}}}"))
            .args(["--set", "replicas=1"])
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", helm.display()));
        assert!(rendered.status.success(), "helm template: {}", String::from_utf8_lossy(&rendered.stderr));
        let manifests = self.work.path().join("chart.yaml");
        std::fs::write(&manifests, &rendered.stdout).unwrap_or_else(|e| panic!("{e}"));
        let kubeconfig = self.kubeconfig();
        let applied = std::process::Command::new(&kubectl)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(["apply", "--server-side", "--field-manager=ferry-e2e", "-f"])
            .arg(&manifests)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", kubectl.display()));
        assert!(applied.status.success(), "kubectl apply --server-side: {}", String::from_utf8_lossy(&applied.stderr));
        let token = std::process::Command::new(&kubectl)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(["create", "token", "ferry", "--duration=3600s", "--namespace", &namespace])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(token.status.success(), "kubectl create token: {}", String::from_utf8_lossy(&token.stderr));
        let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
        let confined = service_account_kubeconfig(&kubeconfig, &token, &self.work.path().join("ferry-sa.kubeconfig"));
        for (name, value) in &mut self.launch.env {
            if name == "KUBECONFIG" {
                *value = confined.to_string_lossy().into_owned();
            }
        }
        self.launch.env.extend([
            ("FERRY_LEADER_ELECTION".to_owned(), "true".to_owned()),
            ("FERRY_LEADER_ELECTION_NAMESPACE".to_owned(), namespace.clone()),
            ("POD_NAME".to_owned(), "ferry-chart-e2e".to_owned()),
        ]);
        self.restart_operator().await;
    }

    fn kubeconfig(&self) -> PathBuf {
        let value = self.launch.env.iter().find(|(name, _)| name == "KUBECONFIG").map(|(_, value)| value.clone());
        PathBuf::from(value.unwrap_or_else(|| panic!("the operator has no KUBECONFIG")))
    }

    /// A path in the scenario's own scratch directory.
    pub fn work_path(&self, name: &str) -> std::path::PathBuf {
        self.work.path().join(name)
    }

    /// Reads replica b's log, for messages.
    pub fn replica_log(&self) -> String {
        std::fs::read_to_string(self.work.path().join("operator-replica-b.log")).unwrap_or_default()
    }

    /// `tenants/<namespace>/<name>`: a Vault path the operator's default prefix allows.
    pub fn vault_path(&self, name: &str) -> String {
        format!("tenants/{}/{name}", self.namespace)
    }

    /// Stores the S3 server's keys in Vault at [`Self::vault_path`]`(name)`; returns the path.
    pub fn store_s3_credentials(&self, name: &str) -> String {
        let path = self.vault_path(name);
        let servers = &self.servers;
        servers.put_secret(
            &path,
            &[("accessKeyId", servers.s3_access_key.as_str()), ("secretAccessKey", servers.s3_secret_key.as_str())],
        );
        path
    }

    /// The S3 secret key: no Secret or ConfigMap may ever hold it.
    pub fn credential(&self) -> &[u8] {
        self.servers.s3_secret_key.as_bytes()
    }

    /// Writes a source tree under the work directory with `write`, and hashes it.
    pub fn source_data(&self, write: impl FnOnce(&Path)) -> SourceData {
        let tree = self.work.path().join("source");
        write(&tree);
        let hashes = ferry_e2e::tree_hashes(&tree);
        assert!(!hashes.is_empty(), "the source data set is empty");
        SourceData { tree, hashes }
    }

    /// A source bucket holding `data`, an empty destination bucket, their credentials in Vault
    /// (one secret, or with `separate_secrets` one per binding at different paths), and the
    /// bindings [`SOURCE_BINDING`] and [`DESTINATION_BINDING`].
    pub async fn s3_to_s3(&self, data: &SourceData, separate_secrets: bool) -> S3Pair {
        let source_bucket = self.servers.bucket("e2e-src");
        let destination_bucket = self.servers.bucket("e2e-dst");
        self.servers.rclone(&["copy", &data.tree.to_string_lossy(), &self.servers.s3_remote(&source_bucket)]);
        let (source_vault_path, destination_vault_path) = if separate_secrets {
            (self.store_s3_credentials("source-s3"), self.store_s3_credentials("destination-s3"))
        } else {
            let path = self.store_s3_credentials("s3");
            (path.clone(), path)
        };
        let bindings: Api<CredentialBinding> = Api::namespaced(self.client.clone(), &self.namespace);
        for (name, bucket, path) in [
            (SOURCE_BINDING, &source_bucket, &source_vault_path),
            (DESTINATION_BINDING, &destination_bucket, &destination_vault_path),
        ] {
            let manifest = cluster::s3_binding(name, &self.namespace, &self.servers.s3_endpoint, bucket, path);
            apply(&bindings, &manifest.unwrap_or_else(|e| panic!("{e}"))).await;
        }
        S3Pair { source_bucket, destination_bucket, source_vault_path, destination_vault_path }
    }

    /// A source bucket holding `data` and an empty directory on the test servers' sshd, the
    /// S3 keys and the SSH private key in Vault, and the bindings [`SOURCE_BINDING`] and
    /// [`DESTINATION_BINDING`]; returns the directory.
    pub async fn s3_to_sftp(&self, data: &SourceData) -> String {
        let source_bucket = self.servers.bucket("e2e-src");
        self.servers.rclone(&["copy", &data.tree.to_string_lossy(), &self.servers.s3_remote(&source_bucket)]);
        let sftp = self.servers.sftp();
        let directory = self.servers.sftp_directory("e2e-dst");
        let key = std::fs::read_to_string(&sftp.key_file).unwrap_or_else(|e| panic!("{e}"));
        let sftp_path = self.vault_path("sftp");
        self.servers.put_secret(&sftp_path, &[("privateKey", key.as_str())]);
        let s3_path = self.store_s3_credentials("s3");
        let bindings: Api<CredentialBinding> = Api::namespaced(self.client.clone(), &self.namespace);
        let source =
            cluster::s3_binding(SOURCE_BINDING, &self.namespace, &self.servers.s3_endpoint, &source_bucket, &s3_path);
        apply(&bindings, &source.unwrap_or_else(|e| panic!("{e}"))).await;
        let destination = cluster::sftp_binding(DESTINATION_BINDING, &self.namespace, sftp, &directory, &sftp_path);
        apply(&bindings, &destination).await;
        directory
    }

    /// An S3 bucket holding `data` and a OneDrive (the Microsoft Graph stand-in, with the
    /// token endpoint of the test servers) as the destination, its OAuth client and refresh
    /// token in Vault; the token role write tokens are minted through, as an administrator
    /// sets it up. Returns the drive and the Vault path of its secret.
    pub async fn s3_to_onedrive(&self, data: &SourceData) -> (ferry_e2e::graph::GraphStandIn, String) {
        let source_bucket = self.servers.bucket("e2e-src");
        self.servers.rclone(&["copy", &data.tree.to_string_lossy(), &self.servers.s3_remote(&source_bucket)]);
        let role = r#"{"allowed_policies_glob":["ferry-rotate-*"],"orphan":true,"renewable":false}"#;
        self.servers.vault_post("auth/token/roles/ferry-rotation", role);
        let graph = ferry_e2e::graph::GraphStandIn::start();
        let drive_path = self.vault_path("drive");
        let fields =
            [("clientId", "ferry-test"), ("clientSecret", "ferry-test-secret"), ("refreshToken", "e2e-refresh")];
        self.servers.put_secret(&drive_path, &fields);
        let s3_path = self.store_s3_credentials("s3");
        let bindings: Api<CredentialBinding> = Api::namespaced(self.client.clone(), &self.namespace);
        let source =
            cluster::s3_binding(SOURCE_BINDING, &self.namespace, &self.servers.s3_endpoint, &source_bucket, &s3_path);
        apply(&bindings, &source.unwrap_or_else(|e| panic!("{e}"))).await;
        let token_endpoint = std::env::var("FERRY_TEST_OAUTH_TOKEN_ENDPOINT")
            .unwrap_or_else(|_| panic!("FERRY_TEST_OAUTH_TOKEN_ENDPOINT is not set: start the test servers"));
        let destination =
            cluster::onedrive_binding(DESTINATION_BINDING, &self.namespace, &graph, &token_endpoint, &drive_path);
        apply(&bindings, &destination).await;
        (graph, drive_path)
    }

    /// Two fake-gcs-server buckets, the source holding `data`, reached with one service
    /// account whose key is in Vault and whose token endpoint is a local stand-in that checks
    /// each signed assertion; the bindings [`SOURCE_BINDING`] and [`DESTINATION_BINDING`].
    /// Returns the token endpoint and the destination bucket.
    pub async fn gcs_to_gcs(&self, data: &SourceData) -> (GoogleTokenEndpoint, String) {
        let (source_bucket, destination_bucket) =
            (self.servers.gcs_bucket("e2e-src"), self.servers.gcs_bucket("e2e-dst"));
        self.servers.rclone(&["copy", &data.tree.to_string_lossy(), &self.servers.gcs_remote(&source_bucket)]);
        let google = GoogleTokenEndpoint::start();
        let key = google.new_service_account("ferry-e2e@ferry-test.iam.gserviceaccount.com");
        let token_uri = serde_json::from_str::<Value>(&key).unwrap_or_else(|e| panic!("{e}"))["token_uri"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let path = self.vault_path("gcs");
        self.servers.put_secret(&path, &[("credentialsJson", key.as_str())]);
        let endpoint = self.servers.gcs().endpoint.clone();
        let bindings: Api<CredentialBinding> = Api::namespaced(self.client.clone(), &self.namespace);
        for (name, bucket) in [(SOURCE_BINDING, &source_bucket), (DESTINATION_BINDING, &destination_bucket)] {
            let manifest = cluster::gcs_binding(name, &self.namespace, &endpoint, bucket, &token_uri, &path);
            apply(&bindings, &manifest).await;
        }
        (google, destination_bucket)
    }

    /// The rclone `remote` (an SFTP directory, a GCS bucket) holds exactly `data`, Ferry's own
    /// reports aside.
    pub fn assert_remote_holds(&self, remote: &str, data: &SourceData) {
        let downloaded = tempfile::tempdir_in(self.work.path()).unwrap_or_else(|e| panic!("{e}"));
        self.servers.rclone(&["copy", remote, &downloaded.path().to_string_lossy()]);
        let mut found = ferry_e2e::tree_hashes(downloaded.path());
        found.retain(|key, _| !ferry_api::reports::is_reserved(key));
        assert_eq!(found, data.hashes, "{remote} differs from the source");
    }

    /// A MigrationJob from [`SOURCE_BINDING`] to [`DESTINATION_BINDING`] in `shards` pods,
    /// with `spec` merged into its spec (see [`cluster::migration_job`] for the rest).
    pub fn job_manifest(&self, name: &str, shards: u32, spec: Value) -> Value {
        let job = cluster::migration_job(name, &self.namespace, SOURCE_BINDING, DESTINATION_BINDING, shards);
        cluster::with_spec(job, spec)
    }

    /// Applies a MigrationJob and returns its UID.
    pub async fn apply_job(&self, manifest: &Value) -> String {
        apply(&self.jobs, manifest).await.uid().expect("an applied job has a UID")
    }

    /// The job as the API server has it now.
    pub async fn job(&self, name: &str) -> MigrationJob {
        self.jobs.get(name).await.unwrap_or_else(|e| panic!("reading MigrationJob {name}: {e}"))
    }

    /// Merge-patches the job's spec with `fields`.
    pub async fn patch_spec(&self, name: &str, fields: Value) {
        let patch = json!({"spec": fields});
        self.jobs
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("patching the spec of MigrationJob {name} with {fields}: {e}"));
    }

    /// The job's status, what the kubelet did, and the operator's last log lines: for panics.
    pub async fn diagnostics(&self, name: &str) -> String {
        let status = match self.jobs.get_opt(name).await {
            Ok(Some(job)) => format!("{:#?}", job.status),
            Ok(None) => "the job does not exist".to_owned(),
            Err(error) => format!("cannot read the job: {error}"),
        };
        format!(
            "\njob {name} status: {status}\nkubelet: {}\n--- operator log, last 40 lines ---\n{}",
            self.kubelet.record().summary(),
            self.operator_log_tail(40)
        )
    }

    /// Every credential problem of the Secrets in the namespace now, for a job of `shards` shards.
    pub async fn credential_problems_now(&self, job_uid: &str, shards: u32) -> Vec<String> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = secrets.list(&ListParams::default()).await.unwrap_or_else(|e| panic!("listing Secrets: {e}"));
        let views: Vec<SecretView> = list.items.iter().map(|s| SecretView::of(s, job_uid)).collect();
        credential_problems(&views, self.credential(), shards)
    }

    /// Polls until `done` holds for the job and the kubelet's record, for at most `timeout`.
    /// On every pass the operator must be running and no Secret may hold a credential; a
    /// job that fails (or disappears) before `done` holds fails the test at once.
    pub async fn wait_for(
        &mut self,
        name: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&MigrationJob, &KubeletRecord) -> bool,
    ) -> MigrationJob {
        let started = Instant::now();
        loop {
            self.assert_operator_runs();
            let job = match self.jobs.get_opt(name).await {
                Ok(Some(job)) => job,
                Ok(None) => panic!("MigrationJob {name} disappeared while waiting for {what}"),
                Err(error) => panic!("reading MigrationJob {name}: {error}"),
            };
            let uid = job.uid().unwrap_or_default();
            let problems = self.credential_problems_now(&uid, job.spec.shards).await;
            assert!(problems.is_empty(), "while waiting for {what}: {problems:?}{}", self.diagnostics(name).await);
            if done(&job, &self.kubelet.record()) {
                return job;
            }
            if condition_is_true(&job, "Failed") {
                panic!("the job failed while waiting for {what}{}", self.diagnostics(name).await);
            }
            if started.elapsed() > timeout {
                panic!("no {what} within {timeout:?}{}", self.diagnostics(name).await);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the job is `Complete`; returns it.
    pub async fn wait_complete(&mut self, name: &str) -> MigrationJob {
        self.wait_for(name, "Complete=True", JOB_TIMEOUT, |job, _| condition_is_true(job, "Complete")).await
    }

    /// Waits until every pod in `pods` has been started and the job's status shows at least
    /// one verified object, and checks that the job is still short of `total`: the middle of
    /// a run, where interruptions are tested.
    pub async fn wait_mid_run(&mut self, name: &str, pods: &[String], total: u64) -> MigrationJob {
        let what = format!("the middle of the run (pods {pods:?} started, an object verified)");
        let job = self
            .wait_for(name, &what, STEP_TIMEOUT, |job, record| {
                pods.iter().all(|pod| record.started.contains(pod)) && progress(job).objects_verified > 0
            })
            .await;
        let verified = progress(&job).objects_verified;
        assert!(
            verified < total && !condition_is_true(&job, "Complete"),
            "the job verified {verified} of {total} objects before the test could interrupt it: make it slower \
             (more data or a lower bandwidthLimit){}",
            self.diagnostics(name).await
        );
        job
    }

    /// The names of the job's pods, Secrets, ConfigMaps and NetworkPolicies that exist now.
    pub async fn children(&self, job_uid: &str) -> BTreeMap<&'static str, Vec<String>> {
        let (client, namespace) = (&self.client, self.namespace.as_str());
        let selector = names::job_selector(job_uid);
        BTreeMap::from([
            ("pods", names_of::<Pod>(client, namespace, &selector).await),
            ("secrets", names_of::<Secret>(client, namespace, &selector).await),
            ("configmaps", names_of::<ConfigMap>(client, namespace, &selector).await),
            ("networkpolicies", names_of::<NetworkPolicy>(client, namespace, &selector).await),
        ])
    }

    /// Deletes the job and waits (at most 60 s) until it and everything it owned are gone.
    pub async fn delete_job_and_wait_until_gone(&mut self, name: &str, job_uid: &str) {
        self.jobs
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting MigrationJob {name}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.assert_operator_runs();
            let mut left = self.children(job_uid).await;
            let job = self.jobs.get_opt(name).await.unwrap_or_else(|e| panic!("reading MigrationJob {name}: {e}"));
            left.insert("migrationjobs", job.map(|j| j.name_any()).into_iter().collect());
            if left.values().all(Vec::is_empty) {
                return;
            }
            if Instant::now() > deadline {
                panic!("not deleted within 60 s: {left:?}{}", self.diagnostics(name).await);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The attempt Secret's data as the API server has it now (`None` once it is gone).
    pub async fn attempt_secret(&self, job: &str, attempt: u32) -> Option<BTreeMap<String, Vec<u8>>> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let name = names::attempt_object(job, attempt);
        let secret = secrets.get_opt(&name).await.unwrap_or_else(|e| panic!("reading Secret {name}: {e}"));
        secret.map(|s| super::kubelet::secret_data(&s))
    }

    /// Downloads the bucket and compares it, file by file, with the source by SHA-256.
    pub fn assert_bucket_holds(&self, bucket: &str, data: &SourceData) {
        let downloaded = self.work.path().join(format!("download-{bucket}"));
        self.servers.download(bucket, &downloaded);
        let mut found = ferry_e2e::tree_hashes(&downloaded);
        // The runners' per-object reports, in the directory Ferry reserves.
        found.retain(|key, _| !ferry_api::reports::is_reserved(key));
        if found != data.hashes {
            let missing: Vec<&String> = data.hashes.keys().filter(|k| !found.contains_key(*k)).collect();
            let different: Vec<&String> =
                found.iter().filter(|(k, v)| data.hashes.get(*k).is_some_and(|h| h != *v)).map(|(k, _)| k).collect();
            let extra: Vec<&String> = found.keys().filter(|k| !data.hashes.contains_key(*k)).collect();
            panic!(
                "bucket {bucket} differs from the source: {} missing (first {:?}), {} different ({:?}), {} extra ({:?})",
                missing.len(),
                missing.iter().take(5).collect::<Vec<_>>(),
                different.len(),
                different.iter().take(5).collect::<Vec<_>>(),
                extra.len(),
                extra.iter().take(5).collect::<Vec<_>>()
            );
        }
    }

    /// `status.report` of a job that ran at its destination bucket's root names the last
    /// attempt's reports, and those hold one record per object across every shard.
    pub fn assert_reports_left(&self, bucket: &str, job: &MigrationJob, objects: u64) {
        let status = job.status.clone().unwrap_or_default();
        let report = status.report.clone().unwrap_or_else(|| panic!("no status.report: {status:#?}"));
        assert_eq!(report.objects, objects, "{status:#?}");
        let directory =
            format!(".ferry/reports/{}/{}-{}/", self.namespace, job.name_any(), job.uid().unwrap_or_default());
        assert!(report.location.starts_with(&format!("{DESTINATION_BINDING}:{directory}")), "{report:?}");
        let downloaded = self.work.path().join(format!("reports-{bucket}"));
        self.servers.download(&format!("{bucket}/{directory}"), &downloaded);
        let attempt = format!("{}-", status.attempts);
        let mut records = 0;
        for entry in std::fs::read_dir(&downloaded).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name().to_string_lossy().starts_with(&attempt) {
                records += std::fs::read_to_string(entry.path()).unwrap().lines().count() as u64;
            }
        }
        assert_eq!(records, objects, "records in the reports of attempt {} under {directory}", status.attempts);
    }

    /// Deletes every job (so the operator's finalizer removes its children while the
    /// operator still runs), then the namespace. The namespace is not awaited: without a
    /// namespace controller (envtest) it stays Terminating for good.
    async fn clean_up(&self) {
        let jobs = self.jobs.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
        for job in &jobs {
            let _ = self.jobs.delete(&job.name_any(), &DeleteParams::default()).await;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match self.jobs.list(&ListParams::default()).await {
                Ok(list) if list.items.is_empty() => break,
                Ok(_) => tokio::time::sleep(POLL).await,
                Err(error) => {
                    eprintln!("e2e clean-up: cannot list jobs in {}: {error}", self.namespace);
                    break;
                }
            }
        }
        for namespace in std::iter::once(&self.namespace).chain(&self.other_namespaces) {
            if let Err(error) =
                Api::<Namespace>::all(self.client.clone()).delete(namespace, &DeleteParams::default()).await
            {
                eprintln!("e2e clean-up: cannot delete namespace {namespace}: {error}");
            }
        }
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What the runners said; the operator's own log is printed as its process drops.
            for log in self.kubelet.record().logs {
                eprintln!("--- {}, last 60 lines ---\n{}", log.display(), log_tail(&log, 60));
            }
            for log in self.operator_logs.iter().rev().skip(1) {
                eprintln!("--- earlier operator log {}, last 60 lines ---\n{}", log.display(), log_tail(log, 60));
            }
            eprintln!(
                "namespace {ns} is left for inspection; remove it with:\n  kubectl -n {ns} patch mj --all --type=merge -p '{{\"metadata\":{{\"finalizers\":null}}}}'; kubectl delete ns {ns} --wait=false",
                ns = self.namespace
            );
            return;
        }
        // The operator and the kubelet are fields, so they still run during the clean-up.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| handle.block_on(self.clean_up()));
            }
            _ => eprintln!("e2e: namespace {} not cleaned up: no multi-threaded runtime", self.namespace),
        }
    }
}

/// The names of the pods of `attempt`, one per shard.
pub fn attempt_pods(job: &str, attempt: u32, shards: u32) -> Vec<String> {
    (0..shards).map(|shard| names::runner_pod(job, attempt, shard)).collect()
}

/// Every pod the kubelet ever saw, and how many pod objects each name had.
pub fn pods_seen(record: &KubeletRecord) -> BTreeMap<String, usize> {
    record.seen.iter().map(|(name, uids)| (name.clone(), uids.len())).collect()
}

/// The names of the credential files each started pod's runner was shown (file names only).
pub fn credential_files(record: &KubeletRecord) -> BTreeMap<String, BTreeSet<String>> {
    record
        .projected_files
        .iter()
        .map(|(pod, files)| {
            let names = files
                .iter()
                .filter_map(|path| Path::new(path).file_name().map(|n| n.to_string_lossy().into_owned()))
                .filter(|name| name.ends_with("-token") || name.ends_with("-digest") || name.starts_with("shard-"))
                .collect();
            (pod.clone(), names)
        })
        .collect()
}

/// The port in the argument that starts with `prefix` (`--metrics-listen=127.0.0.1:9090`).
fn port_of(args: &[String], prefix: &str) -> Option<u16> {
    args.iter().find_map(|argument| argument.strip_prefix(prefix)?.rsplit_once(':')?.1.parse().ok())
}

/// A copy of the kubeconfig at `original` whose current context authenticates with `token`
/// alone (relative certificate paths made absolute, since the copy lives elsewhere).
fn service_account_kubeconfig(original: &Path, token: &str, copy: &Path) -> PathBuf {
    let text = std::fs::read_to_string(original).unwrap_or_else(|e| panic!("{}: {e}", original.display()));
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let base = original.parent().map(Path::to_path_buf).unwrap_or_default();
    if let Some(clusters) = config["clusters"].as_sequence_mut() {
        for cluster in clusters {
            if let Some(authority) = cluster["cluster"]["certificate-authority"].as_str().map(str::to_owned)
                && Path::new(&authority).is_relative()
            {
                cluster["cluster"]["certificate-authority"] =
                    base.join(authority).to_string_lossy().into_owned().into();
            }
        }
    }
    let current = config["current-context"].as_str().unwrap_or_default().to_owned();
    if let Some(contexts) = config["contexts"].as_sequence_mut() {
        for context in contexts.iter_mut().filter(|context| context["name"] == current.as_str()) {
            context["context"]["user"] = "ferry-chart".into();
        }
    }
    config["users"] = serde_yaml::from_str(&format!("[{{name: ferry-chart, user: {{token: \"{token}\"}}}}]"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(copy, serde_yaml::to_string(&config).unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|e| panic!("{e}"));
    copy.to_path_buf()
}
