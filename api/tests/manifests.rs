//! Examples are accepted, every invalid manifest is refused with a message that names its
//! field, and the checked-in CRDs are what the generator writes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

use std::path::{Path, PathBuf};

use ferry_api::validate::{Manifest, parse_manifests, validate};
use ferry_api::{CredentialBinding, MigrationJob, crd};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_files(directory: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![directory.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") && !path.ends_with("kustomization.yaml") {
                // A kustomization (examples/gitops) lists manifests; it is not one.
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn checked_in_crds_are_current() {
    for (file, definition) in crd::definitions() {
        let expected = crd::to_yaml(&definition).unwrap();
        let actual = std::fs::read_to_string(repository().join("crds").join(file)).unwrap_or_default();
        assert!(
            actual == expected,
            "crds/{file} is stale: run `cargo run -p ferry-api --bin ferry-crdgen` and commit the result"
        );
    }
}

#[test]
fn every_example_is_accepted_by_the_schema_and_the_rules() {
    let schemas: Vec<_> = crd::definitions()
        .iter()
        .map(|(_, definition)| (definition.spec.names.kind.clone(), crd::open_api_schema(definition)))
        .collect();
    let files = yaml_files(&repository().join("examples"));
    assert!(files.len() >= 4, "examples are missing: {files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // An independent JSON-schema validator, straight on the generated schema.
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_json::Value = serde::Deserialize::deserialize(document).unwrap();
            let kind = value["kind"].as_str().unwrap();
            let (_, schema) = schemas.iter().find(|(k, _)| k == kind).unwrap();
            let checker = jsonschema::validator_for(&ferry_api::validate::as_json_schema(schema.clone())).unwrap();
            let errors: Vec<String> = checker.iter_errors(&value).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{}: {errors:?}", file.display());
        }
        if let Err(error) = parse_manifests(&text) {
            panic!("{} is refused: {error}", file.display());
        }
    }
}

#[test]
fn every_invalid_manifest_is_refused_with_a_message_naming_its_field() {
    let files = yaml_files(&repository().join("tests/manifests/invalid"));
    assert!(files.len() >= 25, "only {} invalid manifests", files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expected: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# expect: ")).collect();
        assert!(!expected.is_empty(), "{} has no `# expect:` line", file.display());
        let error = match parse_manifests(&text) {
            Ok(_) => panic!("{} was accepted", file.display()),
            Err(error) => error.to_string(),
        };
        let first_line_of_each = error.clone();
        for needle in expected {
            assert!(first_line_of_each.contains(needle), "{}: {needle:?} not in:\n{error}", file.display());
        }
    }
}

#[test]
fn every_valid_manifest_is_accepted_and_decodes() {
    let files = yaml_files(&repository().join("tests/manifests/valid"));
    assert!(!files.is_empty(), "tests/manifests/valid is empty");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let manifests = parse_manifests(&text).unwrap_or_else(|error| panic!("{} is refused: {error}", file.display()));
        // What admission accepts, the operator's typed decoding reads back (issue #11).
        for manifest in manifests {
            if let Manifest::MigrationJob(job) = manifest {
                let json = serde_json::to_value(&job).unwrap();
                let again: MigrationJob = serde_json::from_value(json).unwrap();
                assert_eq!(again.spec, job.spec, "{}", file.display());
            }
        }
    }
}

#[test]
fn a_minimal_job_gets_every_default() {
    let text = "apiVersion: ferry.dev/v1alpha1\nkind: MigrationJob\nmetadata: {name: m}\n\
                spec: {source: {binding: a}, destination: {binding: b}}\n";
    let Manifest::MigrationJob(job) = parse_manifests(text).unwrap().remove(0) else { panic!("not a job") };
    let spec = &job.spec;
    assert_eq!(spec.source.path, "");
    assert_eq!(spec.mode, ferry_api::Mode::Copy);
    assert_eq!(spec.conflict, ferry_api::Conflict::SkipIdentical);
    assert_eq!(spec.verify, ferry_api::VerifyMode::Checksum);
    assert_eq!((spec.transfers, spec.shards, spec.failure_budget, spec.retries), (16, 1, 10, 3));
    assert!(!spec.delete_extraneous && !spec.dry_run && !spec.suspend);
}

#[test]
fn the_schema_carries_the_defaults_kubectl_shows() {
    let schema = crd::open_api_schema(&crd::definitions()[1].1);
    let spec = &schema["properties"]["spec"]["properties"];
    assert_eq!(spec["transfers"]["default"], 16);
    assert_eq!(spec["mode"]["default"], "copy");
    assert_eq!(spec["verify"]["default"], "checksum");
    assert_eq!(spec["source"]["properties"]["path"]["default"], "");
}

#[test]
fn full_manifests_survive_a_round_trip() {
    for file in yaml_files(&repository().join("examples")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for manifest in parse_manifests(&text).unwrap() {
            match manifest {
                Manifest::MigrationJob(job) => {
                    let again: MigrationJob = serde_yaml::from_str(&serde_yaml::to_string(&job).unwrap()).unwrap();
                    assert_eq!(again.spec, job.spec);
                }
                Manifest::CredentialBinding(binding) => {
                    let again: CredentialBinding =
                        serde_yaml::from_str(&serde_yaml::to_string(&binding).unwrap()).unwrap();
                    assert_eq!(again.spec, binding.spec);
                }
            }
        }
    }
}

#[test]
fn crds_carry_names_columns_and_the_status_subresource() {
    for (_, definition) in crd::definitions() {
        let names = &definition.spec.names;
        assert_eq!(names.categories.as_deref(), Some(&["ferry".to_owned()][..]));
        let version = &definition.spec.versions[0];
        assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
        assert!(version.additional_printer_columns.as_ref().is_some_and(|c| c.len() >= 3));
        let yaml = crd::to_yaml(&definition).unwrap();
        assert!(yaml.contains("x-kubernetes-validations"));
        assert!(!yaml.contains("additionalProperties: false"), "structural schemas may not forbid properties");
    }
    assert_eq!(crd::definitions()[1].1.spec.names.short_names.as_deref(), Some(&["mj".to_owned()][..]));
    assert_eq!(crd::definitions()[0].1.spec.names.short_names.as_deref(), Some(&["cb".to_owned()][..]));
}

#[test]
fn other_kinds_are_refused() {
    let value = serde_json::json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Pod", "metadata": {"name": "x"}});
    let violations = validate(&value).unwrap_err();
    assert_eq!(violations[0].field, "kind");
}
