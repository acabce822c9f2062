//! Every Kubernetes API call the operator makes, as RBAC rules: the Helm chart grants exactly
//! these. Tests hold the three together: the calls the controllers make against the fake API
//! server are all listed here, and the chart's rendered ClusterRole and Role equal this list.

/// One RBAC rule: an API group, a resource (or `resource/subresource`), and its verbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The API group (`""` for the core group).
    pub group: &'static str,
    /// The resource, or `resource/subresource`.
    pub resource: &'static str,
    /// The verbs, in RBAC's spelling.
    pub verbs: &'static [&'static str],
}

/// What the controllers need in every namespace they watch.
pub const WATCHED_NAMESPACES: &[Rule] = &[
    Rule { group: "ferry.dev", resource: "migrationjobs", verbs: &["get", "list", "watch", "patch"] },
    Rule { group: "ferry.dev", resource: "migrationjobs/status", verbs: &["patch"] },
    Rule { group: "ferry.dev", resource: "credentialbindings", verbs: &["get", "list", "watch"] },
    Rule { group: "ferry.dev", resource: "credentialbindings/status", verbs: &["patch"] },
    Rule { group: "", resource: "pods", verbs: &["list", "watch", "create", "patch", "deletecollection"] },
    Rule { group: "", resource: "secrets", verbs: &["get", "list", "create", "patch", "deletecollection"] },
    Rule { group: "", resource: "configmaps", verbs: &["create", "patch", "deletecollection"] },
    Rule { group: "networking.k8s.io", resource: "networkpolicies", verbs: &["create", "patch", "deletecollection"] },
    Rule { group: "events.k8s.io", resource: "events", verbs: &["create", "patch"] },
];

/// What leader election needs in the operator's own namespace (and `pods: patch` there, to
/// label the leader's pod, which the rules above grant where that namespace is watched).
pub const OWN_NAMESPACE: &[Rule] =
    &[Rule { group: "coordination.k8s.io", resource: "leases", verbs: &["get", "create", "patch"] }];

/// Whether `verb` on `resource` is granted by `rules`.
pub fn grants(rules: &[Rule], resource: &str, verb: &str) -> bool {
    rules.iter().any(|rule| rule.resource == resource && rule.verbs.contains(&verb))
}
