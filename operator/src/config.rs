//! The operator's configuration: flags with `FERRY_`-prefixed environment twins, and the
//! Vault conventions (`VAULT_ADDR`, `VAULT_TOKEN`, `VAULT_CACERT`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::bindings::DEFAULT_PATH_PREFIX;
use crate::children::network_policy::{EgressTarget, Labels};
use crate::tenancy::{DEFAULT_KV_MOUNTS, DEFAULT_TRANSIT_KEYS, DEFAULT_TRANSIT_MOUNTS, Pattern, TenancyPolicy};

/// Ferry's operator: reconciles MigrationJobs and CredentialBindings, hands runners
/// Vault-wrapped credentials, and writes their verified progress into status.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "ferry-operator",
    version,
    after_help = "Kubernetes: KUBECONFIG (or ~/.kube/config), else the in-cluster service account.\n\
                  Vault: VAULT_ADDR with VAULT_TOKEN (development) or --vault-role (Kubernetes auth); VAULT_CACERT."
)]
pub struct Config {
    /// Vault (or OpenBao) address.
    #[arg(long, env = "VAULT_ADDR")]
    pub vault_addr: Option<url::Url>,
    /// PEM file of the CA that signed Vault's certificate.
    #[arg(long, env = "VAULT_CACERT")]
    pub vault_cacert: Option<PathBuf>,
    /// Log in with Vault's Kubernetes auth method as this role (else VAULT_TOKEN is used).
    #[arg(long, env = "FERRY_VAULT_ROLE")]
    pub vault_role: Option<String>,
    /// The mount of Vault's Kubernetes auth method.
    #[arg(long, env = "FERRY_VAULT_AUTH_MOUNT", default_value = "kubernetes")]
    pub vault_auth_mount: String,
    /// The service account token presented to the Kubernetes auth method.
    #[arg(long, env = "FERRY_VAULT_JWT_FILE", default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token")]
    pub vault_jwt_file: PathBuf,
    /// Every binding's spec.vault.path must start with this; `{namespace}` is the binding's namespace.
    #[arg(long, env = "FERRY_VAULT_PATH_PREFIX", default_value = DEFAULT_PATH_PREFIX)]
    pub vault_path_prefix: String,
    /// KV v2 mounts a binding's spec.vault.mount may name (repeatable; `{namespace}` is the binding's
    /// namespace, a trailing `*` any non-empty rest).
    #[arg(long, env = "FERRY_VAULT_KV_MOUNTS", value_delimiter = ',', default_values = DEFAULT_KV_MOUNTS)]
    pub vault_kv_mounts: Vec<Pattern>,
    /// Transit mounts a binding's spec.vault.transitMount may name (repeatable; as --vault-kv-mounts).
    #[arg(long, env = "FERRY_VAULT_TRANSIT_MOUNTS", value_delimiter = ',', default_values = DEFAULT_TRANSIT_MOUNTS)]
    pub vault_transit_mounts: Vec<Pattern>,
    /// Transit keys a binding's spec.vault.transitKey may name (repeatable; as --vault-kv-mounts).
    #[arg(long, env = "FERRY_VAULT_TRANSIT_KEYS", value_delimiter = ',', default_values = DEFAULT_TRANSIT_KEYS)]
    pub vault_transit_keys: Vec<Pattern>,
    /// How long a wrapping token lives (seconds): enough for a runner pod to start.
    #[arg(long, env = "FERRY_WRAP_TTL", default_value_t = 300, value_parser = clap::value_parser!(u64).range(5..=86400))]
    pub wrap_ttl: u64,
    /// The Vault token role write tokens for rotated OAuth refresh tokens are minted through
    /// (empty: none are minted, and a rotated token serves its run only).
    #[arg(long, env = "FERRY_VAULT_ROTATION_ROLE", default_value = "ferry-rotation")]
    pub vault_rotation_role: String,
    /// The Vault address runners unwrap at (defaults to VAULT_ADDR).
    #[arg(long, env = "FERRY_RUNNER_VAULT_ADDR")]
    pub runner_vault_addr: Option<url::Url>,
    /// Address:port the HTTPS progress API listens on.
    #[arg(long, env = "FERRY_PROGRESS_LISTEN", default_value = "0.0.0.0:8443")]
    pub progress_listen: SocketAddr,
    /// The progress API's URL as runners dial it, such as https://ferry.ferry-system.svc:8443.
    #[arg(long, env = "FERRY_PROGRESS_URL")]
    pub progress_url: url::Url,
    /// PEM certificate (chain) of the progress API.
    #[arg(long, env = "FERRY_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// PEM private key of the progress API.
    #[arg(long, env = "FERRY_TLS_KEY")]
    pub tls_key: PathBuf,
    /// PEM CA runners trust for the progress API (defaults to --tls-cert itself).
    #[arg(long, env = "FERRY_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// The runner image when a job does not name one.
    #[arg(long, env = "FERRY_RUNNER_IMAGE", default_value = concat!("ghcr.io/ferry-dev/ferry-runner:", env!("CARGO_PKG_VERSION")))]
    pub runner_image: String,
    /// Further runner images a job's spec.runner.image may name, exactly (repeatable; --runner-image is always allowed).
    #[arg(long = "runner-image-allowlist", env = "FERRY_RUNNER_IMAGE_ALLOWLIST", value_delimiter = ',')]
    pub runner_image_allowlist: Vec<String>,
    /// CIDR:PORT runners may reach Vault at (repeatable; default: the runner Vault address's IPs).
    #[arg(long, env = "FERRY_VAULT_EGRESS", value_delimiter = ',')]
    pub vault_egress: Vec<EgressTarget>,
    /// CIDR:PORT runners may reach the progress API at (repeatable; default: the progress URL's IPs).
    #[arg(long, env = "FERRY_PROGRESS_EGRESS", value_delimiter = ',')]
    pub progress_egress: Vec<EgressTarget>,
    /// Namespace of the cluster DNS pods, the only DNS runners may query.
    #[arg(long, env = "FERRY_DNS_POD_NAMESPACE", default_value = "kube-system")]
    pub dns_pod_namespace: String,
    /// Labels of the cluster DNS pods (key=value[,key=value]).
    #[arg(long, env = "FERRY_DNS_POD_LABELS", default_value = "k8s-app=kube-dns")]
    pub dns_pod_labels: Labels,
    /// Vault runs in this cluster, in this namespace: runners reach its pods by --vault-pod-labels.
    #[arg(long, env = "FERRY_VAULT_POD_NAMESPACE", requires = "vault_pod_labels")]
    pub vault_pod_namespace: Option<String>,
    /// Labels of Vault's pods (key=value[,key=value]), with --vault-pod-namespace.
    #[arg(long, env = "FERRY_VAULT_POD_LABELS", requires = "vault_pod_namespace")]
    pub vault_pod_labels: Option<Labels>,
    /// The port Vault's pods listen on (default: the runner Vault address's port).
    #[arg(long, env = "FERRY_VAULT_POD_PORT", requires = "vault_pod_namespace")]
    pub vault_pod_port: Option<u16>,
    /// The operator runs in this cluster, in this namespace: runners reach its progress API by --progress-pod-labels.
    #[arg(long, env = "FERRY_PROGRESS_POD_NAMESPACE", requires = "progress_pod_labels")]
    pub progress_pod_namespace: Option<String>,
    /// Labels of the operator's pods (key=value[,key=value]), with --progress-pod-namespace; the
    /// port is --progress-listen's.
    #[arg(long, env = "FERRY_PROGRESS_POD_LABELS", requires = "progress_pod_namespace")]
    pub progress_pod_labels: Option<Labels>,
    /// Watch only this namespace (repeatable; all namespaces when absent).
    #[arg(long = "watch-namespace", env = "FERRY_WATCH_NAMESPACE", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// Address:port of the Prometheus /metrics endpoint.
    #[arg(long, env = "FERRY_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// Least seconds between two progress writes to one job's status.
    #[arg(long, env = "FERRY_STATUS_INTERVAL", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub status_interval: u64,
    /// Log as JSON lines.
    #[arg(long, env = "FERRY_LOG_JSON")]
    pub log_json: bool,
    /// Reconcile only while holding the Lease, so two replicas never both do.
    #[arg(long, env = "FERRY_LEADER_ELECTION", default_value_t = false, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// The namespace of the Lease (the operator's own; default POD_NAMESPACE).
    #[arg(long, env = "FERRY_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// The Lease's name.
    #[arg(long, env = "FERRY_LEADER_ELECTION_LEASE", default_value = "ferry-operator")]
    pub leader_election_lease: String,
}

