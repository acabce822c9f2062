//! The per-attempt Secret: for every shard its own single-use Vault wrapping tokens, its own
//! progress token and the digest of its plan; plus the accessors of every wrapping token, so
//! the operator can revoke the unused ones when the attempt ends. Never a provider
//! credential: those stay in Vault until a runner unwraps them.
//!
//! Each runner pod mounts only its own shard's keys (secret volume `items`), so one shard
//! can neither use up another's tokens nor report progress in its name.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{KeyToPath, Secret};
use zeroize::Zeroizing;

use super::Attempt;
use crate::names;

pub use ferry_api::contract::{
    DESTINATION_ROTATION_TOKEN_FILE, DESTINATION_TOKEN_FILE, PLAN_DIGEST_FILE, PROGRESS_TOKEN_FILE,
    SOURCE_ROTATION_TOKEN_FILE, SOURCE_TOKEN_FILE,
};

/// The Secret key listing the Vault accessors of the attempt's wrapping tokens, one a line.
/// Never mounted into a pod: an accessor is of use only to a token allowed to revoke by it.
pub const WRAPPING_ACCESSORS_KEY: &str = "wrapping-accessors";

/// The Secret key of shard `index`'s copy of `file` (one of the credential files).
pub fn shard_key(index: u32, file: &str) -> String {
    format!("shard-{index}-{file}")
}

/// The tokens of one shard of an attempt.
pub struct ShardTokens {
    /// The source's wrapping token, when the source keeps credentials in Vault.
    pub source: Option<Zeroizing<String>>,
    /// The destination's wrapping token, likewise.
    pub destination: Option<Zeroizing<String>>,
    /// The source's wrapped write token, for a provider that rotates refresh tokens.
    pub source_write: Option<Zeroizing<String>>,
    /// The destination's wrapped write token, likewise.
    pub destination_write: Option<Zeroizing<String>>,
    /// The token this shard authenticates progress reports with.
    pub progress: Zeroizing<String>,
    /// The hex SHA-256 of this shard's plan file.
    pub plan_digest: String,
}

impl std::fmt::Debug for ShardTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardTokens")
            .field("source", &self.source.as_ref().map(|_| "<wrapped>"))
            .field("destination", &self.destination.as_ref().map(|_| "<wrapped>"))
            .field("source_write", &self.source_write.as_ref().map(|_| "<wrapped>"))
            .field("destination_write", &self.destination_write.as_ref().map(|_| "<wrapped>"))
            .field("progress", &"<redacted>")
            .field("plan_digest", &self.plan_digest)
            .finish()
    }
}

/// The attempt's Secret: `shards[i]` is shard `i`'s.
pub fn secret(attempt: &Attempt<'_>, shards: &[ShardTokens], accessors: &[String]) -> Secret {
    let mut data = BTreeMap::new();
    for (index, tokens) in (0u32..).zip(shards) {
        let mut put = |file: &str, value: &[u8]| {
            data.insert(shard_key(index, file), ByteString(value.to_vec()));
        };
        if let Some(token) = &tokens.source {
            put(SOURCE_TOKEN_FILE, token.as_bytes());
        }
        if let Some(token) = &tokens.destination {
            put(DESTINATION_TOKEN_FILE, token.as_bytes());
        }
        if let Some(token) = &tokens.source_write {
            put(SOURCE_ROTATION_TOKEN_FILE, token.as_bytes());
        }
        if let Some(token) = &tokens.destination_write {
            put(DESTINATION_ROTATION_TOKEN_FILE, token.as_bytes());
        }
        put(PROGRESS_TOKEN_FILE, tokens.progress.as_bytes());
        put(PLAN_DIGEST_FILE, tokens.plan_digest.as_bytes());
    }
    if !accessors.is_empty() {
        data.insert(WRAPPING_ACCESSORS_KEY.to_owned(), ByteString(accessors.join("\n").into_bytes()));
    }
    Secret {
        metadata: attempt.metadata(names::attempt_object(&attempt.identity.name, attempt.attempt)),
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        immutable: Some(true),
        ..Secret::default()
    }
}

