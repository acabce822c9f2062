//! One runner attempt end to end without Kubernetes: the operator wraps real credentials in
//! OpenBao and builds the plan; `ferry-runner cluster` (in process) unwraps them, moves a
//! bucket between real S3 buckets, and reports to the real HTTPS progress API. Running the
//! same attempt twice is refused, because its tokens were already used. A second attempt
//! moves S3 to Azure Blob (Azurite), others S3 to SFTP (sshd) and to OneDrive (a Graph
//! stand-in and a real OAuth token endpoint), each side's credentials wrapped in OpenBao.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_api::MigrationJob;
use ferry_api::contract::plan_digest;
use ferry_api::contract::{JobIdentity, Outcome, PlannedBinding, ProgressReport};
use ferry_e2e::{Servers, servers, unique, write_small_files};
use ferry_operator::children::credentials::{
    DESTINATION_ROTATION_TOKEN_FILE, DESTINATION_TOKEN_FILE, PLAN_DIGEST_FILE, PROGRESS_TOKEN_FILE, SOURCE_TOKEN_FILE,
};
use ferry_operator::children::{Attempt, RunnerEnvironment, plan};
use ferry_operator::progress::{ProgressHub, TlsFiles, new_attempt_token, serve, token_hash};
use ferry_operator::vault::{Vault, VaultAuth, VaultConfig, WrappedCredentials};
use ferry_runner::cluster::{ClusterOptions, run};
use ferry_runner::run::ExitStatus;
use zeroize::Zeroizing;

fn self_signed(dir: &Path) -> TlsFiles {
    let (cert, key) = ferry_e2e::self_signed_certificate(dir);
    TlsFiles { cert, key }
}

fn job(source: &str, destination: &str) -> MigrationJob {
    serde_yaml::from_str(&format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: MigrationJob\nmetadata: {{name: copy, namespace: team-a, uid: {}}}\nspec:\n  source: {{binding: {source}, path: data}}\n  destination: {{binding: {destination}, path: moved}}\n  verify: checksum\n",
        unique("uid")
    ))
    .unwrap()
}

fn binding(servers: &Servers, name: &str, bucket: &str, vault_path: &str) -> PlannedBinding {
    let spec = serde_yaml::from_str(&format!(
        "provider: s3\ns3: {{endpoint: \"{}\", region: us-east-1, bucket: {bucket}, forcePathStyle: true}}\nvault: {{path: {vault_path}}}",
        servers.s3_endpoint
    ))
    .unwrap();
    PlannedBinding {
        name: name.into(),
        spec,
        secret_creation_path: None,
        secret_fields: vec![],
        rotation_creation_path: None,
    }
}

fn planned(mut binding: PlannedBinding, wrapped: &WrappedCredentials) -> PlannedBinding {
    binding.secret_creation_path = Some(wrapped.creation_path.clone());
    binding.secret_fields = wrapped.fields.clone();
    binding
}

/// A bucket holding `count` small files under `data/`, their local copy, and the binding
/// `old` for it.
fn s3_source(servers: &Servers, work: &Path, prefix: &str, count: usize) -> (PathBuf, PlannedBinding) {
    let bucket = servers.bucket(prefix);
    let local = work.join("data");
    write_small_files(&local, count, 900);
    servers.rclone(&["copy", &local.to_string_lossy(), &servers.s3_remote(&format!("{bucket}/data"))]);
    (local, binding(servers, "old", &bucket, &servers.s3_credentials_in_vault()))
}

/// The destination binding `new`, from its spec in YAML.
fn destination(spec: &str) -> PlannedBinding {
    PlannedBinding {
        name: "new".into(),
        spec: serde_yaml::from_str(spec).unwrap(),
        secret_creation_path: None,
        secret_fields: vec![],
        rotation_creation_path: None,
    }
}

/// Runs the attempt and asserts it verified all `objects`; returns the final report.
async fn run_to_success(pod: &Pod, objects: u64) -> ProgressReport {
    assert_eq!(run(pod.options.clone()).await, ExitStatus::Success);
    let last = pod.last_report();
    assert_eq!(last.outcome, Some(Outcome::Succeeded));
    assert_eq!((last.progress.objects_total, last.progress.objects_verified), (objects, objects));
    last
}

