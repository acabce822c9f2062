//! Reading objects that may not decode. One tenant's object whose body the Rust types
//! cannot hold (a value an older CRD admitted, a field from a newer version) must not stop
//! the watch of every other object: [`Guarded`] decodes each object on its own and keeps
//! an undecodable one as its metadata and the path of the field at fault, like kube's
//! `DeserializeGuard`, which keeps only the error's text.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// A `K` as the API server sent it, or why it does not decode.
#[derive(Clone, Debug)]
pub struct Guarded<K>(pub Result<K, Box<Undecodable>>);

/// An object whose body does not decode as its Rust type.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Undecodable {
    /// The field at fault, as a dotted path (`spec.filter.maxSize`).
    pub field: String,
    /// What the decoder said about it.
    pub message: String,
    /// The object's metadata (the API server validated it, so it always decodes).
    pub metadata: ObjectMeta,
    /// The status conditions as they were, when those decode (to keep transition times).
    pub conditions: Vec<Condition>,
}

/// Decodes `value` as a `K`, naming the field at fault when it does not decode.
pub fn decode<K: DeserializeOwned>(value: &serde_json::Value) -> Result<K, Box<Undecodable>> {
    serde_path_to_error::deserialize::<_, K>(value).map_err(|error| {
        let part = |pointer: &str| value.pointer(pointer).cloned().unwrap_or_default();
        Box::new(Undecodable {
            field: error.path().to_string(),
            message: error.inner().to_string(),
            metadata: serde_json::from_value(part("/metadata")).unwrap_or_default(),
            conditions: serde_json::from_value(part("/status/conditions")).unwrap_or_default(),
        })
    })
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Guarded<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(Self(decode(&value)))
    }
}

impl<K: Resource> Resource for Guarded<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        self.0.as_ref().map_or_else(|invalid| &invalid.metadata, K::meta)
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.as_mut().map_or_else(|invalid| &mut invalid.metadata, K::meta_mut)
    }
}

/// A namespaced API for `K` whose responses are never decoded as `K`: status writes and
/// reads of objects that may not decode go through it, so a write that succeeded is never
/// reported as failed (and retried forever) because the object's spec is unreadable.
pub fn untyped_api<K: Resource<DynamicType = ()>>(client: kube::Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client, namespace, &ApiResource::erase::<K>(&()))
}

/// Merge-patches `patch` into the status of `K` `name`, without decoding the response as `K`.
pub async fn patch_status<K: Resource<DynamicType = ()>>(
    client: kube::Client,
    namespace: &str,
    name: &str,
    params: &PatchParams,
    patch: &serde_json::Value,
) -> Result<(), kube::Error> {
    untyped_api::<K>(client, namespace).patch_status(name, params, &Patch::Merge(patch)).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use ferry_api::MigrationJob;
    use serde_json::json;

    use super::*;

    fn job(max_size: serde_json::Value) -> serde_json::Value {
        json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "MigrationJob",
            "metadata": {"name": "bad", "namespace": "team-b", "uid": "u-1", "generation": 3},
            "spec": {"source": {"binding": "a"}, "destination": {"binding": "b"}, "filter": {"maxSize": max_size}},
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Running", "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        })
    }

    #[test]
    fn an_undecodable_object_keeps_its_metadata_and_names_the_field() {
        let Err(invalid) = decode::<MigrationJob>(&job(json!("99999Ei"))) else { panic!("decoded") };
        assert_eq!(invalid.field, "spec.filter.maxSize");
        assert!(invalid.message.contains("\"99999Ei\" is not a byte quantity"), "{}", invalid.message);
        assert_eq!(invalid.metadata.name.as_deref(), Some("bad"));
        assert_eq!(invalid.metadata.generation, Some(3));
        assert_eq!(invalid.conditions.len(), 1);
    }

    #[test]
    fn a_list_with_one_bad_object_still_decodes() {
        let list = json!([job(json!("99999Ei")), job(json!("5Gi"))]);
        let items: Vec<Guarded<MigrationJob>> = serde_json::from_value(list).unwrap();
        assert!(items[0].0.is_err());
        let good = items[1].0.as_ref().unwrap();
        assert_eq!(good.spec.filter.as_ref().and_then(|f| f.max_size.as_ref()).map(|q| q.bytes()), Some(5 << 30));
        assert_eq!(items[0].meta().uid.as_deref(), Some("u-1"), "the bad one keeps its identity");
    }
}
