//! The end-to-end suite's pieces that do not need a cluster: whether to run, the manifests it
//! applies, the credential checks it makes, and the operator process it starts. Kept pure
//! (or plain process handling) so they are unit-tested here, where no cluster exists.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde_json::{Value, json};

/// The kubeconfig of the cluster to run against.
pub const KUBECONFIG_VARIABLE: &str = "FERRY_E2E_KUBECONFIG";
/// Set to `1` to make a missing kubeconfig a failure instead of a skip.
pub const REQUIRE_VARIABLE: &str = "FERRY_E2E_REQUIRE";
/// The node label the runner pods select: no node should carry it, so the pods stay
/// unscheduled and the test's own kubelet runs them, with or without nodes.
pub const LOCAL_RUNNER_LABEL: &str = "ferry.dev/e2e-local-runner";
/// The keys an attempt's Secret holds per shard `i`, as `shard-<i>-<key>`: the shard's own
/// wrapping tokens, its progress token and its plan's digest. Each runner pod mounts only its
/// shard's keys, as files with these names.
pub const ATTEMPT_SHARD_KEYS: [&str; 4] = ["destination-token", "plan-digest", "progress-token", "source-token"];
/// The keys a shard's part of the Secret holds beside those for a binding whose provider
/// rotates refresh tokens: the wrapped write tokens.
pub const ROTATION_SHARD_KEYS: [&str; 2] = ["destination-rotation-token", "source-rotation-token"];
/// The attempt Secret's key listing the accessors (one a line) of every wrapping token of the
/// attempt, so they can be revoked without the tokens themselves.
pub const WRAPPING_ACCESSORS_KEY: &str = "wrapping-accessors";

/// Exactly the keys the Secret of an attempt with `shards` shards holds (every binding in
/// this suite keeps its credentials in Vault, so every shard has both wrapping tokens).
pub fn attempt_secret_keys(shards: u32) -> BTreeSet<String> {
    let per_shard = (0..shards).flat_map(|i| ATTEMPT_SHARD_KEYS.iter().map(move |key| format!("shard-{i}-{key}")));
    per_shard.chain([WRAPPING_ACCESSORS_KEY.to_owned()]).collect()
}

/// Whether the suite runs.
#[derive(Debug, PartialEq)]
pub enum Gate {
    /// Against the cluster of this kubeconfig.
    Run(PathBuf),
    /// Not at all; the message says why and what to set.
    Skip(String),
    /// Not at all, but a cluster was required: fail with the message.
    Fail(String),
}

/// Decides from `FERRY_E2E_KUBECONFIG` and `FERRY_E2E_REQUIRE` (their values passed in).
pub fn gate(kubeconfig: Option<OsString>, require: Option<OsString>) -> Gate {
    if let Some(path) = kubeconfig.filter(|p| !p.is_empty()) {
        return Gate::Run(PathBuf::from(path));
    }
    let message = format!(
        "{KUBECONFIG_VARIABLE} is not set: the end-to-end suite against a Kubernetes cluster is skipped. \
         Set {KUBECONFIG_VARIABLE} to a kubeconfig (any cluster, even a bare control plane such as envtest's) \
         and run it under scripts/test-all.sh (or after `eval \"$(scripts/test-servers.sh start)\"`); \
         {REQUIRE_VARIABLE}=1 makes a missing kubeconfig a failure."
    );
    if require.is_some_and(|value| value == "1") {
        Gate::Fail(format!("{REQUIRE_VARIABLE}=1, but {message}"))
    } else {
        Gate::Skip(message)
    }
}

/// The `ferry-runner` binary built next to the operator binary.
pub fn runner_binary(operator_binary: &Path) -> Result<PathBuf, String> {
    let runner = operator_binary.with_file_name("ferry-runner");
    if runner.is_file() {
        Ok(runner)
    } else {
        Err(format!("{} does not exist: build it first: cargo build -p ferry-runner", runner.display()))
    }
}

/// Checks that the runner has the `cluster` subcommand its pods run, so a runner without it
/// fails here with that reason rather than as three failed runner pods.
pub fn require_cluster_mode(runner: &Path) -> Result<(), String> {
    let output = Command::new(runner)
        .args(["cluster", "--help"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", runner.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} has no `cluster` subcommand, which runner pods run (`ferry-runner cluster --help` said: {})",
            runner.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The CustomResourceDefinitions in `directory`'s `*.yaml` files, sorted by file name.
pub fn crds(directory: &Path) -> Result<Vec<CustomResourceDefinition>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(directory)
        .map_err(|e| format!("{}: {e}", directory.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
            serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))
        })
        .collect()
}

