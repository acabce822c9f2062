//! The Helm chart `charts/ferry`, checked with a real `helm` (installed by
//! `scripts/install-test-deps.sh`): `helm lint --strict`, the template matrix (defaults,
//! namespaced RBAC, cert-manager, monitoring), bad values refused with the schema's message,
//! the rendered Deployment's hardening, CRDs identical to `crds/`, and RBAC equal to
//! `ferry_operator::access` (which the controllers' calls are checked against).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferry_operator::access::{OWN_NAMESPACE, Rule, WATCHED_NAMESPACES};
use serde::Deserialize;
use serde_yaml::Value;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn helm() -> PathBuf {
    let tools = std::env::var_os("FERRY_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/ferry/tools"));
    let bundled = tools.join("bin/helm");
    if bundled.exists() {
        return bundled;
    }
    PathBuf::from("helm")
}

fn run_helm(args: &[&str]) -> Output {
    Command::new(helm())
        .args(args)
        .current_dir(repository())
        .output()
        .unwrap_or_else(|e| panic!("cannot run helm ({e}): run scripts/install-test-deps.sh first"))
}

/// `helm template` with `--set` values; panics with helm's words if it fails.
fn template(sets: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", "ferry", "charts/ferry", "--namespace", "ferry-system"];
    for set in sets {
        args.extend(["--set", set]);
    }
    let output = run_helm(&args);
    assert!(output.status.success(), "helm template {sets:?}: {}", String::from_utf8_lossy(&output.stderr));
    serde_yaml::Deserializer::from_slice(&output.stdout)
        .map(|document| Value::deserialize(document).unwrap())
        .filter(|document| !document.is_null())
        .collect()
}

fn of_kind<'a>(documents: &'a [Value], kind: &str) -> Vec<&'a Value> {
    documents.iter().filter(|document| document["kind"] == kind).collect()
}

