//! What the page shows, from the backend's clusters: the rows a user may
//! see (their own; everyone's for an admin) and, for admins, a per-user
//! summary. Pure functions of the cluster list, so the live stream and the
//! admin endpoint agree and tests need no server.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use crate::auth::User;
use crate::domain::models::Cluster;

/// Finished (stopped or failed) clusters shown besides the active ones,
/// newest first: enough to read why one failed, not a history.
pub const FINISHED_SHOWN: usize = 20;

/// Rows in one snapshot at most (an admin of a very busy gateway): the
/// stream stays bounded; the page says the list is cut.
pub const MAX_ROWS: usize = 2000;

/// One row of the page's table. Never the cluster's token, TLS key or
/// options beyond the profile (a mapping option may hold a user's secrets).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub name: String,
    pub user: String,
    pub status: &'static str,
    /// Milliseconds since the epoch (the page shows the age).
    pub start_time: i64,
    pub stop_time: Option<i64>,
    pub profile: Option<String>,
    pub workers: u32,
    pub worker_cores: f64,
    pub worker_memory: u64,
    /// Totals of the workers (what the per-user limits count).
    pub cores: f64,
    pub memory: u64,
    /// Below the prefix, as in the cluster JSON: `/clusters/<name>/~<capability>/status`.
    pub dashboard_route: Option<String>,
    /// Why a cluster failed, or why the gateway stopped it on its own
    /// (idle, lifetime, its owner's server gone, an admin).
    pub reason: Option<String>,
}

impl Row {
    pub fn of(cluster: &Cluster) -> Self {
        let route = cluster.to_json()["dashboard_route"].as_str().map(String::from);
        let workers = cluster.workers;
        Self {
            name: cluster.name.clone(),
            user: cluster.username.clone(),
            status: cluster.status.name(),
            start_time: cluster.start_time,
            stop_time: cluster.stop_time,
            profile: cluster.options.get("profile").and_then(Value::as_str).map(String::from),
            workers,
            worker_cores: cluster.config.worker_cores,
            worker_memory: cluster.config.worker_memory,
            cores: f64::from(workers) * cluster.config.worker_cores,
            memory: u64::from(workers).saturating_mul(cluster.config.worker_memory),
            dashboard_route: route,
            reason: cluster.reason.clone(),
        }
    }
}

/// Per-user totals over active clusters, for admins.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UserSummary {
    pub user: String,
    pub clusters: usize,
    pub pending: usize,
    pub running: usize,
    pub workers: u64,
    pub cores: f64,
    pub memory: u64,
}

/// Everyone's active clusters, summed per user, by user name.
pub fn summary(clusters: &[Cluster]) -> Vec<UserSummary> {
    let mut by_user: BTreeMap<&str, UserSummary> = BTreeMap::new();
    for c in clusters.iter().filter(|c| c.status.is_active()) {
        let row = Row::of(c);
        let entry = by_user
            .entry(&c.username)
            .or_insert_with(|| UserSummary { user: c.username.clone(), ..Default::default() });
        entry.clusters += 1;
        match c.status {
            crate::domain::models::ClusterStatus::Pending => entry.pending += 1,
            _ => entry.running += 1,
        }
        entry.workers += u64::from(row.workers);
        entry.cores += row.cores;
        entry.memory = entry.memory.saturating_add(row.memory);
    }
    by_user.into_values().collect()
}

/// The rows `user` may see: active clusters (newest first), then the
/// [`FINISHED_SHOWN`] most recently finished; at most [`MAX_ROWS`].
pub fn rows(clusters: &[Cluster], user: &User) -> (Vec<Row>, bool) {
    let visible: Vec<&Cluster> = clusters.iter().filter(|c| user.may_access(&c.username)).collect();
    let mut active: Vec<&Cluster> =
        visible.iter().copied().filter(|c| c.status.is_active()).collect();
    active.sort_by(|a, b| b.start_time.cmp(&a.start_time).then_with(|| a.name.cmp(&b.name)));
    let mut finished: Vec<&Cluster> =
        visible.iter().copied().filter(|c| !c.status.is_active()).collect();
    finished.sort_by(|a, b| {
        let end = |c: &Cluster| c.stop_time.unwrap_or(c.start_time);
        end(b).cmp(&end(a)).then_with(|| a.name.cmp(&b.name))
    });
    finished.truncate(FINISHED_SHOWN);
    let all: Vec<&Cluster> = active.into_iter().chain(finished).collect();
    let truncated = all.len() > MAX_ROWS;
    (all.into_iter().take(MAX_ROWS).map(Row::of).collect(), truncated)
}

