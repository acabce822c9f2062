//! The controllers against a mocked API server (tower-test): launching, waiting, retrying,
//! failing, succeeding, suspending and deleting, as the API server would see them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use ferry_api::contract::{Outcome, ProgressReport, Shard, Stage};
use ferry_api::{CredentialBinding, MigrationJob, Progress};
use ferry_operator::children::RunnerEnvironment;
use ferry_operator::children::network_policy::EgressTarget;
use ferry_operator::context::Context;
use ferry_operator::metrics::Metrics;
use ferry_operator::progress::ProgressHub;
use ferry_operator::{binding_controller, job_controller};
use serde_json::{Value, json};
use support::fake_api::FakeCluster;

const NS: &str = "team-a";

fn environment() -> RunnerEnvironment {
    RunnerEnvironment {
        image: "ferry-runner:test".into(),
        progress_url: "https://10.0.0.5:8443".into(),
        vault_address: None,
        progress_ca_pem: Some("PEM".into()),
        vault_ca_pem: None,
        vault_egress: vec![],
        progress_egress: vec![EgressTarget { cidr: "10.0.0.5/32".into(), port: 8443 }],
        ..RunnerEnvironment::default()
    }
}

struct Harness {
    cluster: FakeCluster,
    context: Arc<Context>,
}

impl Harness {
    fn new() -> Self {
        Self::with_context(|context| context)
    }

    /// A harness whose context `adjust` changes first.
    fn with_context(adjust: impl FnOnce(Context) -> Context) -> Self {
        let (client, cluster) = FakeCluster::start();
        let context = Arc::new(adjust(Context::new(
            client,
            None,
            ProgressHub::without_lookup(),
            environment(),
            Duration::from_secs(60),
            "tenants/{namespace}/".into(),
            Metrics::new().unwrap(),
        )));
        Self { cluster, context }
    }

    fn binding(&self, name: &str, ready: bool) {
        let status = if ready { "True" } else { "False" };
        self.cluster.insert(
            "credentialbindings",
            json!({
                "apiVersion": "ferry.dev/v1alpha1", "kind": "CredentialBinding",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"provider": "fs", "fs": {"root": format!("/{name}"), "claimName": format!("{name}-pvc")}},
                "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": status,
                    "reason": if ready { "NoCredentials" } else { "SecretNotFound" }, "message": "m",
                    "lastTransitionTime": "2026-11-24T00:00:00Z"}]}
            }),
        );
    }

    fn job(&self, extra: Value) {
        let mut spec = json!({"source": {"binding": "in", "path": "a"}, "destination": {"binding": "out", "path": "b"}, "shards": 2});
        json_patch::merge(&mut spec, &extra);
        self.cluster.insert(
            "migrationjobs",
            json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "MigrationJob",
                   "metadata": {"name": "nightly", "namespace": NS}, "spec": spec}),
        );
    }

    fn read_job(&self) -> Option<MigrationJob> {
        self.cluster.get("migrationjobs", NS, "nightly").map(|v| serde_json::from_value(v).unwrap())
    }

    async fn reconcile(&self) {
        let job = self.read_job().expect("the job exists");
        job_controller::reconcile(Arc::new(job), self.context.clone()).await.unwrap();
    }

    fn status(&self) -> Value {
        self.cluster.get("migrationjobs", NS, "nightly").unwrap()["status"].clone()
    }

    fn condition(&self, type_: &str) -> (String, String) {
        let status = self.status();
        let condition = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == type_).unwrap().clone();
        (condition["status"].as_str().unwrap().to_owned(), condition["reason"].as_str().unwrap().to_owned())
    }

    fn finish_pod(&self, name: &str, exit_code: i32, report: Option<&ProgressReport>) {
        self.cluster.update("pods", NS, name, |pod| {
            pod["status"] = json!({
                "phase": if exit_code == 0 { "Succeeded" } else { "Failed" },
                "containerStatuses": [{"name": "runner", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": exit_code, "reason": if exit_code == 0 { "Completed" } else { "Error" },
                        "message": report.map(|r| serde_json::to_string(r).unwrap())}}}]
            });
        });
    }

    /// Creates the finalizer, then launches the first attempt.
    /// Both controllers, running against the fake API server until aborted.
    fn run_controllers(&self) -> [tokio::task::JoinHandle<()>; 2] {
        let client = self.context.client.clone();
        let namespace = Some(NS.to_owned());
        [
            tokio::spawn(ferry_operator::run::run_job_controller(
                client.clone(),
                namespace.clone(),
                self.context.clone(),
                std::future::pending(),
            )),
            tokio::spawn(ferry_operator::run::run_binding_controller(
                client,
                namespace,
                self.context.clone(),
                std::future::pending(),
            )),
        ]
    }

    async fn launched(&self) {
        self.reconcile().await;
        self.reconcile().await;
    }
}

