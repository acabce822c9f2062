//! Whether a job's bindings allow a launch: pure checks over the bindings the controller
//! looked up, each failure naming the field to fix.

use ferry_api::binding::VaultSecretReference;
use ferry_api::{CredentialBinding, CredentialBindingSpec, MigrationJob, Provider};

use crate::guard::Guarded;
use crate::lifecycle::Blocker;

/// The default prefix every binding's Vault path must start with; `{namespace}` is replaced.
pub const DEFAULT_PATH_PREFIX: &str = "tenants/{namespace}/";

/// The prefix for one namespace.
pub fn path_prefix(template: &str, namespace: &str) -> String {
    template.replace("{namespace}", namespace)
}

/// Refuses a Vault path outside the namespace's prefix, so one tenant's binding cannot
/// name another tenant's secret.
pub fn check_vault_path(template: &str, namespace: &str, reference: &VaultSecretReference) -> Result<(), Blocker> {
    let prefix = path_prefix(template, namespace);
    if reference.path.starts_with(&prefix) && reference.path.len() > prefix.len() {
        return Ok(());
    }
    Err(Blocker {
        reason: "VaultPathOutsideNamespace",
        message: format!(
            "spec.vault.path {:?} is outside this namespace's Vault prefix {prefix:?}; move the secret under it",
            reference.path
        ),
    })
}

/// Checks that a binding can be used by runner pods at all (before any Vault call).
pub fn check_usable(name: &str, spec: &CredentialBindingSpec) -> Result<(), Blocker> {
    if spec.provider == Provider::Fs && spec.fs.as_ref().is_none_or(|fs| fs.claim_name.is_none()) {
        return Err(Blocker {
            reason: "BindingNotUsable",
            message: format!(
                "CredentialBinding {name}: spec.fs.claimName is required in a cluster (a runner's own filesystem \
                 vanishes with its pod); name a PersistentVolumeClaim in this namespace"
            ),
        });
    }
    crate::tenancy::check_filesystem_root(name, spec)
}

/// A looked-up binding that may not decode: an undecodable one blocks the job with the
/// field at fault (the binding itself shows it too), instead of failing every pass.
pub fn readable(
    field: &str,
    binding: Option<Guarded<CredentialBinding>>,
) -> Result<Option<CredentialBinding>, Blocker> {
    match binding.map(|guarded| guarded.0).transpose() {
        Ok(binding) => Ok(binding),
        Err(invalid) => Err(Blocker {
            reason: "BindingInvalid",
            message: format!(
                "{field}: CredentialBinding {} cannot be read ({invalid}); fix that binding",
                invalid.metadata.name.as_deref().unwrap_or_default()
            ),
        }),
    }
}

/// Whether the binding's Ready condition is True for its current generation.
fn ready(binding: &CredentialBinding) -> Result<(), String> {
    let status = binding.status.as_ref().ok_or("not checked yet")?;
    let condition = status.conditions.iter().find(|c| c.type_ == "Ready").ok_or("not checked yet")?;
    if status.observed_generation != binding.metadata.generation {
        return Err("its latest change is not checked yet".into());
    }
    if condition.status != "True" {
        return Err(format!("{}: {}", condition.reason, condition.message));
    }
    Ok(())
}

/// The job's two bindings, if both exist, are Ready and usable.
pub fn resolve(
    job: &MigrationJob,
    source: Option<&CredentialBinding>,
    destination: Option<&CredentialBinding>,
) -> Result<(CredentialBindingSpec, CredentialBindingSpec), Blocker> {
    let namespace = job.metadata.namespace.as_deref().unwrap_or_default();
    let mut specs = Vec::new();
    for (field, wanted, found) in [
        ("spec.source.binding", &job.spec.source.binding, source),
        ("spec.destination.binding", &job.spec.destination.binding, destination),
    ] {
        let Some(binding) = found else {
            return Err(Blocker {
                reason: "BindingNotFound",
                message: format!(
                    "{field}: no CredentialBinding {wanted:?} in namespace {namespace} (a job can only use bindings \
                     in its own namespace); create it or fix the name"
                ),
            });
        };
        if let Err(why) = ready(binding) {
            return Err(Blocker {
                reason: "BindingNotReady",
                message: format!("{field}: CredentialBinding {wanted} is not Ready ({why}); waiting"),
            });
        }
        check_usable(wanted, &binding.spec)?;
        specs.push(binding.spec.clone());
    }
    let destination = specs.pop().ok_or_else(unreachable_blocker)?;
    let source = specs.pop().ok_or_else(unreachable_blocker)?;
    Ok((source, destination))
}

