//! The MigrationJob controller: observe the job's pods, bindings and reports, let
//! [`lifecycle::decide`] choose, then carry the decision out and write status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_api::contract::{JobIdentity, PlannedBinding};
use ferry_api::{CredentialBinding, CredentialBindingSpec, MigrationJob, MigrationJobStatus, Phase};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::children::credentials::{AttemptTokens, secret};
use crate::children::{Attempt, network_policy, plan, pod};
use crate::context::Context;
use crate::error::Error;
use crate::lifecycle::{self, Action as Step, Blocker, Observation};
use crate::progress::{new_attempt_token, token_hash};
use crate::{bindings, conditions, names, observe};

/// The finalizer that lets the operator stop runners and remove tokens before a job goes.
pub const FINALIZER: &str = "ferry.dev/cleanup";

/// Status fields the controller owns; progress belongs to the status writer until the end.
const OWNED_STATUS_FIELDS: [&str; 7] =
    ["phase", "observedGeneration", "attempts", "failedAttempts", "startTime", "completionTime", "conditions"];
const FINAL_STATUS_FIELDS: [&str; 3] = ["progress", "summary", "failures"];

/// Reconciles one job.
pub async fn reconcile(job: Arc<MigrationJob>, context: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = job.namespace().ok_or_else(|| Error::Incomplete(job.name_any()))?;
    let jobs: Api<MigrationJob> = Api::namespaced(context.client.clone(), &namespace);
    let result = finalizer(&jobs, FINALIZER, job, |event| async {
        match event {
            FinalizerEvent::Apply(job) => apply(&job, &context).await,
            FinalizerEvent::Cleanup(job) => cleanup(&job, &context).await,
        }
    })
    .await
    .map_err(|error| Error::Finalizer(Box::new(error)));
    context.metrics.reconciled("MigrationJob", started.elapsed().as_secs_f64());
    result
}

/// Requeues a failed pass with backoff.
pub fn error_policy(job: Arc<MigrationJob>, error: &Error, context: Arc<Context>) -> Action {
    context.metrics.failed("MigrationJob", error.reason());
    let key = format!("job/{}", job.uid().unwrap_or_default());
    let delay = context.backoff(&key);
    tracing::warn!(job = %job.name_any(), namespace = ?job.namespace(), %error, ?delay, "reconcile failed");
    Action::requeue(delay)
}

fn identity(job: &MigrationJob) -> Result<JobIdentity, Error> {
    match (job.namespace(), job.uid()) {
        (Some(namespace), Some(uid)) => Ok(JobIdentity { namespace, name: job.name_any(), uid }),
        _ => Err(Error::Incomplete(format!("MigrationJob {}", job.name_any()))),
    }
}

async fn apply(job: &MigrationJob, context: &Context) -> Result<Action, Error> {
    let identity = identity(job)?;
    match apply_observed(job, &identity, context).await {
        Ok(action) => {
            context.succeeded(&format!("job/{}", identity.uid));
            Ok(action)
        }
        Err(error) => {
            if !matches!(error, Error::Launch { .. }) {
                surface_error(job, context, &error).await;
            }
            Err(error)
        }
    }
}

async fn apply_observed(job: &MigrationJob, identity: &JobIdentity, context: &Context) -> Result<Action, Error> {
    let client = &context.client;
    let namespace = identity.namespace.as_str();
    let previous = job.status.clone().unwrap_or_default();
    let attempt = previous.attempts;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);

    let attempt_pods = if attempt > 0 {
        pods.list(&ListParams::default().labels(&attempt_selector(&identity.uid, attempt))).await?.items
    } else {
        Vec::new()
    };
    let launched = attempt > 0 && secrets.get_opt(&names::attempt_object(&identity.name, attempt)).await?.is_some();
    let reports = context.hub.latest(&identity.uid).filter(|p| p.attempt == attempt).map(|p| p.shards);
    let shards = observe::shard_states(&attempt_pods, job.spec.shards.max(1), &reports.unwrap_or_default());
    let resolved = resolve_bindings(job, namespace, context).await?;
    let now = Time(jiff::Timestamp::now());

    let decision = lifecycle::decide(Observation {
        spec: &job.spec,
        generation: job.metadata.generation,
        status: previous.clone(),
        bindings: resolved.as_ref().map(|_| ()).map_err(Clone::clone),
        attempt_launched: launched,
        shards,
        now: now.clone(),
    });
    let mut next = decision.status.clone();
    let mut written = previous.clone();
    let mut event = decision.event.clone().map(|(reason, message)| (decision.warning, reason, message));
    match decision.action {
        Step::Launch => {
            // The attempt number is durable before any token exists, so a crash never
            // launches two attempts under one number.
            write_status(job, &previous, &next, context).await?;
            written = next.clone();
            let (source, destination) = resolved.map_err(|blocker| Error::Incomplete(blocker.message))?;
            if let Err(error) = launch(job, identity, &next, source, destination, context).await {
                let message = format!("cannot launch attempt {}: {error}", next.attempts);
                next.phase = Some(Phase::Waiting);
                next.conditions = conditions::job_conditions(
                    Phase::Waiting,
                    error.reason(),
                    &message,
                    job.metadata.generation,
                    &next.conditions,
                    &now,
                );
                write_status(job, &written, &next, context).await?;
                context.event(job, true, error.reason(), message).await;
                return Err(Error::Launch { attempt: next.attempts, source: Box::new(error) });
            }
            delete_children(
                namespace,
                &format!("{},{}!={}", names::job_selector(&identity.uid), names::ATTEMPT_LABEL, next.attempts),
                context,
                false,
            )
            .await?;
        }
        Step::StopRunners => {
            delete_children(namespace, &attempt_selector(&identity.uid, attempt), context, true).await?;
        }
        Step::Cleanup => {
            delete_children(namespace, &names::job_selector(&identity.uid), context, false).await?;
            context.hub.forget_job(&identity.uid);
        }
        Step::None => {}
    }
    write_status(job, &written, &next, context).await?;
    if let Some((warning, reason, message)) = event.take() {
        context.event(job, warning, &reason, message).await;
    }
    context.metrics.observe_job(job);
    Ok(requeue_after(&next, &job.spec, &now))
}