fn final_report(shard: u32, verified: u64, outcome: Outcome) -> ProgressReport {
    ProgressReport {
        job_uid: "uid".into(),
        attempt: 1,
        shard: Shard { index: shard, count: 2 },
        sequence: 12,
        stage: Stage::Finished,
        progress: Progress {
            objects_total: verified,
            objects_verified: verified,
            bytes_total: 10,
            bytes_verified: 10,
            ..Default::default()
        },
        recent_failures: vec![],
        outcome: Some(outcome),
        deletions: None,
        report_objects: None,
    }
}

#[tokio::test]
async fn a_new_job_gets_its_children_applied() {
    let harness = Harness::new();
    harness.binding("in", true);
    harness.binding("out", true);
    harness.job(json!({}));
    harness.launched().await;

    let job = harness.cluster.get("migrationjobs", NS, "nightly").unwrap();
    assert_eq!(job["metadata"]["finalizers"], json!(["ferry.dev/cleanup"]));
    assert_eq!(harness.status()["attempts"], 1);
    assert_eq!(harness.status()["phase"], "Running");
    assert_eq!(harness.condition("Progressing"), ("True".into(), "Starting".into()));
    assert_eq!(harness.cluster.names("pods", NS), ["ferry-nightly-a1-s0", "ferry-nightly-a1-s1"]);
    assert_eq!(harness.cluster.names("configmaps", NS), ["ferry-nightly-a1"]);
    assert_eq!(harness.cluster.names("networkpolicies", NS), ["ferry-nightly"]);
    let secret = harness.cluster.get("secrets", NS, "ferry-nightly-a1").unwrap();
    let keys: Vec<&String> = secret["data"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["shard-0-plan-digest", "shard-0-progress-token", "shard-1-plan-digest", "shard-1-progress-token"],
        "filesystem bindings have no credentials to wrap; each shard has its own progress token"
    );
    assert_ne!(secret["data"]["shard-0-progress-token"], secret["data"]["shard-1-progress-token"]);
    let pod = harness.cluster.get("pods", NS, "ferry-nightly-a1-s1").unwrap();
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "MigrationJob");
    assert_eq!(pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(harness.cluster.event_reasons().contains(&"Starting".to_owned()));

    // Reconciling again changes nothing: same children, same attempt, no new event.
    let events = harness.cluster.event_reasons().len();
    harness.reconcile().await;
    assert_eq!(harness.status()["attempts"], 1);
    assert_eq!(harness.cluster.names("pods", NS).len(), 2);
    assert_eq!(harness.cluster.event_reasons().len(), events);
}

#[tokio::test]
async fn a_binding_that_is_not_ready_makes_the_job_wait() {
    let harness = Harness::new();
    harness.binding("in", false);
    harness.binding("out", true);
    harness.job(json!({}));
    harness.launched().await;

    assert_eq!(harness.status()["phase"], "Waiting");
    // In progress for kstatus, not stalled: the binding may become Ready any moment.
    assert_eq!(harness.condition("Ready"), ("False".into(), "BindingNotReady".into()));
    assert_eq!(harness.condition("Reconciling"), ("True".into(), "BindingNotReady".into()));
    assert_eq!(harness.condition("Stalled"), ("False".into(), "BindingNotReady".into()));
    assert!(harness.cluster.names("pods", NS).is_empty());
    assert!(harness.cluster.names("secrets", NS).is_empty());

    harness.binding("in", true);
    harness.reconcile().await;
    assert_eq!(harness.status()["phase"], "Running");
    assert_eq!(harness.cluster.names("pods", NS).len(), 2);
}

