//! `auth.stop_clusters_with_server`: with JupyterHub auth, a user's clusters
//! stop once the Hub says the user has no single-user server any more (the
//! notebook that started them is gone for sure). Every gateway replica may
//! check: a stop is idempotent. The gateway's service needs the Hub scope
//! `read:servers` (or `read:users`) to see users' servers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::{info, warn};

use crate::domain::models::Cluster;
use crate::http::state::Gateway;

/// The owners of active clusters the Hub can tell about: users, not other
/// services (`service:<name>`, which have no servers).
pub fn owners_to_check(clusters: &[Cluster]) -> BTreeSet<String> {
    clusters
        .iter()
        .filter(|c| c.status.is_active() && !c.username.starts_with("service:"))
        .map(|c| c.username.clone())
        .collect()
}

/// The active clusters of `owner`.
pub fn clusters_of<'a>(clusters: &'a [Cluster], owner: &'a str) -> impl Iterator<Item = &'a str> {
    clusters
        .iter()
        .filter(move |c| c.status.is_active() && c.username == owner)
        .map(|c| c.name.as_str())
}

/// Checks every `period`, for as long as the gateway runs.
pub async fn run(gw: Arc<Gateway>, period: Duration) {
    let warned = AtomicBool::new(false);
    loop {
        tokio::time::sleep(period).await;
        sweep(&gw, &warned).await;
    }
}

async fn sweep(gw: &Gateway, warned: &AtomicBool) {
    let Some(hub) = gw.auth.hub() else { return };
    let clusters = gw.backend.list().await;
    for owner in owners_to_check(&clusters) {
        match hub.has_server(&owner).await {
            Ok(Some(true)) => {}
            Ok(Some(false)) => {
                for name in clusters_of(&clusters, &owner) {
                    info!(cluster = %name, user = %owner, "stopping: the user's JupyterHub server is gone (auth.stop_clusters_with_server)");
                    let why = "its owner's JupyterHub server stopped";
                    if let Err(e) = gw.backend.stop(name, Some(why)).await {
                        warn!(cluster = %name, error = %e, "could not stop the cluster");
                    }
                }
            }
            Ok(None) => {
                if !warned.swap(true, Ordering::Relaxed) {
                    warn!(
                        "the Hub does not show users' servers to this gateway: grant its service the read:servers scope, or clusters are not stopped with their servers"
                    );
                }
            }
            Err(e) => {
                warn!(user = %owner, error = %e, "could not ask the Hub about the user's server")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::models::ClusterStatus;
    use crate::domain::models::tests::sample;

    #[test]
    fn only_users_with_active_clusters_are_asked_about() {
        let clusters = [
            sample("a1", "alice", ClusterStatus::Running),
            sample("a2", "alice", ClusterStatus::Pending),
            sample("b1", "bob", ClusterStatus::Stopped),
            sample("s1", "service:cron", ClusterStatus::Running),
        ];
        assert_eq!(owners_to_check(&clusters), BTreeSet::from(["alice".to_string()]));
        assert_eq!(clusters_of(&clusters, "alice").collect::<Vec<_>>(), ["a1", "a2"]);
        assert_eq!(clusters_of(&clusters, "bob").count(), 0);
    }
}