/// rclone reads every byte of both sides (Ferry's reports aside) and finds them equal.
fn assert_same_bytes(servers: &Servers, local: &Path, remote: &str) {
    let output = servers.rclone(&["check", "--download", "--exclude", ".ferry/**", &local.to_string_lossy(), remote]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// What the runner pod of shard 0 would be given (plan, its digest, wrapped tokens), written
/// under a test's directory, and the progress API it reports to.
struct Pod {
    hub: ProgressHub,
    identity: JobIdentity,
    address: std::net::SocketAddr,
    plan: String,
    options: ClusterOptions,
    termination: PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Pod {
    /// The final report the runner left as its termination message.
    fn last_report(&self) -> ProgressReport {
        serde_json::from_str(&std::fs::read_to_string(&self.termination).unwrap()).unwrap()
    }
}

/// The token role write tokens are minted through, as an administrator sets it up: only
/// `ferry-rotate-*` policies, orphan tokens that cannot be renewed.
fn rotation_role(servers: &Servers) -> String {
    let body = r#"{"allowed_policies_glob":["ferry-rotate-*"],"orphan":true,"renewable":false}"#;
    servers.vault_post("auth/token/roles/ferry-rotation", body);
    "ferry-rotation".to_owned()
}

/// Wraps both bindings' credentials in OpenBao as the operator does, plans the attempt,
/// starts the progress API and writes the pod's files.
async fn prepare(servers: &Servers, work: &Path, source: PlannedBinding, destination: PlannedBinding) -> Pod {
    let vault = Vault::connect(VaultConfig {
        address: servers.vault_address.parse().unwrap(),
        ca_file: None,
        auth: VaultAuth::Token(Zeroizing::new(servers.vault_token.clone())),
    })
    .await
    .unwrap();
    let ttl = Duration::from_secs(120);
    let source_wrapped = vault.wrap_credentials(&source.spec, ttl).await.unwrap();
    let destination_wrapped = vault.wrap_credentials(&destination.spec, ttl).await.unwrap();
    // A destination whose provider rotates refresh tokens also gets a write token, minted
    // through the token role the operator is configured with.
    let write_token = match destination.spec.provider.rotates_refresh_tokens() {
        true => Some(vault.mint_write_token(&destination.spec, &rotation_role(servers), ttl, ttl).await.unwrap()),
        false => None,
    };

    let tls = self_signed(work);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let hub = ProgressHub::without_lookup();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, tls.clone(), hub.clone(), async move {
        stopped.await.ok();
    }));

    let job = job(&source.name, &destination.name);
    let identity =
        JobIdentity { namespace: "team-a".into(), name: "copy".into(), uid: job.metadata.uid.clone().unwrap() };
    let progress_token = new_attempt_token().unwrap();
    hub.register_attempt(&identity, 1, vec![token_hash(&progress_token)]);
    let attempt = Attempt {
        job: &job,
        identity: identity.clone(),
        attempt: 1,
        source: planned(source, &source_wrapped),
        destination: PlannedBinding {
            rotation_creation_path: write_token.as_ref().map(|w| w.creation_path.clone()),
            ..planned(destination, &destination_wrapped)
        },
        credentials_expire_at: Some(source_wrapped.expires_at.min(destination_wrapped.expires_at).to_string()),
        deadline_seconds: None,
    };
    let environment = RunnerEnvironment {
        progress_url: format!("https://{address}"),
        vault_address: Some(servers.vault_address.clone()),
        ..RunnerEnvironment::default()
    };
    let documents = plan::plan_documents(&attempt, &environment).unwrap();
    let plan_file = work.join("plan.json");
    std::fs::write(&plan_file, &documents[0]).unwrap();
    let credentials = work.join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join(SOURCE_TOKEN_FILE), source_wrapped.token.as_bytes()).unwrap();
    std::fs::write(credentials.join(DESTINATION_TOKEN_FILE), destination_wrapped.token.as_bytes()).unwrap();
    if let Some(write_token) = &write_token {
        std::fs::write(credentials.join(DESTINATION_ROTATION_TOKEN_FILE), write_token.token.as_bytes()).unwrap();
    }
    std::fs::write(credentials.join(PROGRESS_TOKEN_FILE), progress_token.as_bytes()).unwrap();
    std::fs::write(credentials.join(PLAN_DIGEST_FILE), plan_digest(documents[0].as_bytes())).unwrap();
    let spool = work.join("spool");
    std::fs::create_dir(&spool).unwrap();
    let termination = work.join("termination-log");
    let options = ClusterOptions {
        plan: plan_file,
        credentials,
        spool_directory: spool,
        termination_log: Some(termination.clone()),
        progress_ca: Some(tls.cert.clone()),
        vault_ca: None,
    };
    Pod { hub, identity, address, plan: documents[0].clone(), options, termination, stop }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_unwraps_copies_verifies_and_reports_then_its_tokens_are_spent() {
    let servers = servers();
    let work = tempfile::tempdir().unwrap();
    let (source_bucket, destination_bucket) = (servers.bucket("attempt-src"), servers.bucket("attempt-dst"));
    let local = work.path().join("data");
    write_small_files(&local, 40, 1000);
    servers.rclone(&["copy", &local.to_string_lossy(), &servers.s3_remote(&format!("{source_bucket}/data"))]);
    let vault_path = servers.s3_credentials_in_vault();
    let source = binding(&servers, "old", &source_bucket, &vault_path);
    let destination = binding(&servers, "new", &destination_bucket, &vault_path);
    let pod = prepare(&servers, work.path(), source, destination).await;

    assert_eq!(run(pod.options.clone()).await, ExitStatus::Success);
    let last = pod.last_report();
    assert_eq!(last.outcome, Some(Outcome::Succeeded));
    assert_eq!((last.progress.objects_total, last.progress.objects_verified), (40, 40));
    let reported = pod.hub.latest(&pod.identity.uid).unwrap();
    assert_eq!(reported.shards[&0].progress.objects_verified, 40, "the operator has the final counts");
    servers.rclone(&[
        "check",
        "--exclude",
        ".ferry/**",
        &servers.s3_remote(&format!("{source_bucket}/data")),
        &servers.s3_remote(&format!("{destination_bucket}/moved")),
    ]);

    // The per-object report is left at the destination, one verified record per object.
    assert_eq!(last.report_objects, Some(40));
    let key = ferry_api::reports::report_key(&pod.identity, 1, 0);
    let report = servers.rclone(&["cat", &servers.s3_remote(&format!("{destination_bucket}/moved/{key}"))]);
    let records: Vec<serde_json::Value> =
        String::from_utf8(report.stdout).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(records.len(), 40);
    assert!(records.iter().all(|record| record["action"] == "copied" && record["verifiedBy"].is_string()));

    // The same tokens again: Vault no longer knows them although they have not expired, so
    // someone used them. The attempt is refused loudly and nothing is read.
    assert_eq!(run(pod.options.clone()).await, ExitStatus::SecurityViolation);
    let refused = pod.last_report();
    assert!(matches!(refused.outcome, Some(Outcome::SecurityViolation { .. })), "{refused:?}");

    // A plan someone edited in the ConfigMap (here: pointing progress elsewhere) no longer
    // matches the digest beside the tokens: refused before anything in it is used.
    let edited = pod.plan.replace(&format!("https://{}", pod.address), "https://attacker.invalid");
    assert_ne!(edited, pod.plan);
    std::fs::write(&pod.options.plan, edited).unwrap();
    let before = pod.hub.latest(&pod.identity.uid).unwrap().shards[&0].sequence;
    assert_eq!(run(pod.options.clone()).await, ExitStatus::SecurityViolation);
    let refused = pod.last_report();
    let Some(Outcome::SecurityViolation { reason }) = &refused.outcome else { panic!("{refused:?}") };
    assert!(reason.contains("not the one the operator launched"), "{reason}");
    assert_eq!(pod.hub.latest(&pod.identity.uid).unwrap().shards[&0].sequence, before, "nothing was posted");
    let _ = pod.stop.send(());
}

/// The cluster path for a provider beyond S3: wrapped credentials for S3 and Azure Blob,
/// unwrapped once by the runner, every object verified at Azurite by the MD5 it computed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_moves_s3_to_azure_blob_with_wrapped_credentials() {
    let servers = servers();
    let work = tempfile::tempdir().unwrap();
    let (local, source) = s3_source(&servers, work.path(), "attempt-az-src", 25);
    let azure = servers.azure().clone();
    let container = servers.azure_container("attempt");
    let azure_path = servers.secret_in_vault("azure", &[("accountKey", &azure.key)]);
    let destination = destination(&format!(
        "provider: azblob\nazblob: {{endpoint: \"{}\", account: {}, container: {container}}}\nvault: {{path: {azure_path}}}",
        azure.endpoint, azure.account
    ));
    let pod = prepare(&servers, work.path(), source, destination).await;

    let last = run_to_success(&pod, 25).await;
    assert_eq!(last.report_objects, Some(25));
    let reported = pod.hub.latest(&pod.identity.uid).unwrap();
    assert_eq!(reported.shards[&0].progress.objects_verified, 25, "the operator has the final counts");
    assert_same_bytes(&servers, &local, &servers.azure_remote(&format!("{container}/moved")));
    let _ = pod.stop.send(());
}