#[tokio::test]
async fn a_missing_binding_is_named() {
    let harness = Harness::new();
    harness.binding("out", true);
    harness.job(json!({}));
    harness.launched().await;
    let status = harness.status();
    let ready = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!((&ready["status"], &ready["reason"]), (&json!("False"), &json!("BindingNotFound")));
    assert!(ready["message"].as_str().unwrap().starts_with("spec.source.binding"));
}

#[tokio::test]
async fn a_failed_pod_starts_a_new_attempt_with_a_new_token() {
    let harness = Harness::new();
    harness.binding("in", true);
    harness.binding("out", true);
    harness.job(json!({"retries": 2}));
    harness.launched().await;
    let first_token =
        harness.cluster.get("secrets", NS, "ferry-nightly-a1").unwrap()["data"]["shard-0-progress-token"].clone();

    harness.finish_pod("ferry-nightly-a1-s0", 1, Some(&final_report(0, 3, Outcome::ObjectsFailed)));
    harness.finish_pod("ferry-nightly-a1-s1", 0, Some(&final_report(1, 5, Outcome::Succeeded)));
    harness.reconcile().await;

    assert_eq!(harness.status()["attempts"], 2);
    assert_eq!(harness.status()["failedAttempts"], 1);
    assert_eq!(harness.condition("Progressing"), ("True".into(), "Retrying".into()));
    let second = harness.cluster.get("secrets", NS, "ferry-nightly-a2").expect("attempt 2 has its own Secret");
    assert_ne!(second["data"]["shard-0-progress-token"], first_token);
    assert!(harness.cluster.get("secrets", NS, "ferry-nightly-a1").is_none(), "old tokens are removed");
    let pods = harness.cluster.names("pods", NS);
    assert!(pods.contains(&"ferry-nightly-a2-s0".to_owned()) && pods.contains(&"ferry-nightly-a2-s1".to_owned()));
}

#[tokio::test]
async fn runner_pods_of_all_but_the_three_latest_attempts_are_removed() {
    let harness = Harness::new();
    harness.binding("in", true);
    harness.binding("out", true);
    harness.job(json!({"retries": 5}));
    harness.launched().await;
    for attempt in 1..=3 {
        for shard in 0..2 {
            harness.finish_pod(&format!("ferry-nightly-a{attempt}-s{shard}"), 1, None);
        }
        harness.reconcile().await;
        assert_eq!(harness.status()["attempts"], attempt + 1);
    }
    let mut pods = harness.cluster.names("pods", NS);
    pods.sort();
    let kept: Vec<String> =
        (2..=4).flat_map(|attempt| (0..2).map(move |shard| format!("ferry-nightly-a{attempt}-s{shard}"))).collect();
    assert_eq!(pods, kept, "attempt 1's finished pods are gone, the latest three attempts' stay");
}

