//! The per-job NetworkPolicy: runner pods accept no connections at all and may only dial
//! DNS, Vault, the operator's progress API, and what the two bindings declare.

use std::collections::BTreeMap;

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

/// The job's NetworkPolicy. It selects every runner pod of the job, whatever the attempt.
pub fn network_policy(attempt: &Attempt<'_>, environment: &RunnerEnvironment) -> NetworkPolicy {
    let identity = &attempt.identity;
    let needs_vault = attempt.source.spec.vault.is_some() || attempt.destination.spec.vault.is_some();
    let mut egress = vec![dns()];
    let mut targets: Vec<(String, Vec<u16>)> = Vec::new();
    if needs_vault {
        targets.extend(environment.vault_egress.iter().map(|t| (t.cidr.clone(), vec![t.port])));
    }
    targets.extend(environment.progress_egress.iter().map(|t| (t.cidr.clone(), vec![t.port])));
    for binding in [&attempt.source, &attempt.destination] {
        targets.extend(binding.spec.egress.iter().map(|rule| (rule.cidr.clone(), rule.ports.clone())));
    }
    egress.extend(targets.into_iter().map(|(cidr, ports)| NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            ip_block: Some(IPBlock { cidr, except: None }),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(ports.into_iter().map(|port| tcp(i32::from(port))).collect()),
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

/// Cluster DNS, wherever it runs: pods labelled `k8s-app=kube-dns` (CoreDNS keeps that label).
fn dns() -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector::default()),
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("k8s-app".to_owned(), "kube-dns".to_owned())])),
                match_expressions: None,
            }),
            ip_block: None,
        }]),
        ports: Some(vec![
            NetworkPolicyPort { protocol: Some("UDP".into()), port: Some(IntOrString::Int(53)), end_port: None },
            tcp(53),
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
}