/// How soon to look again without any watch event: time-based decisions (deadline) and a
/// safety net for missed events.
fn requeue_after(status: &MigrationJobStatus, spec: &ferry_api::MigrationJobSpec, now: &Time) -> Action {
    match status.phase.unwrap_or_default() {
        Phase::Succeeded | Phase::Failed | Phase::Suspended => Action::await_change(),
        _ => {
            let deadline = lifecycle::deadline_remaining(spec, status, now).unwrap_or(i64::MAX);
            let seconds = deadline.clamp(1, 60) as u64;
            Action::requeue(Duration::from_secs(seconds))
        }
    }
}

/// The job's bindings, checked; `Err` is why the job must wait (or, for a refused spec, fail).
/// The allowances are checked again here, not only by the binding controller: a binding's
/// Ready status is not proof, as whoever may write status could have written it.
async fn resolve_bindings(
    job: &MigrationJob,
    namespace: &str,
    context: &Context,
) -> Result<Result<(CredentialBindingSpec, CredentialBindingSpec), Blocker>, Error> {
    if let Err(refused) = context.tenancy.check_runner_image(&context.environment.image, &job.spec) {
        return Ok(Err(refused));
    }
    let api: Api<CredentialBinding> = Api::namespaced(context.client.clone(), namespace);
    let source = api.get_opt(&job.spec.source.binding).await?;
    let destination = api.get_opt(&job.spec.destination.binding).await?;
    Ok(bindings::resolve(job, source.as_ref(), destination.as_ref()).and_then(|(source, destination)| {
        for spec in [&source, &destination] {
            if let Some(reference) = &spec.vault {
                bindings::check_vault_path(&context.vault_path_prefix, namespace, reference)?;
                context.tenancy.check_vault(namespace, reference)?;
            }
        }
        Ok((source, destination))
    }))
}

/// Wraps the credentials, then applies the attempt's ConfigMap, NetworkPolicy, Secret and pods.
async fn launch(
    job: &MigrationJob,
    identity: &JobIdentity,
    status: &MigrationJobStatus,
    source: CredentialBindingSpec,
    destination: CredentialBindingSpec,
    context: &Context,
) -> Result<(), Error> {
    let mut planned = Vec::new();
    let mut tokens = Vec::new();
    let mut expires: Option<jiff::Timestamp> = None;
    for (name, spec) in [(&job.spec.source.binding, source), (&job.spec.destination.binding, destination)] {
        let mut binding =
            PlannedBinding { name: name.clone(), spec, secret_creation_path: None, secret_fields: vec![] };
        let mut token = None;
        if binding.spec.vault.is_some() {
            let vault = context.vault.as_ref().ok_or_else(|| Error::VaultNotConfigured(name.clone()))?;
            let wrapped = vault.wrap_credentials(&binding.spec, context.wrap_ttl).await;
            context.metrics.vault_call("wrap", wrapped.is_ok());
            let wrapped = wrapped?;
            binding.secret_creation_path = Some(wrapped.creation_path.clone());
            binding.secret_fields = wrapped.fields.clone();
            expires = Some(expires.map_or(wrapped.expires_at, |e| e.min(wrapped.expires_at)));
            token = Some(wrapped.token);
        }
        planned.push(binding);
        tokens.push(token);
    }
    let (Some(destination), Some(source)) = (planned.pop(), planned.pop()) else {
        return Err(Error::Incomplete("bindings".into()));
    };
    let destination_token = tokens.pop().flatten();
    let source_token = tokens.pop().flatten();
    let now = Time(jiff::Timestamp::now());
    let attempt = Attempt {
        job,
        identity: identity.clone(),
        attempt: status.attempts,
        source,
        destination,
        credentials_expire_at: expires.map(|t| t.to_string()),
        deadline_seconds: lifecycle::deadline_remaining(&job.spec, status, &now),
    };
    let progress = new_attempt_token()?;
    context.hub.register_attempt(identity, attempt.attempt, token_hash(&progress));
    let environment = &context.environment;
    let config_map = plan::config_map(&attempt, environment).map_err(|e| Error::Serialize("the runner plan", e))?;
    let namespace = identity.namespace.as_str();
    apply_object::<ConfigMap>(context, namespace, &config_map).await?;
    apply_object::<NetworkPolicy>(context, namespace, &network_policy::network_policy(&attempt, environment)).await?;
    let tokens = AttemptTokens { source: source_token, destination: destination_token, progress };
    apply_object::<Secret>(context, namespace, &secret(&attempt, &tokens)).await?;
    for index in 0..attempt.shard_count() {
        apply_object::<Pod>(context, namespace, &pod::runner_pod(&attempt, environment, index)).await?;
    }
    Ok(())
}

