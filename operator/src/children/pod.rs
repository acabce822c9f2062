//! A runner pod: one per attempt and shard, hardened to the Pod Security "restricted"
//! profile, with the plan, the tokens and the spool mounted and nothing else.

use std::collections::BTreeMap;

use ferry_api::{Provider, binding::FsSettings, contract::PlannedBinding};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, KeyToPath,
    PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, ResourceRequirements, SeccompProfile,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::plan::{PROGRESS_CA_KEY, VAULT_CA_KEY, plan_key};
use super::{Attempt, RunnerEnvironment};
use crate::names;

/// Where the plan ConfigMap is mounted.
pub const PLAN_DIRECTORY: &str = "/etc/ferry/plan";
/// Where the tokens Secret is mounted.
pub const CREDENTIALS_DIRECTORY: &str = "/etc/ferry/credentials";
/// Where the spool emptyDir is mounted.
pub const SPOOL_DIRECTORY: &str = "/spool";
/// The unprivileged user runners run as (the distroless `nonroot` user).
pub const RUNNER_USER: i64 = 65532;
/// Spool size when the job does not set `runner.spoolSize` (matches the runner's default).
pub const DEFAULT_SPOOL_SIZE: &str = "1Gi";

/// The pod of shard `index` of the attempt.
pub fn runner_pod(attempt: &Attempt<'_>, environment: &RunnerEnvironment, index: u32) -> Pod {
    let runner = attempt.job.spec.runner.clone().unwrap_or_default();
    let mut metadata = attempt.metadata(names::runner_pod(&attempt.identity.name, attempt.attempt, index));
    metadata.labels.get_or_insert_with(BTreeMap::new).insert(names::SHARD_LABEL.to_owned(), index.to_string());
    let spool_size = runner.spool_size.as_ref().map_or(DEFAULT_SPOOL_SIZE.to_owned(), |q| q.bytes().to_string());
    let attempt_object = names::attempt_object(&attempt.identity.name, attempt.attempt);

    let mut plan_items = vec![KeyToPath { key: plan_key(index), path: "plan.json".into(), mode: None }];
    let mut args = vec![
        "cluster".to_owned(),
        format!("--plan={PLAN_DIRECTORY}/plan.json"),
        format!("--credentials={CREDENTIALS_DIRECTORY}"),
        format!("--spool-dir={SPOOL_DIRECTORY}"),
        "--termination-log=/dev/termination-log".to_owned(),
    ];
    if environment.progress_ca_pem.is_some() {
        plan_items.push(KeyToPath { key: PROGRESS_CA_KEY.into(), path: PROGRESS_CA_KEY.into(), mode: None });
        args.push(format!("--progress-ca={PLAN_DIRECTORY}/{PROGRESS_CA_KEY}"));
    }
    if environment.vault_ca_pem.is_some() {
        plan_items.push(KeyToPath { key: VAULT_CA_KEY.into(), path: VAULT_CA_KEY.into(), mode: None });
        args.push(format!("--vault-ca={PLAN_DIRECTORY}/{VAULT_CA_KEY}"));
    }

    let mut volumes = vec![
        Volume {
            name: "plan".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: attempt_object.clone(),
                items: Some(plan_items),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "credentials".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(attempt_object),
                // Only this shard's own tokens: never another shard's, never the accessors.
                items: Some(super::credentials::shard_items(attempt, index)),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        empty_dir("spool", &spool_size),
        empty_dir("tmp", "64Mi"),
    ];
    let mut mounts = vec![
        mount("plan", PLAN_DIRECTORY, true),
        mount("credentials", CREDENTIALS_DIRECTORY, true),
        mount("spool", SPOOL_DIRECTORY, false),
        mount("tmp", "/tmp", false),
    ];
    for (volume, binding, read_only) in
        [("source-data", &attempt.source, true), ("destination-data", &attempt.destination, false)]
    {
        if let Some((claim, root)) = claim_of(binding) {
            volumes.push(Volume {
                name: volume.into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim,
                    read_only: Some(read_only),
                }),
                ..Volume::default()
            });
            mounts.push(mount(volume, &root, read_only));
        }
    }

    let container = Container {
        name: "runner".into(),
        image: Some(runner.image.clone().unwrap_or_else(|| environment.image.clone())),
        // Set explicitly: the image's entrypoint is not part of the contract.
        command: Some(vec!["ferry-runner".into()]),
        args: Some(args),
        env: Some(vec![EnvVar { name: "FERRY_LOG".into(), value: Some("info".into()), value_from: None }]),
        resources: Some(runner.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(container_security()),
        volume_mounts: Some(mounts),
        termination_message_path: Some("/dev/termination-log".into()),
        termination_message_policy: Some("File".into()),
        ..Container::default()
    };
    Pod {
        metadata,
        spec: Some(PodSpec {
            containers: vec![container],
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            active_deadline_seconds: attempt.deadline_seconds.map(|s| s.max(1)),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUNNER_USER),
                run_as_group: Some(RUNNER_USER),
                fs_group: Some(RUNNER_USER),
                seccomp_profile: Some(runtime_default()),
                ..PodSecurityContext::default()
            }),
            node_selector: Some(runner.node_selector.clone()).filter(|m| !m.is_empty()),
            tolerations: Some(runner.tolerations.clone()).filter(|t| !t.is_empty()),
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// The claim and mount point of a filesystem binding backed by a PersistentVolumeClaim.
fn claim_of(binding: &PlannedBinding) -> Option<(String, String)> {
    match (&binding.spec.provider, &binding.spec.fs) {
        (Provider::Fs, Some(FsSettings { root, claim_name: Some(claim) })) => Some((claim.clone(), root.clone())),
        _ => None,
    }
}

fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        privileged: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }
}

