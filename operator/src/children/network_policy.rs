//! The per-job NetworkPolicy: runner pods accept no connections at all and may only dial
//! DNS, Vault, the operator's progress API, and what the two bindings declare.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Attempt, RunnerEnvironment, owner};
use crate::names;

/// An address block and TCP port runners may reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressTarget {
    /// An IPv4 or IPv6 CIDR.
    pub cidr: String,
    /// The TCP port.
    pub port: u16,
}

impl std::str::FromStr for EgressTarget {
    type Err = String;

    /// Parses `CIDR:PORT`, such as `10.0.0.0/8:8200` or `[fd00::/8]:8200`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (cidr, port) = text.rsplit_once(':').ok_or_else(|| format!("{text:?}: write it as CIDR:PORT"))?;
        let cidr = cidr.trim_start_matches('[').trim_end_matches(']');
        let port = port.parse().map_err(|_| format!("{text:?}: the port must be 1-65535"))?;
        let (address, prefix) = cidr.split_once('/').ok_or_else(|| format!("{text:?}: the CIDR needs a /prefix"))?;
        let address: std::net::IpAddr = address.parse().map_err(|_| format!("{text:?}: not an IP address"))?;
        let limit = if address.is_ipv4() { 32 } else { 128 };
        if prefix.parse::<u8>().ok().filter(|p| *p <= limit).is_none() || port == 0 {
            return Err(format!("{text:?}: prefix must be 0-{limit} and port 1-65535"));
        }
        Ok(Self { cidr: cidr.to_owned(), port })
    }
}

/// The label every namespace carries with its own name (set by the API server since 1.22).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Cloud metadata endpoints (AWS, GCP, Azure, OpenStack: 169.254.169.254; AWS over IPv6:
/// fd00:ec2::254; and the IPv4 one as an IPv4-mapped IPv6 address). They hand out the node's
/// cloud credentials, so no block a binding or flag declares may reach them.
pub const METADATA_ADDRESSES: [&str; 3] = ["169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"];

/// Pod labels as `key=value[,key=value]`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Labels(pub BTreeMap<String, String>);

impl std::str::FromStr for Labels {
    type Err = String;

    /// Parses `k8s-app=kube-dns` or `app.kubernetes.io/name=openbao,component=server`.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut labels = BTreeMap::new();
        for pair in text.split(',') {
            let (key, value) =
                pair.split_once('=').ok_or_else(|| format!("{pair:?}: write labels as key=value[,key=value]"))?;
            let valid = |part: &str, slash: bool| {
                part.len() <= 316
                    && part.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c) || (slash && c == '/'))
            };
            if key.is_empty() || !valid(key, true) || !valid(value, false) {
                return Err(format!("{pair:?}: not a Kubernetes label (letters, digits, '-', '_', '.')"));
            }
            labels.insert(key.to_owned(), value.to_owned());
        }
        Ok(Self(labels))
    }
}

/// Pods in one namespace that runners may reach on one port: cluster DNS, or Vault and the
/// progress API when they run in the cluster (selected by labels, not by addresses that
/// change whenever a pod moves).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPeer {
    /// The pods' namespace, matched by its `kubernetes.io/metadata.name` label.
    pub namespace: String,
    /// The pods' labels.
    pub labels: BTreeMap<String, String>,
    /// The port the pods listen on (for DNS: 53, over UDP and TCP).
    pub port: u16,
}

impl PodPeer {
    /// CoreDNS (or kube-dns) as clusters deploy it: `k8s-app=kube-dns` in `kube-system`.
    pub fn cluster_dns() -> Self {
        Self {
            namespace: "kube-system".to_owned(),
            labels: BTreeMap::from([("k8s-app".to_owned(), "kube-dns".to_owned())]),
            port: 53,
        }
    }

    /// The peer: both selectors in one entry, so a pod must match both (a pod labelled
    /// `k8s-app=kube-dns` in a tenant's namespace is not DNS).
    fn peer(&self) -> NetworkPolicyPeer {
        NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(NAMESPACE_NAME_LABEL.to_owned(), self.namespace.clone())])),
                match_expressions: None,
            }),
            pod_selector: Some(LabelSelector { match_labels: Some(self.labels.clone()), match_expressions: None }),
            ip_block: None,
        }
    }
}

