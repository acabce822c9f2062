//! End to end against a real Kubernetes API server: the operator binary reconciles
//! MigrationJobs between S3 buckets (SeaweedFS) with credentials in Vault (OpenBao), runner
//! pods move and verify every object, and the job survives what clusters do to it. Each
//! scenario is its own test with its own namespace, operator process, kubelet, buckets and
//! Vault paths (`support/scenario.rs`), so they run in parallel and a failure names itself:
//!
//! - `two_shards_...`: 2 shards, one Vault secret; deleting the finished job removes all it owned;
//! - `three_shards_...`: 3 shards, each side's credentials in its own Vault secret and path;
//! - `a_suspended_job_...`: `spec.suspend` mid-run stops the runners; resuming copies nothing twice;
//! - `a_killed_runner_...`: a runner SIGKILLed mid-run; the retry has new tokens and skips what
//!   attempt 1 verified;
//! - `an_operator_restarted_...`: the operator SIGKILLed and restarted mid-job; no duplicate
//!   pods, no orphans, status carries on;
//! - `a_job_deleted_mid_run_...`: everything goes within 60 s and unused wrapping tokens are revoked;
//! - `a_binding_naming_another_tenants_transit_key_...`: refused before any Vault call names the key;
//! - `an_undecodable_job_in_one_namespace_...`: a job stored under an older, looser schema that
//!   the operator cannot decode is reported on itself, across an operator restart, while a
//!   job in another namespace completes; it can still be deleted.
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
//! Without `FERRY_E2E_KUBECONFIG` each scenario says so on stderr and passes, unless
//! `FERRY_E2E_REQUIRE=1`. The servers and the runner pods run on this machine: the job's
//! runners select a node label no node has (`ferry.dev/e2e-local-runner`), so no real kubelet
//! starts them, and the test's own stand-in kubelet (`support/kubelet.rs`) runs each pod's
//! container as a local `ferry-runner` process with its ConfigMap, Secret and emptyDir volumes
//! as directories, then writes the pod's phase and exit into its status. Nothing else in the
//! cluster needs to run: no scheduler, controller-manager or garbage collector (the operator's
//! finalizer deletes the job's objects itself). The cluster must reach nothing on this machine;
//! this machine must reach the cluster's API server.
//!

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support {
    //! The modules this suite uses: its own, and the fake API server its kubelet is tested against.
    pub mod cluster;
    #[allow(dead_code)] // the controllers' tests use the rest of it
    pub mod fake_api;
    pub mod kubelet;
    pub mod scenario;
    pub mod undecodable;
}

use std::collections::{BTreeMap, BTreeSet};

use ferry_api::contract::RunnerPlan;
use ferry_api::{CredentialBinding, MigrationJob, Phase};
use ferry_operator::names;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::json;
use support::cluster::{
    ATTEMPT_SHARD_KEYS, SecretView, WRAPPING_ACCESSORS_KEY, credential_problems, wrapping_accessors,
};
use support::kubelet::KubeletRecord;
use support::scenario::{
    STEP_TIMEOUT, Scenario, SourceData, attempt_pods, credential_files, phase, pods_seen, progress,
};

/// The job every scenario runs (each in its own namespace).
const JOB: &str = "e2e-copy";
/// A per-runner bandwidth limit that keeps [`slow_data`] moving for tens of seconds. The limit
/// lets a first burst of 8 MiB (a multipart part) through at once, then holds to the rate.
const SLOW_BANDWIDTH: &str = "100Ki";

/// 300 small files and the tricky names: quick to move.
fn quick_data(scenario: &Scenario) -> SourceData {
    scenario.source_data(|tree| {
        ferry_e2e::write_small_files(tree, 300, 1500);
        ferry_e2e::write_tricky_tree(&tree.join("tricky"));
    })
}

/// 192 files of 128 KiB (24 MiB): at [`SLOW_BANDWIDTH`], each of two runners spends about
/// 40 s past its first 8 MiB, time enough to interrupt it mid-run.
fn slow_data(scenario: &Scenario) -> SourceData {
    scenario.source_data(|tree| ferry_e2e::write_small_files(tree, 192, 128 * 1024))
}

/// The final status says every object was verified, none failed, and the summary agrees.
fn assert_succeeded(job: &MigrationJob, objects: u64) {
    let status = job.status.clone().unwrap_or_default();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    let progress = progress(job);
    assert_eq!((progress.objects_total, progress.objects_verified), (objects, objects), "{status:#?}");
    assert_eq!(progress.objects_failed, 0, "{status:#?}");
    assert_eq!(status.summary.as_ref().map(|s| s.objects.clone()), Some(format!("{objects}/{objects}")));
}