#[tokio::test]
async fn a_rotated_progress_ca_reaches_the_next_attempts_plan_without_a_restart() {
    let directory = tempfile::tempdir().unwrap();
    let ca_file = directory.path().join("ca.crt");
    let first = "-----BEGIN CERTIFICATE-----\nfirst\n-----END CERTIFICATE-----\n";
    std::fs::write(&ca_file, first).unwrap();
    let harness = Harness::with_context(|context| context.with_progress_ca_file(ca_file.clone()));
    harness.binding("in", true);
    harness.binding("out", true);
    harness.job(json!({"retries": 2}));
    harness.launched().await;
    let ca = |attempt: u32| {
        let map = harness.cluster.get("configmaps", NS, &format!("ferry-nightly-a{attempt}")).unwrap();
        map["data"]["progress-ca.pem"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(ca(1), first);

    let rotated = "-----BEGIN CERTIFICATE-----\nrotated\n-----END CERTIFICATE-----\n";
    std::fs::write(&ca_file, rotated).unwrap();
    for shard in 0..2 {
        harness.finish_pod(&format!("ferry-nightly-a1-s{shard}"), 1, None);
    }
    harness.reconcile().await;
    assert_eq!(harness.status()["attempts"], 2);
    assert_eq!(ca(2), rotated);

    // A file caught empty mid-rotation keeps the CA it last held.
    std::fs::write(&ca_file, "").unwrap();
    for shard in 0..2 {
        harness.finish_pod(&format!("ferry-nightly-a2-s{shard}"), 1, None);
    }
    harness.reconcile().await;
    assert_eq!(harness.status()["attempts"], 3);
    assert_eq!(ca(3), rotated);
}

#[tokio::test]
async fn exhausted_retries_fail_the_job() {
    let harness = Harness::new();
    harness.binding("in", true);
    harness.binding("out", true);
    harness.job(json!({"retries": 0}));
    harness.launched().await;
    harness.finish_pod("ferry-nightly-a1-s0", 1, Some(&final_report(0, 3, Outcome::ObjectsFailed)));
    harness.finish_pod("ferry-nightly-a1-s1", 1, None);
    harness.reconcile().await;

    assert_eq!(harness.status()["phase"], "Failed");
    assert_eq!(harness.condition("Failed"), ("True".into(), "RetriesExhausted".into()));
    assert!(harness.cluster.names("secrets", NS).is_empty(), "a finished job keeps no token");
    assert!(harness.cluster.event_reasons().contains(&"RetriesExhausted".to_owned()));
}

#[tokio::test]
async fn verified_shards_complete_the_job_with_exact_counts() {
    let harness = Harness::new();
    harness.binding("in", true);
    harness.binding("out", true);
    harness.job(json!({}));
    harness.launched().await;
    harness.finish_pod("ferry-nightly-a1-s0", 0, Some(&final_report(0, 7, Outcome::Succeeded)));
    harness.finish_pod("ferry-nightly-a1-s1", 0, Some(&final_report(1, 5, Outcome::Succeeded)));
    harness.reconcile().await;

    let status = harness.status();
    assert_eq!(status["phase"], "Succeeded");
    assert_eq!(status["summary"]["objects"], "12/12");
    assert_eq!(status["progress"]["objectsVerified"], 12);
    assert_eq!(harness.condition("Complete"), ("True".into(), "Succeeded".into()));
    assert_eq!(harness.condition("Ready"), ("True".into(), "Succeeded".into()));
    assert!(harness.cluster.names("secrets", NS).is_empty());
}

#[tokio::test]
async fn suspend_stops_runners_and_resume_starts_a_fresh_attempt() {
    let harness = Harness::new();
    harness.binding("in", true);
    harness.binding("out", true);
    harness.job(json!({}));
    harness.launched().await;
    harness.cluster.update("migrationjobs", NS, "nightly", |job| job["spec"]["suspend"] = json!(true));
    harness.reconcile().await;
    assert_eq!(harness.status()["phase"], "Suspended");
    assert!(harness.cluster.names("pods", NS).is_empty(), "runners are stopped");
    assert!(harness.cluster.names("secrets", NS).is_empty(), "their tokens are gone");

    harness.cluster.update("migrationjobs", NS, "nightly", |job| job["spec"]["suspend"] = json!(false));
    harness.reconcile().await;
    assert_eq!(harness.status()["phase"], "Running");
    assert_eq!(harness.status()["attempts"], 2);
    assert!(harness.status()["failedAttempts"].is_null(), "a suspension spends no retry");
    assert_eq!(harness.cluster.names("pods", NS), ["ferry-nightly-a2-s0", "ferry-nightly-a2-s1"]);
}

#[tokio::test]
async fn deleting_a_job_removes_everything_it_owns() {
    let harness = Harness::new();
    harness.binding("in", true);
    harness.binding("out", true);
    harness.job(json!({}));
    harness.launched().await;
    harness.cluster.update("migrationjobs", NS, "nightly", |job| {
        job["metadata"]["deletionTimestamp"] = json!("2026-11-24T01:00:00Z");
    });
    harness.reconcile().await;
    for kind in ["pods", "secrets", "configmaps", "networkpolicies"] {
        assert!(harness.cluster.names(kind, NS).is_empty(), "{kind} left behind");
    }
    assert!(harness.read_job().is_none(), "the finalizer was removed, so the job is gone");
}

#[tokio::test]
async fn bindings_become_ready_or_say_why_not() {
    let harness = Harness::new();
    let reconcile = |name: &str| {
        let binding: CredentialBinding =
            serde_json::from_value(harness.cluster.get("credentialbindings", NS, name).unwrap()).unwrap();
        binding_controller::reconcile(Arc::new(binding), harness.context.clone())
    };
    harness.cluster.insert(
        "credentialbindings",
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "CredentialBinding", "metadata": {"name": "pvc", "namespace": NS},
               "spec": {"provider": "fs", "fs": {"root": "/data", "claimName": "data"}}}),
    );
    harness.cluster.insert(
        "credentialbindings",
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "CredentialBinding", "metadata": {"name": "elsewhere", "namespace": NS},
               "spec": {"provider": "s3", "s3": {"region": "r", "bucket": "b"}, "vault": {"path": "tenants/team-b/s3"}}}),
    );
    harness.cluster.insert(
        "credentialbindings",
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "CredentialBinding", "metadata": {"name": "s3", "namespace": NS},
               "spec": {"provider": "s3", "s3": {"region": "r", "bucket": "b"}, "vault": {"path": "tenants/team-a/s3"}}}),
    );
    reconcile("pvc").await.unwrap();
    reconcile("elsewhere").await.unwrap();
    reconcile("s3").await.unwrap();
    let ready = |name: &str| {
        let binding = harness.cluster.get("credentialbindings", NS, name).unwrap();
        let condition = binding["status"]["conditions"][0].clone();
        (condition["status"].as_str().unwrap().to_owned(), condition["reason"].as_str().unwrap().to_owned())
    };
    assert_eq!(ready("pvc"), ("True".into(), "NoCredentials".into()));
    assert_eq!(ready("elsewhere"), ("False".into(), "VaultPathOutsideNamespace".into()));
    assert_eq!(ready("s3"), ("False".into(), "VaultNotConfigured".into()));
    assert!(harness.cluster.event_reasons().contains(&"VaultPathOutsideNamespace".to_owned()));
}