fn unreachable_blocker() -> Blocker {
    Blocker { reason: "InternalError", message: "bindings were not resolved".into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::fixtures;

    fn binding(name: &str, spec: &str, ready: Option<(&str, &str)>) -> CredentialBinding {
        let mut binding: CredentialBinding = serde_yaml::from_str(&format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: CredentialBinding\nmetadata: {{name: {name}, namespace: team-a, generation: 2}}\nspec: {spec}"
        ))
        .unwrap();
        if let Some((status, reason)) = ready {
            binding.status = Some(
                serde_json::from_value(serde_json::json!({
                    "observedGeneration": 2,
                    "conditions": [{"type": "Ready", "status": status, "reason": reason, "message": "m",
                                    "lastTransitionTime": "2026-01-01T00:00:00Z"}]
                }))
                .unwrap(),
            );
        }
        binding
    }

    const S3: &str = "{provider: s3, s3: {region: r, bucket: b}, vault: {path: tenants/team-a/s3}}";
    const PVC: &str = "{provider: fs, fs: {root: /data, claimName: pvc}}";

    #[test]
    fn ready_usable_bindings_resolve() {
        let job = fixtures::job(fixtures::S3_TO_PVC);
        let (s, d) =
            (binding("legacy-s3", S3, Some(("True", "SecretValid"))), binding("archive", PVC, Some(("True", "Ok"))));
        assert!(resolve(&job, Some(&s), Some(&d)).is_ok());
    }

    #[test]
    fn each_problem_names_its_field() {
        let job = fixtures::job(fixtures::S3_TO_PVC);
        let ok_destination = binding("archive", PVC, Some(("True", "Ok")));
        let missing = resolve(&job, None, Some(&ok_destination)).unwrap_err();
        assert_eq!(missing.reason, "BindingNotFound");
        assert!(missing.message.starts_with("spec.source.binding"));
        let not_ready = binding("legacy-s3", S3, Some(("False", "SecretNotFound")));
        let blocked = resolve(&job, Some(&not_ready), Some(&ok_destination)).unwrap_err();
        assert_eq!(blocked.reason, "BindingNotReady");
        assert!(blocked.message.contains("SecretNotFound"));
        let unchecked = binding("legacy-s3", S3, None);
        assert_eq!(resolve(&job, Some(&unchecked), Some(&ok_destination)).unwrap_err().reason, "BindingNotReady");
        let ready_source = binding("legacy-s3", S3, Some(("True", "Ok")));
        let bare = binding("archive", "{provider: fs, fs: {root: /data}}", Some(("True", "Ok")));
        let unusable = resolve(&job, Some(&ready_source), Some(&bare)).unwrap_err();
        assert!(unusable.message.contains("spec.fs.claimName"));
    }

    #[test]
    fn vault_paths_stay_inside_the_namespace_prefix() {
        let reference = |path: &str| VaultSecretReference {
            mount: "secret".into(),
            path: path.into(),
            transit_key: None,
            transit_mount: "transit".into(),
        };
        assert!(check_vault_path(DEFAULT_PATH_PREFIX, "team-a", &reference("tenants/team-a/s3")).is_ok());
        for bad in ["tenants/team-b/s3", "tenants/team-a/", "tenants/team-ab/s3", "other/s3"] {
            let error = check_vault_path(DEFAULT_PATH_PREFIX, "team-a", &reference(bad)).unwrap_err();
            assert!(error.message.starts_with("spec.vault.path"), "{bad}");
        }
    }

    #[test]
    fn an_undecodable_binding_blocks_with_its_field() {
        let value = serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "CredentialBinding",
            "metadata": {"name": "legacy", "namespace": "team-a"},
            "spec": {"provider": "sftp", "sftp": {"host": "h", "user": "u", "knownHosts": "k", "port": 70000}}
        });
        let guarded: Guarded<CredentialBinding> = serde_json::from_value(value).unwrap();
        let blocker = readable("spec.source.binding", Some(guarded)).unwrap_err();
        assert_eq!(blocker.reason, "BindingInvalid");
        assert!(blocker.message.starts_with("spec.source.binding: CredentialBinding legacy cannot be read"));
        assert!(blocker.message.contains("spec.sftp.port"), "{}", blocker.message);
        assert!(matches!(readable("spec.source.binding", None), Ok(None)));
    }
}