fn default_resources() -> ResourceRequirements {
    let quantities = |pairs: &[(&str, &str)]| {
        Some(pairs.iter().map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned()))).collect::<BTreeMap<_, _>>())
    };
    ResourceRequirements {
        requests: quantities(&[("cpu", "250m"), ("memory", "256Mi")]),
        limits: quantities(&[("memory", "1Gi")]),
        ..ResourceRequirements::default()
    }
}

fn empty_dir(name: &str, size: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource { medium: None, size_limit: Some(Quantity(size.into())) }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), read_only: Some(read_only), ..VolumeMount::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::fixtures;

    fn pod() -> Pod {
        let job = fixtures::job(fixtures::S3_TO_PVC);
        runner_pod(&fixtures::attempt(&job), &fixtures::environment(), 1)
    }

    #[test]
    fn every_hardening_field_is_set() {
        let pod = pod();
        let spec = pod.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        let pod_security = spec.security_context.unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(pod_security.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let security = spec.containers[0].security_context.clone().unwrap();
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.capabilities.unwrap().drop.unwrap(), ["ALL"]);
        assert_eq!(security.seccomp_profile.unwrap().type_, "RuntimeDefault");
    }

    #[test]
    fn mounts_plan_tokens_spool_and_claims() {
        let pod = pod();
        let labels = pod.metadata.labels.unwrap();
        assert_eq!(labels[names::SHARD_LABEL], "1");
        assert_eq!(labels[names::ATTEMPT_LABEL], "2");
        assert_eq!(labels[names::JOB_UID_LABEL], "u-1");
        let spec = pod.spec.unwrap();
        let volumes = spec.volumes.unwrap();
        let spool = volumes.iter().find(|v| v.name == "spool").unwrap();
        assert_eq!(spool.empty_dir.as_ref().unwrap().size_limit, Some(Quantity((2u64 << 30).to_string())));
        let plan = volumes.iter().find(|v| v.name == "plan").unwrap().config_map.clone().unwrap();
        let credentials = volumes.iter().find(|v| v.name == "credentials").unwrap().secret.clone().unwrap();
        assert!(credentials.items.unwrap().iter().all(|item| item.key.starts_with("shard-1-")));
        assert_eq!(plan.items.unwrap()[0].key, "plan-1.json");
        let claim = volumes.iter().find(|v| v.name == "destination-data").unwrap();
        assert_eq!(claim.persistent_volume_claim.as_ref().unwrap().claim_name, "archive-pvc");
        assert!(volumes.iter().all(|v| v.name != "source-data"), "an S3 source needs no volume");
        let container = &spec.containers[0];
        assert_eq!(container.command.as_deref(), Some(&["ferry-runner".to_owned()][..]));
        assert!(container.args.as_ref().unwrap().contains(&"--progress-ca=/etc/ferry/plan/progress-ca.pem".into()));
        assert_eq!(spec.active_deadline_seconds, Some(3600));
        assert!(container.volume_mounts.as_ref().unwrap().iter().any(|m| m.mount_path == "/data"));
    }
}