/// `(group, resource, verb)` of every rule.
fn granted(rules: &Value) -> BTreeSet<(String, String, String)> {
    let mut granted = BTreeSet::new();
    for rule in rules.as_sequence().unwrap() {
        let list = |key: &str| -> Vec<String> {
            rule[key].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
        };
        for group in list("apiGroups") {
            for resource in list("resources") {
                for verb in list("verbs") {
                    granted.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    granted
}

fn expected(rules: &[Rule]) -> BTreeSet<(String, String, String)> {
    rules
        .iter()
        .flat_map(|rule| {
            rule.verbs.iter().map(|verb| (rule.group.to_owned(), rule.resource.to_owned(), (*verb).to_owned()))
        })
        .collect()
}

#[test]
fn the_chart_passes_helm_lint_strict() {
    let output = run_helm(&["lint", "--strict", "charts/ferry"]);
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_charts_crds_are_the_generated_ones() {
    for entry in std::fs::read_dir(repository().join("crds")).unwrap() {
        let path = entry.unwrap().path();
        let copy = repository().join("charts/ferry/crds").join(path.file_name().unwrap());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(&copy).unwrap_or_default(),
            "{} differs from {}: cp crds/*.yaml charts/ferry/crds/",
            copy.display(),
            path.display()
        );
    }
}

#[test]
fn rbac_grants_exactly_what_the_operator_calls() {
    let documents = template(&[]);
    let cluster_roles = of_kind(&documents, "ClusterRole");
    assert_eq!(cluster_roles.len(), 1);
    assert_eq!(granted(&cluster_roles[0]["rules"]), expected(WATCHED_NAMESPACES));
    let roles = of_kind(&documents, "Role");
    assert_eq!(roles.len(), 1, "one Role, for the Lease");
    assert_eq!(roles[0]["metadata"]["namespace"], "ferry-system");
    assert_eq!(granted(&roles[0]["rules"]), expected(OWN_NAMESPACE));

    // Namespaced: a Role per watched namespace instead of the ClusterRole, and the Lease's.
    let documents = template(&["rbac.namespaced=true", "watchNamespaces={team-a,team-b}"]);
    assert!(of_kind(&documents, "ClusterRole").is_empty() && of_kind(&documents, "ClusterRoleBinding").is_empty());
    let roles = of_kind(&documents, "Role");
    for namespace in ["team-a", "team-b"] {
        let role = roles.iter().find(|role| role["metadata"]["namespace"] == namespace).unwrap();
        assert_eq!(granted(&role["rules"]), expected(WATCHED_NAMESPACES), "{namespace}");
    }
    let own = roles.iter().find(|role| role["metadata"]["namespace"] == "ferry-system").unwrap();
    let mut leader = expected(OWN_NAMESPACE);
    // Outside the watched namespaces, the leader labels its own pod through this Role.
    leader.insert((String::new(), "pods".to_owned(), "patch".to_owned()));
    assert_eq!(granted(&own["rules"]), leader);
    let deployment = &of_kind(&documents, "Deployment")[0];
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    let watched = env.as_sequence().unwrap().iter().find(|e| e["name"] == "FERRY_WATCH_NAMESPACE").unwrap();
    assert_eq!(watched["value"], "team-a,team-b");
}

#[test]
fn the_operator_runs_hardened_with_probes() {
    for sets in [vec![], vec!["tls.mode=certManager", "tls.certManager.issuerRef.name=ca"]] {
        let documents = template(&sets);
        let deployment = &of_kind(&documents, "Deployment")[0];
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{sets:?}");
        assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
        let container = &pod["containers"][0];
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["capabilities"]["drop"][0], "ALL");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert!(container["resources"]["limits"]["memory"].is_string());
        let env = container["env"].as_sequence().unwrap();
        let value = |name: &str| env.iter().find(|e| e["name"] == name).map(|e| e["value"].clone());
        assert_eq!(value("FERRY_LEADER_ELECTION"), Some(Value::from("true")));
        // The progress Service reaches only the leader.
        let services = of_kind(&documents, "Service");
        let progress = services.iter().find(|s| s["metadata"]["name"] == "ferry-progress").unwrap();
        assert_eq!(progress["spec"]["selector"]["ferry.dev/leader"], "true");
    }
    let cert_manager = template(&["tls.mode=certManager", "tls.certManager.issuerRef.name=ca"]);
    let certificates = of_kind(&cert_manager, "Certificate");
    assert_eq!(certificates.len(), 1);
}

#[test]
fn monitoring_renders_the_service_monitor_rules_and_dashboard() {
    let documents = template(&[
        "monitoring.serviceMonitor.enabled=true",
        "monitoring.prometheusRule.enabled=true",
        "monitoring.grafanaDashboard.enabled=true",
    ]);
    assert_eq!(of_kind(&documents, "ServiceMonitor").len(), 1);
    let rules = of_kind(&documents, "PrometheusRule");
    let alerts: Vec<&str> = rules[0]["spec"]["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|rule| rule["alert"].as_str())
        .collect();
    for alert in ["FerryJobFailed", "FerryJobStalled", "FerryReconcileErrors", "FerryVaultUnreachable"] {
        assert!(alerts.contains(&alert), "{alert} missing: {alerts:?}");
    }
    let dashboard = of_kind(&documents, "ConfigMap")
        .into_iter()
        .find(|map| map["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("the dashboard ConfigMap, labelled for Grafana's sidecar");
    let json = dashboard["data"].as_mapping().unwrap().values().next().unwrap().as_str().unwrap();
    let parsed: serde_json::Value = serde_json::from_str(json).unwrap();
    assert!(parsed["panels"].as_array().unwrap().len() >= 6);
}

#[test]
fn bad_values_fail_with_the_schemas_message() {
    for (set, says) in [
        ("replica=3", "additional properties 'replica' not allowed"),
        ("rbac.namespaced=true", "watchNamespaces"),
        ("tls.mode=selfsigned", "tls"),
    ] {
        let output = run_helm(&["template", "ferry", "charts/ferry", "--set", set]);
        assert!(!output.status.success(), "{set} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{set}: {stderr}");
    }
}