impl Config {
    /// The tenant allowances the flags set.
    pub fn tenancy(&self) -> TenancyPolicy {
        TenancyPolicy {
            kv_mounts: self.vault_kv_mounts.clone(),
            transit_mounts: self.vault_transit_mounts.clone(),
            transit_keys: self.vault_transit_keys.clone(),
            runner_images: self.runner_image_allowlist.clone(),
        }
    }
}

/// Egress targets for a URL: each resolved address as a single-host block with the URL's port.
pub fn egress_for(addresses: &[std::net::IpAddr], port: u16) -> Vec<EgressTarget> {
    addresses
        .iter()
        .map(|address| {
            let bits = if address.is_ipv4() { 32 } else { 128 };
            EgressTarget { cidr: format!("{address}/{bits}"), port }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_defaults_parse() {
        let config = Config::try_parse_from([
            "ferry-operator",
            "--progress-url=https://10.0.0.5:8443",
            "--tls-cert=c.pem",
            "--tls-key=k.pem",
            "--vault-egress=10.1.0.0/16:8200,10.2.0.0/16:8200",
            "--watch-namespace=team-a",
            "--watch-namespace=team-b",
        ])
        .unwrap();
        assert_eq!(config.vault_egress.len(), 2);
        assert_eq!(config.watch_namespaces, ["team-a", "team-b"]);
        assert_eq!(config.wrap_ttl, 300);
        assert_eq!(config.vault_path_prefix, "tenants/{namespace}/");
        assert!(Config::try_parse_from(["ferry-operator", "--tls-cert=c", "--tls-key=k"]).is_err());
        assert_eq!(config.tenancy(), TenancyPolicy::default());
        assert_eq!(config.dns_pod_namespace, "kube-system");
        assert_eq!(config.dns_pod_labels.0["k8s-app"], "kube-dns");
        assert!(config.vault_pod_namespace.is_none() && config.progress_pod_labels.is_none());
    }

    const REQUIRED: [&str; 4] =
        ["ferry-operator", "--progress-url=https://10.0.0.5:8443", "--tls-cert=c", "--tls-key=k"];

    #[test]
    fn allowances_parse_and_ambiguous_ones_are_refused() {
        let config = Config::try_parse_from(REQUIRED.iter().copied().chain([
            "--vault-kv-mounts=secret,kv-{namespace}",
            "--vault-transit-keys={namespace}_*",
            "--runner-image-allowlist=registry.example/ferry-runner@sha256:abc",
            "--runner-image-allowlist=registry.example/ferry-runner:1.2",
        ]))
        .unwrap();
        let tenancy = config.tenancy();
        assert_eq!(tenancy.kv_mounts.len(), 2);
        assert_eq!(tenancy.transit_mounts, TenancyPolicy::default().transit_mounts);
        assert!(tenancy.transit_keys[0].allows("team-a", "team-a_prod"));
        assert_eq!(tenancy.runner_images.len(), 2);
        let error = Config::try_parse_from(REQUIRED.iter().copied().chain(["--vault-transit-keys={namespace}-*"]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("--vault-transit-keys") && error.contains("could name"), "{error}");
    }

    #[test]
    fn in_cluster_peers_need_a_namespace_and_labels() {
        let config = Config::try_parse_from(REQUIRED.iter().copied().chain([
            "--vault-pod-namespace=vault",
            "--vault-pod-labels=app.kubernetes.io/name=openbao,component=server",
            "--dns-pod-namespace=dns",
            "--dns-pod-labels=app=coredns",
        ]))
        .unwrap();
        assert_eq!(config.vault_pod_labels.unwrap().0.len(), 2);
        assert_eq!(config.dns_pod_labels.0["app"], "coredns");
        assert!(Config::try_parse_from(REQUIRED.iter().copied().chain(["--vault-pod-namespace=vault"])).is_err());
        assert!(Config::try_parse_from(REQUIRED.iter().copied().chain(["--progress-pod-labels=a=b"])).is_err());
    }

    #[test]
    fn egress_covers_each_address() {
        let targets = egress_for(&["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()], 8443);
        assert_eq!(targets[0].cidr, "10.0.0.5/32");
        assert_eq!(targets[1].cidr, "fd00::5/128");
    }
}