/// The address and port of an `http(s)://host:port` endpoint, for an egress rule; a host name
/// counts as loopback (the test servers run there).
pub fn endpoint_address(endpoint: &str) -> Result<(IpAddr, u16), String> {
    let url = url::Url::parse(endpoint).map_err(|e| format!("{endpoint}: {e}"))?;
    let port = url.port_or_known_default().ok_or_else(|| format!("{endpoint}: no port"))?;
    let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
    let address = host.parse().unwrap_or(IpAddr::from([127, 0, 0, 1]));
    Ok((address, port))
}

/// A CredentialBinding for an S3 bucket whose keys are in Vault at `secret/<vault_path>`.
pub fn s3_binding(
    name: &str,
    namespace: &str,
    endpoint: &str,
    bucket: &str,
    vault_path: &str,
) -> Result<Value, String> {
    let (address, port) = endpoint_address(endpoint)?;
    let bits = if address.is_ipv4() { 32 } else { 128 };
    Ok(json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "CredentialBinding",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "provider": "s3",
            "s3": {"endpoint": endpoint, "region": "us-east-1", "bucket": bucket, "forcePathStyle": true},
            "vault": {"mount": "secret", "path": vault_path},
            "egress": [{"cidr": format!("{address}/{bits}"), "ports": [port]}]
        }
    }))
}

/// A CredentialBinding for a directory of the test servers' sshd, its key in Vault at
/// `secret/<vault_path>` and its host key listed for the address the runners dial.
pub fn sftp_binding(name: &str, namespace: &str, sftp: &ferry_e2e::Sftp, directory: &str, vault_path: &str) -> Value {
    json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "CredentialBinding",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "provider": "sftp",
            "sftp": {
                "host": sftp.host,
                "port": sftp.port,
                "user": sftp.user,
                "root": format!("{}/{directory}", sftp.root),
                "knownHosts": sftp.known_hosts_line(&sftp.host, sftp.port),
            },
            "vault": {"mount": "secret", "path": vault_path},
            "egress": [{"cidr": format!("{}/32", sftp.host), "ports": [sftp.port]}]
        }
    })
}

/// A OneDrive binding at the Graph stand-in under the folder `e2e`, its OAuth secret at
/// `vault_path`; runners may reach the stand-in and the token endpoint, both on loopback.
pub fn onedrive_binding(
    name: &str,
    namespace: &str,
    graph: &ferry_e2e::graph::GraphStandIn,
    token_endpoint: &str,
    vault_path: &str,
) -> Value {
    let token_port = url::Url::parse(token_endpoint).ok().and_then(|url| url.port()).unwrap_or(80);
    json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "CredentialBinding",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "provider": "onedrive",
            "onedrive": {"apiEndpoint": graph.api_endpoint(), "tokenEndpoint": token_endpoint, "root": "e2e"},
            "vault": {"mount": "secret", "path": vault_path},
            "egress": [{"cidr": "127.0.0.1/32", "ports": [graph.address.port(), token_port]}]
        }
    })
}

/// A GCS binding for a fake-gcs-server bucket, its service account key at `vault_path`;
/// runners may reach the server and the key file's token endpoint, both on loopback.
pub fn gcs_binding(
    name: &str,
    namespace: &str,
    endpoint: &str,
    bucket: &str,
    token_uri: &str,
    vault_path: &str,
) -> Value {
    let port = |address: &str| url::Url::parse(address).ok().and_then(|url| url.port()).unwrap_or(80);
    json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "CredentialBinding",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "provider": "gcs",
            "gcs": {"endpoint": endpoint, "bucket": bucket},
            "vault": {"mount": "secret", "path": vault_path},
            "egress": [{"cidr": "127.0.0.1/32", "ports": [port(endpoint), port(token_uri)]}]
        }
    })
}

