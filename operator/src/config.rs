//! The operator's configuration: flags with `FERRY_`-prefixed environment twins, and the
//! Vault conventions (`VAULT_ADDR`, `VAULT_TOKEN`, `VAULT_CACERT`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::bindings::DEFAULT_PATH_PREFIX;
use crate::children::network_policy::EgressTarget;

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
    /// How long a wrapping token lives (seconds): enough for a runner pod to start.
    #[arg(long, env = "FERRY_WRAP_TTL", default_value_t = 300, value_parser = clap::value_parser!(u64).range(5..=86400))]
    pub wrap_ttl: u64,
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
    /// CIDR:PORT runners may reach Vault at (repeatable; default: the runner Vault address's IPs).
    #[arg(long, env = "FERRY_VAULT_EGRESS", value_delimiter = ',')]
    pub vault_egress: Vec<EgressTarget>,
    /// CIDR:PORT runners may reach the progress API at (repeatable; default: the progress URL's IPs).
    #[arg(long, env = "FERRY_PROGRESS_EGRESS", value_delimiter = ',')]
    pub progress_egress: Vec<EgressTarget>,
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
    }

    #[test]
    fn egress_covers_each_address() {
        let targets = egress_for(&["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()], 8443);
        assert_eq!(targets[0].cidr, "10.0.0.5/32");
        assert_eq!(targets[1].cidr, "fd00::5/128");
    }
}
