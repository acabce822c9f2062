//! What the operator allows each namespace to name: Vault KV and Transit mounts, Transit
//! keys, runner images and filesystem roots. Pure checks over plain data; each refusal names
//! the field to fix and the flag that sets the allowance.
//!
//! The operator's own Vault identity can read every tenant's secrets and decrypt under every
//! tenant's key, so a binding must not be able to point it anywhere: `--vault-path-prefix`
//! keeps paths inside the namespace's subtree, and these allowances do the same for mounts and
//! Transit keys (otherwise a tenant could store another tenant's ciphertext under its own path
//! and have the operator decrypt it under the other tenant's key).

use ferry_api::binding::{
    RUNNER_RESERVED_MOUNTS, RUNNER_RESERVED_TREES, VaultSecretReference, is_plain_root, mounts_over,
};
use ferry_api::{CredentialBindingSpec, MigrationJobSpec, Provider};

use crate::children::pod::{CREDENTIALS_DIRECTORY, PLAN_DIRECTORY, SPOOL_DIRECTORY};
use crate::lifecycle::Blocker;

/// The placeholder replaced by the binding's namespace.
const NAMESPACE: &str = "{namespace}";

/// Characters a namespace name may hold (DNS-1123 label).
fn namespace_character(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

/// One allowed name: a template where `{namespace}` is the binding's namespace and a
/// trailing `*` stands for any non-empty rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern(String);

impl std::str::FromStr for Pattern {
    type Err = String;

    /// Refuses templates that would let one namespace name another's: a `*` right after
    /// `{namespace}` text that a longer namespace could continue (`{namespace}-*` lets
    /// namespace `team` name `team-a`'s key).
    fn from_str(text: &str) -> Result<Self, String> {
        let body = text.strip_suffix('*').unwrap_or(text);
        if body.is_empty() {
            return Err(format!("{text:?}: give a name or a prefix followed by *"));
        }
        if body.contains('*') {
            return Err(format!("{text:?}: * may only end the pattern"));
        }
        if body.replace(NAMESPACE, "").contains(['{', '}']) {
            return Err(format!("{text:?}: {NAMESPACE} is the only placeholder"));
        }
        if text.ends_with('*')
            && let Some((_, after)) = body.rsplit_once(NAMESPACE)
            && after.chars().all(namespace_character)
        {
            return Err(format!(
                "{text:?}: after {NAMESPACE}, a * must follow a character no namespace name has (such as '.' or '_'), \
                 or namespace \"team\" could name what belongs to namespace \"team-a\"; write {NAMESPACE}.* for example"
            ));
        }
        Ok(Self(text.to_owned()))
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Pattern {
    /// Whether `value` is allowed in `namespace`.
    pub fn allows(&self, namespace: &str, value: &str) -> bool {
        let expanded = self.0.replace(NAMESPACE, namespace);
        match expanded.strip_suffix('*') {
            Some(prefix) => value.len() > prefix.len() && value.starts_with(prefix),
            None => value == expanded,
        }
    }

    /// The pattern as it reads for `namespace`.
    pub fn for_namespace(&self, namespace: &str) -> String {
        self.0.replace(NAMESPACE, namespace)
    }
}

/// The patterns parsed from flag values (for tests and defaults).
pub fn patterns(texts: &[&str]) -> Result<Vec<Pattern>, String> {
    texts.iter().map(|text| text.parse()).collect()
}

/// The default KV v2 mounts: the mount Vault and OpenBao enable in dev mode.
pub const DEFAULT_KV_MOUNTS: [&str; 1] = ["secret"];
/// The default Transit mounts: where `bao secrets enable transit` puts it.
pub const DEFAULT_TRANSIT_MOUNTS: [&str; 1] = ["transit"];
/// The default Transit keys: the namespace's own name, or that name, `.` and more. Not `-`:
/// namespace names contain it, so `team-*` would also be namespace `team-a`'s.
pub const DEFAULT_TRANSIT_KEYS: [&str; 2] = ["{namespace}", "{namespace}.*"];

/// Everything the operator allows a namespace to name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenancyPolicy {
    /// Allowed `spec.vault.mount` values (`--vault-kv-mounts`).
    pub kv_mounts: Vec<Pattern>,
    /// Allowed `spec.vault.transitMount` values when a Transit key is named (`--vault-transit-mounts`).
    pub transit_mounts: Vec<Pattern>,
    /// Allowed `spec.vault.transitKey` values (`--vault-transit-keys`).
    pub transit_keys: Vec<Pattern>,
    /// Runner images jobs may name besides the default one (`--runner-image-allowlist`).
    pub runner_images: Vec<String>,
}

impl Default for TenancyPolicy {
    /// The flags' defaults: mount `secret`, Transit mount `transit`, keys named after the
    /// namespace, and only the operator's own runner image.
    fn default() -> Self {
        let known = |texts: &[&str]| texts.iter().map(|text| Pattern((*text).to_owned())).collect();
        Self {
            kv_mounts: known(&DEFAULT_KV_MOUNTS),
            transit_mounts: known(&DEFAULT_TRANSIT_MOUNTS),
            transit_keys: known(&DEFAULT_TRANSIT_KEYS),
            runner_images: Vec::new(),
        }
    }
}

fn allowed(patterns: &[Pattern], namespace: &str, value: &str) -> bool {
    patterns.iter().any(|pattern| pattern.allows(namespace, value))
}

fn listed(patterns: &[Pattern], namespace: &str) -> String {
    let names: Vec<String> = patterns.iter().map(|p| format!("{:?}", p.for_namespace(namespace))).collect();
    if names.is_empty() { "none".to_owned() } else { names.join(", ") }
}

impl TenancyPolicy {
    /// Checks a binding's KV mount, and with a Transit key its Transit mount and key, before
    /// any Vault call is made for it.
    pub fn check_vault(&self, namespace: &str, reference: &VaultSecretReference) -> Result<(), Blocker> {
        if !allowed(&self.kv_mounts, namespace, &reference.mount) {
            return Err(Blocker {
                reason: "VaultMountNotAllowed",
                message: format!(
                    "spec.vault.mount {:?} is not a KV mount namespace {namespace} may use (allowed: {}; \
                     the operator's --vault-kv-mounts); use an allowed mount",
                    reference.mount,
                    listed(&self.kv_mounts, namespace)
                ),
            });
        }
        let Some(key) = &reference.transit_key else { return Ok(()) };
        if !allowed(&self.transit_mounts, namespace, &reference.transit_mount) {
            return Err(Blocker {
                reason: "VaultMountNotAllowed",
                message: format!(
                    "spec.vault.transitMount {:?} is not a Transit mount namespace {namespace} may use (allowed: {}; \
                     the operator's --vault-transit-mounts); use an allowed mount",
                    reference.transit_mount,
                    listed(&self.transit_mounts, namespace)
                ),
            });
        }
        if !allowed(&self.transit_keys, namespace, key) {
            return Err(Blocker {
                reason: "TransitKeyNotAllowed",
                message: format!(
                    "spec.vault.transitKey {key:?} is not a Transit key namespace {namespace} may use (allowed: {}; \
                     the operator's --vault-transit-keys); encrypt the secret under this namespace's own key",
                    listed(&self.transit_keys, namespace)
                ),
            });
        }
        Ok(())
    }

    /// Checks the job's `spec.runner.image`: absent (the default image), the default image, or
    /// one of the allowlist. Any other image could do anything with the unwrapped credentials.
    pub fn check_runner_image(&self, default_image: &str, spec: &MigrationJobSpec) -> Result<(), Blocker> {
        let Some(image) = spec.runner.as_ref().and_then(|runner| runner.image.as_deref()) else { return Ok(()) };
        if image == default_image || self.runner_images.iter().any(|allowed| allowed == image) {
            return Ok(());
        }
        let mut allowed: Vec<String> = vec![format!("{default_image:?}")];
        allowed.extend(self.runner_images.iter().map(|image| format!("{image:?}")));
        Err(Blocker {
            reason: "RunnerImageNotAllowed",
            message: format!(
                "spec.runner.image {image:?} is not an allowed runner image (allowed: {}; the operator's \
                 --runner-image-allowlist); remove spec.runner.image to use the default, or name an allowed image",
                allowed.join(", ")
            ),
        })
    }
}

/// The directories a root may not touch: the CRD's, and the pod's own mount points.
fn reserved() -> (Vec<&'static str>, Vec<&'static str>) {
    let own = [PLAN_DIRECTORY, CREDENTIALS_DIRECTORY, SPOOL_DIRECTORY];
    (RUNNER_RESERVED_TREES.iter().copied().chain(own).collect(), RUNNER_RESERVED_MOUNTS.to_vec())
}

/// Whether a `fs` binding's root may be mounted into a runner pod: absolute, plain, and not
/// over the runner's own paths. The API server checks the same (CEL); this check also covers
/// the pod's actual mount points, should they ever move away from what the CRD reserves.
pub fn check_filesystem_root(name: &str, spec: &CredentialBindingSpec) -> Result<(), Blocker> {
    let Some(fs) = spec.fs.as_ref().filter(|_| spec.provider == Provider::Fs) else { return Ok(()) };
    let (trees, mounts) = reserved();
    if fs.root.starts_with('/') && is_plain_root(&fs.root) && !mounts_over(&fs.root, &trees, &mounts) {
        return Ok(());
    }
    Err(Blocker {
        reason: "FilesystemRootNotAllowed",
        message: format!(
            "CredentialBinding {name}: spec.fs.root {:?} cannot be mounted into a runner: it must be a plain absolute \
             path that is not /, does not lie inside or above {}, and is not or lies above {}; use a directory such \
             as /data",
            fs.root,
            trees.join(", "),
            mounts.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(mount: &str, transit: Option<(&str, &str)>) -> VaultSecretReference {
        VaultSecretReference {
            mount: mount.into(),
            path: "tenants/team-a/s3".into(),
            transit_key: transit.map(|(_, key)| key.to_owned()),
            transit_mount: transit.map_or("transit", |(mount, _)| mount).to_owned(),
        }
    }

    #[test]
    fn patterns_match_exactly_or_by_prefix() {
        let exact: Pattern = "{namespace}".parse().unwrap();
        assert!(exact.allows("team-a", "team-a"));
        assert!(!exact.allows("team-a", "team-ab") && !exact.allows("team", "team-a"));
        let prefixed: Pattern = "{namespace}.*".parse().unwrap();
        assert!(prefixed.allows("team-a", "team-a.prod"));
        assert!(!prefixed.allows("team-a", "team-a.") && !prefixed.allows("team", "team-a.prod"));
        let shared: Pattern = "kv-{namespace}".parse().unwrap();
        assert!(shared.allows("team-a", "kv-team-a") && !shared.allows("team-a", "kv-team-b"));
    }

    #[test]
    fn ambiguous_patterns_are_refused() {
        for bad in ["{namespace}-*", "{namespace}*", "keys/{namespace}-prod*", "*", "", "a*b", "{tenant}"] {
            assert!(bad.parse::<Pattern>().is_err(), "{bad}");
        }
        for ok in ["{namespace}.*", "{namespace}_*", "{namespace}-keys.*", "shared-*", "secret", "{namespace}/kv"] {
            assert!(ok.parse::<Pattern>().is_ok(), "{ok}");
        }
        for defaults in [&DEFAULT_KV_MOUNTS[..], &DEFAULT_TRANSIT_MOUNTS, &DEFAULT_TRANSIT_KEYS] {
            assert!(patterns(defaults).is_ok(), "{defaults:?}");
        }
    }

    #[test]
    fn defaults_allow_the_namespaces_own_mounts_and_keys_only() {
        let policy = TenancyPolicy::default();
        assert!(policy.check_vault("team-a", &reference("secret", None)).is_ok());
        assert!(policy.check_vault("team-a", &reference("secret", Some(("transit", "team-a")))).is_ok());
        assert!(policy.check_vault("team-a", &reference("secret", Some(("transit", "team-a.s3")))).is_ok());

        let mount = policy.check_vault("team-a", &reference("team-b-kv", None)).unwrap_err();
        assert_eq!(mount.reason, "VaultMountNotAllowed");
        assert!(mount.message.starts_with("spec.vault.mount") && mount.message.contains("--vault-kv-mounts"));
        let transit_mount =
            policy.check_vault("team-a", &reference("secret", Some(("transit-b", "team-a")))).unwrap_err();
        assert!(transit_mount.message.starts_with("spec.vault.transitMount"));
        assert!(transit_mount.message.contains("--vault-transit-mounts"));
        for other in ["team-b", "team-ab", "team", "team-a-prod"] {
            let key = policy.check_vault("team-a", &reference("secret", Some(("transit", other)))).unwrap_err();
            assert_eq!(key.reason, "TransitKeyNotAllowed", "{other}");
            assert!(key.message.starts_with("spec.vault.transitKey"), "{}", key.message);
            assert!(key.message.contains("--vault-transit-keys"), "{}", key.message);
        }
        // Without a Transit key the Transit mount is never used, so it is not judged.
        assert!(policy.check_vault("team-a", &reference("secret", None)).is_ok());
    }

    #[test]
    fn runner_images_come_from_the_allowlist() {
        let job = |image: Option<&str>| -> MigrationJobSpec {
            let mut spec: MigrationJobSpec =
                serde_yaml::from_str("{source: {binding: a}, destination: {binding: b}}").unwrap();
            if let Some(image) = image {
                spec.runner = Some(serde_yaml::from_str(&format!("{{image: {image:?}}}")).unwrap());
            }
            spec
        };
        let mut policy = TenancyPolicy::default();
        let default = "ghcr.io/ferry-dev/ferry-runner:0.1.0";
        assert!(policy.check_runner_image(default, &job(None)).is_ok());
        assert!(policy.check_runner_image(default, &job(Some(default))).is_ok());
        let refused = policy.check_runner_image(default, &job(Some("evil.example/runner:latest"))).unwrap_err();
        assert_eq!(refused.reason, "RunnerImageNotAllowed");
        assert!(
            refused.message.starts_with("spec.runner.image") && refused.message.contains("--runner-image-allowlist")
        );
        policy.runner_images.push("registry.example/ferry-runner@sha256:abc".into());
        assert!(policy.check_runner_image(default, &job(Some("registry.example/ferry-runner@sha256:abc"))).is_ok());
        assert!(policy.check_runner_image(default, &job(Some("registry.example/ferry-runner:latest"))).is_err());
    }

    #[test]
    fn filesystem_roots_stay_off_the_runners_paths() {
        let fs = |root: &str| -> CredentialBindingSpec {
            serde_yaml::from_str(&format!("{{provider: fs, fs: {{root: {root:?}, claimName: data}}}}")).unwrap()
        };
        for ok in ["/data", "/mnt/archive/", "/tmp/scratch", "/etcetera"] {
            assert!(check_filesystem_root("b", &fs(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "/",
            "/etc",
            "/etc/ferry/plan",
            "/etc/ferry/credentials/x",
            "/spool",
            "/tmp",
            "/proc/1",
            "/dev",
            "/usr",
            "/bin",
            "./data",
            "/data/../etc",
        ] {
            let error = check_filesystem_root("b", &fs(bad)).unwrap_err();
            assert_eq!(error.reason, "FilesystemRootNotAllowed", "{bad}");
            assert!(error.message.contains("spec.fs.root"), "{bad}");
        }
    }

    #[test]
    fn every_mount_of_a_runner_pod_is_reserved() {
        // Admission and the operator agree only while the pod mounts nothing outside what the
        // CRD reserves: look at a real pod's mounts, not at a list kept beside it.
        use crate::children::{fixtures, pod};
        let job = fixtures::job(fixtures::S3_TO_PVC);
        let runner = pod::runner_pod(&fixtures::attempt(&job), &fixtures::environment(), 0);
        let mounts = runner.spec.unwrap().containers[0].volume_mounts.clone().unwrap();
        let (trees, scratch) = reserved();
        let mut own = mounts.iter().filter(|m| !m.name.ends_with("-data")).map(|m| m.mount_path.as_str()).peekable();
        assert!(own.peek().is_some());
        for path in own.chain(["/dev/termination-log"]) {
            assert!(
                mounts_over(path, &RUNNER_RESERVED_TREES, &RUNNER_RESERVED_MOUNTS),
                "the CRD does not reserve {path}"
            );
            assert!(mounts_over(path, &trees, &scratch), "{path}");
        }
    }

    #[test]
    fn a_refused_image_fails_the_job_without_launching() {
        use crate::children::fixtures;
        use crate::lifecycle::{Action, Observation, decide};
        use ferry_api::{MigrationJobStatus, Phase};
        let job = fixtures::job(fixtures::S3_TO_PVC);
        let mut spec = job.spec.clone();
        if let Some(runner) = spec.runner.as_mut() {
            runner.image = Some("evil.example/runner".into());
        }
        let refused = TenancyPolicy::default().check_runner_image("ferry-runner:1", &spec).unwrap_err();
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH);
        let decision = decide(Observation {
            job: &crate::children::fixtures::identity(),
            spec: &spec,
            generation: Some(1),
            status: MigrationJobStatus::default(),
            bindings: Err(refused),
            credential_versions: None,
            attempt_launched: false,
            shards: vec![],
            objects_failed: 0,
            now,
        });
        assert_eq!(decision.action, Action::None);
        assert_eq!(decision.status.phase, Some(Phase::Failed));
        assert_eq!(decision.status.attempts, 0, "nothing was launched");
        let failed = decision.status.conditions.iter().find(|c| c.type_ == "Failed").unwrap();
        assert_eq!((failed.status.as_str(), failed.reason.as_str()), ("True", "RunnerImageNotAllowed"));
        assert!(failed.message.contains("spec.runner.image") && failed.message.contains("--runner-image-allowlist"));
    }
}
