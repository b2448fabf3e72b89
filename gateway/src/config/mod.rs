//! The gateway's configuration file (TOML). Every table rejects unknown keys,
//! so a typo fails at start-up with the key's name instead of being ignored.
//! With no file, [`Config::default`] is the embedded development setup:
//! loopback, simple auth, the local backend and the three profiles.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::domain::limits::{
    DEFAULT_CLUSTER_MAX_WORKERS, DEFAULT_USER_MAX_CORES, DEFAULT_USER_MAX_MEMORY_GIB, Limits,
};
pub use crate::domain::options::ClusterDefaults;
use crate::domain::options::{FieldConfig, Profile, default_profiles};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The one port: REST API, dashboards and scheduler TLS (by SNI).
    pub listen: SocketAddr,
    /// Path prefix the gateway is served under (e.g. `/services/dask-gateway`).
    pub prefix: String,
    /// Log format: `text` or `json`.
    pub log_format: LogFormat,
    pub auth: AuthConfig,
    pub options: OptionsConfig,
    pub limits: Limits,
    pub cluster: ClusterDefaults,
    pub backend: BackendConfig,
    pub connections: ConnectionLimits,
}

/// `text` or `json`, as the operator's.
pub use dask_common::logging::LogFormat;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `simple` (any user name, an optional shared password: development),
    /// `basic` (the users file) or `jupyterhub` (tokens checked by the Hub).
    #[serde(rename = "type")]
    pub kind: AuthKind,
    /// Shared password for `simple`; none accepts any password.
    pub password: Option<String>,
    /// TOML file of users with argon2 password hashes, for `basic`.
    pub users_file: Option<PathBuf>,
    /// The Hub's API, e.g. `http://hub:8081/hub/api`, for `jupyterhub`;
    /// default `$JUPYTERHUB_API_URL`, as the Hub sets it for its services.
    pub jupyterhub_api_url: Option<String>,
    /// Static API tokens, sent as `Authorization: Bearer|token <token>`;
    /// only their SHA-256 (hex) is stored here.
    pub tokens: Vec<StaticToken>,
    /// User names with the admin role: they see and manage every cluster.
    pub admins: Vec<String>,
    /// Name of the session cookie set after a successful login.
    pub cookie_name: String,
    /// How long a session cookie stays valid, in seconds.
    pub cookie_max_age: u64,
    /// File with the key that seals session cookies (at least 32 bytes,
    /// e.g. a mounted Secret): gateway replicas that share it accept each
    /// other's sessions, and sessions survive a restart. None: a key of
    /// this process alone.
    pub cookie_secret_file: Option<PathBuf>,
    /// JupyterHub: stop a user's clusters once the Hub says the user has no
    /// server any more (needs the service's `read:servers` scope).
    pub stop_clusters_with_server: bool,
    /// Seconds between those checks.
    pub server_check_period: f64,
    /// Seconds the owner's server must stay gone before the clusters stop
    /// (a server restarting keeps them); 0: at the first check that sees it gone.
    pub server_stop_grace: f64,
    // Secure defaults: no open access by accident (the shared password from
    // a mounted Secret, open simple auth only on request, Secure cookies).
    /// File holding the shared password for `simple` (e.g. a mounted
    /// Secret), instead of `password` in the config file.
    pub password_file: Option<PathBuf>,
    /// Lets `simple` auth run with no password on a non-loopback address,
    /// where anyone can then act as any user, admins included.
    pub allow_insecure: bool,
    /// The session cookie's `Secure` flag: `auto` (when the request came
    /// over HTTPS, by `X-Forwarded-Proto`), `always` or `never`.
    pub cookie_secure: CookieSecure,
    // The gateway as a JupyterHub service: its own token and name at the Hub,
    // and the Hub's OAuth endpoints for browser logins.
    /// The service's own Hub API token (the OAuth client secret); default
    /// `$JUPYTERHUB_API_TOKEN`, as the Hub sets it for the services it runs.
    pub jupyterhub_api_token: Option<String>,
    /// File holding that token (e.g. a mounted Secret).
    pub jupyterhub_api_token_file: Option<PathBuf>,
    /// The service's name at the Hub, in the scope
    /// `access:services!service=<name>`. Default `$JUPYTERHUB_SERVICE_NAME`,
    /// else `dask-gateway`.
    pub jupyterhub_service_name: Option<String>,
    /// Users' tokens need `access:services!service=<name>` too. Off by
    /// default, as in dask-gateway-server: any token the Hub resolves to a
    /// user is accepted, the one a spawned notebook server has included
    /// (its scopes are the Hub's `server` role, which lacks the scope).
    /// Turned on, the Hub must grant the scope to servers' tokens
    /// (`c.Spawner.server_token_scopes` or a `server` role). Other services'
    /// tokens always need it.
    pub jupyterhub_require_access_scope: bool,
    /// Seconds a Hub answer about a token is trusted: a token revoked at
    /// the Hub stops working within this time, sessions included.
    pub jupyterhub_cache_seconds: u64,
    /// Where browsers are sent to log in. Default
    /// `$JUPYTERHUB_PUBLIC_HUB_URL` + `api/oauth2/authorize`, else
    /// `$JUPYTERHUB_HOST$JUPYTERHUB_BASE_URL` + `hub/api/oauth2/authorize`
    /// (`/hub/api/oauth2/authorize` behind the Hub's proxy).
    pub jupyterhub_authorize_url: Option<String>,
    /// The OAuth redirect URI registered for the service. Default
    /// `$JUPYTERHUB_OAUTH_CALLBACK_URL`, else `<prefix>/oauth_callback`.
    pub jupyterhub_oauth_callback_url: Option<String>,
    /// The OAuth client id. Default `$JUPYTERHUB_CLIENT_ID`, else `service-<name>`.
    pub jupyterhub_client_id: Option<String>,
    /// Profiles offered to users in none of `groups` (default: all).
    pub default_profiles: Option<Vec<String>>,
    /// Per-group limits and profiles, by the Hub's group names.
    pub groups: BTreeMap<String, crate::domain::policy::GroupPolicy>,
}