/// Issue #11: one job whose spec does not decode (a value an older CRD admitted) must not
/// stop the controller's list: the real controllers run from the fake API server's list,
/// the bad job and the bad binding get a Warning Event and Stalled / not Ready with the
/// field named, and the good job next to them is launched.
#[tokio::test]
async fn an_undecodable_job_is_reported_and_the_others_keep_reconciling() {
    let harness = Harness::new();
    harness.binding("in", true);
    harness.binding("out", true);
    harness.cluster.insert(
        "credentialbindings",
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "CredentialBinding",
               "metadata": {"name": "mangled", "namespace": NS},
               "spec": {"provider": "sftp", "sftp": {"host": "h", "user": "u", "knownHosts": "k", "port": 70000}}}),
    );
    // The fake API server sends no watch events, so the good job starts with the finalizer
    // that its first pass would otherwise add and wait to hear back about.
    harness.job(json!({}));
    harness.cluster.update("migrationjobs", NS, "nightly", |job| {
        job["metadata"]["finalizers"] = json!([job_controller::FINALIZER]);
    });
    harness.cluster.insert(
        "migrationjobs",
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "MigrationJob",
               "metadata": {"name": "broken", "namespace": NS, "generation": 2},
               "spec": {"source": {"binding": "in"}, "destination": {"binding": "out"},
                        "filter": {"maxSize": "99999Ei"}}}),
    );

    let [jobs, bindings] = harness.run_controllers();
    let invalid_events = |name: &str| {
        harness
            .cluster
            .events()
            .into_iter()
            .filter(|e| e["reason"] == "InvalidSpec" && e["regarding"]["name"] == name)
            .collect::<Vec<_>>()
    };
    let started = std::time::Instant::now();
    loop {
        let good_running = harness.status()["phase"] == "Running";
        if good_running && !invalid_events("broken").is_empty() && !invalid_events("mangled").is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "good job: {}; events: {:#?}",
            harness.status(),
            harness.cluster.events()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    jobs.abort();
    bindings.abort();

    // The good job was launched as usual.
    assert_eq!(harness.cluster.names("pods", NS).len(), 2);
    // The bad job says which field is wrong, on itself.
    let event = &invalid_events("broken")[0];
    assert_eq!(event["type"], "Warning");
    assert!(event["note"].as_str().unwrap().starts_with("spec.filter.maxSize: \"99999Ei\" is not a byte quantity"));
    let broken = harness.cluster.get("migrationjobs", NS, "broken").unwrap();
    let condition = |object: &Value, type_: &str| {
        let c = object["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == type_).unwrap().clone();
        (c["status"].as_str().unwrap().to_owned(), c["reason"].as_str().unwrap().to_owned(), c["message"].clone())
    };
    let (status, reason, message) = condition(&broken, "Stalled");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "InvalidSpec"));
    assert!(message.as_str().unwrap().contains("spec.filter.maxSize"), "{message}");
    assert_eq!(condition(&broken, "Ready").0, "False");
    assert_eq!(broken["status"]["observedGeneration"], 2);
    assert!(harness.cluster.names("pods", NS).iter().all(|pod| !pod.contains("broken")));
    // The bad binding, likewise.
    let mangled = harness.cluster.get("credentialbindings", NS, "mangled").unwrap();
    let (status, reason, message) = condition(&mangled, "Ready");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "InvalidSpec"));
    assert!(message.as_str().unwrap().contains("spec.sftp.port"), "{message}");
    // Reported once: a later pass over the same object publishes nothing new.
    let before = harness.cluster.events().len();
    let object: ferry_operator::guard::Guarded<MigrationJob> = serde_json::from_value(broken).unwrap();
    job_controller::reconcile_guarded(Arc::new(object), harness.context.clone()).await.unwrap();
    assert_eq!(harness.cluster.events().len(), before);
}