/// An `ipBlock` for `cidr` that excepts every metadata address inside it; `None` when the
/// block holds nothing but a metadata address. Kubernetes refuses an `except` that is not a
/// strict subset of the block (or of another address family), so only those inside are listed.
pub fn ip_block(cidr: &str) -> Option<IPBlock> {
    let (network, prefix) = parse_cidr(cidr)?;
    let mut except = Vec::new();
    for metadata in METADATA_ADDRESSES {
        let Ok(address) = metadata.parse::<IpAddr>() else { continue };
        let bits = if address.is_ipv4() { 32 } else { 128 };
        if !contains(network, prefix, address) {
            continue;
        }
        if prefix == bits {
            return None;
        }
        except.push(format!("{address}/{bits}"));
    }
    Some(IPBlock { cidr: cidr.to_owned(), except: Some(except).filter(|e| !e.is_empty()) })
}

fn parse_cidr(cidr: &str) -> Option<(IpAddr, u8)> {
    let (address, prefix) = cidr.split_once('/')?;
    let address: IpAddr = address.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= if address.is_ipv4() { 32 } else { 128 }).then_some((address, prefix))
}

/// Whether `address` lies in `network/prefix` (never across address families).
fn contains(network: IpAddr, prefix: u8, address: IpAddr) -> bool {
    let masked = |bits: u128, width: u32| if prefix == 0 { 0 } else { bits >> (width - u32::from(prefix)) };
    match (network, address) {
        (IpAddr::V4(n), IpAddr::V4(a)) => masked(u32::from(n).into(), 32) == masked(u32::from(a).into(), 32),
        (IpAddr::V6(n), IpAddr::V6(a)) => masked(u128::from(n), 128) == masked(u128::from(a), 128),
        _ => false,
    }
}

/// The job's NetworkPolicy. It selects every runner pod of the job, whatever the attempt.
pub fn network_policy(attempt: &Attempt<'_>, environment: &RunnerEnvironment) -> NetworkPolicy {
    let identity = &attempt.identity;
    let needs_vault = attempt.source.spec.vault.is_some() || attempt.destination.spec.vault.is_some();
    let mut egress = vec![dns(&environment.dns)];
    let mut peers: Vec<&PodPeer> = Vec::new();
    let mut targets: Vec<(String, Vec<u16>)> = Vec::new();
    if needs_vault {
        peers.extend(&environment.vault_pods);
        targets.extend(environment.vault_egress.iter().map(|t| (t.cidr.clone(), vec![t.port])));
    }
    peers.extend(&environment.progress_pods);
    targets.extend(environment.progress_egress.iter().map(|t| (t.cidr.clone(), vec![t.port])));
    for binding in [&attempt.source, &attempt.destination] {
        targets.extend(binding.spec.egress.iter().map(|rule| (rule.cidr.clone(), rule.ports.clone())));
    }
    egress.extend(peers.into_iter().map(|peer| NetworkPolicyEgressRule {
        to: Some(vec![peer.peer()]),
        ports: Some(vec![tcp(i32::from(peer.port))]),
    }));
    egress.extend(targets.into_iter().filter_map(|(cidr, ports)| {
        Some(NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer { ip_block: Some(ip_block(&cidr)?), ..NetworkPolicyPeer::default() }]),
            ports: Some(ports.into_iter().map(|port| tcp(i32::from(port))).collect()),
        })
    }));
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(names::network_policy(&identity.name)),
            namespace: Some(identity.namespace.clone()),
            labels: Some(names::job_labels(&identity.name, &identity.uid)),
            owner_references: Some(vec![owner(identity)]),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([
                    (names::JOB_UID_LABEL.to_owned(), identity.uid.clone()),
                    (names::COMPONENT.0.to_owned(), names::COMPONENT.1.to_owned()),
                ])),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(Vec::new()),
            egress: Some(egress),
        }),
    }
}