/// The last attempt copied each object at most once and skipped the rest as already verified,
/// at least `min_skipped` of them (what an earlier attempt had verified).
fn assert_copied_or_skipped_once(job: &MigrationJob, objects: u64, min_skipped: u64) {
    let progress = progress(job);
    assert_eq!(
        progress.objects_copied + progress.objects_skipped,
        objects,
        "every object copied or skipped exactly once in the last attempt: {progress:#?}"
    );
    assert!(
        progress.objects_skipped >= min_skipped.max(1),
        "the last attempt must skip the {min_skipped}+ objects verified before it, not copy them again: {progress:#?}"
    );
}

/// Every runner exited 0 and no node ran any of them.
fn assert_runners_succeeded(record: &KubeletRecord, pods: &[String]) {
    for pod in pods {
        assert_eq!(record.exits.get(pod), Some(&0), "runner {pod}: {}", record.summary());
    }
    assert!(record.scheduled_elsewhere.is_empty(), "a node ran runner pods: {}", record.summary());
}

/// Each started pod saw exactly one shard's credential files, under their plain names.
fn assert_pods_mount_only_their_shard(record: &KubeletRecord) {
    let expected: BTreeSet<String> = ATTEMPT_SHARD_KEYS.iter().map(|k| (*k).to_owned()).collect();
    let files = credential_files(record);
    assert!(!files.is_empty(), "no pod was started: {}", record.summary());
    for (pod, names) in files {
        assert_eq!(names, expected, "the credential files pod {pod} was shown");
    }
}

/// No Secret the runners were given held a credential or a key beyond the attempt's layout.
fn assert_mounted_secrets_clean(scenario: &Scenario, record: &KubeletRecord, shards: u32) {
    let mounted: Vec<SecretView> = record
        .mounted_secrets
        .iter()
        .map(|(name, data)| SecretView { name: name.clone(), owned_by_job: true, data: data.clone() })
        .collect();
    assert!(!mounted.is_empty(), "the runners were given no Secret");
    let problems = credential_problems(&mounted, scenario.credential(), shards);
    assert!(problems.is_empty(), "the runners' Secrets: {problems:?}");
}

/// No ConfigMap in the namespace holds the credential.
async fn assert_config_maps_clean(scenario: &Scenario) {
    let config_maps: Api<ConfigMap> = Api::namespaced(scenario.client.clone(), &scenario.namespace);
    let key = scenario.credential();
    for map in config_maps.list(&ListParams::default()).await.unwrap() {
        let values = support::kubelet::config_map_data(&map);
        assert!(
            values.values().all(|v| !v.windows(key.len()).any(|w| w == key)),
            "ConfigMap {} holds the S3 secret key",
            map.name_any()
        );
    }
}

/// `names` in order.
fn sorted(names: &[String]) -> Vec<String> {
    let mut names = names.to_vec();
    names.sort();
    names
}

/// The values of the wrapping and progress tokens in an attempt Secret.
fn tokens(data: &BTreeMap<String, Vec<u8>>) -> BTreeSet<Vec<u8>> {
    data.iter().filter(|(key, _)| key.ends_with("-token")).map(|(_, value)| value.clone()).collect()
}

/// The scenario this suite started with: two shards, one shared Vault secret; deleting the
/// finished job removes everything it owned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_move_and_verify_every_object_and_deletion_removes_everything() {
    let Some(mut scenario) = Scenario::start("copy").await else { return };
    let data = quick_data(&scenario);
    let buckets = scenario.s3_to_s3(&data, false).await;
    let uid = scenario.apply_job(&scenario.job_manifest(JOB, 2, json!({}))).await;

    let job = scenario.wait_complete(JOB).await;
    assert_succeeded(&job, data.objects());
    let record = scenario.kubelet.record();
    assert_eq!(sorted(&record.started), attempt_pods(JOB, 1, 2), "one runner pod per shard: {}", record.summary());
    assert_runners_succeeded(&record, &record.started);
    scenario.assert_bucket_holds(&buckets.destination_bucket, &data);
    scenario.assert_reports_left(&buckets.destination_bucket, &job, data.objects());

    // The Secret the runners were given held only the attempt's tokens; none is left holding more.
    assert_mounted_secrets_clean(&scenario, &record, 2);
    assert_pods_mount_only_their_shard(&record);
    let problems = scenario.credential_problems_now(&uid, 2).await;
    assert!(problems.is_empty(), "after the job: {problems:?}");
    assert_config_maps_clean(&scenario).await;

    // Deleting the job deletes everything it owned, by the operator's finalizer.
    scenario.delete_job_and_wait_until_gone(JOB, &uid).await;
}