/// A job that does not decode can still be deleted: its children go and its finalizer is
/// removed without reading its spec.
#[tokio::test]
async fn an_undecodable_job_can_still_be_deleted() {
    let harness = Harness::new();
    harness.binding("in", true);
    harness.binding("out", true);
    harness.job(json!({}));
    harness.launched().await;
    assert_eq!(harness.cluster.names("pods", NS).len(), 2);
    harness.cluster.update("migrationjobs", NS, "nightly", |job| {
        job["spec"]["filter"] = json!({"maxSize": "99999Ei"});
        job["metadata"]["deletionTimestamp"] = json!("2026-11-24T00:00:00Z");
    });
    let object = harness.cluster.get("migrationjobs", NS, "nightly").unwrap();
    let object: ferry_operator::guard::Guarded<MigrationJob> = serde_json::from_value(object).unwrap();
    assert!(object.0.is_err());
    job_controller::reconcile_guarded(Arc::new(object), harness.context.clone()).await.unwrap();
    assert!(harness.cluster.names("pods", NS).is_empty());
    assert!(harness.cluster.names("secrets", NS).is_empty());
    assert!(harness.cluster.get("migrationjobs", NS, "nightly").is_none(), "the finalizer was removed");
}

#[tokio::test]
async fn a_runner_image_outside_the_allowlist_fails_the_job_and_launches_nothing() {
    let harness = Harness::new();
    harness.binding("in", true);
    harness.binding("out", true);
    harness.job(json!({"runner": {"image": "evil.example/runner:latest"}}));
    harness.launched().await;

    assert_eq!(harness.status()["phase"], "Failed");
    assert_eq!(harness.condition("Failed"), ("True".into(), "RunnerImageNotAllowed".into()));
    let status = harness.status();
    let failed = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Failed").unwrap();
    let message = failed["message"].as_str().unwrap();
    assert!(message.contains("spec.runner.image") && message.contains("--runner-image-allowlist"), "{message}");
    for kind in ["pods", "secrets", "configmaps", "networkpolicies"] {
        assert!(harness.cluster.names(kind, NS).is_empty(), "{kind} created");
    }
    assert!(harness.cluster.event_reasons().contains(&"RunnerImageNotAllowed".to_owned()));
}

#[tokio::test]
async fn the_default_runner_image_named_explicitly_is_allowed() {
    let harness = Harness::new();
    harness.binding("in", true);
    harness.binding("out", true);
    harness.job(json!({"runner": {"image": "ferry-runner:test"}}));
    harness.launched().await;
    assert_eq!(harness.status()["phase"], "Running");
}

