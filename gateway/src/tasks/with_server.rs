//! `auth.stop_clusters_with_server`: with JupyterHub auth, a user's clusters
//! stop once the Hub says the user has no single-user server any more (the
//! notebook that started them is gone for sure). Every gateway replica may
//! check: a stop is idempotent. The gateway's service needs the Hub scope
//! `read:servers` (or `read:users`) to see users' servers. A server that is
//! back within `auth.server_stop_grace` (a restart) keeps the clusters.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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

/// Users whose server the Hub last said is gone, and since when: a user
/// whose server comes back within the grace (a restart, a new image) keeps
/// their clusters.
#[derive(Debug, Default)]
pub struct Gone(HashMap<String, Instant>);

impl Gone {
    /// Whether `owner`'s clusters stop now, given the Hub's latest answer.
    pub fn should_stop(
        &mut self,
        owner: &str,
        has_server: bool,
        grace: Duration,
        now: Instant,
    ) -> bool {
        if has_server {
            self.0.remove(owner);
            return false;
        }
        let since = *self.0.entry(owner.to_string()).or_insert(now);
        now.duration_since(since) >= grace
    }

    /// Forgets users who no longer have active clusters.
    pub fn retain(&mut self, owners: &BTreeSet<String>) {
        self.0.retain(|user, _| owners.contains(user));
    }
}

/// Checks every `period`, for as long as the gateway runs; clusters stop
/// once their owner's server has been gone for `grace`.
pub async fn run(gw: Arc<Gateway>, period: Duration, grace: Duration) {
    let warned = AtomicBool::new(false);
    let mut gone = Gone::default();
    loop {
        tokio::time::sleep(period).await;
        sweep(&gw, &warned, &mut gone, grace).await;
    }
}

async fn sweep(gw: &Gateway, warned: &AtomicBool, gone: &mut Gone, grace: Duration) {
    let Some(hub) = gw.auth.hub() else { return };
    let clusters = gw.backend.list().await;
    let owners = owners_to_check(&clusters);
    gone.retain(&owners);
    for owner in owners {
        match hub.has_server(&owner).await {
            Ok(Some(has_server)) => {
                if !gone.should_stop(&owner, has_server, grace, Instant::now()) {
                    continue;
                }
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

    #[test]
    fn clusters_stop_once_the_server_is_gone_for_the_grace() {
        let (mut gone, grace, t0) = (Gone::default(), Duration::from_secs(60), Instant::now());
        assert!(!gone.should_stop("alice", false, grace, t0), "just gone: the grace starts");
        assert!(!gone.should_stop("alice", false, grace, t0 + Duration::from_secs(59)));
        assert!(gone.should_stop("alice", false, grace, t0 + Duration::from_secs(60)));
        // Back within the grace: the clock starts again the next time.
        let mut gone = Gone::default();
        assert!(!gone.should_stop("bob", false, grace, t0));
        assert!(!gone.should_stop("bob", true, grace, t0 + Duration::from_secs(30)));
        assert!(!gone.should_stop("bob", false, grace, t0 + Duration::from_secs(70)));
        // No grace: at once.
        assert!(Gone::default().should_stop("carol", false, Duration::ZERO, t0));
    }
}