/// The Hub settings once the environment has filled the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct HubSettings {
    pub api_url: String,
    pub api_token: Option<String>,
    pub service_name: String,
    pub require_access_scope: bool,
    pub client_id: String,
    pub authorize_url: String,
    /// `None`: `<prefix>/oauth_callback`, the Hub's default for a service.
    pub callback_url: Option<String>,
    pub cache_ttl: std::time::Duration,
}

impl AuthConfig {
    /// The Hub settings, defaults from the environment JupyterHub gives its
    /// services (`env` is `std::env::var` but for tests).
    pub fn hub_settings(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<HubSettings> {
        let env = |key: &str| env(key).filter(|v| !v.is_empty());
        let api_token = match (&self.jupyterhub_api_token, &self.jupyterhub_api_token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        anyhow::anyhow!("auth.jupyterhub_api_token_file {}: {e}", path.display())
                    })?
                    .trim()
                    .to_string(),
            ),
            (None, None) => env("JUPYTERHUB_API_TOKEN"),
        };
        let service_name = self
            .jupyterhub_service_name
            .clone()
            .or_else(|| env("JUPYTERHUB_SERVICE_NAME"))
            .unwrap_or_else(|| "dask-gateway".into());
        let authorize_url = self.jupyterhub_authorize_url.clone().unwrap_or_else(|| {
            match env("JUPYTERHUB_PUBLIC_HUB_URL") {
                Some(hub) => format!("{}/api/oauth2/authorize", hub.trim_end_matches('/')),
                None => format!(
                    "{}{}/hub/api/oauth2/authorize",
                    env("JUPYTERHUB_HOST").unwrap_or_default(),
                    env("JUPYTERHUB_BASE_URL").unwrap_or_default().trim_end_matches('/'),
                ),
            }
        });
        let api_url = self.jupyterhub_api_url.clone().or_else(|| env("JUPYTERHUB_API_URL"));
        let Some(api_url) = api_url else {
            anyhow::bail!(
                "auth.jupyterhub_api_url: required with auth.type = \"jupyterhub\" \
                 (or $JUPYTERHUB_API_URL, as the Hub sets it for the services it runs)"
            );
        };
        Ok(HubSettings {
            api_url,
            api_token,
            client_id: self
                .jupyterhub_client_id
                .clone()
                .or_else(|| env("JUPYTERHUB_CLIENT_ID"))
                .unwrap_or_else(|| format!("service-{service_name}")),
            service_name,
            require_access_scope: self.jupyterhub_require_access_scope,
            authorize_url,
            callback_url: self
                .jupyterhub_oauth_callback_url
                .clone()
                .or_else(|| env("JUPYTERHUB_OAUTH_CALLBACK_URL")),
            cache_ttl: std::time::Duration::from_secs(self.jupyterhub_cache_seconds),
        })
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CookieSecure {
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    #[default]
    Simple,
    Basic,
    Jupyterhub,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticToken {
    pub user: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptionsConfig {
    /// The profiles offered as the `profile` option, in this order; the
    /// first is the default.
    pub profiles: Vec<Profile>,
    /// Further user options, after `profile`.
    pub fields: Vec<FieldConfig>,
}

// --- Hardening: resource and connection limits, so that one user or a
// flood of connections cannot exhaust a shared gateway. ---

/// Connection hygiene on the one port. Times are in seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Open connections on the public port; past it, new ones are closed at once.
    pub max_connections: usize,
    /// Time for a client's first bytes (TLS ClientHello or HTTP request line).
    pub first_byte_timeout: f64,
    /// Time for a request's headers once a request (or keep-alive wait) begins.
    pub header_read_timeout: f64,
    /// An HTTP connection with no request in flight and no bytes either way
    /// for this long is closed (keep-alive, stalled bodies).
    pub http_idle_timeout: f64,
    /// A dashboard websocket with no bytes either way for this long is closed.
    pub websocket_idle_timeout: f64,
    /// A relayed scheduler (TLS) connection with no bytes either way for
    /// this long is closed; Dask reconnects pooled comms on demand.
    pub relay_idle_timeout: f64,
    /// A second, API-only listener for scheduler heartbeats (Kubernetes:
    /// point `backend.api_url` at it), so that a flood on the public port
    /// cannot cut them off. The local backend always gets its own on
    /// loopback.
    pub heartbeat_listen: Option<SocketAddr>,
    /// Open connections on the heartbeat listener.
    pub heartbeat_max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            first_byte_timeout: 10.0,
            // Longer than aiohttp's 15 s keep-alive (the Python client), so
            // the client, not the gateway, closes an idle pooled connection
            // and never races a request against the close.
            header_read_timeout: 30.0,
            http_idle_timeout: 120.0,
            websocket_idle_timeout: 600.0,
            relay_idle_timeout: 3600.0,
            heartbeat_listen: None,
            heartbeat_max_connections: 512,
        }
    }
}

