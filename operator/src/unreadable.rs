//! What the controllers do with an object that does not decode ([`Guarded`] holding an
//! [`Undecodable`]): say which field is wrong, on the object itself (a Warning Event, and
//! `Ready=False`/`Stalled=True` written with a merge patch that needs no typed decode), then
//! wait until the object changes. Every other object keeps reconciling meanwhile.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Resource;
use kube::api::PatchParams;

use crate::conditions;
use crate::context::Context;
use crate::error::Error;
use crate::guard::{self, Guarded, Undecodable};

/// The condition and Event reason of an object that does not decode.
pub const REASON: &str = "InvalidSpec";

/// What is wrong, naming the field, and what happens until it is fixed.
pub fn message(kind: &str, invalid: &Undecodable) -> String {
    format!(
        "{}: {}; the operator cannot read this {kind} until that field is fixed (other objects are unaffected)",
        invalid.field, invalid.message
    )
}

/// The status merge patch that reports `message` on conditions `types`, or `None` when the
/// status already says exactly that (so a resync writes nothing and publishes no Event).
pub fn status_patch(types: &[&str], invalid: &Undecodable, message: &str, now: &Time) -> Option<serde_json::Value> {
    let generation = invalid.metadata.generation;
    let next = conditions::unreadable_conditions(types, REASON, message, generation, &invalid.conditions, now);
    let same = |a: &Condition, b: &Condition| {
        (&a.type_, &a.status, &a.reason, &a.message, a.observed_generation)
            == (&b.type_, &b.status, &b.reason, &b.message, b.observed_generation)
    };
    if next.iter().all(|c| invalid.conditions.iter().any(|p| same(c, p))) {
        return None;
    }
    // observedGeneration too: kstatus reads a stale one as "in progress", not as stalled.
    Some(serde_json::json!({ "status": { "observedGeneration": generation, "conditions": next } }))
}

/// Reports `invalid` on the object: conditions `types` and a Warning Event, once per change.
pub async fn report<K>(
    object: &Guarded<K>,
    invalid: &Undecodable,
    types: &[&str],
    context: &Context,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()>,
{
    let kind = K::kind(&()).into_owned();
    let (Some(namespace), Some(name)) = (invalid.metadata.namespace.as_deref(), invalid.metadata.name.as_deref())
    else {
        return Err(Error::Incomplete(format!("a {kind} that does not decode")));
    };
    let message = message(&kind, invalid);
    tracing::warn!(kind, namespace, name, field = %invalid.field, error = %invalid.message, "cannot decode");
    context.metrics.failed(&kind, REASON);
    let now = Time(jiff::Timestamp::now());
    if let Some(patch) = status_patch(types, invalid, &message, &now) {
        guard::patch_status::<K>(context.client.clone(), namespace, name, &PatchParams::default(), &patch).await?;
        context.event(object, true, REASON, message).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(conditions: Vec<Condition>) -> Undecodable {
        Undecodable {
            field: "spec.filter.maxSize".into(),
            message: "\"99999Ei\" is not a byte quantity".into(),
            metadata: kube::api::ObjectMeta { generation: Some(4), ..Default::default() },
            conditions,
        }
    }

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn the_message_names_the_field_and_the_consequence() {
        let text = message("MigrationJob", &invalid(vec![]));
        assert!(text.starts_with("spec.filter.maxSize: \"99999Ei\" is not a byte quantity;"), "{text}");
        assert!(text.contains("cannot read this MigrationJob"), "{text}");
    }

    #[test]
    fn the_first_report_writes_stalled_and_a_repeat_writes_nothing() {
        let types = conditions::JOB_CONDITIONS;
        let first = status_patch(&types, &invalid(vec![]), "m", &at(1)).expect("a first write");
        assert_eq!(first["status"]["observedGeneration"], 4);
        let written: Vec<Condition> = serde_json::from_value(first["status"]["conditions"].clone()).unwrap();
        let stalled = written.iter().find(|c| c.type_ == "Stalled").unwrap();
        assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", REASON));
        let ready = written.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(status_patch(&types, &invalid(written.clone()), "m", &at(2)), None);
        assert!(status_patch(&types, &invalid(written), "another field", &at(2)).is_some());
    }
}
