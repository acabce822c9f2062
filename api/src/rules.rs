//! Every admission rule that is not a plain schema bound: the CEL expression the API
//! server runs, next to the message that names the field and says how to fix it.
//!
//! These rules are written into the CRDs by `#[x_kube(validation = ...)]` and the same
//! expressions are evaluated client-side by [`crate::validate`] (through kube's CEL
//! interpreter), so the CLI and the API server cannot drift apart. Every string and list
//! a rule touches has a `maxLength`/`maxItems` bound in the schema, so the API server's
//! cost estimate stays far inside its budget.

use kube::core::{Message, Reason, Rule};

/// The providers a `CredentialBinding` can name, in the order the CRD lists them.
pub const PROVIDERS: [&str; 9] = ["s3", "azblob", "gcs", "webdav", "sftp", "fs", "onedrive", "gdrive", "dropbox"];

fn rule(expression: impl Into<String>, message: impl Into<String>) -> Rule {
    Rule::new(expression).message(Message::Message(message.into()))
}

/// A relative object path: no leading `/` and no `..` segment.
pub fn relative_path() -> Rule {
    rule(
        "!self.startsWith('/') && self != '..' && !self.startsWith('../') \
         && !self.endsWith('/..') && !self.contains('/../')",
        "must be a relative path inside the binding: remove the leading '/' and any '..' segment",
    )
}

/// A field that may not change after creation.
pub fn immutable(field: &str, fix: &str) -> Rule {
    rule("self == oldSelf", format!("{field} is immutable once set; {fix}")).reason(Reason::FieldValueForbidden)
}

/// Every byte quantity is below [`crate::quantity::LIMIT`] (2^64 bytes), so whatever the
/// API server admits fits the operator's and runner's `u64` byte counts. Generic on
/// purpose: it sits on the quantity type itself, and the API server names the field.
pub fn byte_quantity_limit() -> Rule {
    rule(
        format!("quantity(string(self)).compareTo(quantity('{}')) < 0", crate::quantity::LIMIT),
        format!(
            "must be below {} (2^64 bytes, the most Ferry can count); write a smaller quantity such as 5Gi",
            crate::quantity::LIMIT
        ),
    )
}

/// A quantity of at least one byte: Ferry rounds a fraction of a byte down, so "0.5" would
/// mean zero.
pub fn positive_quantity(field: &str) -> Rule {
    rule(
        "quantity(string(self)).compareTo(quantity('1')) >= 0",
        format!(
            "{field} must be greater than zero (at least 1 byte; fractions of a byte are rounded down); \
             write a quantity such as 100Mi, or remove the field"
        ),
    )
}

/// `deleteExtraneous` needs `mode: sync`.
pub fn delete_only_when_syncing() -> Rule {
    rule(
        "!self.deleteExtraneous || self.mode == 'sync'",
        "spec.deleteExtraneous is only allowed with spec.mode: sync; set mode: sync or remove deleteExtraneous",
    )
    .field_path(".deleteExtraneous")
}

/// `maxDelete` and `trashPath` mean something only when deletion is on.
pub fn needs_delete_extraneous(field: &str) -> Rule {
    rule(
        format!("!has(self.{field}) || self.deleteExtraneous"),
        format!("spec.{field} is only allowed with spec.deleteExtraneous: true; set deleteExtraneous: true or remove {field}"),
    )
    .field_path(format!(".{field}"))
}

/// A job may not copy a tree into itself (or into its own ancestor).
pub fn source_and_destination_differ() -> Rule {
    // Paths are compared as directories ("a" covers "a/b" but not "ab"); "" is the root.
    let dir = |side: &str| {
        format!(
            "(self.{side}.path == '' ? '' : (self.{side}.path.endsWith('/') ? self.{side}.path : self.{side}.path + '/'))"
        )
    };
    let (source, destination) = (dir("source"), dir("destination"));
    rule(
        format!(
            "self.source.binding != self.destination.binding || \
             !({source}.startsWith({destination}) || {destination}.startsWith({source}))"
        ),
        "spec.destination overlaps spec.source: with the same binding, neither path may contain the other; \
         choose a destination path outside the source path, or another binding",
    )
    .field_path(".destination.path")
}

