//! Leader election: the replica holding the operator's `coordination.k8s.io` Lease reconciles;
//! the others wait to take over. The leader labels its own pod, so the progress API's Service
//! (which selects that label) sends runners' reports to it alone.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::names;

/// How long a Lease holds without renewal; a leader that vanished is replaced after this.
const LEASE_SECONDS: u64 = 15;
/// How long before the end a leader renews its Lease.
const GRACE_SECONDS: u64 = 5;

/// Where this replica's Lease and pod are.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The Lease's namespace (the operator's own).
    pub namespace: String,
    /// The Lease's name.
    pub lease: String,
    /// This replica's identity: its pod's name.
    pub pod: String,
}

/// The Lease, held.
pub struct Leadership {
    leading: watch::Receiver<bool>,
    manager: JoinHandle<kube_lease_manager::Result<LeaseManager>>,
    pods: Api<Pod>,
    candidate: Candidate,
}

/// Waits until this replica holds the Lease; `None` when `stop` came first.
pub async fn acquire(
    client: Client,
    candidate: Candidate,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Option<Leadership>, kube_lease_manager::LeaseManagerError> {
    let manager = LeaseManagerBuilder::new(client.clone(), &candidate.lease)
        .with_namespace(&candidate.namespace)
        .with_identity(&candidate.pod)
        .with_field_manager(names::FIELD_MANAGER)
        .with_duration(LEASE_SECONDS)
        .with_grace(GRACE_SECONDS)
        .build()
        .await?;
    // A leader that lost the Lease without unlabelling its pod (the API unreachable) must not
    // keep receiving runners' reports after a restart as a standby.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &candidate.namespace);
    label(&pods, &candidate.pod, false).await;
    let (mut leading, manager) = manager.watch().await;
    tracing::info!(lease = %candidate.lease, namespace = %candidate.namespace, "waiting for the Lease");
    let acquired = tokio::select! {
        acquired = leading.wait_for(|leading| *leading) => acquired.is_ok(),
        () = stop => false,
    };
    if !acquired {
        // Closing the channel ends the manager, which releases the Lease if it got it.
        drop(leading);
        let _ = manager.await;
        return Ok(None);
    }
    tracing::info!(pod = %candidate.pod, "leading");
    let leadership = Leadership { leading, manager, pods, candidate };
    label(&leadership.pods, &leadership.candidate.pod, true).await;
    Ok(Some(leadership))
}

impl Leadership {
    /// A receiver that turns `false` when the Lease is lost.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Gives the Lease up at once, so a standby takes over without waiting for it to expire.
    pub async fn release(self) {
        label(&self.pods, &self.candidate.pod, false).await;
        drop(self.leading);
        match tokio::time::timeout(Duration::from_secs(10), self.manager).await {
            Ok(Ok(Ok(_))) => tracing::info!("released the Lease"),
            _ => tracing::warn!("the Lease was not released; a standby takes over when it expires"),
        }
    }
}

/// Marks (or unmarks) `pod` as the leader, for the progress API's Service. Best effort: a
/// replica outside a pod (a laptop) has no pod to label.
async fn label(pods: &Api<Pod>, pod: &str, leading: bool) {
    let value = leading.then_some(names::LEADER_LABEL.1);
    let patch = serde_json::json!({"metadata": {"labels": {names::LEADER_LABEL.0: value}}});
    if let Err(error) = pods.patch(pod, &PatchParams::default(), &Patch::Merge(&patch)).await {
        tracing::warn!(%error, pod, "could not label the leader's pod");
    }
}