/// A MigrationJob copying all of `source` to `destination` in `shards` runner pods, each
/// object proven by checksum, whose pods no node runs (see [`LOCAL_RUNNER_LABEL`]).
pub fn migration_job(name: &str, namespace: &str, source: &str, destination: &str, shards: u32) -> Value {
    json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "MigrationJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "source": {"binding": source, "path": ""},
            "destination": {"binding": destination, "path": ""},
            "mode": "copy",
            "verify": "checksum",
            "shards": shards,
            // A failed attempt must fail the test with its own reason, not hide behind a retry.
            "retries": 0,
            "activeDeadlineSeconds": 600,
            "runner": {"nodeSelector": {LOCAL_RUNNER_LABEL: "true"}}
        }
    })
}

/// `manifest` with `fields` merged into its `spec` (a field set to `null` is removed).
pub fn with_spec(mut manifest: Value, fields: Value) -> Value {
    if let (Some(spec), Value::Object(fields)) = (manifest["spec"].as_object_mut(), fields) {
        for (key, value) in fields {
            if value.is_null() {
                spec.remove(&key);
            } else {
                spec.insert(key, value);
            }
        }
    }
    manifest
}

/// The accessors listed in an attempt Secret's [`WRAPPING_ACCESSORS_KEY`] value.
pub fn wrapping_accessors(value: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(value).lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

/// What the credential check needs of a Secret.
#[derive(Clone, Debug)]
pub struct SecretView {
    /// The Secret's name.
    pub name: String,
    /// Whether it belongs to the job (carries its UID label).
    pub owned_by_job: bool,
    /// Its keys and values.
    pub data: std::collections::BTreeMap<String, Vec<u8>>,
}

impl SecretView {
    /// The view of a Secret read from the API server, for the job with `job_uid`.
    pub fn of(secret: &Secret, job_uid: &str) -> Self {
        let owned_by_job = secret
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(ferry_operator::names::JOB_UID_LABEL))
            .is_some_and(|uid| uid == job_uid);
        Self {
            name: secret.metadata.name.clone().unwrap_or_default(),
            owned_by_job,
            data: secret.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect(),
        }
    }
}

/// Every way `secrets` break the credential rule: no value holds `credential`, and the job's
/// Secrets hold exactly the keys of an attempt with `shards` shards ([`attempt_secret_keys`]):
/// wrapping tokens, progress tokens, plan digests and the wrapping tokens' accessors. Never
/// prints a value.
pub fn credential_problems(secrets: &[SecretView], credential: &[u8], shards: u32) -> Vec<String> {
    let expected = attempt_secret_keys(shards);
    // A binding whose provider rotates refresh tokens adds its wrapped write token.
    let optional: BTreeSet<String> =
        (0..shards).flat_map(|i| ROTATION_SHARD_KEYS.iter().map(move |key| format!("shard-{i}-{key}"))).collect();
    let mut problems = Vec::new();
    for secret in secrets {
        for (key, value) in &secret.data {
            if !credential.is_empty() && value.windows(credential.len()).any(|w| w == credential) {
                problems.push(format!("Secret {} key {key} holds the S3 secret key", secret.name));
            }
        }
        if secret.owned_by_job {
            let keys: BTreeSet<String> = secret.data.keys().cloned().collect();
            let unexpected: Vec<&String> =
                keys.difference(&expected).filter(|key| !optional.contains(key.as_str())).collect();
            let missing: Vec<&String> = expected.difference(&keys).collect();
            if !unexpected.is_empty() || !missing.is_empty() {
                problems.push(format!(
                    "Secret {} has keys {unexpected:?} an attempt of {shards} shards never holds, and lacks {missing:?}",
                    secret.name
                ));
            }
        }
    }
    problems
}

/// The status (`True`, `False`, `Unknown`) of condition `type_`, if present.
pub fn condition_status<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions.iter().find(|c| c.type_ == type_).map(|c| c.status.as_str())
}

/// `count` distinct loopback ports nothing listens on right now (each held until all are
/// chosen, so no two are the same).
pub fn free_ports(count: usize) -> Result<Vec<u16>, String> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())).collect()
}

/// The last `lines` lines of a file (empty when it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(file) = std::fs::File::open(path) else { return String::new() };
    let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The operator as a child process, killed when dropped (also when the test panics).
