//! A cluster as the gateway knows it, and its JSON as the client reads it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::domain::options::ClusterConfig;

/// The client's `ClusterStatus`, in order.
/// Marks the capability segment after the cluster name in a dashboard path.
pub const CAPABILITY_MARK: char = '~';

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ClusterStatus {
    Pending = 1,
    Running = 2,
    Stopping = 3,
    Stopped = 4,
    Failed = 5,
}

impl ClusterStatus {
    pub const ALL: [ClusterStatus; 5] =
        [Self::Pending, Self::Running, Self::Stopping, Self::Stopped, Self::Failed];

    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Stopping => "STOPPING",
            Self::Stopped => "STOPPED",
            Self::Failed => "FAILED",
        }
    }

    /// Case-insensitive, with the Python server's message for a bad name.
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| format!("'{name}' is not a valid ClusterStatus"))
    }

    /// Pending or running: what a list shows by default and limits count
    /// (a cluster asked to stop is no longer the user's, as in dask-gateway).
    pub fn is_active(self) -> bool {
        self <= Self::Running
    }
}

/// Where a running cluster's scheduler answers, from its first heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addresses {
    /// `tls://host:port`: the target of SNI routing.
    pub scheduler: String,
    /// `http://host:port`, or empty when the scheduler has no dashboard.
    pub dashboard: String,
    /// `http://host:port` of the preload's `/api/comm`.
    pub api: String,
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub username: String,
    /// Shared with the scheduler: it authenticates heartbeats and `/api/comm`.
    pub token: String,
    /// The validated options, every field filled in.
    pub options: Map<String, Value>,
    pub config: ClusterConfig,
    pub status: ClusterStatus,
    /// Milliseconds since the epoch.
    pub start_time: i64,
    pub stop_time: Option<i64>,
    pub tls_cert: String,
    pub tls_key: String,
    pub addresses: Option<Addresses>,
    /// Workers the scheduler last asked for (for the per-user limits).
    pub workers: u32,
    /// Why a FAILED cluster failed (or, while PENDING on Kubernetes, what
    /// holds its scheduler up); not in the client's JSON (it rejects extra
    /// keys): the logs route says it, and `GET ?wait` answers a FAILED
    /// cluster with a 409 naming it, which the client raises.
    pub reason: Option<String>,
}

impl Cluster {
    /// A new PENDING cluster with its own name, API token and TLS key pair.
    pub fn fresh(
        username: &str,
        options: Map<String, Value>,
        config: ClusterConfig,
    ) -> anyhow::Result<Self> {
        let name = uuid::Uuid::new_v4().simple().to_string();
        let credentials = crate::domain::tls::new_credentials(&name)?;
        Ok(Self {
            name,
            username: username.into(),
            token: format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()),
            options,
            config,
            status: ClusterStatus::Pending,
            start_time: now_ms(),
            stop_time: None,
            tls_cert: credentials.cert_pem,
            tls_key: credentials.key_pem,
            addresses: None,
            workers: 0,
            reason: None,
        })
    }

    /// The cluster JSON: exactly these keys, or the client raises TypeError.
    pub fn to_json(&self) -> Value {
        let running = self.status == ClusterStatus::Running;
        let has_dashboard = self.addresses.as_ref().is_some_and(|a| !a.dashboard.is_empty());
        let dashboard_route = (running && has_dashboard).then(|| self.dashboard_route());
        json!({
            "name": self.name,
            "dashboard_route": dashboard_route,
            "status": self.status.name(),
            "start_time": self.start_time,
            "stop_time": self.stop_time,
            "options": self.options,
            "tls_cert": running.then_some(&self.tls_cert),
            "tls_key": running.then_some(&self.tls_key),
        })
    }

    /// The capability in the owner's dashboard link: derived from the
    /// cluster's secret token, so every gateway replica agrees on it and
    /// nobody without the token (or the link) can work it out.
    pub fn dashboard_token(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut digest = Sha256::new();
        for part in ["dask-gateway dashboard", &self.name, &self.token] {
            digest.update(part.as_bytes());
            digest.update([0]);
        }
        hex::encode(digest.finalize())
    }

    /// The capability in the cluster's dashboard route, below the prefix.
    pub fn dashboard_route(&self) -> String {
        format!("/clusters/{}/{CAPABILITY_MARK}{}/status", self.name, self.dashboard_token())
    }

    /// The scheduler address to splice SNI traffic to, when running.
    pub fn scheduler_target(&self) -> Option<String> {
        let a = self.addresses.as_ref().filter(|_| self.status == ClusterStatus::Running)?;
        Some(a.scheduler.trim_start_matches("tls://").to_string())
    }

    /// The dashboard to proxy `/clusters/<name>/` to, when running.
    pub fn dashboard_target(&self) -> Option<String> {
        let a = self.addresses.as_ref().filter(|_| self.status == ClusterStatus::Running)?;
        (!a.dashboard.is_empty()).then(|| a.dashboard.clone())
    }
}

