//! Checking a binding's secret: it exists and holds the fields its provider needs. Values
//! are never kept: the KV answer is parsed into field names only, and its body is wiped.

use std::collections::BTreeSet;
use std::fmt;

use ferry_api::binding::{CredentialBindingSpec, Provider, VaultSecretReference};
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::transport::{Call, CallError};
use super::{Vault, VaultError, json_problem};

/// What a successful check learned (never a value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecretCheck {
    /// The KV v2 version that was checked.
    pub version: u64,
}

impl Vault {
    /// Checks that the binding's KV v2 secret exists and holds, for every group of
    /// [`Provider::required_secret_fields`], at least one non-empty field. Transit-encrypted
    /// secrets are checked the same way, without decrypting.
    pub async fn check_binding(
        &self,
        binding_name: &str,
        spec: &CredentialBindingSpec,
    ) -> Result<SecretCheck, VaultError> {
        let context = format!("binding {binding_name}");
        let reference =
            spec.vault.as_ref().ok_or_else(|| VaultError::NoSecretReference { context: context.clone() })?;
        let secret = self.read_field_names(&context, reference).await?;
        secret.require(&context, spec.provider, reference)?;
        Ok(SecretCheck { version: secret.version })
    }

    /// Reads the KV v2 secret and keeps only the names of its non-empty string fields.
    pub(super) async fn read_field_names(
        &self,
        context: &str,
        reference: &VaultSecretReference,
    ) -> Result<FieldNames, VaultError> {
        let path = reference.kv_data_path();
        let body = self
            .send(Call::get(path.as_str()), None)
            .await
            .map_err(|error| self.kv_error(context, reference, error))?;
        let parsed: KvAnswer = serde_json::from_slice(&body).map_err(|error| VaultError::Malformed {
            context: context.to_owned(),
            path: path.clone(),
            detail: json_problem(&error),
        })?;
        match parsed.data {
            Some(KvData { data: Some(names), metadata }) => {
                Ok(FieldNames { names: names.0, version: metadata.version })
            }
            // A deleted or destroyed latest version reads as no data.
            _ => Err(not_found(context, reference)),
        }
    }

    /// The meaning of a failed KV v2 read.
    pub(super) fn kv_error(&self, context: &str, reference: &VaultSecretReference, error: CallError) -> VaultError {
        if error.status() == Some(404) {
            return not_found(context, reference);
        }
        let hint = format!("grant the operator's Vault policy `read` on {}", reference.kv_data_path());
        error.into_error(context, self.address_text(), &reference.kv_data_path(), &hint)
    }
}

fn not_found(context: &str, reference: &VaultSecretReference) -> VaultError {
    VaultError::SecretNotFound {
        context: context.to_owned(),
        mount: reference.mount.clone(),
        path: reference.path.clone(),
    }
}

/// The names of a secret's usable fields and its version.
pub(super) struct FieldNames {
    pub(super) names: BTreeSet<String>,
    pub(super) version: u64,
}

impl FieldNames {
    /// Fails with `MissingField` naming every requirement none of whose alternatives is present.
    pub(super) fn require(
        &self,
        context: &str,
        provider: Provider,
        reference: &VaultSecretReference,
    ) -> Result<(), VaultError> {
        let missing: Vec<Vec<String>> = provider
            .required_secret_fields()
            .iter()
            .filter(|alternatives| !alternatives.iter().any(|name| self.names.contains(*name)))
            .map(|alternatives| alternatives.iter().map(|name| (*name).to_owned()).collect())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(VaultError::MissingField {
            context: context.to_owned(),
            mount: reference.mount.clone(),
            path: reference.path.clone(),
            missing,
            transit_key: reference.transit_key.clone(),
        })
    }
}

#[derive(Deserialize)]
struct KvAnswer {
    data: Option<KvData>,
}

#[derive(Deserialize)]
struct KvData {
    data: Option<UsableFields>,
    metadata: KvMetadata,
}

#[derive(Deserialize)]
struct KvMetadata {
    version: u64,
}

/// The keys of a JSON object whose values are non-empty strings; the values are looked at
/// in place (borrowed from the body, which is wiped afterwards) and never copied out.
struct UsableFields(BTreeSet<String>);

impl<'de> Deserialize<'de> for UsableFields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = UsableFields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of secret fields")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UsableFields, A::Error> {
                let mut names = BTreeSet::new();
                while let Some(name) = map.next_key::<String>()? {
                    if map.next_value::<Usable>()?.0 {
                        names.insert(name);
                    }
                }
                Ok(UsableFields(names))
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// Whether a value is a non-empty string, without keeping it.
struct Usable(bool);

impl<'de> Deserialize<'de> for Usable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Check;
        impl<'de> Visitor<'de> for Check {
            type Value = Usable;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Usable, E> {
                Ok(Usable(!value.is_empty()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Usable, E> {
                Ok(Usable(false))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Usable, E> {
                Ok(Usable(false))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Usable, E> {
                Ok(Usable(false))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Usable, E> {
                Ok(Usable(false))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Usable, E> {
                Ok(Usable(false))
            }
            fn visit_none<E: de::Error>(self) -> Result<Usable, E> {
                Ok(Usable(false))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Usable, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Usable(false))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Usable, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Usable(false))
            }
        }
        deserializer.deserialize_any(Check)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_of_non_empty_strings_are_kept() {
        let body = br#"{"data":{"data":{"a":"x","b":"","c":1,"d":{"e":"f"},"g":["h"],"i":null,"j":"\u00e9"},
            "metadata":{"version":7}}}"#;
        let answer: KvAnswer = serde_json::from_slice(body).unwrap();
        let data = answer.data.unwrap();
        assert_eq!(data.metadata.version, 7);
        let names: Vec<String> = data.data.unwrap().0.into_iter().collect();
        assert_eq!(names, ["a", "j"]);
    }
}