impl ConnectionLimits {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.max_connections > 0, "connections.max_connections: must be positive");
        anyhow::ensure!(
            self.heartbeat_max_connections > 0,
            "connections.heartbeat_max_connections: must be positive"
        );
        for (key, value) in [
            ("first_byte_timeout", self.first_byte_timeout),
            ("header_read_timeout", self.header_read_timeout),
            ("http_idle_timeout", self.http_idle_timeout),
            ("websocket_idle_timeout", self.websocket_idle_timeout),
            ("relay_idle_timeout", self.relay_idle_timeout),
        ] {
            anyhow::ensure!(
                value.is_finite() && value > 0.0 && value <= 86_400.0,
                "connections.{key}: must be between 0 and 86400 seconds"
            );
        }
        Ok(())
    }
}

impl Limits {
    fn check(&self) -> anyhow::Result<()> {
        for (key, value) in
            [("user_max_cores", self.user_max_cores), ("cluster_max_cores", self.cluster_max_cores)]
        {
            if let Some(v) = value {
                anyhow::ensure!(
                    v.is_finite() && v >= 0.0,
                    "limits.{key}: must be a non-negative number"
                );
            }
        }
        anyhow::ensure!(
            self.local_max_starting_workers > 0,
            "limits.local_max_starting_workers: must be positive"
        );
        anyhow::ensure!(
            self.max_concurrent_password_checks > 0,
            "limits.max_concurrent_password_checks: must be positive"
        );
        Ok(())
    }
}

// --- End of the hardening block. ---