/// SFTP in a cluster: the private key (many lines) wrapped in OpenBao with the S3 keys,
/// unwrapped once by the runner, the host checked against the binding's knownHosts; every
/// file arrives whole and is read back to be proven.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_moves_s3_to_sftp_with_a_wrapped_private_key() {
    let servers = servers();
    let sftp = servers.sftp().clone();
    let work = tempfile::tempdir().unwrap();
    let (local, source) = s3_source(&servers, work.path(), "attempt-sftp-src", 12);
    let directory = servers.sftp_directory("attempt");
    let key = std::fs::read_to_string(&sftp.key_file).unwrap();
    let sftp_path = servers.secret_in_vault("sftp", &[("privateKey", &key)]);
    let destination = destination(&format!(
        "provider: sftp\nsftp: {{host: \"{}\", port: {}, user: {}, root: \"{}/{directory}\", knownHosts: \"{}\"}}\nvault: {{path: {sftp_path}}}",
        sftp.host,
        sftp.port,
        sftp.user,
        sftp.root,
        sftp.known_hosts_line(&sftp.host, sftp.port)
    ));
    let pod = prepare(&servers, work.path(), source, destination).await;

    run_to_success(&pod, 12).await;
    assert_same_bytes(&servers, &local, &servers.sftp_remote(&format!("{directory}/moved")));
    let _ = pod.stop.send(());
}