pub struct OperatorProcess {
    child: Child,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl OperatorProcess {
    /// Starts `binary` with `args` and `env`, its output to `log`.
    pub fn start(binary: &Path, args: &[String], env: &[(&str, &str)], log: PathBuf) -> Result<Self, String> {
        let output = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let errors = output.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(binary)
            .args(args)
            .envs(env.iter().copied())
            // The operator reads credentials from Vault itself; the image's bundle breaks S3 clients.
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null())
            .stdout(Stdio::from(output))
            .stderr(Stdio::from(errors))
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        Ok(Self { child, log })
    }

    /// `Some(why)` once the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(error) => Some(error.to_string()),
        }
    }
}

impl OperatorProcess {
    /// Stops the process as a kubelet would: SIGTERM, then waits for it to exit.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus, String> {
        let id = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &id]).status().map_err(|e| e.to_string())?;
        if !sent.success() {
            return Err(format!("kill -TERM {id} failed"));
        }
        self.child.wait().map_err(|e| e.to_string())
    }
}

/// `GET path` on a local HTTP port: the status code, or 0 when nothing answers.
pub fn http_status(port: u16, path: &str) -> u16 {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return 0 };
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    if stream.write_all(request.as_bytes()).is_err() || stream.read_to_string(&mut answer).is_err() {
        return 0;
    }
    answer.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- ferry-operator log ({}), last 200 lines ---\n{}",
                self.log.display(),
                log_tail(&self.log, 200)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use ferry_api::validate::{Manifest, validate};

    use super::*;

    #[test]
    fn a_missing_kubeconfig_skips_unless_a_cluster_is_required() {
        let Gate::Skip(message) = gate(None, None) else { panic!("must skip") };
        assert!(message.contains("FERRY_E2E_KUBECONFIG is not set") && message.contains("skipped"), "{message}");
        assert!(matches!(gate(Some("".into()), Some("0".into())), Gate::Skip(_)));
        let Gate::Fail(message) = gate(None, Some("1".into())) else { panic!("must fail") };
        assert!(message.starts_with("FERRY_E2E_REQUIRE=1, but FERRY_E2E_KUBECONFIG is not set"), "{message}");
        assert_eq!(gate(Some("/k/config".into()), Some("1".into())), Gate::Run("/k/config".into()));
    }

    #[test]
    fn the_runner_is_looked_for_next_to_the_operator() {
        let directory = tempfile::tempdir().unwrap();
        let operator = directory.path().join("ferry-operator");
        let error = runner_binary(&operator).unwrap_err();
        assert!(error.contains("build it first: cargo build -p ferry-runner"), "{error}");
        std::fs::write(directory.path().join("ferry-runner"), b"").unwrap();
        assert_eq!(runner_binary(&operator).unwrap(), directory.path().join("ferry-runner"));
    }

    #[test]
    fn the_checked_in_crds_are_read() {
        let crds = crds(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds")).unwrap();
        let names: Vec<_> = crds.iter().map(|c| c.metadata.name.clone().unwrap()).collect();
        assert_eq!(names, ["credentialbindings.ferry.dev", "migrationjobs.ferry.dev"]);
    }

    #[test]
    fn the_manifests_pass_admission_as_written() {
        let binding = s3_binding("e2e-source", "ns", "http://127.0.0.1:8333", "src-bucket", "tenants/ns/s3").unwrap();
        let Manifest::CredentialBinding(binding) = validate(&binding).unwrap() else { panic!("not a binding") };
        let s3 = binding.spec.s3.unwrap();
        assert!(s3.force_path_style && s3.endpoint.as_deref() == Some("http://127.0.0.1:8333"));
        assert_eq!(binding.spec.egress[0].cidr, "127.0.0.1/32");
        assert_eq!(binding.spec.egress[0].ports, [8333]);
        assert_eq!(binding.spec.vault.unwrap().creation_path(), "secret/data/tenants/ns/s3");

        let job = migration_job("copy", "ns", "e2e-source", "e2e-destination", 2);
        let Manifest::MigrationJob(job) = validate(&job).unwrap() else { panic!("not a job") };
        assert_eq!(job.spec.shards, 2);
        assert_eq!(job.spec.verify, ferry_api::VerifyMode::Checksum);
        assert_eq!(job.spec.runner.unwrap().node_selector[LOCAL_RUNNER_LABEL], "true");
    }

    #[test]
    fn endpoints_become_egress_addresses() {
        assert_eq!(endpoint_address("http://127.0.0.1:8333").unwrap(), (IpAddr::from([127, 0, 0, 1]), 8333));
        assert_eq!(endpoint_address("http://localhost:9000/").unwrap().1, 9000);
        assert_eq!(endpoint_address("https://[::1]").unwrap(), ("::1".parse().unwrap(), 443));
    }

    #[test]
    fn credentials_in_secrets_are_found_without_printing_them() {
        let view = |name: &str, owned: bool, pairs: &[(&str, &str)]| SecretView {
            name: name.into(),
            owned_by_job: owned,
            data: pairs.iter().map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec())).collect(),
        };
        let attempt: Vec<(String, &str)> = attempt_secret_keys(2).into_iter().map(|key| (key, "s.wrap")).collect();
        let attempt: Vec<(&str, &str)> = attempt.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(attempt.len(), 9);
        assert!(attempt.iter().any(|(k, _)| *k == "shard-1-plan-digest"));
        assert!(attempt.iter().any(|(k, _)| *k == "wrapping-accessors"));
        let fine = [view("ferry-copy-a1", true, &attempt), view("other", false, &[("token", "t")])];
        assert_eq!(credential_problems(&fine, b"k3y", 2), Vec::<String>::new());

        let leaked = view("user", false, &[("config", "aws_secret_access_key = k3y\n")]);
        let mut extra = attempt.clone();
        extra.push(("secretAccessKey", "x"));
        let extra = view("ferry-copy-a2", true, &extra);
        // The old layout: one set of tokens for every shard.
        let old = [("source-token", "s"), ("destination-token", "d"), ("progress-token", "p")];
        let old = view("ferry-copy-a3", true, &old);
        let problems = credential_problems(&[leaked, extra, old], b"k3y", 2);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("Secret user key config holds the S3 secret key"));
        assert!(problems[1].contains("[\"secretAccessKey\"]") && problems[1].contains("lacks []"));
        assert!(problems[2].contains("\"source-token\"") && problems[2].contains("\"shard-0-source-token\""));
        assert!(problems.iter().all(|p| !p.contains("k3y")));
        // A shard more than the job has is refused too.
        let three: Vec<(String, &str)> = attempt_secret_keys(3).into_iter().map(|key| (key, "t")).collect();
        let three: Vec<(&str, &str)> = three.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let problems = credential_problems(&[view("ferry-copy-a1", true, &three)], b"k3y", 2);
        assert!(problems.len() == 1 && problems[0].contains("shard-2-source-token"), "{problems:?}");
    }

    #[test]
    fn spec_fields_are_merged_and_accessors_read() {
        let job = migration_job("copy", "ns", "a", "b", 1);
        let job = with_spec(job, json!({"retries": 2, "bandwidthLimit": "100Ki", "activeDeadlineSeconds": null}));
        assert_eq!(job["spec"]["retries"], 2);
        assert_eq!(job["spec"]["shards"], 1);
        assert!(job["spec"].get("activeDeadlineSeconds").is_none());
        let Manifest::MigrationJob(job) = validate(&job).unwrap() else { panic!("not a job") };
        assert_eq!(job.spec.bandwidth_limit.unwrap().bytes(), 100 * 1024);
        assert_eq!(wrapping_accessors(b"acc1\nacc2\n\n"), ["acc1", "acc2"]);
        assert!(wrapping_accessors(b"").is_empty());
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(3).unwrap();
        assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2], "{ports:?}");
    }

    #[test]
    fn conditions_are_read_by_type() {
        let condition: Condition = serde_json::from_value(json!({"type": "Complete", "status": "True",
            "reason": "Succeeded", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}))
        .unwrap();
        assert_eq!(condition_status(&[condition], "Complete"), Some("True"));
        assert_eq!(condition_status(&[], "Failed"), None);
    }

    #[test]
    fn an_operator_process_is_killed_when_dropped() {
        let directory = tempfile::tempdir().unwrap();
        let mut process = OperatorProcess::start(
            Path::new("/bin/sh"),
            &["-c".into(), "echo started; sleep 30".into()],
            &[],
            directory.path().join("log"),
        )
        .unwrap();
        assert_eq!(process.exited(), None);
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(process);
        assert_eq!(log_tail(&directory.path().join("log"), 5), "started");
    }
}
