//! The job controller with a real OpenBao behind it (the API server is still mocked): the
//! attempt's Secret holds only wrapping tokens that the runner can unwrap once, and a secret
//! that vanished after its binding turned Ready makes the job wait with Vault's reason; a
//! binding naming another tenant's Transit key is refused before the operator asks Vault anything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)] // each test binary uses part of the support code
mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use ferry_api::contract::RunnerPlan;
use ferry_api::{CredentialBinding, MigrationJob};
use ferry_e2e::{servers, unique};
use ferry_operator::children::RunnerEnvironment;
use ferry_operator::context::Context;
use ferry_operator::metrics::Metrics;
use ferry_operator::progress::ProgressHub;
use ferry_operator::vault::{Vault, VaultAuth, VaultConfig};
use ferry_operator::{binding_controller, job_controller};
use serde_json::{Value, json};
use support::fake_api::FakeCluster;
use zeroize::Zeroizing;

const NS: &str = "team-a";

async fn harness() -> (FakeCluster, Arc<Context>) {
    harness_at(&servers().vault_address).await
}

/// The harness with the operator's Vault client talking to `vault_address`.
async fn harness_at(vault_address: &str) -> (FakeCluster, Arc<Context>) {
    let servers = servers();
    let vault = Vault::connect(VaultConfig {
        address: vault_address.parse().unwrap(),
        ca_file: None,
        auth: VaultAuth::Token(Zeroizing::new(servers.vault_token.clone())),
    })
    .await
    .unwrap();
    let (client, cluster) = FakeCluster::start();
    let environment = RunnerEnvironment {
        image: "ferry-runner:test".into(),
        progress_url: "https://10.0.0.5:8443".into(),
        vault_address: Some(servers.vault_address.clone()),
        ..RunnerEnvironment::default()
    };
    let context = Context::new(
        client,
        Some(vault),
        ProgressHub::without_lookup(),
        environment,
        Duration::from_secs(60),
        "tenants/{namespace}/".into(),
        Metrics::new().unwrap(),
    );
    (cluster, Arc::new(context))
}

fn s3_binding(cluster: &FakeCluster, name: &str, vault_path: &str) {
    let servers = servers();
    cluster.insert(
        "credentialbindings",
        json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "CredentialBinding",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"provider": "s3", "s3": {"endpoint": servers.s3_endpoint, "region": "us-east-1", "bucket": name, "forcePathStyle": true},
                     "vault": {"path": vault_path}, "egress": [{"cidr": "127.0.0.1/32", "ports": [8333]}]},
            "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True", "reason": "SecretValid",
                "message": "m", "lastTransitionTime": "2026-11-24T00:00:00Z"}]}
        }),
    );
}

fn job(cluster: &FakeCluster) {
    job_with_shards(cluster, 1);
}

fn job_with_shards(cluster: &FakeCluster, shards: u32) {
    cluster.insert(
        "migrationjobs",
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "MigrationJob", "metadata": {"name": "nightly", "namespace": NS},
               "spec": {"source": {"binding": "old", "path": "a"}, "destination": {"binding": "new", "path": "b"},
                        "shards": shards}}),
    );
}

/// Unwraps a token the way a runner does, for the plan's binding.
async fn runner_unwrap(
    plan: &ferry_api::contract::PlannedBinding,
    token: &str,
    expires_at: Option<&str>,
) -> Result<ferry_runner::secrets::SecretFields, ferry_runner::unwrap::UnwrapError> {
    let servers = servers();
    let expires_at = expires_at.map(|t| t.parse().unwrap());
    ferry_runner::unwrap::unwrap_credentials(
        &servers.vault_address,
        None,
        plan,
        Zeroizing::new(token.into()),
        expires_at,
    )
    .await
}

async fn reconcile_twice(cluster: &FakeCluster, context: &Arc<Context>) {
    for _ in 0..2 {
        // A deleted job is gone once its finalizer is removed.
        let Some(job) = cluster.get("migrationjobs", NS, "nightly") else { return };
        let job: MigrationJob = serde_json::from_value(job).unwrap();
        let _ = job_controller::reconcile(Arc::new(job), context.clone()).await;
    }
}

fn decoded(secret: &Value, key: &str) -> String {
    let text = secret["data"][key].as_str().unwrap();
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(text).unwrap()).unwrap()
}