/// The secret volume items of shard `index`: its own keys, under the file names the runner
/// reads. A binding without Vault credentials has no token key.
pub fn shard_items(attempt: &Attempt<'_>, index: u32) -> Vec<KeyToPath> {
    let mut files = Vec::new();
    if attempt.source.secret_creation_path.is_some() {
        files.push(SOURCE_TOKEN_FILE);
    }
    if attempt.destination.secret_creation_path.is_some() {
        files.push(DESTINATION_TOKEN_FILE);
    }
    if attempt.source.rotation_creation_path.is_some() {
        files.push(SOURCE_ROTATION_TOKEN_FILE);
    }
    if attempt.destination.rotation_creation_path.is_some() {
        files.push(DESTINATION_ROTATION_TOKEN_FILE);
    }
    files.extend([PROGRESS_TOKEN_FILE, PLAN_DIGEST_FILE]);
    files.into_iter().map(|file| KeyToPath { key: shard_key(index, file), path: file.to_owned(), mode: None }).collect()
}

/// The wrapping-token accessors recorded in an attempt's Secret.
pub fn accessors_of(secret: &Secret) -> Vec<String> {
    let Some(bytes) = secret.data.as_ref().and_then(|data| data.get(WRAPPING_ACCESSORS_KEY)) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&bytes.0).lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

/// Shard `index`'s progress token in an attempt's Secret.
pub fn progress_token_of(secret: &Secret, index: u32) -> Option<Zeroizing<String>> {
    let bytes = secret.data.as_ref()?.get(&shard_key(index, PROGRESS_TOKEN_FILE))?;
    Some(Zeroizing::new(String::from_utf8_lossy(&bytes.0).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::fixtures;

    fn tokens(shard: u32, source: bool) -> ShardTokens {
        ShardTokens {
            source: source.then(|| Zeroizing::new(format!("hvs.wrapping-{shard}"))),
            destination: None,
            source_write: None,
            destination_write: None,
            progress: Zeroizing::new(format!("progress-{shard}")),
            plan_digest: format!("digest-{shard}"),
        }
    }

    #[test]
    fn holds_each_shards_own_tokens_and_the_accessors() {
        let job = fixtures::job(fixtures::S3_TO_PVC);
        let attempt = fixtures::attempt(&job);
        let secret = secret(&attempt, &[tokens(0, true), tokens(1, true)], &["a0".into(), "a1".into()]);
        let keys: Vec<_> = secret.data.as_ref().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "shard-0-plan-digest",
                "shard-0-progress-token",
                "shard-0-source-token",
                "shard-1-plan-digest",
                "shard-1-progress-token",
                "shard-1-source-token",
                WRAPPING_ACCESSORS_KEY,
            ]
        );
        assert_eq!(secret.immutable, Some(true));
        assert_eq!(secret.metadata.owner_references.as_ref().unwrap()[0].uid, "u-1");
        assert_eq!(accessors_of(&secret), ["a0", "a1"]);
        assert_eq!(progress_token_of(&secret, 1).as_deref().map(String::as_str), Some("progress-1"));
        assert!(progress_token_of(&secret, 2).is_none());
        assert!(!format!("{:?}", tokens(0, true)).contains("hvs.wrapping"));
    }

    #[test]
    fn a_pod_mounts_only_its_own_shards_keys() {
        let job = fixtures::job(fixtures::S3_TO_PVC);
        let attempt = fixtures::attempt(&job);
        let items = shard_items(&attempt, 1);
        let pairs: Vec<(&str, &str)> = items.iter().map(|i| (i.key.as_str(), i.path.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("shard-1-source-token", SOURCE_TOKEN_FILE),
                ("shard-1-progress-token", PROGRESS_TOKEN_FILE),
                ("shard-1-plan-digest", PLAN_DIGEST_FILE),
            ],
            "the fs destination has no token; the accessors are never mounted"
        );
    }
}