// Read once at start-up: the Kubernetes variant's size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
pub enum BackendConfig {
    /// Schedulers and workers as processes on this machine.
    Local(LocalConfig),
    /// DaskCluster resources for the operator.
    Kubernetes(KubernetesConfig),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConfig {
    /// The `dask` executable (from `distributed`, with `dask-gateway` installed).
    pub dask: PathBuf,
    /// Where each cluster's certificate, key and logs go.
    pub state_dir: PathBuf,
    /// Hand client connections to the scheduler process instead of relaying
    /// them (see `handoff.rs`); off: splice them like the Kubernetes backend.
    pub handoff: bool,
    /// Ready schedulers kept per pooled profile, each with its own name,
    /// token and TLS pair, claimed by a create; 0: every start is cold.
    pub pool_size: u32,
    /// The profiles that get a pool (default: the first, the default one).
    pub pool_profiles: Option<Vec<String>>,
    /// Fork workers from a process that has imported `distributed` already.
    pub fork_workers: bool,
}

/// The longest timeout or lifetime a cluster may be given: a year. Past it
/// a value is a typo (milliseconds for seconds), not a policy.
pub const MAX_CLUSTER_SECONDS: f64 = 365.0 * 86_400.0;

/// A cluster timeout: 0 (off) up to [`MAX_CLUSTER_SECONDS`].
fn check_timeout(key: &str, value: Option<f64>) -> anyhow::Result<()> {
    if let Some(v) = value {
        anyhow::ensure!(
            v.is_finite() && (0.0..=MAX_CLUSTER_SECONDS).contains(&v),
            "{key}: must be between 0 (off) and {MAX_CLUSTER_SECONDS} seconds (a year), got {v}"
        );
    }
    Ok(())
}

/// Ready schedulers per profile beyond which an idle pool costs more than it saves.
pub const MAX_POOL_SIZE: u32 = 16;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// Namespace of the DaskClusters (the gateway's own by default).
    pub namespace: Option<String>,
    /// Scheduler and worker image.
    pub image: String,
    /// Label value that tells this gateway's clusters from another's.
    pub instance: String,
    /// URL the schedulers send heartbeats to, e.g. `http://dask-gateway.ns:8000/api`.
    pub api_url: String,
    /// DNS domain of the cluster.
    pub cluster_domain: String,
    /// Create, with each cluster, a NetworkPolicy that lets its own pods
    /// reach each other (for a namespace where a policy denies the rest).
    pub network_policy: bool,
    /// Pooled DaskClusters kept ready per pooled profile (each a running
    /// scheduler pod with its own name, token and TLS pair), claimed by a
    /// create; 0 (the default): every start is cold.
    pub pool_size: u32,
    /// The profiles that get a pool (default: the first, the default one).
    pub pool_profiles: Option<Vec<String>>,
    /// Pod keys of every cluster; a profile's override them (see `pods.rs`).
    #[serde(flatten)]
    pub pods: crate::domain::pods::PodConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8000".parse().expect("a valid address"),
            prefix: String::new(),
            log_format: LogFormat::Text,
            auth: AuthConfig::default(),
            options: OptionsConfig::default(),
            limits: Limits::default(),
            cluster: ClusterDefaults::default(),
            backend: BackendConfig::Local(LocalConfig::default()),
            connections: ConnectionLimits::default(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            kind: AuthKind::Simple,
            password: None,
            users_file: None,
            jupyterhub_api_url: None,
            tokens: vec![],
            admins: vec![],
            cookie_name: "dask-gateway".into(),
            cookie_max_age: 600,
            cookie_secret_file: None,
            stop_clusters_with_server: false,
            server_check_period: 60.0,
            server_stop_grace: 0.0,
            password_file: None,
            allow_insecure: false,
            cookie_secure: CookieSecure::Auto,
            jupyterhub_api_token: None,
            jupyterhub_api_token_file: None,
            jupyterhub_service_name: None,
            jupyterhub_require_access_scope: false,
            jupyterhub_cache_seconds: 60,
            jupyterhub_authorize_url: None,
            jupyterhub_oauth_callback_url: None,
            jupyterhub_client_id: None,
            default_profiles: None,
            groups: BTreeMap::new(),
        }
    }
}

impl Default for OptionsConfig {
    fn default() -> Self {
        Self { profiles: default_profiles(), fields: vec![] }
    }
}

impl Default for LocalConfig {
    fn default() -> Self {
        let state = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(std::env::temp_dir);
        Self {
            dask: "dask".into(),
            state_dir: state.join("dask-gateway-rs"),
            handoff: true,
            pool_size: 1,
            pool_profiles: None,
            fork_workers: true,
        }
    }
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            namespace: None,
            image: "dask-rs/worker:latest".into(),
            instance: "dask-gateway".into(),
            api_url: "http://dask-gateway:8000/api".into(),
            cluster_domain: "cluster.local".into(),
            network_policy: false,
            // Each pooled profile holds a scheduler pod's requests all the
            // time, on a cluster shared with others: an administrator opts in.
            pool_size: 0,
            pool_profiles: None,
            pods: Default::default(),
        }
    }
}

impl BackendConfig {
    pub fn name(&self) -> &'static str {
        match self {
            BackendConfig::Local(_) => "local",
            BackendConfig::Kubernetes(_) => "kubernetes",
        }
    }
}

impl Config {
    /// Reads and checks a config file; the error names the file and the bad key.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Reads several config files as one: each later file's tables merge
    /// into the earlier ones key by key, and any other value it sets (a
    /// number, a string, an array, an array of tables such as
    /// `[[options.profiles]]`) replaces the earlier one. For a chart's raw
    /// `extraConfig` after its rendered config. Errors name the file (syntax)
    /// or the key.
    pub fn load_all(paths: &[PathBuf]) -> anyhow::Result<Self> {
        if let [path] = paths {
            return Self::load(path);
        }
        let mut merged = toml::Table::new();
        for path in paths {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let table: toml::Table =
                text.parse().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            merge_tables(&mut merged, table);
        }
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        let config: Config = toml::Value::Table(merged)
            .try_into()
            .map_err(|e| anyhow::anyhow!("{} (merged): {e}", names.join(" + ")))?;
        config.check().map_err(|e| anyhow::anyhow!("{} (merged): {e}", names.join(" + ")))?;
        Ok(config)
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Config = toml::from_str(text)?;
        config.check()?;
        Ok(config)
    }