/// A provider beyond S3 in a cluster: an S3 bucket to an SFTP server in two shards, the SSH
/// private key held in Vault and handed to each runner only as a wrapped single-use token,
/// the server's host key checked against the binding's knownHosts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_move_an_s3_bucket_to_sftp_with_a_wrapped_private_key() {
    let Some(mut scenario) = Scenario::start("sftp").await else { return };
    let data = quick_data(&scenario);
    let directory = scenario.s3_to_sftp(&data).await;
    let uid = scenario.apply_job(&scenario.job_manifest(JOB, 2, json!({}))).await;

    let job = scenario.wait_complete(JOB).await;
    assert_succeeded(&job, data.objects());
    let record = scenario.kubelet.record();
    assert_runners_succeeded(&record, &record.started);
    scenario.assert_remote_holds(&scenario.servers.sftp_remote(&directory), &data);
    assert_mounted_secrets_clean(&scenario, &record, 2);
    let problems = scenario.credential_problems_now(&uid, 2).await;
    assert!(problems.is_empty(), "after the job: {problems:?}");
    scenario.delete_job_and_wait_until_gone(JOB, &uid).await;
}

/// Google Cloud Storage in a cluster: two shards copy between two buckets reached with one
/// service account, its JSON key handed to each runner only as a wrapped single-use token.
/// Each runner signs its own assertion and exchanges it at the key file's token endpoint (a
/// stand-in that checks the signature), and the service rewrites the objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_rewrite_between_gcs_buckets_with_a_wrapped_service_account_key() {
    let Some(mut scenario) = Scenario::start("gcs").await else { return };
    let data = quick_data(&scenario);
    let (google, destination_bucket) = scenario.gcs_to_gcs(&data).await;
    let uid = scenario.apply_job(&scenario.job_manifest(JOB, 2, json!({}))).await;

    let job = scenario.wait_complete(JOB).await;
    assert_succeeded(&job, data.objects());
    let record = scenario.kubelet.record();
    assert_runners_succeeded(&record, &record.started);
    scenario.assert_remote_holds(&scenario.servers.gcs_remote(&destination_bucket), &data);
    assert!(
        google.granted() >= 2 && google.refused() == 0,
        "granted {}, refused {}",
        google.granted(),
        google.refused()
    );
    assert_mounted_secrets_clean(&scenario, &record, 2);
    let problems = scenario.credential_problems_now(&uid, 2).await;
    assert!(problems.is_empty(), "after the job: {problems:?}");
    scenario.delete_job_and_wait_until_gone(JOB, &uid).await;
}

/// OneDrive in a cluster: two shards write to a Microsoft Graph stand-in with the refresh
/// token wrapped in Vault. The token endpoint rotates it, and each runner stores the new one
/// with its own wrapped write token (minted through the token role, reaching only that
/// secret), so the operator never holds it and the next run starts from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_move_s3_to_onedrive_and_store_the_rotated_refresh_token() {
    let Some(mut scenario) = Scenario::start("onedrive").await else { return };
    let data = quick_data(&scenario);
    let (graph, drive_path) = scenario.s3_to_onedrive(&data).await;
    let uid = scenario.apply_job(&scenario.job_manifest(JOB, 2, json!({}))).await;

    let job = scenario.wait_complete(JOB).await;
    assert_succeeded(&job, data.objects());
    let record = scenario.kubelet.record();
    assert_runners_succeeded(&record, &record.started);
    let mut files: BTreeMap<String, String> = graph
        .files()
        .into_iter()
        .filter_map(|(path, content)| Some((path.strip_prefix("e2e/")?.to_owned(), ferry_e2e::content_hash(&content))))
        .collect();
    files.retain(|key, _| !ferry_api::reports::is_reserved(key));
    assert_eq!(files, data.hashes);
    let (fields, _) = scenario.servers.read_secret(&drive_path);
    assert_ne!(fields["refreshToken"], "e2e-refresh", "the rotated refresh token was not stored");
    assert_eq!(fields["clientSecret"], "ferry-test-secret", "the other fields are kept");
    assert_mounted_secrets_clean(&scenario, &record, 2);
    let problems = scenario.credential_problems_now(&uid, 2).await;
    assert!(problems.is_empty(), "after the job: {problems:?}");
    scenario.delete_job_and_wait_until_gone(JOB, &uid).await;
}

