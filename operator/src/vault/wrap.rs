//! Response-wrapped reads for a runner attempt. The real read (the KV v2 read, or the
//! Transit batch decryption of the KV's ciphertext) is sent with `X-Vault-Wrap-TTL`, so
//! its plaintext exists only inside Vault's wrapped response: the operator gets a
//! single-use token whose `creation_path` names that read.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use ferry_api::binding::{CredentialBindingSpec, VaultSecretReference};
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use zeroize::Zeroizing;

use super::binding_check::FieldNames;
use super::transport::{Call, CallError, zeroizing_string};
use super::{Vault, VaultError, json_problem};

/// A single-use wrapping token for one binding's credentials, to hand to a runner.
pub struct WrappedCredentials {
    /// The wrapping token (never printed).
    pub token: Zeroizing<String>,
    /// The path of the read Vault wrapped; equals [`VaultSecretReference::creation_path`].
    pub creation_path: String,
    /// When Vault forgets the token (Vault's creation time plus the TTL it granted).
    pub expires_at: jiff::Timestamp,
    /// For Transit: the field names in the order of the batch decryption; empty for KV.
    pub fields: Vec<String>,
    /// The token's accessor, to revoke it by if no runner used it.
    pub accessor: String,
}

impl fmt::Debug for WrappedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedCredentials")
            .field("token", &"<hidden>")
            .field("creation_path", &self.creation_path)
            .field("expires_at", &self.expires_at)
            .field("fields", &self.fields)
            .field("accessor", &self.accessor)
            .finish()
    }
}

impl Vault {
    /// Asks Vault for the binding's credentials wrapped in a token that lives for `ttl`
    /// (whole seconds, at least one): the KV v2 read itself without a Transit key, or one
    /// Transit batch decryption of the KV's ciphertext fields with one.
    pub async fn wrap_credentials(
        &self,
        spec: &CredentialBindingSpec,
        ttl: Duration,
    ) -> Result<WrappedCredentials, VaultError> {
        let Some(reference) = spec.vault.as_ref() else {
            return Err(VaultError::NoSecretReference { context: format!("wrapping {} credentials", spec.provider) });
        };
        let context = format!("wrapping the credentials at {}/{}", reference.mount, reference.path);
        if ttl.as_secs() == 0 {
            return Err(VaultError::Config(format!("{context}: the wrapping TTL must be at least one second")));
        }
        let wrap_ttl = format!("{}s", ttl.as_secs());
        let (body, fields) = match &reference.transit_key {
            None => {
                let answer = self.send(Call::get(reference.kv_data_path()), Some(wrap_ttl)).await;
                (answer.map_err(|error| self.kv_error(&context, reference, error))?, Vec::new())
            }
            Some(key) => self.wrap_transit(&context, spec, reference, key, wrap_ttl).await?,
        };
        let mut wrapped = self.wrapped(&context, &reference.creation_path(), &body)?;
        wrapped.fields = fields;
        Ok(wrapped)
    }

    /// The wrapping token in Vault's answer `body`, checked to come from `creation_path`.
    pub(super) fn wrapped(
        &self,
        context: &str,
        creation_path: &str,
        body: &[u8],
    ) -> Result<WrappedCredentials, VaultError> {
        let malformed = |detail: String| VaultError::Malformed {
            context: context.to_owned(),
            path: creation_path.to_owned(),
            detail,
        };
        let parsed: WrappedAnswer = serde_json::from_slice(body).map_err(|error| malformed(json_problem(&error)))?;
        // Without wrap_info the body held the plaintext itself: it is wiped, never used.
        let info = parsed.wrap_info.ok_or_else(|| malformed("Vault did not wrap the response".to_owned()))?;
        if info.creation_path != creation_path {
            return Err(malformed(format!(
                "the wrapping token was created by {}, not {creation_path}",
                info.creation_path
            )));
        }
        let granted = jiff::SignedDuration::from_secs(i64::try_from(info.ttl).unwrap_or(i64::MAX));
        // Vault's clock decides when the token dies; fall back to ours if its time is odd.
        let created = info.creation_time.parse::<jiff::Timestamp>().unwrap_or_else(|_| jiff::Timestamp::now());
        let expires_at = created.checked_add(granted).unwrap_or(jiff::Timestamp::MAX);
        Ok(WrappedCredentials {
            token: info.token,
            creation_path: creation_path.to_owned(),
            expires_at,
            fields: Vec::new(),
            accessor: info.accessor,
        })
    }

