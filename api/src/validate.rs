//! Client-side admission: the checks the API server runs on a Ferry manifest, so the CLI
//! rejects exactly what a cluster rejects, with messages that name the field.
//!
//! Three layers, each from the one source of truth the API server also uses:
//! the CRD's OpenAPI schema (types, enums, bounds, patterns), its CEL rules (evaluated
//! with kube's client-side CEL interpreter), and strict field validation (unknown fields
//! are refused, never silently dropped).

use std::fmt;
use std::sync::LazyLock;

use kube::core::cel::{CompiledSchema, Validator, compile_schema};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::binding::CredentialBinding;
use crate::crd;
use crate::job::MigrationJob;

/// One reason a manifest was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The field at fault, as a dotted path (`spec.transfers`, `spec.filter.include[0]`).
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.field, self.message) }
    }
}

/// A refused manifest: which document and every reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Invalid {
    /// `Kind/name` (or the document number when it has none).
    pub document: String,
    /// The reasons, in the order the checks found them.
    pub violations: Vec<Violation>,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is invalid:", self.document)?;
        for violation in &self.violations {
            write!(f, "\n  - {violation}")?;
        }
        Ok(())
    }
}

/// A validated Ferry resource.
#[derive(Clone, Debug)]
pub enum Manifest {
    /// A `MigrationJob`.
    MigrationJob(Box<MigrationJob>),
    /// A `CredentialBinding`.
    CredentialBinding(Box<CredentialBinding>),
}

/// Why a YAML stream could not be read as manifests.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not YAML at all.
    #[error("document {document}: not valid YAML: {source}")]
    Yaml {
        /// The document's position in the stream, from 1.
        document: usize,
        /// The parser's complaint.
        source: serde_yaml::Error,
    },
    /// YAML, but refused by admission.
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

/// Parses and validates every document of a YAML stream (empty documents are skipped).
pub fn parse_manifests(yaml: &str) -> Result<Vec<Manifest>, ManifestError> {
    let mut manifests = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let value: Value = serde::Deserialize::deserialize(document)
            .map_err(|source| ManifestError::Yaml { document: index + 1, source })?;
        if value.is_null() {
            continue;
        }
        manifests.push(
            validate(&value).map_err(|violations| Invalid { document: describe(&value, index + 1), violations })?,
        );
    }
    Ok(manifests)
}

fn describe(value: &Value, position: usize) -> String {
    let kind = value.get("kind").and_then(Value::as_str);
    let name = value.pointer("/metadata/name").and_then(Value::as_str);
    match (kind, name) {
        (Some(kind), Some(name)) => format!("{kind}/{name}"),
        _ => format!("document {position}"),
    }
}

/// Validates one object as the API server would on create.
pub fn validate(value: &Value) -> Result<Manifest, Vec<Violation>> {
    let api_version = value.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    if api_version != "ferry.dev/v1alpha1" {
        return Err(vec![violation("apiVersion", format!("must be ferry.dev/v1alpha1, not {api_version:?}"))]);
    }
    match value.get("kind").and_then(Value::as_str) {
        Some("MigrationJob") => {
            check::<MigrationJob>(&JOB_RULES, value, None).map(|job| Manifest::MigrationJob(Box::new(job)))
        }
        Some("CredentialBinding") => check::<CredentialBinding>(&BINDING_RULES, value, None)
            .map(|binding| Manifest::CredentialBinding(Box::new(binding))),
        other => Err(vec![violation("kind", format!("must be MigrationJob or CredentialBinding, not {other:?}"))]),
    }
}

/// Validates a change to a `MigrationJob` (immutable fields included).
pub fn validate_job_update(old: &Value, new: &Value) -> Result<MigrationJob, Vec<Violation>> {
    check::<MigrationJob>(&JOB_RULES, new, Some(old))
}

/// The compiled checks of one kind.
struct KindRules {
    structure: Option<jsonschema::Validator>,
    cel: CompiledSchema,
}