/// Two operator replicas with leader election: the first holds the Lease and runs a job while
/// the second waits (ready as a standby, never reconciling); the leader stops cleanly
/// (SIGTERM), releasing the Lease, and the standby takes over at once and runs the next job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader_and_hand_over_when_it_stops() {
    let Some(mut scenario) = Scenario::start("leader").await else { return };
    let data = quick_data(&scenario);
    scenario.s3_to_s3(&data, false).await;
    let (standby, [metrics_a, metrics_b]) = scenario.start_replicas().await;
    let waited = std::time::Instant::now();
    while scenario.lease_holder("ferry-e2e").await.as_deref() != Some("replica-a") {
        assert!(waited.elapsed() < std::time::Duration::from_secs(30), "replica a never took the Lease");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let uid = scenario.apply_job(&scenario.job_manifest(JOB, 1, json!({}))).await;
    let job = scenario.wait_complete(JOB).await;
    assert_succeeded(&job, data.objects());
    assert_eq!(support::cluster::http_status(metrics_a, "/readyz"), 200, "the leader is ready");
    assert_eq!(support::cluster::http_status(metrics_b, "/readyz"), 200, "a standby is ready to take over");
    assert!(!scenario.replica_log().contains("leading"), "the standby led while the leader held the Lease");

    scenario.terminate_operator();
    let waited = std::time::Instant::now();
    while scenario.lease_holder("ferry-e2e").await.as_deref() != Some("replica-b") {
        // A released Lease is taken at once, well before it would have expired (15 s).
        assert!(waited.elapsed() < std::time::Duration::from_secs(10), "replica b did not take over");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    scenario.adopt_operator(standby);
    // The new leader finishes the first job's deletion and runs the next one.
    scenario.delete_job_and_wait_until_gone(JOB, &uid).await;
    let second = scenario.apply_job(&scenario.job_manifest("second", 1, json!({}))).await;
    let job = scenario.wait_complete("second").await;
    assert_succeeded(&job, data.objects());
    scenario.delete_job_and_wait_until_gone("second", &second).await;
}

/// Runs the scheduled (every minute) job to its first completion, changes one object at the
/// source, and waits for a run that started after the change: across the runs after the
/// first, only that object was copied, and every object is verified; the first run is kept.
async fn a_scheduled_rerun_copies_only_what_changed(scenario: &mut Scenario, data: &SourceData, source_bucket: &str) {
    let first = scenario.wait_complete(JOB).await;
    assert_succeeded(&first, data.objects());
    let first_status = first.status.clone().unwrap_or_default();
    assert_eq!(first_status.run, 1);
    assert!(first_status.next_run_time.is_some(), "{first_status:#?}");

    let changed = data.hashes.keys().next().unwrap().clone();
    let edited = scenario.work_path("edited.bin");
    std::fs::write(&edited, b"changed between the scheduled runs").unwrap();
    let edited_at = jiff::Timestamp::now();
    scenario.servers.rclone(&[
        "copyto",
        &edited.to_string_lossy(),
        &scenario.servers.s3_remote(&format!("{source_bucket}/{changed}")),
    ]);
    // A run that started after the edit has finished (one may have started just before it).
    let later = scenario
        .wait_for(JOB, "a scheduled run after the edit", support::scenario::JOB_TIMEOUT, |job, _| {
            let status = job.status.clone().unwrap_or_default();
            status.run >= 2
                && status.phase == Some(Phase::Succeeded)
                && status.start_time.as_ref().is_some_and(|start| start.0 >= edited_at)
        })
        .await;
    let status = later.status.clone().unwrap_or_default();
    assert_eq!(status.runs.last().map(|run| (run.run, run.outcome)), Some((1, Phase::Succeeded)), "{status:#?}");
    let copied_since: u64 = progress(&later).objects_copied
        + status.runs.iter().filter(|run| run.run >= 2).map(|run| run.objects_copied).sum::<u64>();
    assert_eq!(copied_since, 1, "only the changed object is copied again: {status:#?}");
    assert_eq!(progress(&later).objects_verified, data.objects());
}

/// A scheduled job (every minute) runs again on its own after its first run, as a delta
/// pass that copies only the object changed at the source in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_job_runs_again_and_copies_only_what_changed() {
    let Some(mut scenario) = Scenario::start("schedule").await else { return };
    let data = quick_data(&scenario);
    let pair = scenario.s3_to_s3(&data, false).await;
    let uid = scenario.apply_job(&scenario.job_manifest(JOB, 1, json!({"schedule": "* * * * *"}))).await;
    a_scheduled_rerun_copies_only_what_changed(&mut scenario, &data, &pair.source_bucket).await;
    scenario.delete_job_and_wait_until_gone(JOB, &uid).await;
}

