//! Leader election on a coordination.k8s.io Lease: with several replicas only
//! the holder reconciles, so two operators never act on the same object.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// The lease this process holds, renewed in the background until
/// [`Leadership::release`].
pub struct Leadership {
    state: watch::Receiver<bool>,
    renewer: JoinHandle<kube_lease_manager::Result<LeaseManager>>,
}

/// Resolves once this process holds the lease.
pub async fn acquire(
    client: Client,
    namespace: &str,
    lease: &str,
    identity: &str,
) -> anyhow::Result<Leadership> {
    let manager = LeaseManagerBuilder::new(client, lease)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await?;
    let (mut state, renewer) = manager.watch().await;
    info!(lease, namespace, identity, "waiting for leadership");
    while !*state.borrow_and_update() {
        state.changed().await?;
    }
    info!("acquired leadership");
    Ok(Leadership { state, renewer })
}

impl Leadership {
    /// Resolves if the lease is ever lost (the caller then exits and
    /// restarts clean).
    pub async fn lost(&mut self) {
        while *self.state.borrow_and_update() {
            if self.state.changed().await.is_err() {
                return;
            }
        }
    }

    /// Gives the lease up (holder cleared), so another replica takes over
    /// at once instead of after the lease duration. Bounded by `within`: an
    /// API server that does not answer leaves the lease to expire.
    pub async fn release(self, within: Duration) {
        // Closing the channel tells the renewer to release and end.
        drop(self.state);
        match tokio::time::timeout(within, self.renewer).await {
            Ok(Ok(Ok(_))) => info!("released the leader lease"),
            Ok(Ok(Err(e))) => warn!(error = %e, "could not release the leader lease"),
            Ok(Err(e)) => warn!(error = %e, "the lease renewer failed"),
            Err(_) => warn!("releasing the leader lease timed out; it expires instead"),
        }
    }
}