impl KindRules {
    fn new(crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition) -> Self {
        let schema = crd::open_api_schema(crd);
        let structure = jsonschema::options().should_validate_formats(true).build(&as_json_schema(schema.clone())).ok();
        let cel = compile_schema(&schema);
        Self { structure, cel }
    }
}

static JOB_RULES: LazyLock<KindRules> = LazyLock::new(|| KindRules::new(&crd::definitions()[1].1));
static BINDING_RULES: LazyLock<KindRules> = LazyLock::new(|| KindRules::new(&crd::definitions()[0].1));

fn check<T: DeserializeOwned>(rules: &KindRules, value: &Value, old: Option<&Value>) -> Result<T, Vec<Violation>> {
    let mut violations = metadata_violations(value);
    match &rules.structure {
        Some(structure) => violations.extend(
            structure
                .iter_errors(value)
                .map(|error| violation(&dotted(&error.instance_path().to_string()), explain(&error))),
        ),
        None => violations.push(violation("", "internal error: the CRD schema does not compile")),
    }
    if !violations.is_empty() {
        return Err(violations);
    }
    // Strict field validation: unknown fields are refused, not pruned.
    let typed: T = serde_path_to_error::deserialize(value)
        .map_err(|error| vec![violation(&error.path().to_string(), error.inner().to_string())])?;
    let validator = Validator::new();
    if let Err(errors) = validator.validate_compiled(&rules.cel, value, old) {
        return Err(errors.iter().map(|error| violation(&error.field_path, error.message.clone())).collect());
    }
    Ok(typed)
}

/// The validator's words, with a hint instead of a bare regular expression.
fn explain(error: &jsonschema::ValidationError<'_>) -> String {
    if let jsonschema::error::ValidationErrorKind::Pattern { pattern } = error.kind() {
        let hint = crate::names::pattern_hint(pattern).map_or_else(|| format!("must match {pattern}"), str::to_owned);
        return format!("{} is not valid here; {hint}", error.instance());
    }
    error.to_string()
}

fn metadata_violations(value: &Value) -> Vec<Violation> {
    match value.pointer("/metadata/name").and_then(Value::as_str) {
        None => vec![violation("metadata.name", "is required; give the resource a name")],
        Some(name) if !is_dns_subdomain(name) => vec![violation(
            "metadata.name",
            format!("{name:?} must be a lowercase DNS-1123 name: letters, digits, '-' and '.', at most 253 characters"),
        )],
        Some(_) => Vec::new(),
    }
}

fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn violation(field: &str, message: impl Into<String>) -> Violation {
    Violation { field: field.to_owned(), message: message.into() }
}

/// `/spec/filter/include/0` → `spec.filter.include[0]`.
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for segment in pointer.split('/').filter(|s| !s.is_empty()) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&segment);
        }
    }
    out
}

/// Turns OpenAPI's `nullable: true` into JSON Schema's `type: [T, "null"]`, so a standard
/// JSON-schema validator reads a CRD schema as the API server does.
pub fn as_json_schema(mut schema: Value) -> Value {
    fn walk(node: &mut Value) {
        match node {
            Value::Object(map) => {
                if map.get("nullable") == Some(&Value::Bool(true))
                    && let Some(Value::String(kind)) = map.get("type").cloned()
                {
                    map.insert("type".into(), serde_json::json!([kind, "null"]));
                }
                map.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut schema);
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_become_dotted_paths() {
        assert_eq!(dotted("/spec/filter/include/0"), "spec.filter.include[0]");
        assert_eq!(dotted(""), "");
    }

    #[test]
    fn dns_names() {
        assert!(is_dns_subdomain("legacy-s3"));
        assert!(is_dns_subdomain("a.b-c"));
        assert!(!is_dns_subdomain("Legacy"));
        assert!(!is_dns_subdomain("-a"));
        assert!(!is_dns_subdomain("a..b"));
    }
}