/// The chart's rendered manifests apply with `kubectl apply --server-side`, and the operator
/// running with nothing but the chart's ServiceAccount (namespaced RBAC, leader election)
/// completes a job and its scheduled re-run: the chart grants every call the operator makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_under_the_charts_service_account_runs_a_scheduled_job() {
    let Some(mut scenario) = Scenario::start("chart").await else { return };
    scenario.run_operator_as_the_charts_service_account().await;
    let data = quick_data(&scenario);
    let pair = scenario.s3_to_s3(&data, false).await;
    let uid = scenario.apply_job(&scenario.job_manifest(JOB, 2, json!({"schedule": "* * * * *"}))).await;
    a_scheduled_rerun_copies_only_what_changed(&mut scenario, &data, &pair.source_bucket).await;
    scenario.delete_job_and_wait_until_gone(JOB, &uid).await;
}

/// Three shards, and each side's credentials in its own Vault secret at its own path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_with_separate_vault_secrets_on_both_sides() {
    let Some(mut scenario) = Scenario::start("three-shards").await else { return };
    let data = quick_data(&scenario);
    let buckets = scenario.s3_to_s3(&data, true).await;
    assert_ne!(buckets.source_vault_path, buckets.destination_vault_path);
    let uid = scenario.apply_job(&scenario.job_manifest(JOB, 3, json!({}))).await;

    let job = scenario.wait_complete(JOB).await;
    assert_succeeded(&job, data.objects());
    assert_eq!(job.status.as_ref().map(|s| s.attempts), Some(1));
    let record = scenario.kubelet.record();
    assert_eq!(sorted(&record.started), attempt_pods(JOB, 1, 3), "one runner pod per shard: {}", record.summary());
    assert_runners_succeeded(&record, &record.started);
    scenario.assert_bucket_holds(&buckets.destination_bucket, &data);
    scenario.assert_bucket_holds(&buckets.source_bucket, &data);

    // Every shard's plan names each binding's own secret as the read its token must come from.
    let plans = record.mounted_config_maps.get(&names::attempt_object(JOB, 1)).expect("the attempt's ConfigMap");
    for shard in 0..3 {
        let plan: RunnerPlan = serde_json::from_slice(&plans[&format!("plan-{shard}.json")]).unwrap();
        let expected = |path: &str| Some(format!("secret/data/{path}"));
        assert_eq!(plan.source.secret_creation_path, expected(&buckets.source_vault_path), "shard {shard}");
        assert_eq!(plan.destination.secret_creation_path, expected(&buckets.destination_vault_path), "shard {shard}");
    }
    assert_mounted_secrets_clean(&scenario, &record, 3);
    assert_pods_mount_only_their_shard(&record);
    let problems = scenario.credential_problems_now(&uid, 3).await;
    assert!(problems.is_empty(), "after the job: {problems:?}");
    assert_config_maps_clean(&scenario).await;
}