/// What the scheduler preload reports in each heartbeat.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Heartbeat {
    pub scheduler_address: String,
    #[serde(default)]
    pub dashboard_address: String,
    pub api_address: String,
    pub count: i64,
    #[serde(default)]
    pub active_workers: Vec<String>,
    #[serde(default)]
    pub closing_workers: Vec<String>,
    #[serde(default)]
    pub closed_workers: Vec<String>,
    /// Connected clients, from the dask-rs presence preload (absent from
    /// schedulers without it).
    #[serde(default)]
    pub clients: Option<u32>,
    /// Seconds since the last client left (or the scheduler started).
    #[serde(default)]
    pub clientless_seconds: Option<f64>,
}

impl Heartbeat {
    pub fn addresses(&self) -> Addresses {
        Addresses {
            scheduler: self.scheduler_address.clone(),
            dashboard: self.dashboard_address.clone(),
            api: self.api_address.clone(),
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample(name: &str, user: &str, status: ClusterStatus) -> Cluster {
        Cluster {
            name: name.into(),
            username: user.into(),
            token: "t".into(),
            options: Map::new(),
            config: ClusterConfig {
                worker_cores: 1.0,
                worker_memory: 1 << 30,
                worker_threads: 1,
                idle_timeout: 0.0,
                idle_client_timeout: 0.0,
                max_lifetime: 0.0,
                environment: Default::default(),
                image: None,
                profile: "small".into(),
            },
            status,
            start_time: 1,
            stop_time: None,
            tls_cert: "CERT".into(),
            tls_key: "KEY".into(),
            addresses: Some(Addresses {
                scheduler: "tls://127.0.0.1:1".into(),
                dashboard: "http://127.0.0.1:2".into(),
                api: "http://127.0.0.1:3".into(),
            }),
            workers: 0,
            reason: None,
        }
    }

    #[test]
    fn json_has_exactly_the_client_keys() {
        let json = sample("abc", "alice", ClusterStatus::Running).to_json();
        let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "dashboard_route",
                "name",
                "options",
                "start_time",
                "status",
                "stop_time",
                "tls_cert",
                "tls_key"
            ]
        );
        let route = format!(
            "/clusters/abc/~{}/status",
            sample("abc", "alice", ClusterStatus::Running).dashboard_token()
        );
        assert_eq!(json["dashboard_route"], route);
        assert_eq!(json["status"], "RUNNING");
    }

    #[test]
    fn pending_clusters_hide_credentials_and_dashboard() {
        let json = sample("abc", "alice", ClusterStatus::Pending).to_json();
        assert!(
            json["tls_cert"].is_null()
                && json["tls_key"].is_null()
                && json["dashboard_route"].is_null()
        );
    }

    #[test]
    fn status_names_parse_case_insensitively() {
        assert_eq!(ClusterStatus::parse("running"), Ok(ClusterStatus::Running));
        assert_eq!(
            ClusterStatus::parse("bogus").unwrap_err(),
            "'bogus' is not a valid ClusterStatus"
        );
    }
}