#[tokio::test]
async fn the_attempt_secret_holds_only_wrapping_tokens_the_runner_can_unwrap_once() {
    let servers = servers();
    let path = format!("tenants/{NS}/{}", unique("s3"));
    servers.put_secret(&path, &[("accessKeyId", &servers.s3_access_key), ("secretAccessKey", &servers.s3_secret_key)]);
    let (cluster, context) = harness().await;
    s3_binding(&cluster, "old", &path);
    s3_binding(&cluster, "new", &path);
    job(&cluster);
    reconcile_twice(&cluster, &context).await;

    let secret = cluster.get("secrets", NS, "ferry-nightly-a1").expect("attempt 1 launched");
    let keys: Vec<&String> = secret["data"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "shard-0-destination-token",
            "shard-0-plan-digest",
            "shard-0-progress-token",
            "shard-0-source-token",
            "wrapping-accessors",
        ]
    );
    for key in keys {
        let value = decoded(&secret, key);
        assert!(!value.contains(&servers.s3_secret_key) && !value.contains(&servers.s3_access_key), "{key} leaks");
    }
    let config_map = cluster.get("configmaps", NS, "ferry-nightly-a1").unwrap();
    let document = config_map["data"]["plan-0.json"].as_str().unwrap();
    assert_eq!(decoded(&secret, "shard-0-plan-digest"), ferry_api::contract::plan_digest(document.as_bytes()));
    let plan: RunnerPlan = serde_json::from_str(document).unwrap();
    assert_eq!(plan.source.secret_creation_path.as_deref(), Some(format!("secret/data/{path}").as_str()));
    assert!(plan.credentials_expire_at.is_some());
    let policy = cluster.get("networkpolicies", NS, "ferry-nightly").unwrap();
    let egress = policy["spec"]["egress"].as_array().unwrap();
    assert!(egress.iter().any(|rule| rule["to"][0]["ipBlock"]["cidr"] == "127.0.0.1/32"), "{egress:?}");

    let token = decoded(&secret, "shard-0-source-token");
    let fields = runner_unwrap(&plan.source, &token, None).await.unwrap();
    assert_eq!(fields.get("secretAccessKey"), Some(servers.s3_secret_key.as_str()));
    let again = runner_unwrap(&plan.source, &token, plan.credentials_expire_at.as_deref()).await.unwrap_err();
    assert!(again.is_security_violation(), "{again}");
}

