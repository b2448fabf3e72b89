//! Leader election on a coordination.k8s.io Lease: with several replicas only
//! the holder reconciles, so two operators never act on the same object.

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::info;

/// Resolves once this process holds the lease; the returned receiver turns
/// false if it is ever lost (the caller then exits and restarts clean).
pub async fn acquire(
    client: Client,
    namespace: &str,
    lease: &str,
    identity: &str,
) -> anyhow::Result<watch::Receiver<bool>> {
    let manager = LeaseManagerBuilder::new(client, lease)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await?;
    let (mut channel, _task) = manager.watch().await;
    info!(lease, namespace, identity, "waiting for leadership");
    while !*channel.borrow_and_update() {
        channel.changed().await?;
    }
    info!("acquired leadership");
    Ok(channel)
}
