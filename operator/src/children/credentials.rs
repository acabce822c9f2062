//! The per-attempt Secret: single-use Vault wrapping tokens and the attempt's progress
//! token. Never a provider credential: those stay in Vault until the runner unwraps them.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use zeroize::Zeroizing;

use super::Attempt;
use crate::names;

pub use ferry_api::contract::{
    DESTINATION_TOKEN_FILE as DESTINATION_TOKEN_KEY, PROGRESS_TOKEN_FILE as PROGRESS_TOKEN_KEY,
    SOURCE_TOKEN_FILE as SOURCE_TOKEN_KEY,
};

/// The tokens of one attempt.
pub struct AttemptTokens {
    /// The source's wrapping token, when the source keeps credentials in Vault.
    pub source: Option<Zeroizing<String>>,
    /// The destination's wrapping token, likewise.
    pub destination: Option<Zeroizing<String>>,
    /// The token runners authenticate progress reports with.
    pub progress: Zeroizing<String>,
}

impl std::fmt::Debug for AttemptTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptTokens")
            .field("source", &self.source.as_ref().map(|_| "<wrapped>"))
            .field("destination", &self.destination.as_ref().map(|_| "<wrapped>"))
            .field("progress", &"<redacted>")
            .finish()
    }
}

/// The attempt's Secret.
pub fn secret(attempt: &Attempt<'_>, tokens: &AttemptTokens) -> Secret {
    let mut data = BTreeMap::new();
    let mut put = |key: &str, value: &Zeroizing<String>| {
        data.insert(key.to_owned(), ByteString(value.as_bytes().to_vec()));
    };
    if let Some(token) = &tokens.source {
        put(SOURCE_TOKEN_KEY, token);
    }
    if let Some(token) = &tokens.destination {
        put(DESTINATION_TOKEN_KEY, token);
    }
    put(PROGRESS_TOKEN_KEY, &tokens.progress);
    Secret {
        metadata: attempt.metadata(names::attempt_object(&attempt.identity.name, attempt.attempt)),
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        immutable: Some(true),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::fixtures;

    #[test]
    fn holds_only_the_tokens() {
        let job = fixtures::job(fixtures::S3_TO_PVC);
        let attempt = fixtures::attempt(&job);
        let tokens = AttemptTokens {
            source: Some(Zeroizing::new("hvs.wrapping".into())),
            destination: None,
            progress: Zeroizing::new("progress".into()),
        };
        let secret = secret(&attempt, &tokens);
        let keys: Vec<_> = secret.data.as_ref().unwrap().keys().cloned().collect();
        assert_eq!(keys, [PROGRESS_TOKEN_KEY, SOURCE_TOKEN_KEY]);
        assert_eq!(secret.immutable, Some(true));
        assert_eq!(secret.metadata.owner_references.unwrap()[0].uid, "u-1");
        assert!(!format!("{tokens:?}").contains("hvs.wrapping"));
    }
}