#[tokio::test]
async fn a_filesystem_root_over_the_runners_paths_is_never_ready() {
    let harness = Harness::new();
    harness.cluster.insert(
        "credentialbindings",
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "CredentialBinding", "metadata": {"name": "etc", "namespace": NS},
               "spec": {"provider": "fs", "fs": {"root": "/etc/ferry", "claimName": "data"}}}),
    );
    let binding: CredentialBinding =
        serde_json::from_value(harness.cluster.get("credentialbindings", NS, "etc").unwrap()).unwrap();
    binding_controller::reconcile(Arc::new(binding), harness.context.clone()).await.unwrap();
    let condition = harness.cluster.get("credentialbindings", NS, "etc").unwrap()["status"]["conditions"][0].clone();
    assert_eq!(
        (condition["status"].as_str(), condition["reason"].as_str()),
        (Some("False"), Some("FilesystemRootNotAllowed"))
    );
    assert!(condition["message"].as_str().unwrap().contains("spec.fs.root"));
}

/// Every call the controllers make (a job's whole life: launch, retry, finish, delete; and a
/// binding's check) is granted by `ferry_operator::access`, which the chart's RBAC equals.
#[tokio::test]
async fn every_call_the_controllers_make_is_in_the_access_list() {
    use ferry_operator::access::{WATCHED_NAMESPACES, grants};
    let harness = Harness::new();
    harness.binding("in", true);
    harness.binding("out", true);
    harness.job(json!({}));
    let [jobs, bindings] = harness.run_controllers();
    harness.launched().await;
    harness.finish_pod("ferry-nightly-a1-s0", 1, None);
    harness.reconcile().await;
    harness.cluster.update("migrationjobs", NS, "nightly", |job| {
        job["metadata"]["deletionTimestamp"] = json!("2026-11-24T01:00:00Z");
    });
    harness.reconcile().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    jobs.abort();
    bindings.abort();

    let used = harness.cluster.access();
    let refused: Vec<_> = used.iter().filter(|(resource, verb)| !grants(WATCHED_NAMESPACES, resource, verb)).collect();
    assert!(refused.is_empty(), "calls the access list (and so the chart) does not grant: {refused:?}");
    for needed in [("pods", "create"), ("pods", "deletecollection"), ("migrationjobs", "watch"), ("secrets", "get")] {
        assert!(used.contains(&(needed.0.to_owned(), needed.1.to_owned())), "{needed:?} was not exercised: {used:?}");
    }
}

/// A scheduled job re-runs as a new run once its time comes: the finished run is kept in
/// status, a new attempt (new children) starts, and the next time is counted on; reconciling
/// before the time changes nothing.
#[tokio::test]
async fn a_scheduled_job_runs_again_when_its_time_comes() {
    let harness = Harness::new();
    harness.binding("in", true);
    harness.binding("out", true);
    harness.job(json!({"schedule": "0 2 * * *"}));
    harness.launched().await;
    assert_eq!(harness.status()["run"], 1);
    assert!(harness.status()["nextRunTime"].is_string(), "{}", harness.status());
    harness.finish_pod("ferry-nightly-a1-s0", 0, Some(&final_report(0, 7, Outcome::Succeeded)));
    harness.finish_pod("ferry-nightly-a1-s1", 0, Some(&final_report(1, 5, Outcome::Succeeded)));
    harness.reconcile().await;
    assert_eq!(harness.status()["phase"], "Succeeded");
    harness.reconcile().await;
    assert_eq!(harness.status()["attempts"], 1, "not due yet: nothing starts");

    harness.cluster.update("migrationjobs", NS, "nightly", |job| {
        job["status"]["nextRunTime"] = json!("2026-01-01T02:00:00Z");
    });
    harness.reconcile().await;
    let status = harness.status();
    assert_eq!(
        (status["phase"].as_str(), status["run"].as_u64(), status["attempts"].as_u64()),
        (Some("Running"), Some(2), Some(2))
    );
    assert_eq!(status["runs"][0]["outcome"], "Succeeded");
    assert_eq!(status["runs"][0]["objectsVerified"], 12);
    assert!(status["nextRunTime"].as_str().unwrap() > "2026-01-01T02:00:00Z");
    harness.reconcile().await;
    let pods = harness.cluster.names("pods", NS);
    assert!(
        pods.contains(&"ferry-nightly-a2-s0".to_owned()) && pods.contains(&"ferry-nightly-a2-s1".to_owned()),
        "{pods:?}"
    );
    assert!(harness.cluster.event_reasons().contains(&"Scheduled".to_owned()));
}