    /// Refuses what would let anyone in as anyone: `simple` auth with no
    /// password on an address other hosts reach, unless `auth.allow_insecure`
    /// says so. Run after command-line overrides of `listen`.
    pub fn check_exposure(&self) -> anyhow::Result<()> {
        let open = self.auth.kind == AuthKind::Simple
            && self.auth.password.is_none()
            && self.auth.password_file.is_none();
        anyhow::ensure!(
            !open || self.listen.ip().is_loopback() || self.auth.allow_insecure,
            "auth: type \"simple\" with no password on {} lets anyone act as any user, admins \
             included. Set auth.password or auth.password_file, use type \"basic\" or \
             \"jupyterhub\", listen on 127.0.0.1, or set auth.allow_insecure = true",
            self.listen
        );
        Ok(())
    }

    /// The per-group policies over `[limits]`.
    pub fn policies(&self) -> crate::domain::policy::Policies {
        crate::domain::policy::Policies::new(
            self.limits.clone(),
            self.auth.default_profiles.clone(),
            self.auth.groups.clone(),
        )
    }

    /// The most workers a backend lets any one cluster have: the widest
    /// group's bound, not `[limits]` alone (the API clamps each request to
    /// its owner's policy; a group may allow more than the base).
    pub fn backend_max_workers(&self) -> Option<u32> {
        self.policies().widest().limits.cluster_max_workers
    }

    /// Keys the chosen backend ignores, in words for a start-up warning:
    /// the local backend has no pods to shape.
    pub fn ignored_keys(&self) -> Vec<String> {
        if !matches!(self.backend, BackendConfig::Local(_)) {
            return vec![];
        }
        let no_pods = crate::domain::pods::PodConfig::default();
        self.options
            .profiles
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                p.pods != no_pods
                    || p.image.is_some()
                    || p.worker_cores_limit.is_some()
                    || p.worker_memory_limit.is_some()
            })
            .map(|(i, p)| {
                format!(
                    "options.profiles[{i}] ({}): its Kubernetes pod keys are ignored by the local backend",
                    p.name
                )
            })
            .collect()
    }

    /// Checks that serde cannot express.
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.options.profiles.is_empty(),
            "options.profiles: at least one profile is needed"
        );
        for (i, p) in self.options.profiles.iter().enumerate() {
            anyhow::ensure!(
                p.worker_cores > 0.0,
                "options.profiles[{i}].worker_cores: must be positive"
            );
            anyhow::ensure!(
                p.worker_memory.0 > 0,
                "options.profiles[{i}].worker_memory: must be positive"
            );
        }
        for f in &self.options.fields {
            f.check()?;
        }
        if let BackendConfig::Kubernetes(k8s) = &self.backend {
            crate::domain::pods::resolve_all(&k8s.pods, &self.options.profiles)?;
        }
        let (pool_size, pool_profiles) = match &self.backend {
            BackendConfig::Local(local) => (local.pool_size, &local.pool_profiles),
            BackendConfig::Kubernetes(k8s) => (k8s.pool_size, &k8s.pool_profiles),
        };
        anyhow::ensure!(
            pool_size <= MAX_POOL_SIZE,
            "backend.pool_size: at most {MAX_POOL_SIZE} ready schedulers per profile"
        );
        for name in pool_profiles.iter().flatten() {
            anyhow::ensure!(
                self.options.profiles.iter().any(|p| &p.name == name),
                "backend.pool_profiles: no profile named {name:?}"
            );
        }
        anyhow::ensure!(
            self.cluster.completed_cluster_max_age >= 0.0
                && self.cluster.completed_cluster_max_age.is_finite(),
            "cluster.completed_cluster_max_age: must be a non-negative number of seconds"
        );
        let c = &self.cluster;
        let timeouts = [
            ("idle_timeout", Some(c.idle_timeout)),
            ("idle_client_timeout", Some(c.idle_client_timeout)),
            ("max_lifetime", Some(c.max_lifetime)),
        ];
        for (key, value) in timeouts {
            check_timeout(&format!("cluster.{key}"), value)?;
        }
        for (i, p) in self.options.profiles.iter().enumerate() {
            let timeouts = [
                ("idle_timeout", p.idle_timeout),
                ("idle_client_timeout", p.idle_client_timeout),
                ("max_lifetime", p.max_lifetime),
            ];
            for (key, value) in timeouts {
                check_timeout(&format!("options.profiles[{i}].{key}"), value)?;
            }
        }
        self.limits.check()?;
        self.connections.check()?;
        anyhow::ensure!(
            self.prefix.is_empty() || (self.prefix.starts_with('/') && !self.prefix.ends_with('/')),
            "prefix: must start with '/' and not end with it, e.g. \"/services/dask-gateway\""
        );
        if self.auth.kind == AuthKind::Basic {
            anyhow::ensure!(
                self.auth.users_file.is_some(),
                "auth.users_file: required with auth.type = \"basic\""
            );
        }
        if self.auth.stop_clusters_with_server {
            anyhow::ensure!(
                self.auth.kind == AuthKind::Jupyterhub,
                "auth.stop_clusters_with_server: only with auth.type = \"jupyterhub\""
            );
        }
        let period = self.auth.server_check_period;
        anyhow::ensure!(
            period.is_finite() && (1.0..=86_400.0).contains(&period),
            "auth.server_check_period: must be between 1 and 86400 seconds"
        );
        let grace = self.auth.server_stop_grace;
        anyhow::ensure!(
            grace.is_finite() && (0.0..=86_400.0).contains(&grace),
            "auth.server_stop_grace: must be between 0 and 86400 seconds"
        );
        anyhow::ensure!(
            self.auth.jupyterhub_api_token.is_none()
                || self.auth.jupyterhub_api_token_file.is_none(),
            "auth.jupyterhub_api_token and auth.jupyterhub_api_token_file: set one or the other"
        );
        anyhow::ensure!(
            self.auth.jupyterhub_cache_seconds <= 3600,
            "auth.jupyterhub_cache_seconds: at most 3600 (a revoked token works this long)"
        );
        let profiles: Vec<String> = self.options.profiles.iter().map(|p| p.name.clone()).collect();
        self.policies().check(&profiles)?;
        anyhow::ensure!(
            self.auth.password.is_none() || self.auth.password_file.is_none(),
            "auth.password and auth.password_file: set one or the other"
        );
        for (i, t) in self.auth.tokens.iter().enumerate() {
            anyhow::ensure!(
                t.sha256.len() == 64 && t.sha256.chars().all(|c| c.is_ascii_hexdigit()),
                "auth.tokens[{i}].sha256: must be 64 hex digits (sha256sum of the token)"
            );
        }
        Ok(())
    }
}

