//! The objects a job owns, as pure functions of the job and the operator's settings:
//! per attempt a ConfigMap (the runner plans), a Secret (wrapping tokens and the progress
//! token), one pod per shard; per job a NetworkPolicy.

pub mod credentials;
pub mod network_policy;
pub mod plan;
pub mod pod;

use ferry_api::MigrationJob;
use ferry_api::contract::{JobIdentity, PlannedBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::names;

/// How runners reach things, from the operator's configuration.
#[derive(Clone, Debug)]
pub struct RunnerEnvironment {
    /// The runner image when the job does not name one.
    pub image: String,
    /// The URL runners post progress to.
    pub progress_url: String,
    /// The Vault address runners unwrap at.
    pub vault_address: Option<String>,
    /// PEM of the CA runners trust for the progress API (absent: system roots).
    pub progress_ca_pem: Option<String>,
    /// PEM of the CA runners trust for Vault (absent: system roots).
    pub vault_ca_pem: Option<String>,
    /// Where Vault is, for the NetworkPolicy.
    pub vault_egress: Vec<network_policy::EgressTarget>,
    /// Where the progress API is, for the NetworkPolicy.
    pub progress_egress: Vec<network_policy::EgressTarget>,
    /// The cluster DNS pods runners may query.
    pub dns: network_policy::PodPeer,
    /// Vault's pods, when it runs in the cluster (reached by selector, not address).
    pub vault_pods: Option<network_policy::PodPeer>,
    /// The operator's pods serving the progress API, when selected by labels.
    pub progress_pods: Option<network_policy::PodPeer>,
}

impl Default for RunnerEnvironment {
    /// Nothing configured, and cluster DNS where clusters keep it.
    fn default() -> Self {
        Self {
            image: String::new(),
            progress_url: String::new(),
            vault_address: None,
            progress_ca_pem: None,
            vault_ca_pem: None,
            vault_egress: Vec::new(),
            progress_egress: Vec::new(),
            dns: network_policy::PodPeer::cluster_dns(),
            vault_pods: None,
            progress_pods: None,
        }
    }
}

/// One attempt of a job, with everything the builders need.
#[derive(Clone, Debug)]
pub struct Attempt<'a> {
    /// The job.
    pub job: &'a MigrationJob,
    /// Its namespace, name and UID.
    pub identity: JobIdentity,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// The source binding as the runner sees it.
    pub source: PlannedBinding,
    /// The destination binding as the runner sees it.
    pub destination: PlannedBinding,
    /// When the wrapping tokens expire (RFC 3339).
    pub credentials_expire_at: Option<String>,
    /// Seconds left before the job's deadline, for the pods' own deadline.
    pub deadline_seconds: Option<i64>,
}

impl Attempt<'_> {
    /// How many runner pods the attempt has.
    pub fn shard_count(&self) -> u32 {
        self.job.spec.shards.max(1)
    }

    /// Metadata for an object of this attempt: name, namespace, labels, owner.
    pub fn metadata(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.identity.namespace.clone()),
            labels: Some(names::attempt_labels(&self.identity.name, &self.identity.uid, self.attempt)),
            owner_references: Some(vec![owner(&self.identity)]),
            ..ObjectMeta::default()
        }
    }
}

/// The job as the controlling owner, so deleting the job deletes its children.
pub fn owner(identity: &JobIdentity) -> OwnerReference {
    OwnerReference {
        api_version: format!("{}/{}", ferry_api::GROUP, ferry_api::VERSION),
        kind: "MigrationJob".to_owned(),
        name: identity.name.clone(),
        uid: identity.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! A job and bindings for the builders' tests.

    use ferry_api::contract::{JobIdentity, PlannedBinding};
    use ferry_api::{CredentialBindingSpec, MigrationJob};

    use super::{Attempt, RunnerEnvironment, network_policy::EgressTarget};

    pub fn job(yaml_spec: &str) -> MigrationJob {
        let manifest = format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: MigrationJob\nmetadata: {{name: nightly, namespace: team-a, uid: u-1, generation: 1}}\nspec:\n{yaml_spec}"
        );
        serde_yaml::from_str(&manifest).unwrap()
    }

    pub fn identity() -> JobIdentity {
        JobIdentity { namespace: "team-a".into(), name: "nightly".into(), uid: "u-1".into() }
    }

    pub fn binding(name: &str, yaml_spec: &str) -> PlannedBinding {
        let spec: CredentialBindingSpec = serde_yaml::from_str(yaml_spec).unwrap();
        let secret_creation_path = spec.vault.as_ref().map(|v| format!("{}/data/{}", v.mount, v.path));
        PlannedBinding {
            name: name.to_owned(),
            spec,
            secret_creation_path,
            secret_fields: Vec::new(),
            rotation_creation_path: None,
        }
    }

    pub const S3_TO_PVC: &str = "  source: {binding: legacy-s3, path: exports}\n  destination: {binding: archive, path: in}\n  shards: 2\n  runner: {spoolSize: 2Gi}\n";

    pub fn attempt(job: &MigrationJob) -> Attempt<'_> {
        Attempt {
            job,
            identity: identity(),
            attempt: 2,
            source: binding(
                "legacy-s3",
                "provider: s3\ns3: {region: eu-west-1, bucket: exports}\nvault: {path: tenants/team-a/s3}\negress: [{cidr: 52.218.0.0/17, ports: [443]}]",
            ),
            destination: binding("archive", "provider: fs\nfs: {root: /data, claimName: archive-pvc}"),
            credentials_expire_at: Some("2026-11-24T02:00:00Z".into()),
            deadline_seconds: Some(3600),
        }
    }

    pub fn environment() -> RunnerEnvironment {
        RunnerEnvironment {
            image: "ghcr.io/ferry-dev/ferry-runner:0.1.0".into(),
            progress_url: "https://10.0.0.5:8443".into(),
            vault_address: Some("https://10.0.0.9:8200".into()),
            progress_ca_pem: Some("-----BEGIN CERTIFICATE-----\n...\n".into()),
            vault_ca_pem: None,
            vault_egress: vec![EgressTarget { cidr: "10.0.0.9/32".into(), port: 8200 }],
            progress_egress: vec![EgressTarget { cidr: "10.0.0.5/32".into(), port: 8443 }],
            ..RunnerEnvironment::default()
        }
    }
}
