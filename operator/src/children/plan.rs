//! The per-attempt ConfigMap: one runner plan per shard, plus the CA certificates runners
//! trust. Nothing in it is secret.

use std::collections::BTreeMap;

use ferry_api::contract::{RunnerPlan, Shard};
use k8s_openapi::api::core::v1::ConfigMap;

use super::{Attempt, RunnerEnvironment};
use crate::names;

/// The key of the CA bundle for the progress API.
pub const PROGRESS_CA_KEY: &str = "progress-ca.pem";
/// The key of the CA bundle for Vault.
pub const VAULT_CA_KEY: &str = "vault-ca.pem";

/// The ConfigMap key holding shard `index`'s plan.
pub fn plan_key(index: u32) -> String {
    format!("plan-{index}.json")
}

/// Where runners post progress for this job.
pub fn progress_endpoint(base: &str, namespace: &str, name: &str) -> String {
    format!("{}/v1/namespaces/{namespace}/migrationjobs/{name}/progress", base.trim_end_matches('/'))
}

/// The plan of each shard of the attempt.
pub fn plans(attempt: &Attempt<'_>, environment: &RunnerEnvironment) -> Vec<RunnerPlan> {
    let count = attempt.shard_count();
    let progress_url =
        progress_endpoint(&environment.progress_url, &attempt.identity.namespace, &attempt.identity.name);
    let needs_vault =
        attempt.source.secret_creation_path.is_some() || attempt.destination.secret_creation_path.is_some();
    (0..count)
        .map(|index| RunnerPlan {
            job: attempt.identity.clone(),
            attempt: attempt.attempt,
            shard: Shard { index, count },
            spec: attempt.job.spec.clone(),
            source: attempt.source.clone(),
            destination: attempt.destination.clone(),
            progress_url: Some(progress_url.clone()),
            vault_address: environment.vault_address.clone().filter(|_| needs_vault),
            credentials_expire_at: attempt.credentials_expire_at.clone(),
        })
        .collect()
}

/// Each shard's plan file as the runner will read it: the bytes its digest is taken of.
pub fn plan_documents(
    attempt: &Attempt<'_>,
    environment: &RunnerEnvironment,
) -> Result<Vec<String>, serde_json::Error> {
    plans(attempt, environment).iter().map(serde_json::to_string_pretty).collect()
}

/// The attempt's ConfigMap, holding `documents` (from [`plan_documents`]) as shard plans.
pub fn config_map(attempt: &Attempt<'_>, environment: &RunnerEnvironment, documents: &[String]) -> ConfigMap {
    let mut data = BTreeMap::new();
    for (index, document) in (0u32..).zip(documents) {
        data.insert(plan_key(index), document.clone());
    }
    if let Some(pem) = &environment.progress_ca_pem {
        data.insert(PROGRESS_CA_KEY.to_owned(), pem.clone());
    }
    if let Some(pem) = &environment.vault_ca_pem {
        data.insert(VAULT_CA_KEY.to_owned(), pem.clone());
    }
    ConfigMap {
        metadata: attempt.metadata(names::attempt_object(&attempt.identity.name, attempt.attempt)),
        data: Some(data),
        // Not immutable: a launch interrupted before its Secret existed is redone with new
        // expiry times, and the apply must be able to update the plans.
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::fixtures;

    #[test]
    fn one_plan_per_shard_with_the_progress_endpoint() {
        let job = fixtures::job(fixtures::S3_TO_PVC);
        let attempt = fixtures::attempt(&job);
        let documents = plan_documents(&attempt, &fixtures::environment()).unwrap();
        let map = config_map(&attempt, &fixtures::environment(), &documents);
        let data = map.data.unwrap();
        assert_eq!(map.metadata.name.as_deref(), Some("ferry-nightly-a2"));
        let plan: RunnerPlan = serde_json::from_str(&data["plan-1.json"]).unwrap();
        assert_eq!(plan.shard, Shard { index: 1, count: 2 });
        assert_eq!(plan.attempt, 2);
        assert_eq!(
            plan.progress_url.as_deref(),
            Some("https://10.0.0.5:8443/v1/namespaces/team-a/migrationjobs/nightly/progress")
        );
        assert_eq!(plan.source.secret_creation_path.as_deref(), Some("secret/data/tenants/team-a/s3"));
        assert!(data.contains_key(PROGRESS_CA_KEY) && !data.contains_key(VAULT_CA_KEY));
        assert!(data.contains_key("plan-0.json") && !data.contains_key("plan-2.json"));
    }
}