/// `spec.suspend` stops the runners mid-run; clearing it resumes with a fresh attempt that
/// skips what the first one verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_job_stops_its_runners_and_resumes_without_copying_twice() {
    let Some(mut scenario) = Scenario::start("suspend").await else { return };
    let data = slow_data(&scenario);
    let buckets = scenario.s3_to_s3(&data, false).await;
    let manifest = scenario.job_manifest(JOB, 2, json!({"bandwidthLimit": SLOW_BANDWIDTH}));
    let uid = scenario.apply_job(&manifest).await;
    let first = attempt_pods(JOB, 1, 2);
    let verified_before = progress(&scenario.wait_mid_run(JOB, &first, data.objects()).await).objects_verified;

    scenario.patch_spec(JOB, json!({"suspend": true})).await;
    let job = scenario
        .wait_for(JOB, "phase Suspended with the runners stopped", STEP_TIMEOUT, |job, record| {
            // A runner whose shard had already finished has nothing to stop.
            let stopped = |pod: &String| record.stopped.contains(pod) || record.exits.contains_key(pod);
            phase(job) == Phase::Suspended && first.iter().all(stopped)
        })
        .await;
    let left = scenario.children(&uid).await;
    assert!(left["pods"].is_empty(), "runner pods left while suspended: {left:?}");
    assert!(left["secrets"].is_empty(), "tokens left while suspended: {left:?}");
    assert_eq!(job.status.as_ref().map(|s| s.failed_attempts), Some(0), "a suspension is no failure");

    scenario.patch_spec(JOB, json!({"suspend": false})).await;
    let job = scenario.wait_complete(JOB).await;
    assert_succeeded(&job, data.objects());
    let status = job.status.clone().unwrap();
    assert_eq!((status.attempts, status.failed_attempts), (2, 0), "resuming is a fresh attempt, no retry: {status:#?}");
    assert_copied_or_skipped_once(&job, data.objects(), verified_before);
    let record = scenario.kubelet.record();
    assert_runners_succeeded(&record, &attempt_pods(JOB, 2, 2));
    scenario.assert_bucket_holds(&buckets.destination_bucket, &data);
    assert_mounted_secrets_clean(&scenario, &record, 2);
}

/// A runner pod SIGKILLed mid-run fails its attempt; the retry gets new tokens and skips
/// every object the first attempt verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runner_is_retried_with_new_tokens_and_copies_nothing_twice() {
    let Some(mut scenario) = Scenario::start("killed-runner").await else { return };
    let data = slow_data(&scenario);
    let buckets = scenario.s3_to_s3(&data, false).await;
    let manifest = scenario.job_manifest(JOB, 2, json!({"bandwidthLimit": SLOW_BANDWIDTH, "retries": 2}));
    scenario.apply_job(&manifest).await;
    let first = attempt_pods(JOB, 1, 2);
    let verified_before = progress(&scenario.wait_mid_run(JOB, &first, data.objects()).await).objects_verified;

    scenario.kubelet.kill(&first[0]).unwrap_or_else(|e| panic!("{e}"));
    let job = scenario.wait_complete(JOB).await;
    assert_succeeded(&job, data.objects());
    let status = job.status.clone().unwrap();
    assert_eq!((status.attempts, status.failed_attempts), (2, 1), "one failed attempt, one retry: {status:#?}");
    assert_copied_or_skipped_once(&job, data.objects(), verified_before);

    let record = scenario.kubelet.record();
    assert_eq!(record.exits.get(&first[0]), Some(&137), "the killed runner: {}", record.summary());
    assert_eq!(record.killed, BTreeSet::from([first[0].clone()]));
    assert_runners_succeeded(&record, &attempt_pods(JOB, 2, 2));
    let secret = |attempt| {
        record.mounted_secrets.get(&names::attempt_object(JOB, attempt)).cloned().unwrap_or_else(|| {
            panic!("no Secret of attempt {attempt} was mounted: {:?}", record.mounted_secrets.keys())
        })
    };
    let (first_secret, second_secret) = (secret(1), secret(2));
    let reused = tokens(&first_secret).intersection(&tokens(&second_secret)).count();
    assert_eq!(reused, 0, "attempt 2 reused {reused} of attempt 1's tokens");
    let accessors = |data: &BTreeMap<String, Vec<u8>>| -> BTreeSet<String> {
        data.get(WRAPPING_ACCESSORS_KEY).map(|v| wrapping_accessors(v).into_iter().collect()).unwrap_or_default()
    };
    assert!(accessors(&first_secret).is_disjoint(&accessors(&second_secret)), "attempt 2 reused wrapping tokens");
    scenario.assert_bucket_holds(&buckets.destination_bucket, &data);
    scenario.assert_reports_left(&buckets.destination_bucket, &job, data.objects());
    assert_mounted_secrets_clean(&scenario, &record, 2);
}