/// Server-side apply under the operator's field manager.
async fn apply_object<K>(context: &Context, namespace: &str, object: &K) -> Result<K, kube::Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(context.client.clone(), namespace);
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(&name, &PatchParams::apply(names::FIELD_MANAGER).force(), &Patch::Apply(object)).await
}

fn attempt_selector(uid: &str, attempt: u32) -> String {
    format!("{},{}={attempt}", names::job_selector(uid), names::ATTEMPT_LABEL)
}

/// Deletes the Secrets and ConfigMaps (and with `pods`, the pods) matching `selector`.
async fn delete_children(namespace: &str, selector: &str, context: &Context, pods: bool) -> Result<(), Error> {
    let client = &context.client;
    let params = ListParams::default().labels(selector);
    let delete = DeleteParams::default();
    if pods {
        Api::<Pod>::namespaced(client.clone(), namespace).delete_collection(&delete, &params).await?;
    }
    Api::<Secret>::namespaced(client.clone(), namespace).delete_collection(&delete, &params).await?;
    Api::<ConfigMap>::namespaced(client.clone(), namespace).delete_collection(&delete, &params).await?;
    Ok(())
}

/// The job is being deleted: stop its runners now and remove everything it owns.
async fn cleanup(job: &MigrationJob, context: &Context) -> Result<Action, Error> {
    let identity = identity(job)?;
    let namespace = identity.namespace.as_str();
    let selector = names::job_selector(&identity.uid);
    delete_children(namespace, &selector, context, true).await?;
    let params = ListParams::default().labels(&selector);
    Api::<NetworkPolicy>::namespaced(context.client.clone(), namespace)
        .delete_collection(&DeleteParams::default(), &params)
        .await?;
    context.hub.forget_job(&identity.uid);
    context.metrics.forget_job(job);
    Ok(Action::await_change())
}

/// The status fields in `keys`, as JSON.
fn status_fields(status: &MigrationJobStatus, keys: &[&str]) -> Result<BTreeMap<String, serde_json::Value>, Error> {
    let value = serde_json::to_value(status).map_err(|e| Error::Serialize("status", e))?;
    let serde_json::Value::Object(map) = value else { return Ok(BTreeMap::new()) };
    Ok(keys.iter().map(|key| ((*key).to_owned(), map.get(*key).cloned().unwrap_or(serde_json::Value::Null))).collect())
}

/// Writes the fields the controller owns when they changed (a merge patch, so the status
/// writer's progress is never overwritten with an older copy).
async fn write_status(
    job: &MigrationJob,
    previous: &MigrationJobStatus,
    next: &MigrationJobStatus,
    context: &Context,
) -> Result<(), Error> {
    let mut keys = OWNED_STATUS_FIELDS.to_vec();
    if next.phase.is_some_and(Phase::is_finished) {
        keys.extend(FINAL_STATUS_FIELDS);
    }
    let before = status_fields(previous, &keys)?;
    let after = status_fields(next, &keys)?;
    if before == after {
        return Ok(());
    }
    let changed: serde_json::Map<String, serde_json::Value> =
        after.into_iter().filter(|(key, value)| before.get(key) != Some(value)).collect();
    let patch = serde_json::json!({ "status": changed });
    let api: Api<MigrationJob> = Api::namespaced(context.client.clone(), &job.namespace().unwrap_or_default());
    api.patch_status(&job.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Best effort: an error becomes the Ready condition's reason, so `kubectl describe` shows it.
async fn surface_error(job: &MigrationJob, context: &Context, error: &Error) {
    let previous = job.status.clone().unwrap_or_default();
    let mut next = previous.clone();
    let now = Time(jiff::Timestamp::now());
    let ready = conditions::condition(
        "Ready",
        false,
        error.reason(),
        &error.to_string(),
        job.metadata.generation,
        &previous.conditions,
        &now,
    );
    next.conditions.retain(|c| c.type_ != "Ready");
    next.conditions.insert(0, ready);
    if let Err(write_error) = write_status(job, &previous, &next, context).await {
        tracing::warn!(%write_error, "cannot record the reconcile error in status");
    }
}
