//! The write token for a rotated OAuth refresh token (docs/design.md, "OAuth drives"): a
//! Vault token that may touch only the binding's own secret, minted through a token role and
//! response-wrapped, so the operator never holds it nor any credential it could write.

use std::time::Duration;

use ferry_api::binding::{CredentialBindingSpec, VaultSecretReference};
use zeroize::Zeroizing;

use super::transport::Call;
use super::wrap::WrappedCredentials;
use super::{Vault, VaultError};

/// How many requests a write token may make: one rotation costs four (metadata, read,
/// Transit encryption, check-and-set write) and a long run sees one an hour at most.
const WRITE_TOKEN_USES: u32 = 200;

/// The name of the policy for writes to one secret (the same secret, the same name).
pub fn policy_name(reference: &VaultSecretReference) -> String {
    use sha2::Digest;
    let identity =
        format!("{}\n{}\n{:?}\n{}", reference.mount, reference.path, reference.transit_key, reference.transit_mount);
    let digest = hex::encode(sha2::Sha256::digest(identity.as_bytes()));
    format!("ferry-rotate-{}", &digest[..20])
}

/// The policy (HCL) of a write token: read and check-and-set write of the one secret (the
/// runner already holds every field of it), its metadata for the current version, the
/// binding's Transit key for encryption only, and revoking itself.
pub fn policy(reference: &VaultSecretReference) -> String {
    let (mount, path) = (&reference.mount, &reference.path);
    let mut rules = format!(
        "path \"{mount}/data/{path}\" {{ capabilities = [\"read\", \"create\", \"update\"] }}\n\
         path \"{mount}/metadata/{path}\" {{ capabilities = [\"read\"] }}\n\
         path \"auth/token/revoke-self\" {{ capabilities = [\"update\"] }}\n"
    );
    if let Some(key) = &reference.transit_key {
        rules.push_str(&format!(
            "path \"{}/encrypt/{key}\" {{ capabilities = [\"update\"] }}\n",
            reference.transit_mount
        ));
    }
    rules
}

impl Vault {
    /// Writes the secret's write policy and asks the token role `role` for a token holding
    /// only it, living `lifetime`, wrapped for `wrap_ttl`: the runner unwraps it and stores a
    /// rotated refresh token with it.
    pub async fn mint_write_token(
        &self,
        spec: &CredentialBindingSpec,
        role: &str,
        lifetime: Duration,
        wrap_ttl: Duration,
    ) -> Result<WrappedCredentials, VaultError> {
        let Some(reference) = spec.vault.as_ref() else {
            return Err(VaultError::NoSecretReference { context: format!("minting a {} write token", spec.provider) });
        };
        let context = format!("minting the write token for {}/{}", reference.mount, reference.path);
        let name = policy_name(reference);
        let policy_path = format!("sys/policies/acl/{name}");
        let body = json_body(&serde_json::json!({ "policy": policy(reference) }))?;
        self.send(Call::post(policy_path.as_str(), body), None).await.map_err(|error| {
            error.into_error(
                &context,
                self.address_text(),
                &policy_path,
                "grant the operator's Vault policy `create` and `update` on sys/policies/acl/ferry-rotate-*",
            )
        })?;
        let create_path = format!("auth/token/create/{role}");
        let body = json_body(&serde_json::json!({
            "policies": [name],
            "ttl": format!("{}s", lifetime.as_secs().max(60)),
            "explicit_max_ttl": format!("{}s", lifetime.as_secs().max(60)),
            "num_uses": WRITE_TOKEN_USES,
            "renewable": false,
            "display_name": "ferry-rotation",
        }))?;
        let answer = self.send(Call::post(create_path.as_str(), body), Some(format!("{}s", wrap_ttl.as_secs()))).await;
        let body = answer.map_err(|error| {
            error.into_error(
                &context,
                self.address_text(),
                &create_path,
                &format!(
                    "create the token role {role:?} (allowed_policies_glob=\"ferry-rotate-*\", orphan=true) and grant \
                     the operator's Vault policy `update` on {create_path}, or turn rotation off with \
                     FERRY_VAULT_ROTATION_ROLE=\"\""
                ),
            )
        })?;
        self.wrapped(&context, &create_path, &body)
    }
}

fn json_body(value: &serde_json::Value) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    serde_json::to_vec(value)
        .map(Zeroizing::new)
        .map_err(|error| VaultError::Config(format!("encoding a Vault request: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(yaml: &str) -> VaultSecretReference {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn the_policy_reaches_the_one_secret_and_nothing_else() {
        let plain = reference("{path: tenants/team-a/drive}");
        let rules = policy(&plain);
        assert!(rules.contains("path \"secret/data/tenants/team-a/drive\""), "{rules}");
        assert!(rules.contains("path \"secret/metadata/tenants/team-a/drive\" { capabilities = [\"read\"] }"));
        assert!(!rules.contains("encrypt") && !rules.contains('*'), "{rules}");
        let encrypted = reference("{path: tenants/team-a/drive, transitKey: team-a}");
        assert!(policy(&encrypted).contains("path \"transit/encrypt/team-a\" { capabilities = [\"update\"] }"));
        assert_ne!(policy_name(&plain), policy_name(&encrypted));
        assert_eq!(policy_name(&plain), policy_name(&reference("{path: tenants/team-a/drive}")));
        assert!(policy_name(&plain).starts_with("ferry-rotate-"));
    }
}