/// One snapshot of the page: the viewer, their rows, and the summary for admins.
pub fn snapshot(clusters: &[Cluster], user: &User) -> Value {
    let (rows, truncated) = rows(clusters, user);
    json!({
        "user": user.name,
        "admin": user.admin,
        "clusters": rows,
        "truncated": truncated,
        "summary": user.admin.then(|| summary(clusters)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::models::ClusterStatus;
    use crate::domain::models::tests::sample;

    /// A user as the authenticator makes them (simple auth, `root` an admin).
    fn viewer(name: &str, admin: bool) -> User {
        use crate::config::{AuthConfig, Limits};
        use base64::Engine;
        let config = AuthConfig { admins: vec!["root".into()], ..Default::default() };
        let auth = crate::auth::Authenticator::new(&config, &Limits::default()).unwrap();
        let mut headers = axum::http::HeaderMap::new();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{name}:"));
        headers.insert("authorization", format!("Basic {basic}").parse().unwrap());
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (user, _) = runtime.block_on(auth.authenticate(&headers)).unwrap();
        assert_eq!(user.admin, admin, "{name}");
        user
    }

    fn clusters() -> Vec<Cluster> {
        let mut a1 = sample("a1", "alice", ClusterStatus::Running);
        a1.workers = 3;
        a1.start_time = 10;
        let mut a2 = sample("a2", "alice", ClusterStatus::Pending);
        a2.start_time = 20;
        let mut a3 = sample("a3", "alice", ClusterStatus::Failed);
        a3.stop_time = Some(30);
        a3.reason = Some("the scheduler did not start within 60 s".into());
        let mut b1 = sample("b1", "bob", ClusterStatus::Running);
        b1.workers = 2;
        b1.config.worker_cores = 2.0;
        vec![a1, a2, a3, b1]
    }

    #[test]
    fn users_see_their_own_clusters_admins_everyones() {
        let (alice, _) = rows(&clusters(), &viewer("alice", false));
        let names: Vec<&str> = alice.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a2", "a1", "a3"], "active newest first, then finished");
        let (bob, _) = rows(&clusters(), &viewer("bob", false));
        assert!(bob.iter().all(|r| r.user == "bob") && bob.len() == 1);
        let (root, _) = rows(&clusters(), &viewer("root", true));
        assert_eq!(root.len(), 4);
        let snapshot = snapshot(&clusters(), &viewer("bob", false));
        assert!(snapshot["summary"].is_null(), "no summary for non-admins");
    }

    #[test]
    fn rows_carry_totals_and_no_secrets() {
        let (alice, _) = rows(&clusters(), &viewer("alice", false));
        let a1 = alice.iter().find(|r| r.name == "a1").unwrap();
        assert_eq!((a1.workers, a1.cores, a1.memory), (3, 3.0, 3 << 30));
        assert!(a1.dashboard_route.as_deref().is_some_and(|r| r.starts_with("/clusters/a1/~")));
        let a3 = alice.iter().find(|r| r.name == "a3").unwrap();
        assert_eq!(a3.reason.as_deref(), Some("the scheduler did not start within 60 s"));
        let text = serde_json::to_string(&alice).unwrap();
        assert!(!text.contains("KEY") && !text.contains("CERT") && !text.contains("\"t\""));
    }

    #[test]
    fn the_summary_adds_up_active_clusters_per_user() {
        let summary = summary(&clusters());
        assert_eq!(summary.len(), 2);
        let alice = &summary[0];
        assert_eq!(
            (alice.user.as_str(), alice.clusters, alice.pending, alice.running),
            ("alice", 2, 1, 1)
        );
        assert_eq!((alice.workers, alice.cores, alice.memory), (3, 3.0, 3 << 30));
        let bob = &summary[1];
        assert_eq!((bob.workers, bob.cores), (2, 4.0));
    }

    #[test]
    fn finished_clusters_are_capped() {
        let many: Vec<Cluster> = (0..50)
            .map(|i| {
                let mut c = sample(&format!("s{i}"), "alice", ClusterStatus::Stopped);
                c.stop_time = Some(i);
                c
            })
            .collect();
        let (rows, truncated) = rows(&many, &viewer("alice", false));
        assert_eq!(rows.len(), FINISHED_SHOWN);
        assert_eq!(rows[0].name, "s49");
        assert!(!truncated);
    }
}