/// Google Cloud Storage in a cluster: the service account's JSON key wrapped in OpenBao,
/// unwrapped once by the runner, which signs its own assertion and exchanges it at the key
/// file's token endpoint (a stand-in that checks the signature); every object is proven by
/// the MD5 the service computed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_moves_s3_to_gcs_with_a_wrapped_service_account_key() {
    let servers = servers();
    let work = tempfile::tempdir().unwrap();
    let (local, source) = s3_source(&servers, work.path(), "attempt-gcs-src", 9);
    let google = ferry_e2e::google_token::GoogleTokenEndpoint::start();
    let key = google.new_service_account("ferry-attempt@ferry-test.iam.gserviceaccount.com");
    let bucket = servers.gcs_bucket("attempt");
    let gcs_path = servers.secret_in_vault("gcs", &[("credentialsJson", &key)]);
    let destination = destination(&format!(
        "provider: gcs\ngcs: {{endpoint: \"{}\", bucket: {bucket}}}\nvault: {{path: {gcs_path}}}",
        servers.gcs().endpoint
    ));
    let pod = prepare(&servers, work.path(), source, destination).await;

    run_to_success(&pod, 9).await;
    assert_same_bytes(&servers, &local, &servers.gcs_remote(&format!("{bucket}/moved")));
    assert!(google.granted() >= 1 && google.refused() == 0);
    let _ = pod.stop.send(());
}

/// WebDAV in a cluster: the basic-auth user and password wrapped in OpenBao, unwrapped once
/// by the runner; WebDAV reports no checksum, so every file is read back to be proven.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_moves_s3_to_webdav_with_a_wrapped_password() {
    let servers = servers();
    let work = tempfile::tempdir().unwrap();
    let (local, source) = s3_source(&servers, work.path(), "attempt-dav-src", 9);
    let webdav = servers.webdav().clone();
    let directory = servers.webdav_directory("attempt");
    let dav_path = servers.secret_in_vault("webdav", &[("username", &webdav.user), ("password", &webdav.password)]);
    let destination = destination(&format!(
        "provider: webdav\nwebdav: {{endpoint: \"{}/{directory}\"}}\nvault: {{path: {dav_path}}}",
        webdav.endpoint.trim_end_matches('/')
    ));
    let pod = prepare(&servers, work.path(), source, destination).await;

    run_to_success(&pod, 9).await;
    assert_same_bytes(&servers, &local, &servers.webdav_remote(&format!("{directory}/moved")));
    let _ = pod.stop.send(());
}