/// `minSize` may not exceed `maxSize`.
pub fn min_size_not_above_max_size() -> Rule {
    rule(
        "!has(self.minSize) || !has(self.maxSize) || \
         quantity(string(self.minSize)).compareTo(quantity(string(self.maxSize))) <= 0",
        "spec.filter.minSize must not be larger than spec.filter.maxSize; lower minSize or raise maxSize",
    )
    .field_path(".minSize")
}

/// `modifiedAfter` must come before `modifiedBefore`.
pub fn time_window_in_order() -> Rule {
    rule(
        "!has(self.modifiedAfter) || !has(self.modifiedBefore) || self.modifiedAfter < self.modifiedBefore",
        "spec.filter.modifiedAfter must be earlier than spec.filter.modifiedBefore; swap or correct the two times",
    )
    .field_path(".modifiedAfter")
}

/// The settings block named `provider` is present, and only that one.
pub fn provider_block(provider: &str) -> Rule {
    rule(
        format!("(self.provider == '{provider}') == has(self.{provider})"),
        format!(
            "spec.{provider} must be set exactly when spec.provider is {provider}: \
             give the block that spec.provider names and remove every other provider block"
        ),
    )
    .field_path(format!(".{provider}"))
}

/// Every provider except `fs` takes its credentials from Vault.
pub fn vault_unless_filesystem() -> Rule {
    rule(
        "self.provider == 'fs' ? !has(self.vault) : has(self.vault)",
        "spec.vault is required for every provider except fs (name the KV v2 secret that holds the credentials), \
         and must be removed for provider fs",
    )
    .field_path(".vault")
}

/// The directory form of an `fs` root in CEL: with exactly one trailing `/`.
const ROOT_AS_DIRECTORY: &str = "(self.endsWith('/') ? self : self + '/')";

/// An absolute `fs` root has no `.` or `..` segment and no `//`, so the reserved-path rule
/// below cannot be dodged by spelling (`/data/../etc`).
pub fn plain_filesystem_root() -> Rule {
    rule(
        "!self.startsWith('/') || !(self.contains('//') || self.contains('/./') || self.endsWith('/.') \
         || self.contains('/../') || self.endsWith('/..'))",
        "spec.fs.root must be a plain absolute path: remove '.' and '..' segments and doubled '/'",
    )
}

/// An absolute `fs` root is not mounted over the runner's own paths (see
/// [`crate::binding::RUNNER_RESERVED_TREES`] and [`crate::binding::RUNNER_RESERVED_MOUNTS`]).
pub fn filesystem_root_not_reserved() -> Rule {
    use crate::binding::{RUNNER_RESERVED_MOUNTS, RUNNER_RESERVED_TREES};
    // Spelled out per directory rather than with `.all()`: the rule stays a plain conjunction
    // whose cost and scope both the API server and kube's analyser can judge.
    let trees = RUNNER_RESERVED_TREES.iter().map(|tree| {
        format!("!({ROOT_AS_DIRECTORY}.startsWith('{tree}/') || '{tree}/'.startsWith({ROOT_AS_DIRECTORY}))")
    });
    let mounts = RUNNER_RESERVED_MOUNTS.iter().map(|mount| format!("!'{mount}/'.startsWith({ROOT_AS_DIRECTORY})"));
    let conditions: Vec<String> = trees.chain(mounts).collect();
    rule(
        format!("!self.startsWith('/') || ({})", conditions.join(" && ")),
        format!(
            "spec.fs.root would be mounted over the runner's own files: it may not be /, lie inside or above {}, \
             or be or lie above {}; mount the volume at another directory such as /data",
            RUNNER_RESERVED_TREES.join(", "),
            RUNNER_RESERVED_MOUNTS.join(", ")
        ),
    )
}