/// Cluster DNS: only its pods in its namespace, over UDP and TCP.
fn dns(peer: &PodPeer) -> NetworkPolicyEgressRule {
    let port = i32::from(peer.port);
    NetworkPolicyEgressRule {
        to: Some(vec![peer.peer()]),
        ports: Some(vec![
            NetworkPolicyPort { protocol: Some("UDP".into()), port: Some(IntOrString::Int(port)), end_port: None },
            tcp(port),
        ]),
    }
}

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort { protocol: Some("TCP".into()), port: Some(IntOrString::Int(port)), end_port: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::fixtures;

    fn allowed(policy: &NetworkPolicy) -> Vec<(String, Vec<i32>)> {
        let spec = policy.spec.clone().unwrap();
        spec.egress
            .unwrap()
            .iter()
            .skip(1)
            .map(|rule| {
                let cidr = rule.to.as_ref().unwrap()[0].ip_block.as_ref().unwrap().cidr.clone();
                let ports = rule
                    .ports
                    .as_ref()
                    .unwrap()
                    .iter()
                    .map(|p| match p.port {
                        Some(IntOrString::Int(port)) => port,
                        _ => panic!("named port"),
                    })
                    .collect();
                (cidr, ports)
            })
            .collect()
    }

    #[test]
    fn no_ingress_and_exactly_the_allowed_egress() {
        let job = fixtures::job(fixtures::S3_TO_PVC);
        let policy = network_policy(&fixtures::attempt(&job), &fixtures::environment());
        let spec = policy.spec.clone().unwrap();
        assert_eq!(spec.ingress, Some(Vec::new()));
        assert_eq!(spec.policy_types.clone().unwrap(), ["Ingress", "Egress"]);
        assert_eq!(spec.pod_selector.unwrap().match_labels.unwrap()[names::JOB_UID_LABEL], "u-1");
        let dns = &spec.egress.as_ref().unwrap()[0];
        assert_eq!(dns.ports.as_ref().unwrap().len(), 2);
        assert_eq!(
            allowed(&policy),
            [
                ("10.0.0.9/32".to_owned(), vec![8200]),
                ("10.0.0.5/32".to_owned(), vec![8443]),
                ("52.218.0.0/17".to_owned(), vec![443]),
            ]
        );
    }

    #[test]
    fn filesystem_jobs_get_no_vault_egress() {
        let job = fixtures::job(fixtures::S3_TO_PVC);
        let mut attempt = fixtures::attempt(&job);
        attempt.source = fixtures::binding("in", "provider: fs\nfs: {root: /in, claimName: in}");
        let policy = network_policy(&attempt, &fixtures::environment());
        assert_eq!(allowed(&policy), [("10.0.0.5/32".to_owned(), vec![8443])]);
    }

    #[test]
    fn egress_targets_parse() {
        assert_eq!("10.0.0.0/8:8200".parse(), Ok(EgressTarget { cidr: "10.0.0.0/8".into(), port: 8200 }));
        assert!("[fd00::/8]:443".parse::<EgressTarget>().is_ok());
        for bad in ["10.0.0.0:80", "10.0.0.0/33:80", "host/8:80", "10.0.0.0/8:0", "10.0.0.0/8"] {
            assert!(bad.parse::<EgressTarget>().is_err(), "{bad}");
        }
    }

    fn peer_labels(peer: &NetworkPolicyPeer) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let labels = |selector: &Option<LabelSelector>| {
            selector.as_ref().and_then(|s| s.match_labels.clone()).expect("a selector with labels")
        };
        (labels(&peer.namespace_selector), labels(&peer.pod_selector))
    }

    #[test]
    fn dns_is_only_the_cluster_dns_pods_in_their_namespace() {
        let job = fixtures::job(fixtures::S3_TO_PVC);
        let policy = network_policy(&fixtures::attempt(&job), &fixtures::environment());
        let dns = policy.spec.unwrap().egress.unwrap()[0].clone();
        let peers = dns.to.unwrap();
        assert_eq!(peers.len(), 1, "one peer: both selectors must match together");
        let (namespace, pods) = peer_labels(&peers[0]);
        assert_eq!(namespace, BTreeMap::from([(NAMESPACE_NAME_LABEL.to_owned(), "kube-system".to_owned())]));
        assert_eq!(pods, BTreeMap::from([("k8s-app".to_owned(), "kube-dns".to_owned())]));
        let ports: Vec<_> = dns.ports.unwrap().into_iter().map(|p| (p.protocol.unwrap(), p.port.unwrap())).collect();
        assert_eq!(ports, [("UDP".to_owned(), IntOrString::Int(53)), ("TCP".to_owned(), IntOrString::Int(53))]);

        let mut environment = fixtures::environment();
        environment.dns =
            PodPeer { namespace: "dns".into(), labels: "app=coredns".parse::<Labels>().unwrap().0, port: 5353 };
        let policy = network_policy(&fixtures::attempt(&job), &environment);
        let dns = policy.spec.unwrap().egress.unwrap()[0].clone();
        assert_eq!(peer_labels(&dns.to.unwrap()[0]).0[NAMESPACE_NAME_LABEL], "dns");
        assert_eq!(dns.ports.unwrap()[0].port, Some(IntOrString::Int(5353)));
    }

    #[test]
    fn metadata_addresses_are_excepted_from_every_block_that_holds_them() {
        let except = |cidr: &str| ip_block(cidr).map(|block| block.except.unwrap_or_default());
        assert_eq!(except("0.0.0.0/0"), Some(vec!["169.254.169.254/32".to_owned()]));
        assert_eq!(except("169.254.0.0/16"), Some(vec!["169.254.169.254/32".to_owned()]));
        assert_eq!(except("52.218.0.0/17"), Some(vec![]), "an except outside the block is refused by Kubernetes");
        assert_eq!(except("169.254.169.255/32"), Some(vec![]));
        assert_eq!(except("::/0"), Some(vec!["fd00:ec2::254/128".to_owned(), "::ffff:169.254.169.254/128".to_owned()]));
        assert_eq!(except("fd00::/8"), Some(vec!["fd00:ec2::254/128".to_owned()]));
        assert_eq!(except("2001:db8::/32"), Some(vec![]));
        assert_eq!(except("169.254.169.254/32"), None, "a block that is only the metadata address is left out");
        assert_eq!(except("fd00:ec2::254/128"), None);

        let job = fixtures::job(fixtures::S3_TO_PVC);
        let mut attempt = fixtures::attempt(&job);
        attempt.source = fixtures::binding(
            "wide",
            "provider: s3\ns3: {region: r, bucket: bkt}\nvault: {path: tenants/team-a/s3}\negress: [{cidr: 0.0.0.0/0, ports: [443]}, {cidr: 169.254.169.254/32, ports: [80]}]",
        );
        let policy = network_policy(&attempt, &fixtures::environment());
        let rules = policy.spec.unwrap().egress.unwrap();
        let blocks: Vec<IPBlock> = rules.iter().filter_map(|r| r.to.as_ref()?[0].ip_block.clone()).collect();
        let wide = blocks.iter().find(|b| b.cidr == "0.0.0.0/0").unwrap();
        assert_eq!(wide.except.as_deref(), Some(&["169.254.169.254/32".to_owned()][..]));
        assert!(blocks.iter().all(|b| b.cidr != "169.254.169.254/32"));
    }

    #[test]
    fn in_cluster_vault_and_progress_are_reached_by_selector() {
        let job = fixtures::job(fixtures::S3_TO_PVC);
        let mut environment = fixtures::environment();
        environment.vault_egress.clear();
        environment.progress_egress.clear();
        environment.vault_pods = Some(PodPeer {
            namespace: "vault".into(),
            labels: "app.kubernetes.io/name=openbao,component=server".parse::<Labels>().unwrap().0,
            port: 8200,
        });
        environment.progress_pods = Some(PodPeer {
            namespace: "ferry-system".into(),
            labels: "app.kubernetes.io/name=ferry-operator".parse::<Labels>().unwrap().0,
            port: 8443,
        });
        let policy = network_policy(&fixtures::attempt(&job), &environment);
        let rules = policy.spec.unwrap().egress.unwrap();
        let selected: Vec<(String, i32)> = rules[1..]
            .iter()
            .filter(|r| r.to.as_ref().unwrap()[0].ip_block.is_none())
            .map(|r| {
                let (namespace, _) = peer_labels(&r.to.as_ref().unwrap()[0]);
                let port = match r.ports.as_ref().unwrap()[0].port {
                    Some(IntOrString::Int(port)) => port,
                    _ => panic!("named port"),
                };
                (namespace[NAMESPACE_NAME_LABEL].clone(), port)
            })
            .collect();
        assert_eq!(selected, [("vault".to_owned(), 8200), ("ferry-system".to_owned(), 8443)]);
        let addresses: Vec<_> = rules.iter().filter_map(|r| r.to.as_ref()?[0].ip_block.clone()).collect();
        assert_eq!(addresses.len(), 1, "only the binding's own block: {addresses:?}");

        // A filesystem-only job reaches no Vault, by selector or otherwise.
        let mut attempt = fixtures::attempt(&job);
        attempt.source = fixtures::binding("in", "provider: fs\nfs: {root: /in, claimName: in}");
        let policy = network_policy(&attempt, &environment);
        assert_eq!(policy.spec.unwrap().egress.unwrap().len(), 2, "DNS and the progress API");
    }

    #[test]
    fn labels_parse() {
        let labels: Labels = "app.kubernetes.io/name=openbao,component=server".parse().unwrap();
        assert_eq!(labels.0.len(), 2);
        for bad in ["", "app", "=x", "a=b c", "a=b,"] {
            assert!(bad.parse::<Labels>().is_err(), "{bad}");
        }
    }
}
