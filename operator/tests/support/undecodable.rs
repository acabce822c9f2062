//! A MigrationJob the operator cannot decode, stored as an older CRD without today's bounds
//! would have admitted it: the schema is loosened for one field just long enough to create
//! the object, then the checked-in CRDs are applied again. Jobs are read here untyped, since
//! the typed client cannot read this one either.

use std::time::{Duration, Instant};

use ferry_api::MigrationJob;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use super::scenario::apply_crds;

/// The quantity no byte count can hold (it is 2^63 × 99999 / 8 bytes).
pub const UNDECODABLE_SIZE: &str = "99999Ei";
const CRD: &str = "migrationjobs.ferry.dev";
const POLL: Duration = Duration::from_millis(500);

/// The untyped jobs of `namespace`.
pub fn jobs(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &ApiResource::erase::<MigrationJob>(&()))
}

/// A job whose `spec.filter.maxSize` is [`UNDECODABLE_SIZE`].
pub fn broken_job(name: &str, namespace: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "MigrationJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"source": {"binding": "in"}, "destination": {"binding": "out"},
                 "filter": {"maxSize": UNDECODABLE_SIZE}}
    }))
    .unwrap()
}

/// Creates `job` as today's CRD admits it; the API server's refusal as text otherwise.
pub async fn create(client: &Client, job: &DynamicObject) -> Result<(), String> {
    let namespace = job.metadata.namespace.clone().unwrap();
    match jobs(client, &namespace).create(&PostParams::default(), job).await {
        Ok(_) => Ok(()),
        Err(error) => Err(error.to_string()),
    }
}

/// Creates `job` under a schema without the bounds on `spec.filter.maxSize`, then restores
/// the checked-in CRDs. Another scenario starting meanwhile applies them too, so a refusal
/// is retried with the schema loosened again.
pub async fn create_under_a_looser_schema(client: &Client, job: &DynamicObject) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let started = Instant::now();
    loop {
        let mut crd = serde_json::to_value(crds.get(CRD).await.unwrap()).unwrap();
        for version in crd["spec"]["versions"].as_array_mut().unwrap() {
            let max_size = &mut version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["filter"]["properties"]
                ["maxSize"];
            if let Value::Object(fields) = max_size {
                fields.remove("pattern");
                fields.remove("x-kubernetes-validations");
            }
        }
        let loosened: CustomResourceDefinition = serde_json::from_value(crd).unwrap();
        // A conflict (someone applied the CRDs meanwhile) is retried like a refusal.
        let _ = crds.replace(CRD, &PostParams::default(), &loosened).await;
        match create(client, job).await {
            Ok(()) => break,
            Err(refusal) if started.elapsed() < Duration::from_secs(60) => {
                eprintln!("e2e: the loosened schema is not in force yet ({refusal}); retrying");
                tokio::time::sleep(POLL).await;
            }
            Err(refusal) => panic!("could not store a job with maxSize {UNDECODABLE_SIZE} within 60 s: {refusal}"),
        }
    }
    apply_crds(client).await;
}

/// The `(status, reason, message)` of the job's condition `type_`, once it has one.
pub async fn wait_for_condition(client: &Client, namespace: &str, name: &str, type_: &str) -> (String, String, String) {
    let started = Instant::now();
    loop {
        let job = jobs(client, namespace).get(name).await.unwrap_or_else(|e| panic!("reading job {name}: {e}"));
        let conditions = job.data["status"]["conditions"].as_array().cloned().unwrap_or_default();
        if let Some(condition) = conditions.iter().find(|c| c["type"] == type_) {
            let text = |field: &str| condition[field].as_str().unwrap_or_default().to_owned();
            return (text("status"), text("reason"), text("message"));
        }
        assert!(started.elapsed() < Duration::from_secs(120), "job {name} has no {type_} condition: {:#?}", job.data);
        tokio::time::sleep(POLL).await;
    }
}

/// Deletes the job and waits until the API server no longer has it (the operator removes
/// its finalizer without decoding its spec).
pub async fn delete_and_wait_until_gone(client: &Client, namespace: &str, name: &str) {
    let api = jobs(client, namespace);
    api.delete(name, &DeleteParams::default()).await.unwrap_or_else(|e| panic!("deleting job {name}: {e}"));
    let started = Instant::now();
    while api.get_opt(name).await.unwrap_or_else(|e| panic!("reading job {name}: {e}")).is_some() {
        assert!(started.elapsed() < Duration::from_secs(60), "job {name} was not deleted within 60 s");
        tokio::time::sleep(POLL).await;
    }
}
