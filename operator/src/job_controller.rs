//! The MigrationJob controller: observe the job's pods, bindings and reports, let
//! [`lifecycle::decide`] choose, then carry the decision out and write status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_api::contract::{JobIdentity, PlannedBinding, plan_digest};
use ferry_api::status::CredentialVersions;
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
use zeroize::Zeroizing;

use crate::children::credentials::{ShardTokens, accessors_of, secret};
use crate::children::{Attempt, network_policy, plan, pod};
use crate::context::Context;
use crate::error::Error;
use crate::guard::{self, Guarded, Undecodable};
use crate::lifecycle::{self, Action as Step, Blocker, Observation};
use crate::progress::{new_attempt_token, token_hash};
use crate::vault::{Revocation, WrappedCredentials};
use crate::{bindings, conditions, names, observe, unreadable};

/// The finalizer that lets the operator stop runners and remove tokens before a job goes.
pub const FINALIZER: &str = "ferry.dev/cleanup";

/// Status fields the controller owns; progress belongs to the status writer until the end.
const OWNED_STATUS_FIELDS: [&str; 11] = [
    "phase",
    "observedGeneration",
    "attempts",
    "failedAttempts",
    "startTime",
    "completionTime",
    "conditions",
    "run",
    "nextRunTime",
    "runs",
    "credentialVersions",
];
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

/// Reconciles one job as the watch decoded it: a readable job as [`reconcile`] does; one
/// that does not decode is reported on itself (field, Event, `Stalled`) and left until it
/// changes, and if it is being deleted its children and finalizer are still removed.
pub async fn reconcile_guarded(object: Arc<Guarded<MigrationJob>>, context: Arc<Context>) -> Result<Action, Error> {
    match &object.0 {
        Ok(job) => reconcile(Arc::new(job.clone()), context).await,
        Err(invalid) if invalid.metadata.deletion_timestamp.is_some() => {
            release_unreadable(invalid, &context).await?;
            Ok(Action::await_change())
        }
        Err(invalid) => {
            unreadable::report(object.as_ref(), invalid, &conditions::JOB_CONDITIONS, &context).await?;
            Ok(Action::await_change())
        }
    }
}