/// The operator SIGKILLed mid-job and started again: the runners carry on, the new operator
/// takes their reports, and nothing is created twice or left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_restarted_mid_job_finishes_it_without_duplicates_or_orphans() {
    let Some(mut scenario) = Scenario::start("restart").await else { return };
    let data = slow_data(&scenario);
    let buckets = scenario.s3_to_s3(&data, false).await;
    // No retries: a second attempt would hide a restart that broke the first.
    let manifest = scenario.job_manifest(JOB, 2, json!({"bandwidthLimit": SLOW_BANDWIDTH}));
    let uid = scenario.apply_job(&manifest).await;
    let pods = attempt_pods(JOB, 1, 2);
    let verified_before = progress(&scenario.wait_mid_run(JOB, &pods, data.objects()).await).objects_verified;

    scenario.restart_operator().await;
    // Only operators write status, and the old one is gone: more progress is the new one's.
    let left_at = progress(&scenario.job(JOB).await).objects_verified.max(verified_before);
    scenario
        .wait_for(JOB, "progress written by the new operator", STEP_TIMEOUT, |job, _| {
            progress(job).objects_verified > left_at
        })
        .await;
    let job = scenario.wait_complete(JOB).await;
    assert_succeeded(&job, data.objects());
    assert_eq!(job.status.as_ref().map(|s| s.attempts), Some(1), "the restart started a new attempt");

    let record = scenario.kubelet.record();
    let once: BTreeMap<String, usize> = pods.iter().map(|pod| (pod.clone(), 1)).collect();
    assert_eq!(pods_seen(&record), once, "exactly one pod per shard was ever created: {}", record.summary());
    assert_eq!(sorted(&record.started), pods, "each started once: {}", record.summary());
    assert_runners_succeeded(&record, &pods);
    let left = scenario.children(&uid).await;
    assert_eq!(left["pods"], pods, "{left:?}");
    assert!(left["secrets"].is_empty() && left["configmaps"].is_empty(), "orphans after completion: {left:?}");
    scenario.assert_bucket_holds(&buckets.destination_bucket, &data);
}

/// A job deleted mid-run: its runners stop, everything it owned goes within 60 s, and the
/// wrapping tokens its runners never used are revoked rather than left to expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_deleted_mid_run_leaves_nothing_and_its_unused_tokens_are_revoked() {
    let Some(mut scenario) = Scenario::start("deleted").await else { return };
    let data = slow_data(&scenario);
    scenario.s3_to_s3(&data, false).await;
    // Shard 1's pod stays Pending, as if its image were still being pulled: its tokens stay unused.
    let pods = attempt_pods(JOB, 1, 2);
    let [running, pending] = &pods[..] else { unreachable!() };
    scenario.kubelet.hold(pending);
    let manifest = scenario.job_manifest(JOB, 2, json!({"bandwidthLimit": SLOW_BANDWIDTH}));
    let uid = scenario.apply_job(&manifest).await;
    scenario.wait_mid_run(JOB, std::slice::from_ref(running), data.objects()).await;

    let secret = scenario.attempt_secret(JOB, 1).await.expect("attempt 1's Secret while it runs");
    let accessors = secret.get(WRAPPING_ACCESSORS_KEY).map(|v| wrapping_accessors(v)).unwrap_or_default();
    assert_eq!(accessors.len(), 4, "{WRAPPING_ACCESSORS_KEY} must list both wrapping tokens of both shards");
    let unused = accessors.iter().filter(|a| scenario.servers.vault_accessor_known(a)).count();
    assert_eq!(
        unused, 2,
        "Vault must know exactly the pending shard's two tokens (the running shard unwrapped its own)"
    );

    scenario.delete_job_and_wait_until_gone(JOB, &uid).await;
    let still_known: Vec<&String> = accessors.iter().filter(|a| scenario.servers.vault_accessor_known(a)).collect();
    assert!(still_known.is_empty(), "{} of {} wrapping tokens outlived their job", still_known.len(), accessors.len());
    let record = scenario.kubelet.record();
    assert!(record.stopped.contains(running), "the running runner was not stopped: {}", record.summary());
    assert!(!record.started.contains(pending), "{}", record.summary());
}