    /// Reads the KV ciphertext (safe to see) and sends one wrapped batch decryption of it.
    async fn wrap_transit(
        &self,
        context: &str,
        spec: &CredentialBindingSpec,
        reference: &VaultSecretReference,
        key: &str,
        wrap_ttl: String,
    ) -> Result<(Zeroizing<Vec<u8>>, Vec<String>), VaultError> {
        let kv_path = reference.kv_data_path();
        let body = self
            .send(Call::get(kv_path.as_str()), None)
            .await
            .map_err(|error| self.kv_error(context, reference, error))?;
        let parsed: CiphertextAnswer = serde_json::from_slice(&body).map_err(|error| VaultError::Malformed {
            context: context.to_owned(),
            path: kv_path.clone(),
            detail: json_problem(&error),
        })?;
        let Some(CiphertextData { data: Some(StringFields(ciphertexts)), metadata }) = parsed.data else {
            return Err(VaultError::SecretNotFound {
                context: context.to_owned(),
                mount: reference.mount.clone(),
                path: reference.path.clone(),
            });
        };
        // Refuse early rather than hand a runner a token that cannot work.
        let names = FieldNames { names: ciphertexts.keys().cloned().collect(), version: metadata.version };
        names.require(context, spec.provider, reference)?;

        let batch = BatchInput {
            batch_input: ciphertexts.values().map(|ciphertext| BatchItem { ciphertext: ciphertext.as_str() }).collect(),
        };
        let decrypt_path = reference.creation_path();
        let request = Zeroizing::new(serde_json::to_vec(&batch).map_err(|error| VaultError::Malformed {
            context: context.to_owned(),
            path: decrypt_path.clone(),
            detail: json_problem(&error),
        })?);
        let answer = self.send(Call::post(decrypt_path.as_str(), request), Some(wrap_ttl)).await;
        let body = answer.map_err(|error| self.transit_error(context, &decrypt_path, key, error))?;
        Ok((body, ciphertexts.into_keys().collect()))
    }

    fn transit_error(&self, context: &str, path: &str, key: &str, error: CallError) -> VaultError {
        let hint = format!("grant the operator's Vault policy `update` on {path}");
        match error {
            CallError::Status { code: 400, errors } => VaultError::Api {
                context: context.to_owned(),
                path: path.to_owned(),
                status: 400,
                message: format!(
                    "{} (is Transit key {key:?} there, and do the fields hold its ciphertext?)",
                    errors.join("; ")
                ),
            },
            other => other.into_error(context, self.address_text(), path, &hint),
        }
    }
}

#[derive(Deserialize)]
struct WrappedAnswer {
    wrap_info: Option<WrapInfo>,
}

#[derive(Deserialize)]
struct WrapInfo {
    #[serde(deserialize_with = "zeroizing_string")]
    token: Zeroizing<String>,
    ttl: u64,
    creation_time: String,
    creation_path: String,
    #[serde(default)]
    accessor: String,
}

#[derive(Serialize)]
struct BatchInput<'a> {
    batch_input: Vec<BatchItem<'a>>,
}

#[derive(Serialize)]
struct BatchItem<'a> {
    ciphertext: &'a str,
}

#[derive(Deserialize)]
struct CiphertextAnswer {
    data: Option<CiphertextData>,
}

#[derive(Deserialize)]
struct CiphertextData {
    data: Option<StringFields>,
    metadata: CiphertextMetadata,
}

#[derive(Deserialize)]
struct CiphertextMetadata {
    version: u64,
}

/// The non-empty string fields of a JSON object, in name order (the batch order).
struct StringFields(BTreeMap<String, Zeroizing<String>>);

impl<'de> Deserialize<'de> for StringFields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = StringFields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of secret fields")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StringFields, A::Error> {
                let mut fields = BTreeMap::new();
                while let Some(name) = map.next_key::<String>()? {
                    if let Some(value) = map.next_value::<MaybeString>()?.0 {
                        fields.insert(name, value);
                    }
                }
                Ok(StringFields(fields))
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// A non-empty string value, or `None` for anything else (skipped without copying).
struct MaybeString(Option<Zeroizing<String>>);

impl<'de> Deserialize<'de> for MaybeString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Check;
        impl<'de> Visitor<'de> for Check {
            type Value = MaybeString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<MaybeString, E> {
                Ok(MaybeString((!value.is_empty()).then(|| Zeroizing::new(value.to_owned()))))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<MaybeString, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeString(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MaybeString, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MaybeString(None))
            }
        }
        deserializer.deserialize_any(Check)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_token() {
        let wrapped = WrappedCredentials {
            token: Zeroizing::new("s.very-secret-wrapping-token".into()),
            creation_path: "secret/data/a".into(),
            expires_at: jiff::Timestamp::UNIX_EPOCH,
            fields: vec![],
            accessor: "acc".into(),
        };
        let printed = format!("{wrapped:?}");
        assert!(printed.contains("secret/data/a"));
        assert!(!printed.contains("very-secret"));
    }

    #[test]
    fn ciphertext_fields_keep_strings_in_name_order() {
        let body = br#"{"data":{"data":{"z":"vault:v1:z","a":"vault:v1:a","n":3,"e":""},"metadata":{"version":2}}}"#;
        let answer: CiphertextAnswer = serde_json::from_slice(body).unwrap();
        let fields = answer.data.unwrap().data.unwrap().0;
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        assert_eq!(names, ["a", "z"]);
        assert_eq!(fields["z"].as_str(), "vault:v1:z");
    }
}