/// `later` over `base`: tables merge recursively, anything else replaces.
fn merge_tables(base: &mut toml::Table, later: toml::Table) {
    for (key, value) in later {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base)), toml::Value::Table(later)) => {
                merge_tables(base, later)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_backend_names_the_pod_keys_it_ignores() {
        let text = "[[options.profiles]]\nname = \"a\"\nworker_cores = 1\nworker_memory = 1\nenvironment = {X = \"1\"}\n\
                    [[options.profiles]]\nname = \"b\"\nworker_cores = 1\nworker_memory = 1\nnode_selector = {pool = \"x\"}\n";
        let ignored = Config::parse(text).unwrap().ignored_keys();
        assert_eq!(ignored.len(), 1, "{ignored:?}");
        assert!(ignored[0].starts_with("options.profiles[1] (b)"), "{ignored:?}");
        let kubernetes = format!("{text}[backend]\ntype = \"kubernetes\"\n");
        assert!(Config::parse(&kubernetes).unwrap().ignored_keys().is_empty());
    }

    #[test]
    fn the_backends_worker_bound_is_the_widest_groups() {
        let base = "[limits]\ncluster_max_workers = 1\n";
        assert_eq!(Config::parse(base).unwrap().backend_max_workers(), Some(1));
        let staff = format!("{base}[auth.groups.staff]\ncluster_max_workers = 2\n");
        assert_eq!(Config::parse(&staff).unwrap().backend_max_workers(), Some(2));
        let open = format!("{staff}[auth.groups.hpc]\nuser_max_cores = 1\n");
        assert_eq!(Config::parse(&open).unwrap().backend_max_workers(), Some(2), "hpc inherits 1");
    }

    #[test]
    fn lifetimes_and_timeouts_per_profile_over_the_cluster_defaults() {
        let text = "[cluster]\nmax_lifetime = 86400\nidle_client_timeout = 600\n\
                    [[options.profiles]]\nname = \"short\"\nworker_cores = 1\nworker_memory = 1\n\
                    max_lifetime = 3600\nidle_timeout = 300\n\
                    [[options.profiles]]\nname = \"plain\"\nworker_cores = 1\nworker_memory = 1\n";
        let config = Config::parse(text).unwrap();
        let spec =
            crate::domain::options::OptionsSpec::new(config.options.profiles.clone(), vec![]);
        let resolve = |profile: &str| {
            let mut requested = serde_json::Map::new();
            requested.insert("profile".into(), profile.into());
            spec.resolve(&requested, &config.cluster).unwrap().1
        };
        let short = resolve("short");
        assert_eq!(
            (short.max_lifetime, short.idle_timeout, short.idle_client_timeout),
            (3600.0, 300.0, 600.0)
        );
        let plain = resolve("plain");
        assert_eq!(
            (plain.max_lifetime, plain.idle_timeout, plain.idle_client_timeout),
            (86400.0, 0.0, 600.0)
        );
        for bad in [
            "[cluster]\nmax_lifetime = -1\n",
            "[cluster]\nmax_lifetime = 1e12\n",
            "[cluster]\nidle_client_timeout = nan\n",
        ] {
            let err = format!("{:#}", Config::parse(bad).unwrap_err());
            assert!(err.contains("cluster.") && err.contains("a year"), "{err}");
        }
        let bad_profile = text.replace("max_lifetime = 3600", "max_lifetime = -5");
        let err = format!("{:#}", Config::parse(&bad_profile).unwrap_err());
        assert!(err.contains("options.profiles[0].max_lifetime"), "{err}");
    }

    #[test]
    fn unlimited_lifts_a_limit_defaults_included() {
        let config = Config::parse(
            "[limits]\nuser_max_cores = \"unlimited\"\nuser_max_memory = \"unlimited\"\n\
             cluster_max_workers = \"unlimited\"\nuser_max_clusters = 3\ncluster_max_memory = \"2 GiB\"\n",
        )
        .unwrap();
        let limits = &config.limits;
        assert_eq!(
            (limits.user_max_cores, limits.user_max_memory, limits.cluster_max_workers),
            (None, None, None)
        );
        assert_eq!(limits.user_max_clusters, Some(3));
        assert_eq!(limits.cluster_max_memory, Some(crate::domain::options::Memory(2 << 30)));
        for bad in ["cluster_max_workers = \"lots\"", "user_max_clusters = -1"] {
            let err = Config::parse(&format!("[limits]\n{bad}\n")).unwrap_err();
            let err = format!("{err:#}");
            assert!(
                err.contains("unlimited") && err.contains(bad.split(' ').next().unwrap()),
                "{err}"
            );
        }
    }

    #[test]
    fn later_config_files_merge_over_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let base = write(
            "base.toml",
            "[auth]\nadmins = [\"a\"]\ncookie_name = \"c\"\n[[options.profiles]]\nname = \"x\"\nworker_cores = 1\nworker_memory = 1\n[backend]\ntype = \"kubernetes\"\nimage = \"i:1\"\n",
        );
        let extra = write(
            "extra.toml",
            "[auth]\nadmins = [\"b\"]\n[[options.profiles]]\nname = \"y\"\nworker_cores = 2\nworker_memory = 2\n[backend]\nnode_selector = {pool = \"p\"}\n",
        );
        let config = Config::load_all(&[base.clone(), extra.clone()]).unwrap();
        assert_eq!(config.auth.admins, ["b"], "an array is replaced");
        assert_eq!(config.auth.cookie_name, "c", "a table merges");
        let names: Vec<_> = config.options.profiles.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["y"]);
        let BackendConfig::Kubernetes(k8s) = &config.backend else { panic!() };
        assert_eq!(
            (k8s.image.as_str(), k8s.pods.node_selector.as_ref().unwrap()["pool"].as_str()),
            ("i:1", "p")
        );
        let bad = write("bad.toml", "[backend]\nimage_pull_policy = \"Sometimes\"\n");
        let err = Config::load_all(&[base.clone(), bad]).unwrap_err().to_string();
        assert!(err.contains("Sometimes") && err.contains("bad.toml"), "{err}");
        let broken = write("broken.toml", "[backend\n");
        let err = Config::load_all(&[base, broken]).unwrap_err().to_string();
        assert!(err.contains("broken.toml"), "{err}");
    }

    #[test]
    fn default_offers_the_three_profiles() {
        let names: Vec<_> =
            Config::default().options.profiles.iter().map(|p| p.name.clone()).collect();
        assert_eq!(names, ["small", "medium", "larger"]);
    }

    #[test]
    fn defaults_bound_workers_and_connections() {
        let config = Config::default();
        assert_eq!(config.limits.cluster_max_workers, Some(DEFAULT_CLUSTER_MAX_WORKERS));
        assert!(config.limits.user_max_cores.is_some() && config.limits.user_max_memory.is_some());
        let c = &config.connections;
        assert!(c.max_connections >= 1024 && c.max_connections <= 65_536);
        assert!(c.header_read_timeout <= 30.0 && c.first_byte_timeout <= 30.0);
        assert!(c.http_idle_timeout <= 600.0 && c.http_idle_timeout >= 30.0);
        assert!(c.relay_idle_timeout <= 86_400.0 && c.websocket_idle_timeout <= 3600.0);
        let err = Config::parse("[connections]\nheader_read_timeout = -1\n").unwrap_err();
        assert!(err.to_string().contains("connections.header_read_timeout"), "{err}");
    }

    #[test]
    fn completed_clusters_are_kept_a_day_by_default() {
        assert_eq!(Config::default().cluster.completed_cluster_max_age, 86_400.0);
        let config = Config::parse("[cluster]\ncompleted_cluster_max_age = 5\n").unwrap();
        assert_eq!(config.cluster.completed_cluster_max_age, 5.0);
        let err = Config::parse("[cluster]\ncompleted_cluster_max_age = -1\n").unwrap_err();
        assert!(err.to_string().contains("cluster.completed_cluster_max_age"), "{err}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse("[limits]\nuser_max_clusterz = 3\n").unwrap_err().to_string();
        assert!(err.contains("user_max_clusterz"), "{err}");
        let err = Config::parse("[auth]\ntype = \"basic\"\n").unwrap_err().to_string();
        assert!(err.contains("auth.users_file"), "{err}");
        // Pod keys sit beside the other keys of [backend] and of a profile.
        let err = Config::parse("[backend]\ntype = \"kubernetes\"\nnode_selectr = {a = \"b\"}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("node_selectr"), "{err}");
        let profile = "[[options.profiles]]\nname = \"p\"\nworker_cores = 1\nworker_memory = 1\n";
        let err = Config::parse(&format!("{profile}tolerashuns = []\n")).unwrap_err().to_string();
        assert!(err.contains("tolerashuns"), "{err}");
        let err = Config::parse(&format!(
            "{profile}tolerations = [{{key = \"a\", operater = \"Exists\"}}]\n[backend]\ntype = \"kubernetes\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("options.profiles[0].tolerations") && err.contains("operater"),
            "{err}"
        );
    }

    #[test]
    fn open_simple_auth_is_refused_off_loopback() {
        let exposed = Config::parse("listen = \"0.0.0.0:8000\"\n").unwrap();
        let err = exposed.check_exposure().unwrap_err().to_string();
        assert!(err.contains("auth.allow_insecure"), "{err}");
        assert!(Config::default().check_exposure().is_ok());
        for ok in [
            "listen = \"0.0.0.0:8000\"\n[auth]\nallow_insecure = true\n",
            "listen = \"0.0.0.0:8000\"\n[auth]\npassword = \"pw\"\n",
            "listen = \"[::]:8000\"\n[auth]\npassword_file = \"/run/pw\"\n",
        ] {
            Config::parse(ok).unwrap().check_exposure().unwrap();
        }
        let err = Config::parse("[auth]\npassword = \"a\"\npassword_file = \"/b\"\n").unwrap_err();
        assert!(err.to_string().contains("auth.password_file"), "{err}");
    }

    #[test]
    fn profiles_and_backend_parse() {
        let config = Config::parse(
            r#"
            listen = "127.0.0.1:9000"
            [[options.profiles]]
            name = "tiny"
            worker_cores = 1
            worker_memory = "512 MiB"
            [backend]
            type = "kubernetes"
            image = "img:1"
            "#,
        )
        .unwrap();
        assert_eq!(config.options.profiles[0].worker_memory.0, 512 << 20);
        assert!(matches!(config.backend, BackendConfig::Kubernetes(ref k) if k.image == "img:1"));
    }

    #[test]
    fn the_kubernetes_pool_is_off_by_default_and_checked_like_the_local_one() {
        let k8s =
            |extra: &str| Config::parse(&format!("[backend]\ntype = \"kubernetes\"\n{extra}"));
        let BackendConfig::Kubernetes(default) = k8s("").unwrap().backend else { panic!() };
        assert_eq!((default.pool_size, default.pool_profiles), (0, None));
        let BackendConfig::Kubernetes(on) =
            k8s("pool_size = 2\npool_profiles = [\"medium\"]").unwrap().backend
        else {
            panic!()
        };
        assert_eq!((on.pool_size, on.pool_profiles.unwrap()), (2, vec!["medium".to_string()]));
        let error = k8s("pool_size = 17").unwrap_err().to_string();
        assert!(error.contains("backend.pool_size"), "{error}");
        let error = k8s("pool_profiles = [\"huge\"]").unwrap_err().to_string();
        assert!(error.contains("backend.pool_profiles") && error.contains("huge"), "{error}");
    }
}