/// A binding naming another tenant's Transit key is refused: it never turns Ready, its job
/// waits with the reason, nothing is launched, and the operator never sends Vault a request
/// naming that key (the operator reaches Vault only through a proxy that keeps every request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_naming_another_tenants_transit_key_is_refused() {
    let Some(mut scenario) = Scenario::start("tenant").await else { return };
    // Another tenant's key (named after its namespace, as the default allowance expects), and
    // that tenant's credentials encrypted under it, copied into a secret under this
    // namespace's own (allowed) path.
    let servers = &scenario.servers;
    let theirs = servers.transit_key("ferry-e2e-other");
    let stolen = scenario.vault_path("stolen");
    servers.put_secret(
        &stolen,
        &[
            ("accessKeyId", &servers.transit_encrypt(&theirs, &servers.s3_access_key)),
            ("secretAccessKey", &servers.transit_encrypt(&theirs, &servers.s3_secret_key)),
        ],
    );
    let upstream = servers.vault_address.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let proxy = ferry_e2e::proxy::RecordingProxy::start(upstream).await.unwrap();
    scenario.restart_operator_with_vault(&format!("http://{}", proxy.address)).await;

    let bindings: Api<CredentialBinding> = Api::namespaced(scenario.client.clone(), &scenario.namespace);
    for name in [support::scenario::SOURCE_BINDING, support::scenario::DESTINATION_BINDING] {
        let bucket = scenario.servers.bucket(name);
        let mut manifest =
            support::cluster::s3_binding(name, &scenario.namespace, &scenario.servers.s3_endpoint, &bucket, &stolen)
                .unwrap();
        manifest["spec"]["vault"]["transitKey"] = json!(theirs);
        support::scenario::apply(&bindings, &manifest).await;
    }
    let uid = scenario.apply_job(&scenario.job_manifest(JOB, 1, json!({}))).await;

    let started = std::time::Instant::now();
    let message = loop {
        let binding = bindings.get(support::scenario::SOURCE_BINDING).await.unwrap();
        let ready = binding.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned());
        match ready {
            Some(ready) if ready.status == "False" && ready.reason == "TransitKeyNotAllowed" => break ready.message,
            other => assert!(started.elapsed() < STEP_TIMEOUT, "the binding was not refused: {other:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert!(message.contains("spec.vault.transitKey") && message.contains("--vault-transit-keys"), "{message}");
    // The job waits for its binding: in progress with the reason, never Stalled (kstatus).
    let job = scenario
        .wait_for(JOB, "the job waiting with the binding's reason", STEP_TIMEOUT, |job, _| {
            let conditions = job.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "False" && c.message.contains("TransitKeyNotAllowed"))
        })
        .await;
    assert!(!support::scenario::condition_is_true(&job, "Stalled"), "a waiting job is not Stalled");
    let left = scenario.children(&uid).await;
    assert!(left["secrets"].is_empty() && left["pods"].is_empty(), "something was launched: {left:?}");
    let sent = proxy.sent();
    assert!(sent.contains("/v1/"), "the operator never reached Vault through the proxy");
    assert!(!sent.contains(&theirs), "the operator sent Vault a request naming the other tenant's key");
    assert!(!sent.contains("/decrypt/") && !sent.contains(&stolen), "the refused binding was read or decrypted");
}

/// A job with a quantity no byte count holds: today's CRD refuses it naming the field; stored
/// as an older CRD would have admitted it, it is reported on itself (also when the operator
/// starts with it present, as on every upgrade) while a job in another namespace completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_job_in_one_namespace_does_not_stop_a_job_in_another() {
    use support::undecodable::{self, UNDECODABLE_SIZE};
    let Some(mut scenario) = Scenario::start("undecodable").await else { return };
    let other = scenario.watch_another_namespace("undecodable-b").await;
    let client = scenario.client.clone();
    let broken = undecodable::broken_job("broken", &other);
    let refusal = undecodable::create(&client, &broken).await.expect_err("today's CRD admitted maxSize 99999Ei");
    assert!(refusal.contains("maxSize"), "the refusal names the field: {refusal}");
    undecodable::create_under_a_looser_schema(&client, &broken).await;
    scenario.restart_operator().await;

    let data = quick_data(&scenario);
    let buckets = scenario.s3_to_s3(&data, false).await;
    scenario.apply_job(&scenario.job_manifest(JOB, 1, json!({}))).await;
    let job = scenario.wait_complete(JOB).await;
    assert_succeeded(&job, data.objects());
    scenario.assert_bucket_holds(&buckets.destination_bucket, &data);

    let (status, reason, message) = undecodable::wait_for_condition(&client, &other, "broken", "Stalled").await;
    assert_eq!((status.as_str(), reason.as_str()), ("True", "InvalidSpec"), "{message}");
    assert!(message.contains("spec.filter.maxSize") && message.contains(UNDECODABLE_SIZE), "{message}");
    let (ready, _, _) = undecodable::wait_for_condition(&client, &other, "broken", "Ready").await;
    assert_eq!(ready, "False");
    undecodable::delete_and_wait_until_gone(&client, &other, "broken").await;
}