/// Requeues a failed pass with backoff.
pub fn error_policy<K: Resource>(job: Arc<K>, error: &Error, context: Arc<Context>) -> Action {
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
    let reported = context.hub.latest(&identity.uid).filter(|p| p.attempt == attempt);
    let objects_failed = reported.as_ref().map_or(0, |p| p.combined().objects_failed);
    let reports = reported.map(|p| p.shards).unwrap_or_default();
    let shards = observe::shard_states(&attempt_pods, job.spec.shards.max(1), &reports);
    if launched && let Some(reason) = lifecycle::deletion_blocker(&shards) {
        // Shards of a sync that wait to delete must not wait for one that will never count.
        context.hub.refuse_deletions(&identity.uid, attempt, &reason);
    }
    let resolved = resolve_bindings(job, namespace, context).await?;
    let now = Time(jiff::Timestamp::now());

    let decision = lifecycle::decide(Observation {
        job: identity,
        spec: &job.spec,
        generation: job.metadata.generation,
        status: previous.clone(),
        bindings: resolved.as_ref().map(|_| ()).map_err(Clone::clone),
        credential_versions: resolved.as_ref().ok().map(|(_, _, versions)| *versions),
        attempt_launched: launched,
        shards,
        objects_failed,
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
            let (source, destination, _) = resolved.map_err(|blocker| Error::Incomplete(blocker.message))?;
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
            prune_runner_pods(namespace, &identity.uid, next.attempts, context).await?;
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
        context.metrics.transition(&reason);
        context.event(job, warning, &reason, message).await;
    }
    context.metrics.observe_job(job);
    Ok(requeue_after(&next, &job.spec, &now))
}

/// How soon to look again without any watch event: time-based decisions (deadline) and a
/// safety net for missed events.
fn requeue_after(status: &MigrationJobStatus, spec: &ferry_api::MigrationJobSpec, now: &Time) -> Action {
    match status.phase.unwrap_or_default() {
        // A finished job with a schedule wakes for its next run.
        Phase::Succeeded | Phase::Failed if status.next_run_time.is_some() && !spec.suspend => {
            let due = status.next_run_time.as_ref().map_or(0, |time| time.0.as_second() - now.0.as_second());
            Action::requeue(Duration::from_secs(due.clamp(1, 3600) as u64))
        }
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
) -> Result<Result<(CredentialBindingSpec, CredentialBindingSpec, CredentialVersions), Blocker>, Error> {
    if let Err(refused) = context.tenancy.check_runner_image(&context.environment.image, &job.spec) {
        return Ok(Err(refused));
    }
    let api: Api<Guarded<CredentialBinding>> = Api::namespaced(context.client.clone(), namespace);
    let source = api.get_opt(&job.spec.source.binding).await?;
    let destination = api.get_opt(&job.spec.destination.binding).await?;
    let readable = bindings::readable("spec.source.binding", source)
        .and_then(|source| Ok((source, bindings::readable("spec.destination.binding", destination)?)));
    let (source, destination) = match readable {
        Ok(both) => both,
        Err(blocker) => return Ok(Err(blocker)),
    };
    let version = |binding: &Option<CredentialBinding>| binding.as_ref()?.status.as_ref()?.secret_version;
    let versions = CredentialVersions { source: version(&source), destination: version(&destination) };
    Ok(bindings::resolve(job, source.as_ref(), destination.as_ref()).and_then(|(source, destination)| {
        for spec in [&source, &destination] {
            if let Some(reference) = &spec.vault {
                bindings::check_vault_path(&context.vault_path_prefix, namespace, reference)?;
                context.tenancy.check_vault(namespace, reference)?;
            }
        }
        Ok((source, destination, versions))
    }))
}

/// How many wrapped reads run at once while an attempt launches.
const WRAPS_IN_FLIGHT: usize = 8;

/// Wraps every shard's own credentials, then applies the attempt's ConfigMap,
/// NetworkPolicy, Secret and pods. Each shard gets its own single-use tokens: a shared token
/// would be used up by the first shard and look stolen to the others.
async fn launch(
    job: &MigrationJob,
    identity: &JobIdentity,
    status: &MigrationJobStatus,
    source: CredentialBindingSpec,
    destination: CredentialBindingSpec,
    context: &Context,
) -> Result<(), Error> {
    let names = [job.spec.source.binding.clone(), job.spec.destination.binding.clone()];
    let now = Time(jiff::Timestamp::now());
    let deadline_seconds = lifecycle::deadline_remaining(&job.spec, status, &now);
    // A write token lives as long as the attempt may, a day when the job sets no deadline.
    let lifetime = Duration::from_secs(deadline_seconds.map_or(86_400, |seconds| seconds.max(60) as u64));
    let wraps = wrap_shards([&source, &destination], &names, job.spec.shards.max(1), lifetime, context).await?;
    let accessors: Vec<String> =
        wraps.iter().flatten().flatten().flat_map(Issued::all).map(|w| w.accessor.clone()).collect();
    let planned = |side: usize, spec: CredentialBindingSpec| {
        let first = wraps.first().and_then(|shard| shard[side].as_ref());
        PlannedBinding {
            name: names[side].clone(),
            spec,
            secret_creation_path: first.map(|issued| issued.read.creation_path.clone()),
            secret_fields: first.map(|issued| issued.read.fields.clone()).unwrap_or_default(),
            rotation_creation_path: first.and_then(|issued| issued.write.as_ref()).map(|w| w.creation_path.clone()),
        }
    };
    let expires = wraps.iter().flatten().flatten().flat_map(Issued::all).map(|w| w.expires_at).min();
    let attempt = Attempt {
        job,
        identity: identity.clone(),
        attempt: status.attempts,
        source: planned(0, source),
        destination: planned(1, destination),
        credentials_expire_at: expires.map(|t| t.to_string()),
        deadline_seconds,
    };
    apply_attempt(&attempt, wraps, &accessors, context).await
}

/// Creates the attempt's children from its wrapped tokens (`wraps[shard][side]`). Until the
/// Secret exists no runner can be handed the tokens, so a failure before then revokes them;
/// after it, a pod may already hold them, and a revoked token would look stolen to it.
async fn apply_attempt(
    attempt: &Attempt<'_>,
    wraps: Vec<[Option<Issued>; 2]>,
    accessors: &[String],
    context: &Context,
) -> Result<(), Error> {
    let environment = &*context.launch_environment().await;
    let namespace = attempt.identity.namespace.as_str();
    let prepared = async {
        let documents =
            plan::plan_documents(attempt, environment).map_err(|e| Error::Serialize("the runner plan", e))?;
        let mut shards = Vec::with_capacity(wraps.len());
        for ([source, destination], document) in wraps.into_iter().zip(&documents) {
            let (source, source_write) = Issued::tokens(source);
            let (destination, destination_write) = Issued::tokens(destination);
            shards.push(ShardTokens {
                source,
                destination,
                source_write,
                destination_write,
                progress: new_attempt_token()?,
                plan_digest: plan_digest(document.as_bytes()),
            });
        }
        let hashes = shards.iter().map(|tokens| token_hash(&tokens.progress)).collect();
        let max_delete = attempt.job.spec.max_delete;
        context.hub.register_attempt_with_limit(&attempt.identity, attempt.attempt, hashes, max_delete);
        apply_object::<ConfigMap>(context, namespace, &plan::config_map(attempt, environment, &documents)).await?;
        apply_object::<NetworkPolicy>(context, namespace, &network_policy::network_policy(attempt, environment))
            .await?;
        apply_object::<Secret>(context, namespace, &secret(attempt, &shards, accessors)).await?;
        Ok::<_, Error>(())
    };
    if let Err(error) = prepared.await {
        revoke_accessors(accessors, context).await;
        return Err(error);
    }
    for index in 0..attempt.shard_count() {
        apply_object::<Pod>(context, namespace, &pod::runner_pod(attempt, environment, index)).await?;
    }
    Ok(())
}

/// What Vault issued for one binding of one shard: the wrapped read of its credentials, and
/// for a provider that rotates refresh tokens, the wrapped write token to store one with.
pub struct Issued {
    read: WrappedCredentials,
    write: Option<WrappedCredentials>,
}

impl Issued {
    fn all(&self) -> impl Iterator<Item = &WrappedCredentials> {
        std::iter::once(&self.read).chain(self.write.as_ref())
    }

    /// The wrapping tokens, for the attempt's Secret.
    fn tokens(issued: Option<Issued>) -> (Option<Zeroizing<String>>, Option<Zeroizing<String>>) {
        match issued {
            Some(Issued { read, write }) => (Some(read.token), write.map(|w| w.token)),
            None => (None, None),
        }
    }
}

/// One wrapped read per binding that keeps credentials in Vault, per shard, and a wrapped
/// write token beside it where the provider rotates refresh tokens (`result[shard][0]` the
/// source's, `[1]` the destination's), `WRAPS_IN_FLIGHT` at a time. If any request fails,
/// every token issued is revoked and nothing is launched.
async fn wrap_shards(
    specs: [&CredentialBindingSpec; 2],
    names: &[String; 2],
    shard_count: u32,
    lifetime: Duration,
    context: &Context,
) -> Result<Vec<[Option<Issued>; 2]>, Error> {
    use futures::StreamExt;
    let wrap_one = |side: usize| async move {
        if specs[side].vault.is_none() {
            return (None, None);
        }
        let Some(vault) = context.vault.as_ref() else {
            return (Some(Err(Error::VaultNotConfigured(names[side].clone()))), None);
        };
        let wrapped = vault.wrap_credentials(specs[side], context.wrap_ttl).await;
        context.metrics.vault_call("wrap", wrapped.is_ok());
        let role = context.rotation_role.as_deref().filter(|_| specs[side].provider.rotates_refresh_tokens());
        let write = match role {
            Some(role) => {
                let minted = vault.mint_write_token(specs[side], role, lifetime, context.wrap_ttl).await;
                context.metrics.vault_call("mint_write_token", minted.is_ok());
                Some(minted.map_err(Error::from))
            }
            None => None,
        };
        (Some(wrapped.map_err(Error::from)), write)
    };
    // Every request runs to its end, even after one failed: a token Vault issued must be
    // known here to be revoked.
    let results: Vec<_> = futures::stream::iter((0..shard_count).flat_map(|_| [0, 1]))
        .map(wrap_one)
        .buffered(WRAPS_IN_FLIGHT)
        .collect()
        .await;
    let mut issued: Vec<Option<Issued>> = Vec::with_capacity(results.len());
    let mut accessors = Vec::new();
    let mut failure = None;
    for (read, write) in results {
        let mut keep = |result: Option<Result<WrappedCredentials, Error>>| match result {
            Some(Ok(wrapped)) => {
                accessors.push(wrapped.accessor.clone());
                Some(wrapped)
            }
            Some(Err(error)) => {
                failure = failure.take().or(Some(error));
                None
            }
            None => None,
        };
        let (read, write) = (keep(read), keep(write));
        issued.push(read.map(|read| Issued { read, write }));
    }
    let failure = failure.or_else(|| fields_differ(&issued));
    if let Some(error) = failure {
        revoke_accessors(&accessors, context).await;
        return Err(error);
    }
    let mut shards = Vec::with_capacity(shard_count as usize);
    let mut issued = issued.into_iter();
    while let (Some(source), Some(destination)) = (issued.next(), issued.next()) {
        shards.push([source, destination]);
    }
    Ok(shards)
}

/// Every shard's plan names one field order per binding: a Transit secret whose fields changed
/// between two shards' reads must be launched again.
fn fields_differ(issued: &[Option<Issued>]) -> Option<Error> {
    for side in 0..2 {
        let mut orders = issued.iter().skip(side).step_by(2).flatten().map(|issued| &issued.read.fields);
        if let Some(first) = orders.next()
            && orders.any(|other| other != first)
        {
            return Some(Error::Incomplete(
                "the binding's Vault secret changed while the attempt launched; launching again".into(),
            ));
        }
    }
    None
}

/// Revokes the wrapping tokens behind `accessors` that no runner used. Best effort: a token
/// Vault cannot revoke now still dies at its TTL, which only a reader of the Secret could
/// beat; the failure is logged and counted.
async fn revoke_accessors(accessors: &[String], context: &Context) {
    let Some(vault) = context.vault.as_ref() else { return };
    if !accessors.is_empty() {
        tracing::debug!(tokens = accessors.len(), "revoking the wrapping tokens of an attempt that ended");
    }
    for accessor in accessors {
        let result = vault.revoke_accessor(accessor).await;
        context.metrics.vault_call("revoke", result.is_ok());
        match result {
            Ok(Revocation::Revoked | Revocation::AlreadyGone) => {}
            Err(error) => tracing::warn!(%error, "cannot revoke an unused wrapping token; it expires at its TTL"),
        }
    }
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

/// Deletes the Secrets and ConfigMaps (and with `pods`, the pods) matching `selector`, first
/// revoking the wrapping tokens in those Secrets that no runner used.
async fn delete_children(namespace: &str, selector: &str, context: &Context, pods: bool) -> Result<(), Error> {
    let client = &context.client;
    let params = ListParams::default().labels(selector);
    let delete = DeleteParams::default();
    if pods {
        Api::<Pod>::namespaced(client.clone(), namespace).delete_collection(&delete, &params).await?;
    }
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let accessors: Vec<String> = secrets.list(&params).await?.items.iter().flat_map(accessors_of).collect();
    revoke_accessors(&accessors, context).await;
    secrets.delete_collection(&delete, &params).await?;
    Api::<ConfigMap>::namespaced(client.clone(), namespace).delete_collection(&delete, &params).await?;
    Ok(())
}

/// Deletes the finished runner pods of attempts older than the kept ones
/// ([`lifecycle::RUNNER_POD_ATTEMPTS_KEPT`]); their tokens went when their attempt ended.
async fn prune_runner_pods(namespace: &str, uid: &str, launching: u32, context: &Context) -> Result<(), Error> {
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), namespace);
    let listed = pods.list(&ListParams::default().labels(&names::job_selector(uid))).await?;
    let present = listed.items.iter().filter_map(|pod| pod.labels().get(names::ATTEMPT_LABEL)?.parse().ok());
    for attempt in lifecycle::attempts_to_prune(present, launching) {
        let params = ListParams::default().labels(&attempt_selector(uid, attempt));
        pods.delete_collection(&DeleteParams::default(), &params).await?;
    }
    Ok(())
}

/// The job is being deleted: stop its runners now and remove everything it owns.
async fn cleanup(job: &MigrationJob, context: &Context) -> Result<Action, Error> {
    let identity = identity(job)?;
    remove_everything(&identity.namespace, &identity.uid, context).await?;
    context.metrics.forget_job(job);
    Ok(Action::await_change())
}

/// Stops the runners of the job with `uid` and removes every child it owns.
async fn remove_everything(namespace: &str, uid: &str, context: &Context) -> Result<(), Error> {
    let selector = names::job_selector(uid);
    delete_children(namespace, &selector, context, true).await?;
    let params = ListParams::default().labels(&selector);
    Api::<NetworkPolicy>::namespaced(context.client.clone(), namespace)
        .delete_collection(&DeleteParams::default(), &params)
        .await?;
    context.hub.forget_job(uid);
    Ok(())
}

/// A job that does not decode is being deleted: its children are found by UID alone, so
/// they are removed as for any job, and then the finalizer (with a merge patch guarded by
/// the resource version, so a concurrent change is not overwritten), so deletion is never
/// stuck on a spec the operator cannot read.
async fn release_unreadable(invalid: &Undecodable, context: &Context) -> Result<(), Error> {
    let metadata = &invalid.metadata;
    let (Some(namespace), Some(name), Some(uid)) = (&metadata.namespace, &metadata.name, &metadata.uid) else {
        return Err(Error::Incomplete("a MigrationJob that does not decode".into()));
    };
    let finalizers = metadata.finalizers.clone().unwrap_or_default();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    remove_everything(namespace, uid, context).await?;
    let remaining: Vec<&String> = finalizers.iter().filter(|f| *f != FINALIZER).collect();
    let patch = serde_json::json!({
        "metadata": { "finalizers": remaining, "resourceVersion": metadata.resource_version }
    });
    guard::untyped_api::<MigrationJob>(context.client.clone(), namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
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
    // A finished run's totals are the controller's; a new run starts them afresh.
    if next.phase.is_some_and(Phase::is_finished) || next.run != previous.run {
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
    let namespace = job.namespace().unwrap_or_default();
    guard::patch_status::<MigrationJob>(
        context.client.clone(),
        &namespace,
        &job.name_any(),
        &PatchParams::default(),
        &patch,
    )
    .await?;
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
