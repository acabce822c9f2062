//! The CredentialBinding controller: checks that the binding's Vault secret exists and has
//! the fields its provider needs (never copying a value), and records Ready or NotReady.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_api::{CredentialBinding, CredentialBindingStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PatchParams;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use crate::context::Context;
use crate::error::Error;
use crate::guard::{self, Guarded};
use crate::{bindings, conditions, tenancy, unreadable};

/// How often a Ready binding's secret is checked again (it may be deleted or changed).
const RECHECK_READY: Duration = Duration::from_secs(300);
/// How often a NotReady binding is checked again.
const RECHECK_NOT_READY: Duration = Duration::from_secs(30);

/// The result of checking a binding: `Ok(version)` or a reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Usable; the KV version seen, if it has a secret.
    Ready(Option<u64>),
    /// Not usable, and why.
    NotReady(&'static str, String),
}

/// Reconciles one binding as the watch decoded it: one that does not decode gets
/// `Ready=False` with the field at fault and a Warning Event, and waits until it changes.
pub async fn reconcile_guarded(
    object: Arc<Guarded<CredentialBinding>>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    match &object.0 {
        Ok(binding) => reconcile(Arc::new(binding.clone()), context).await,
        Err(invalid) => {
            unreadable::report(object.as_ref(), invalid, &["Ready"], &context).await?;
            Ok(Action::await_change())
        }
    }
}

/// Reconciles one binding.
pub async fn reconcile(binding: Arc<CredentialBinding>, context: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = binding.namespace().ok_or_else(|| Error::Incomplete(binding.name_any()))?;
    let verdict = check(&binding, &namespace, &context).await;
    let (ready, reason, message, version) = match &verdict {
        Verdict::Ready(Some(version)) => {
            let message =
                format!("version {version} of the Vault secret has every field {} needs", binding.spec.provider);
            (true, "SecretValid", message, Some(*version))
        }
        Verdict::Ready(None) => (true, "NoCredentials", "filesystem binding: no credentials needed".to_owned(), None),
        Verdict::NotReady(reason, message) => (false, *reason, message.clone(), None),
    };
    let previous = binding.status.clone().unwrap_or_default();
    let now = Time(jiff::Timestamp::now());
    let condition = conditions::condition(
        "Ready",
        ready,
        reason,
        &message,
        binding.metadata.generation,
        &previous.conditions,
        &now,
    );
    let next = CredentialBindingStatus {
        observed_generation: binding.metadata.generation,
        secret_version: version.or(previous.secret_version.filter(|_| ready)),
        conditions: vec![condition],
    };
    let changed_condition = previous.conditions.first().map(|c| (c.status.as_str(), c.reason.as_str()))
        != next.conditions.first().map(|c| (c.status.as_str(), c.reason.as_str()));
    if next != previous {
        let patch = serde_json::json!({ "status": next });
        let name = binding.name_any();
        guard::patch_status::<CredentialBinding>(
            context.client.clone(),
            &namespace,
            &name,
            &PatchParams::default(),
            &patch,
        )
        .await?;
    }
    if changed_condition {
        context.event(binding.as_ref(), !ready, reason, message).await;
    }
    context.metrics.reconciled("CredentialBinding", started.elapsed().as_secs_f64());
    Ok(Action::requeue(if ready { RECHECK_READY } else { RECHECK_NOT_READY }))
}

/// Checks the binding: its root, Vault path, mounts and key are allowed, and the secret is there.
/// Every allowance is checked before Vault is asked anything about the binding.
async fn check(binding: &CredentialBinding, namespace: &str, context: &Context) -> Verdict {
    if let Err(blocker) = tenancy::check_filesystem_root(&binding.name_any(), &binding.spec) {
        return Verdict::NotReady(blocker.reason, blocker.message);
    }
    let Some(reference) = &binding.spec.vault else { return Verdict::Ready(None) };
    let allowed = bindings::check_vault_path(&context.vault_path_prefix, namespace, reference)
        .and_then(|()| context.tenancy.check_vault(namespace, reference));
    if let Err(blocker) = allowed {
        return Verdict::NotReady(blocker.reason, blocker.message);
    }
    let Some(vault) = &context.vault else {
        return Verdict::NotReady(
            "VaultNotConfigured",
            "the operator has no Vault configured (VAULT_ADDR); bindings with spec.vault cannot be checked".into(),
        );
    };
    let result = vault.check_binding(&binding.name_any(), &binding.spec).await;
    context.metrics.vault_call("check", result.is_ok());
    match result {
        Ok(check) => Verdict::Ready(Some(check.version)),
        Err(error) => Verdict::NotReady(error.reason(), error.to_string()),
    }
}

/// Requeues a failed pass with backoff.
pub fn error_policy<K: Resource>(binding: Arc<K>, error: &Error, context: Arc<Context>) -> Action {
    context.metrics.failed("CredentialBinding", error.reason());
    let delay = context.backoff(&format!("binding/{}", binding.uid().unwrap_or_default()));
    tracing::warn!(binding = %binding.name_any(), %error, ?delay, "reconcile failed");
    Action::requeue(delay)
}
