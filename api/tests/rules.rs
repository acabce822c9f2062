//! Each CEL rule, one accepted and one refused case, with the message it must give; plus
//! the transition (immutability) rules and a cost check of every expression.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

use ferry_api::validate::{validate, validate_job_update};
use serde_json::{Value, json};

fn job(spec_changes: Value) -> Value {
    let mut job = json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "MigrationJob", "metadata": {"name": "j"},
        "spec": {"source": {"binding": "src", "path": "data/"}, "destination": {"binding": "dst", "path": "copy/"}}
    });
    merge(&mut job["spec"], spec_changes);
    job
}

fn binding(spec: Value) -> Value {
    json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "CredentialBinding", "metadata": {"name": "b"}, "spec": spec})
}

fn merge(target: &mut Value, changes: Value) {
    match (target, changes) {
        (Value::Object(target), Value::Object(changes)) => {
            for (key, value) in changes {
                merge(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (target, changes) => *target = changes,
    }
}

fn refused_with(value: &Value) -> String {
    match validate(value) {
        Ok(_) => panic!("accepted: {value}"),
        Err(violations) => violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"),
    }
}

fn assert_accepted(value: &Value) {
    if let Err(violations) = validate(value) {
        panic!("refused {value}: {violations:?}");
    }
}

#[test]
fn delete_extraneous_needs_sync() {
    assert_accepted(&job(json!({"mode": "sync", "deleteExtraneous": true})));
    let message = refused_with(&job(json!({"deleteExtraneous": true})));
    assert!(message.contains("spec.deleteExtraneous is only allowed with spec.mode: sync"), "{message}");
}

#[test]
fn max_delete_and_trash_path_need_delete_extraneous() {
    assert_accepted(&job(json!({"mode": "sync", "deleteExtraneous": true, "maxDelete": 5, "trashPath": "t/"})));
    let message = refused_with(&job(json!({"mode": "sync", "maxDelete": 5})));
    assert!(message.contains("spec.maxDelete is only allowed with spec.deleteExtraneous: true"), "{message}");
    let message = refused_with(&job(json!({"mode": "sync", "trashPath": "t/"})));
    assert!(message.contains("spec.trashPath is only allowed with spec.deleteExtraneous: true"), "{message}");
}

#[test]
fn paths_stay_inside_the_binding() {
    for ok in ["", "a/b/", "a..b/c", "..hidden/x", "a/.../b"] {
        assert_accepted(&job(json!({"source": {"path": ok}})));
    }
    for bad in ["/abs", "..", "../x", "a/..", "a/../b"] {
        let message = refused_with(&job(json!({"source": {"path": bad}})));
        assert!(message.contains("spec.source.path") && message.contains("relative path"), "{bad}: {message}");
    }
}

#[test]
fn a_job_may_not_copy_into_itself() {
    assert_accepted(&job(json!({"destination": {"binding": "src", "path": "data-copy/"}})));
    assert_accepted(&job(json!({"destination": {"binding": "src", "path": "dat"}})));
    for (source, destination) in
        [("data/", "data/x/"), ("data", "data/x"), ("data/x", "data"), ("", "y/"), ("a/", "a/")]
    {
        let message = refused_with(&job(
            json!({"source": {"path": source}, "destination": {"binding": "src", "path": destination}}),
        ));
        assert!(message.contains("spec.destination overlaps spec.source"), "{source} {destination}: {message}");
    }
}

#[test]
fn size_and_time_windows_are_ordered() {
    assert_accepted(&job(json!({"filter": {"minSize": "1Ki", "maxSize": 2048}})));
    let message = refused_with(&job(json!({"filter": {"minSize": "1Gi", "maxSize": "1Mi"}})));
    assert!(message.contains("spec.filter.minSize must not be larger than spec.filter.maxSize"), "{message}");
    assert_accepted(&job(
        json!({"filter": {"modifiedAfter": "2024-01-01T00:00:00Z", "modifiedBefore": "2025-01-01T00:00:00Z"}}),
    ));
    let message = refused_with(&job(
        json!({"filter": {"modifiedAfter": "2025-01-01T00:00:00Z", "modifiedBefore": "2024-01-01T00:00:00Z"}}),
    ));
    assert!(message.contains("spec.filter.modifiedAfter must be earlier"), "{message}");
}

#[test]
fn limits_must_be_positive() {
    assert_accepted(&job(json!({"bandwidthLimit": "100Mi", "runner": {"spoolSize": "1Gi"}})));
    assert_accepted(&job(json!({"bandwidthLimit": 1, "runner": {"spoolSize": "1.5"}})));
    let message = refused_with(&job(json!({"bandwidthLimit": "0"})));
    assert!(message.contains("spec.bandwidthLimit must be greater than zero"), "{message}");
    let message = refused_with(&job(json!({"runner": {"spoolSize": 0}})));
    assert!(message.contains("spec.runner.spoolSize must be greater than zero"), "{message}");
    // Rust rounds a fraction of a byte down, so admission refuses what would round to zero.
    let message = refused_with(&job(json!({"bandwidthLimit": "0.999999999"})));
    assert!(message.contains("at least 1 byte"), "{message}");
}

/// Puts a value at one field of a job's spec.
type Place = fn(Value) -> Value;

/// Every quantity field, at and just below the limit (2^64 bytes): the CEL rule and the
/// Rust parser draw the line in the same place, in every suffix (issue #11).
#[test]
fn quantities_stay_below_two_to_the_64_bytes() {
    let fields: [(&str, Place); 4] = [
        ("spec.filter.minSize", |v| json!({"filter": {"minSize": v}})),
        ("spec.filter.maxSize", |v| json!({"filter": {"maxSize": v}})),
        ("spec.bandwidthLimit", |v| json!({"bandwidthLimit": v})),
        ("spec.runner.spoolSize", |v| json!({"runner": {"spoolSize": v}})),
    ];
    let below = ["18446744073709551615", "15.999999999Ei", "17179869183Gi", "16383.999999999Pi", "18.446744073E"];
    let at_or_above = ["16Ei", "17179869184Gi", "16384Pi", "18446744073709551616", "18.446744074E", "99Ei"];
    for (field, place) in fields {
        for text in below {
            assert_accepted(&job(place(json!(text))));
            assert!(ferry_api::ByteQuantity::parse(text).is_ok(), "{text}");
        }
        for text in at_or_above {
            let message = refused_with(&job(place(json!(text))));
            assert!(message.contains(field) && message.contains("below 16Ei"), "{field} {text}: {message}");
            assert!(ferry_api::ByteQuantity::parse(text).is_err(), "{text}");
            // The CLI stops at Rust's decoding; the API server has only the CEL rule, which
            // must refuse the same values on its own.
            let errors = cel_errors(&job(place(json!(text))));
            assert!(errors.iter().any(|e| e.contains(field) && e.contains("must be below 16Ei")), "{text}: {errors:?}");
        }
        for text in below {
            assert!(cel_errors(&job(place(json!(text)))).is_empty(), "{field} {text}");
        }
        // Beyond the pattern's digits, or too precise for the API server to keep exact.
        for text in ["99999Ei", "1.0000000001Ki", "123456789012345678901"] {
            let message = refused_with(&job(place(json!(text))));
            assert!(message.contains(field), "{field} {text}: {message}");
            assert!(ferry_api::ByteQuantity::parse(text).is_err(), "{text}");
        }
        assert_accepted(&job(place(json!(9_007_199_254_740_991_u64))));
        let message = refused_with(&job(place(json!(9_007_199_254_740_992_u64))));
        assert!(message.contains(field), "{field}: {message}");
    }
}

/// The CEL rules alone, as the API server runs them (no Rust decoding first).
fn cel_errors(value: &Value) -> Vec<String> {
    use kube::core::cel::{Validator, compile_schema};
    let schema = ferry_api::crd::open_api_schema(&ferry_api::crd::definitions()[1].1);
    match Validator::new().validate_compiled(&compile_schema(&schema), value, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| format!("{}: {}", e.field_path, e.message)).collect(),
    }
}

#[test]
fn counts_are_bounded_to_their_rust_types() {
    use ferry_api::crd;
    let schema = crd::open_api_schema(&crd::definitions()[1].1);
    let status = &schema["properties"]["status"]["properties"];
    for field in ["attempts", "failedAttempts"] {
        assert_eq!(status[field]["maximum"], json!(f64::from(u32::MAX)), "{field}");
    }
    let spec = &schema["properties"]["spec"]["properties"];
    for field in ["transfers", "shards", "retries"] {
        assert!(spec[field]["maximum"].as_f64().is_some_and(|max| max <= f64::from(u32::MAX)), "{field}");
    }
}

#[test]
fn exactly_the_named_provider_block() {
    assert_accepted(&binding(json!({"provider": "s3", "s3": {"bucket": "bkt"}, "vault": {"path": "tenants/a/b"}})));
    let message = refused_with(&binding(json!({"provider": "s3", "vault": {"path": "tenants/a/b"}})));
    assert!(message.contains("spec.s3 must be set exactly when spec.provider is s3"), "{message}");
    let message = refused_with(&binding(json!({
        "provider": "gcs", "gcs": {"bucket": "bkt"}, "webdav": {"endpoint": "https://dav"}, "vault": {"path": "x"}
    })));
    assert!(message.contains("spec.webdav must be set exactly when spec.provider is webdav"), "{message}");
}

#[test]
fn vault_is_required_except_for_filesystems() {
    assert_accepted(&binding(json!({"provider": "fs", "fs": {"root": "/data"}})));
    let message = refused_with(&binding(json!({"provider": "s3", "s3": {"bucket": "bkt"}})));
    assert!(message.contains("spec.vault is required for every provider except fs"), "{message}");
    let message = refused_with(&binding(json!({"provider": "fs", "fs": {"root": "/d"}, "vault": {"path": "x"}})));
    assert!(message.contains("spec.vault"), "{message}");
}

#[test]
fn source_destination_and_mode_are_immutable() {
    let old = job(json!({}));
    assert!(validate_job_update(&old, &job(json!({"transfers": 32}))).is_ok());
    for (field, change) in [
        ("spec.source is immutable", json!({"source": {"path": "other/"}})),
        ("spec.destination is immutable", json!({"destination": {"binding": "elsewhere"}})),
        ("spec.mode is immutable", json!({"mode": "sync"})),
    ] {
        let violations = validate_job_update(&old, &job(change)).unwrap_err();
        let message = violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        assert!(message.contains(field), "{field}: {message}");
    }
}

#[test]
fn every_rule_compiles_and_stays_inside_the_cost_budget() {
    use kube::core::cel::{ScopeContext, analyze_rule, compile_schema};
    for (file, definition) in ferry_api::crd::definitions() {
        let schema = ferry_api::crd::open_api_schema(&definition);
        let compiled = compile_schema(&schema);
        assert!(!compiled.has_errors(), "{file}: {:?}", compiled.compilation_errors());
        let mut rules = Vec::new();
        collect_rules(&schema, &mut rules);
        assert!(rules.len() >= 5, "{file}: only {} rules", rules.len());
        for (rule, node) in rules {
            let compiled_node = compile_schema(&node);
            let warnings = analyze_rule(&rule, &compiled_node, ScopeContext::CrdValidation);
            assert!(warnings.is_empty(), "{file}: {rule}: {warnings:?}");
        }
    }
}

fn collect_rules(node: &Value, out: &mut Vec<(String, Value)>) {
    if let Some(map) = node.as_object() {
        if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
            for rule in rules {
                out.push((rule["rule"].as_str().unwrap_or_default().to_owned(), node.clone()));
            }
        }
        map.values().for_each(|child| collect_rules(child, out));
    } else if let Some(items) = node.as_array() {
        items.iter().for_each(|child| collect_rules(child, out));
    }
}

#[test]
fn filesystem_roots_are_never_mounted_over_the_runners_own_paths() {
    use ferry_api::binding::{RUNNER_RESERVED_MOUNTS, RUNNER_RESERVED_TREES, is_plain_root, mounts_over};
    let fs = |root: &str| binding(json!({"provider": "fs", "fs": {"root": root, "claimName": "data"}}));
    let accepted = ["/data", "/data/", "/etcetera", "/usr-data", "/tmp/run-1", "/mnt/spool", "./local", "./../up"];
    for root in accepted {
        assert_accepted(&fs(root));
        assert!(is_plain_root(root) && !mounts_over(root, &RUNNER_RESERVED_TREES, &RUNNER_RESERVED_MOUNTS), "{root}");
    }
    let reserved =
        ["/", "/etc", "/etc/", "/etc/ferry", "/usr/local/x", "/bin", "/proc", "/dev", "/spool", "/tmp", "/tmp/"];
    for root in reserved {
        let message = refused_with(&fs(root));
        assert!(message.contains("spec.fs.root would be mounted over the runner's own files"), "{root}: {message}");
        assert!(mounts_over(root, &RUNNER_RESERVED_TREES, &RUNNER_RESERVED_MOUNTS), "{root}");
    }
    for root in ["/data/../etc", "//etc", "/./etc", "/data/.", "/data/.."] {
        let message = refused_with(&fs(root));
        assert!(message.contains("spec.fs.root must be a plain absolute path"), "{root}: {message}");
        assert!(!is_plain_root(root), "{root}");
    }
}