/// OneDrive in a cluster: the OAuth client and refresh token wrapped in OpenBao, unwrapped
/// once by the runner, which gets its access tokens from the token endpoint and writes to a
/// stand-in of Microsoft Graph; every file is proven by the drive's QuickXorHash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_moves_s3_to_onedrive_with_a_wrapped_refresh_token() {
    let servers = servers();
    let graph = ferry_e2e::graph::GraphStandIn::start();
    let work = tempfile::tempdir().unwrap();
    let (local, source) = s3_source(&servers, work.path(), "attempt-drive-src", 9);
    let drive_path = servers.secret_in_vault(
        "onedrive",
        &[("clientId", "ferry-test"), ("clientSecret", "ferry-test-secret"), ("refreshToken", "attempt-refresh")],
    );
    let token_endpoint = std::env::var("FERRY_TEST_OAUTH_TOKEN_ENDPOINT").expect("FERRY_TEST_OAUTH_TOKEN_ENDPOINT");
    let destination = destination(&format!(
        "provider: onedrive\nonedrive: {{apiEndpoint: \"{}\", tokenEndpoint: \"{token_endpoint}\"}}\nvault: {{path: {drive_path}}}",
        graph.api_endpoint()
    ));
    let pod = prepare(&servers, work.path(), source, destination).await;

    run_to_success(&pod, 9).await;
    let local_files = ferry_e2e::tree_hashes(&local);
    let mut drive_files: std::collections::BTreeMap<String, String> = graph
        .files()
        .into_iter()
        .filter_map(|(path, content)| {
            Some((path.strip_prefix("moved/")?.to_owned(), ferry_e2e::content_hash(&content)))
        })
        .collect();
    // The runner's per-object report is there too, under Ferry's own directory.
    let reports = drive_files.keys().filter(|path| path.starts_with(".ferry/reports/")).count();
    assert_eq!(reports, 1, "{drive_files:?}");
    drive_files.retain(|path, _| !path.starts_with(".ferry/"));
    assert_eq!(drive_files, local_files);
    // The token endpoint rotated the refresh token; the runner stored it with its write
    // token, keeping the other fields, and the operator never saw it.
    let (fields, version) = servers.read_secret(&drive_path);
    assert_ne!(fields["refreshToken"], "attempt-refresh", "{fields}");
    assert_eq!(fields["clientSecret"], "ferry-test-secret");
    assert!(version >= 2, "{version}");
    let _ = pod.stop.send(());
}

/// Google Drive to Dropbox in a cluster: both bindings' OAuth clients and refresh tokens
/// wrapped in OpenBao, each unwrapped once by the runner; files are read from a stand-in of
/// the Drive API and proven at a stand-in of Dropbox's by its content hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_moves_google_drive_to_dropbox_with_wrapped_refresh_tokens() {
    let servers = servers();
    let drive = ferry_e2e::gdrive::DriveStandIn::start();
    let dropbox = ferry_e2e::dropbox::DropboxStandIn::start();
    let work = tempfile::tempdir().unwrap();
    let mut expected = std::collections::BTreeMap::new();
    for index in 0..7 {
        let content = format!("file {index}\n").repeat(100 + index);
        drive.put(&format!("data/d{index}/f{index}.txt"), content.as_bytes());
        expected.insert(format!("moved/d{index}/f{index}.txt"), ferry_e2e::content_hash(content.as_bytes()));
    }
    let token_endpoint = std::env::var("FERRY_TEST_OAUTH_TOKEN_ENDPOINT").expect("FERRY_TEST_OAUTH_TOKEN_ENDPOINT");
    let oauth_binding = |provider: &str, api: String| {
        let path = servers.secret_in_vault(
            provider,
            &[("clientId", "ferry-test"), ("clientSecret", "ferry-test-secret"), ("refreshToken", "attempt-refresh")],
        );
        destination(&format!(
            "provider: {provider}\n{provider}: {{apiEndpoint: \"{api}\", tokenEndpoint: \"{token_endpoint}\"}}\nvault: {{path: {path}}}"
        ))
    };
    let source = PlannedBinding { name: "old".into(), ..oauth_binding("gdrive", drive.api_endpoint()) };
    let pod = prepare(&servers, work.path(), source, oauth_binding("dropbox", dropbox.api_endpoint())).await;

    run_to_success(&pod, 7).await;
    let moved: std::collections::BTreeMap<String, String> = dropbox
        .files()
        .into_iter()
        .filter(|(path, _)| !path.starts_with("moved/.ferry/"))
        .map(|(path, content)| (path, ferry_e2e::content_hash(&content)))
        .collect();
    assert_eq!(moved, expected);
    let _ = pod.stop.send(());
}
