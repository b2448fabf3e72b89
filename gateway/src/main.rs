use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use dask_gateway::backends::Backend;
use dask_gateway::backends::local::{LocalBackend, Settings};
use dask_gateway::config::{BackendConfig, Config, LogFormat};
use dask_gateway::proxy::listener::{self, Port, Timeouts};
use dask_gateway::{Gateway, heartbeat_router, router};
use tracing::info;

/// A dask-gateway compatible server. With no config file: loopback, any user
/// name (simple auth), schedulers and workers as local processes.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// TOML config file (see docs/configuration.md for every key); several are
    /// merged in order, a later one's keys over an earlier one's.
    #[arg(long, short, env = "DASK_GATEWAY_CONFIG")]
    config: Vec<PathBuf>,
    /// Overrides `listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Overrides the local backend's `dask` executable.
    #[arg(long)]
    dask: Option<PathBuf>,
    /// Overrides `log_format`.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Reads a password on stdin and prints its argon2 hash for the users file.
    HashPassword,
    /// Checks the config (file and flags) and exits: 0 when it is valid.
    CheckConfig,
}

fn load(args: &Args) -> anyhow::Result<Config> {
    let mut config = match args.config.as_slice() {
        [] => Config::default(),
        paths => Config::load_all(paths)?,
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let (Some(dask), BackendConfig::Local(local)) = (&args.dask, &mut config.backend) {
        local.dask = dask.clone();
    }
    if let Some(format) = args.log_format {
        config.log_format = format;
    }
    config.check_exposure()?;
    Ok(config)
}

/// Every open connection is a file descriptor: the soft limit (often 1024)
/// goes up to the hard one, and a cap the limit cannot hold is reported, so
/// accept(2) never fails with EMFILE below the configured caps.
fn raise_file_limit(connections: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
        tracing::warn!(soft, hard, "could not raise the open file limit");
    }
    let limit = getrlimit(Resource::RLIMIT_NOFILE).map(|(soft, _)| soft).unwrap_or(soft);
    // Room for the clusters' own files and sockets besides the connections.
    if (connections as u64).saturating_add(1024) > limit {
        tracing::warn!(
            limit,
            connections,
            "the open file limit is below the connection caps plus 1024: lower connections.max_connections or raise `ulimit -n`"
        );
    }
}

/// The address a process on this machine reaches `address` at.
fn loopback(address: SocketAddr) -> std::net::IpAddr {
    if address.ip().is_unspecified() {
        "127.0.0.1".parse().expect("an address")
    } else {
        address.ip()
    }
}

/// How long requests in flight get to finish at shutdown (a `?wait` long
/// poll may be cut short).
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// How long the clusters of the local backend get to stop at shutdown.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::HashPassword) = args.command {
        let mut password = String::new();
        std::io::stdin().read_to_string(&mut password)?;
        println!("{}", dask_gateway::auth::hash_password(password.trim_end_matches(['\r', '\n']))?);
        return Ok(());
    }
    let config = load(&args)?;
    if let Some(Command::CheckConfig) = args.command {
        println!(
            "config ok: {} profile(s), {} backend",
            config.options.profiles.len(),
            config.backend.name()
        );
        return Ok(());
    }
    dask_common::logging::init(config.log_format);
    for ignored in config.ignored_keys() {
        tracing::warn!("{ignored}");
    }
    raise_file_limit(
        config.connections.max_connections + config.connections.heartbeat_max_connections,
    );

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listen {}: {e}", config.listen))?;
    let address = listener.local_addr()?;
    // Schedulers' heartbeats get a listener of their own, so that a flood
    // on the public port cannot cut them off (and fail every cluster). The
    // local backend's schedulers reach it on loopback.
    let heartbeat_listen = match (&config.backend, config.connections.heartbeat_listen) {
        (_, Some(listen)) => Some(listen),
        (BackendConfig::Local(_), None) => Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        (BackendConfig::Kubernetes(_), None) => None,
    };
    let heartbeat_listener = match heartbeat_listen {
        Some(listen) => Some(
            tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| anyhow::anyhow!("connections.heartbeat_listen {listen}: {e}"))?,
        ),
        None => None,
    };
    let backend: Arc<dyn Backend> = match &config.backend {
        BackendConfig::Local(local) => {
            let heartbeats =
                heartbeat_listener.as_ref().expect("a heartbeat listener").local_addr()?;
            let api_url =
                format!("http://{}/api", SocketAddr::new(loopback(heartbeats), heartbeats.port()));
            Arc::new(
                LocalBackend::start(
                    Settings::new(
                        local,
                        &config.cluster,
                        api_url,
                        config.backend_max_workers(),
                        config.limits.local_max_starting_workers,
                    )
                    .with_pool(&config, local),
                )
                .await?,
            )
        }
        BackendConfig::Kubernetes(k8s) => {
            let client = kube::Client::try_default().await?;
            Arc::new(
                dask_gateway::backends::kubernetes::KubernetesBackend::start(client, k8s, &config)
                    .await?,
            )
        }
    };
    let gateway = Arc::new(Gateway::new(&config, backend)?);
    let app = router(gateway.clone(), &config.prefix);
    if config.auth.stop_clusters_with_server {
        let period = std::time::Duration::from_secs_f64(config.auth.server_check_period);
        let grace = std::time::Duration::from_secs_f64(config.auth.server_stop_grace);
        tokio::spawn(dask_gateway::tasks::with_server::run(gateway.clone(), period, grace));
    }
    info!(%address, prefix = %config.prefix, "dask gateway listening (API, dashboards and scheduler TLS on one port)");
    let timeouts = Timeouts::from(&config.connections);
    let drain = listener::Drain::default();
    // Heartbeats go on while the public port drains: a request in flight
    // may be waiting for a cluster to change.
    let heartbeat_drain = listener::Drain::default();
    if let Some(heartbeats) = heartbeat_listener {
        info!(address = %heartbeats.local_addr()?, "scheduler heartbeats listening");
        tokio::spawn(listener::serve(
            heartbeats,
            heartbeat_router(gateway.clone()),
            gateway.clone(),
            Port::Heartbeat,
            config.connections.heartbeat_max_connections,
            timeouts.clone(),
            heartbeat_drain.clone(),
        ));
    }
    let public = listener::serve(
        listener,
        app,
        gateway.clone(),
        Port::Public,
        config.connections.max_connections,
        timeouts,
        drain.clone(),
    );
    let stopping = dask_common::signals::stop_signal();
    tokio::select! {
        served = public => served?,
        signal = stopping => info!(signal = signal?, "shutting down"),
    }
    // The page's live streams would hold their connections until the grace ends.
    gateway.events.close_all();
    // No new connections; requests in flight are answered (bounded).
    drain.stop();
    let open = drain.drained(DRAIN_GRACE).await;
    if open > 0 {
        tracing::warn!(open, "HTTP connections still busy at shutdown are closed");
    }
    heartbeat_drain.stop();
    gateway.backend.shutdown(SHUTDOWN_GRACE).await;
    info!("stopped");
    Ok(())
}