#[tokio::test]
async fn every_shard_gets_its_own_tokens_and_the_unused_ones_are_revoked_when_the_job_goes() {
    let servers = servers();
    let (source_path, destination_path) =
        (format!("tenants/{NS}/{}", unique("src")), format!("tenants/{NS}/{}", unique("dst")));
    for path in [&source_path, &destination_path] {
        servers
            .put_secret(path, &[("accessKeyId", &servers.s3_access_key), ("secretAccessKey", &servers.s3_secret_key)]);
    }
    let (cluster, context) = harness().await;
    s3_binding(&cluster, "old", &source_path);
    s3_binding(&cluster, "new", &destination_path);
    job_with_shards(&cluster, 3);
    reconcile_twice(&cluster, &context).await;

    let secret = cluster.get("secrets", NS, "ferry-nightly-a1").expect("attempt 1 launched");
    let config_map = cluster.get("configmaps", NS, "ferry-nightly-a1").unwrap();
    let accessors = decoded(&secret, "wrapping-accessors");
    assert_eq!(accessors.lines().count(), 6, "one wrapped read per binding per shard");
    let mut tokens = std::collections::BTreeSet::new();
    for shard in 0..3 {
        let pod = cluster.get("pods", NS, &format!("ferry-nightly-a1-s{shard}")).unwrap();
        let items = pod["spec"]["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "credentials").unwrap()
            ["secret"]["items"]
            .clone();
        let keys: Vec<&str> = items.as_array().unwrap().iter().map(|i| i["key"].as_str().unwrap()).collect();
        assert!(keys.iter().all(|k| k.starts_with(&format!("shard-{shard}-"))), "shard {shard} mounts {keys:?}");
        for side in ["source", "destination"] {
            assert!(tokens.insert(decoded(&secret, &format!("shard-{shard}-{side}-token"))), "a token is shared");
        }
    }
    // Every shard unwraps its own tokens once, as its runner would: no shard used up another's.
    for shard in 0..2 {
        let plan: RunnerPlan =
            serde_json::from_str(config_map["data"][format!("plan-{shard}.json")].as_str().unwrap()).unwrap();
        for (side, binding) in [("source", &plan.source), ("destination", &plan.destination)] {
            let token = decoded(&secret, &format!("shard-{shard}-{side}-token"));
            let fields = runner_unwrap(binding, &token, plan.credentials_expire_at.as_deref()).await.unwrap();
            assert_eq!(fields.get("accessKeyId"), Some(servers.s3_access_key.as_str()));
        }
    }

    // The job is deleted before shard 2 started: its tokens are revoked, not left to expire.
    cluster.update("migrationjobs", NS, "nightly", |job| {
        job["metadata"]["deletionTimestamp"] = json!("2026-11-24T01:00:00Z");
    });
    reconcile_twice(&cluster, &context).await;
    assert!(cluster.names("secrets", NS).is_empty(), "the attempt's Secret is gone");
    let plan: RunnerPlan = serde_json::from_str(config_map["data"]["plan-2.json"].as_str().unwrap()).unwrap();
    let token = decoded(&secret, "shard-2-source-token");
    let error = runner_unwrap(&plan.source, &token, None).await.unwrap_err();
    assert!(matches!(error, ferry_runner::unwrap::UnwrapError::InvalidToken { .. }), "{error:?}");
}

#[tokio::test]
async fn a_vanished_secret_makes_the_job_wait_with_vaults_reason() {
    let (cluster, context) = harness().await;
    let path = format!("tenants/{NS}/{}", unique("gone"));
    s3_binding(&cluster, "old", &path);
    s3_binding(&cluster, "new", &path);
    job(&cluster);
    reconcile_twice(&cluster, &context).await;

    let status = cluster.get("migrationjobs", NS, "nightly").unwrap()["status"].clone();
    assert_eq!(status["phase"], "Waiting");
    let ready = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
    assert_eq!((&ready["status"], &ready["reason"]), (&json!("False"), &json!("SecretNotFound")));
    assert!(cluster.names("pods", NS).is_empty(), "nothing launched");
    assert!(cluster.names("secrets", NS).is_empty(), "no token left behind");
}

/// The condition `type_` of an object as `(status, reason, message)`.
fn condition_of(object: &Value, type_: &str) -> (String, String, String) {
    let conditions = object["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let condition = conditions.iter().find(|c| c["type"] == type_).unwrap_or_else(|| panic!("no {type_} in {object}"));
    let text = |field: &str| condition[field].as_str().unwrap_or_default().to_owned();
    (text("status"), text("reason"), text("message"))
}

#[tokio::test]
async fn a_binding_naming_another_tenants_transit_key_is_refused_and_never_decrypted_under() {
    let servers = servers();
    // Tenant team-b's key, and team-b's credentials encrypted under it: ciphertext a team-a
    // user could have copied (a backup, a log) into a secret under team-a's own path.
    let theirs = servers.transit_key("team-b");
    let ours = servers.transit_key("team-a.s3");
    let stolen = format!("tenants/{NS}/{}", unique("stolen"));
    servers.put_secret(
        &stolen,
        &[
            ("accessKeyId", &servers.transit_encrypt(&theirs, &servers.s3_access_key)),
            ("secretAccessKey", &servers.transit_encrypt(&theirs, &servers.s3_secret_key)),
        ],
    );
    let own = format!("tenants/{NS}/{}", unique("own"));
    servers.put_secret(
        &own,
        &[
            ("accessKeyId", &servers.transit_encrypt(&ours, &servers.s3_access_key)),
            ("secretAccessKey", &servers.transit_encrypt(&ours, &servers.s3_secret_key)),
        ],
    );
    // Every request the operator sends to Vault passes through this proxy and is kept.
    let upstream = servers.vault_address.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let proxy = ferry_e2e::proxy::RecordingProxy::start(upstream).await.unwrap();
    let (cluster, context) = harness_at(&format!("http://{}", proxy.address)).await;

    let transit_binding = |name: &str, path: &str, key: &str| {
        cluster.insert(
            "credentialbindings",
            json!({
                "apiVersion": "ferry.dev/v1alpha1", "kind": "CredentialBinding",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"provider": "s3", "s3": {"endpoint": servers.s3_endpoint, "region": "us-east-1", "bucket": name},
                         "vault": {"path": path, "transitKey": key}}
            }),
        );
    };
    transit_binding("old", &stolen, &theirs);
    transit_binding("new", &own, &ours);
    for name in ["old", "new"] {
        let binding: CredentialBinding =
            serde_json::from_value(cluster.get("credentialbindings", NS, name).unwrap()).unwrap();
        binding_controller::reconcile(Arc::new(binding), context.clone()).await.unwrap();
    }
    let (status, reason, message) = condition_of(&cluster.get("credentialbindings", NS, "old").unwrap(), "Ready");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "TransitKeyNotAllowed"), "{message}");
    assert!(message.contains("spec.vault.transitKey") && message.contains("--vault-transit-keys"), "{message}");
    let (status, reason, message) = condition_of(&cluster.get("credentialbindings", NS, "new").unwrap(), "Ready");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "SecretValid"),
        "the tenant's own key is allowed: {message}"
    );

    // Whoever may write a binding's status could mark it Ready: the job controller checks again.
    cluster.update("credentialbindings", NS, "old", |binding| {
        binding["status"] = json!({"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True",
            "reason": "SecretValid", "message": "forged", "lastTransitionTime": "2026-11-24T00:00:00Z"}]});
    });
    job(&cluster);
    reconcile_twice(&cluster, &context).await;
    let job = cluster.get("migrationjobs", NS, "nightly").unwrap();
    assert_eq!(job["status"]["phase"], "Waiting");
    let (_, reason, message) = condition_of(&job, "Stalled");
    assert_eq!(reason, "TransitKeyNotAllowed", "{message}");
    assert!(cluster.names("pods", NS).is_empty(), "nothing launched");
    assert!(cluster.names("secrets", NS).is_empty(), "no wrapping token exists");

    let sent = proxy.sent();
    assert!(sent.contains(&format!("/v1/secret/data/{own}")), "the proxy saw the operator's requests");
    assert!(!sent.contains(&theirs), "the operator sent Vault a request naming the other tenant's key");
    assert!(!sent.contains("/decrypt/"), "nothing was decrypted");
    assert!(!sent.contains(&stolen), "the refused binding's secret was not even read");
}
