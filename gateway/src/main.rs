use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use dask_gateway_rs::backend::Backend;
use dask_gateway_rs::backend::local::{LocalBackend, Settings};
use dask_gateway_rs::config::{BackendConfig, Config, LogFormat};
use dask_gateway_rs::{Gateway, listener, router};
use tracing::info;

/// A dask-gateway compatible server. With no config file: loopback, any user
/// name (simple auth), schedulers and workers as local processes.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// TOML config file (see gateway/README.md for every key).
    #[arg(long, short, env = "DASK_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides `listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Overrides the local backend's `dask` executable.
    #[arg(long)]
    dask: Option<PathBuf>,
    /// Overrides `log_format` (text or json).
    #[arg(long)]
    log_format: Option<String>,
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
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let (Some(dask), BackendConfig::Local(local)) = (&args.dask, &mut config.backend) {
        local.dask = dask.clone();
    }
    match args.log_format.as_deref() {
        Some("json") => config.log_format = LogFormat::Json,
        Some("text") => config.log_format = LogFormat::Text,
        Some(other) => anyhow::bail!("--log-format: {other:?} is neither text nor json"),
        None => {}
    }
    config.check_exposure()?;
    Ok(config)
}

/// SIGINT (Ctrl-C) or SIGTERM (Kubernetes, systemd, `kill`).
async fn stop_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    })
}

/// How long the clusters of the local backend get to stop at shutdown.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

fn init_tracing(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::HashPassword) = args.command {
        let mut password = String::new();
        std::io::stdin().read_to_string(&mut password)?;
        println!(
            "{}",
            dask_gateway_rs::auth::hash_password(password.trim_end_matches(['\r', '\n']))?
        );
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
    init_tracing(config.log_format);

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listen {}: {e}", config.listen))?;
    let address = listener.local_addr()?;
    let backend: Arc<dyn Backend> = match &config.backend {
        BackendConfig::Local(local) => {
            // Schedulers on this machine reach the gateway on loopback.
            let host = if address.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                address.ip().to_string()
            };
            let api_url = format!(
                "http://{}{}/api",
                SocketAddr::new(host.parse()?, address.port()),
                config.prefix
            );
            Arc::new(LocalBackend::new(Settings::new(
                local,
                &config.cluster,
                api_url,
                config.limits.cluster_max_workers,
            )))
        }
        BackendConfig::Kubernetes(k8s) => {
            let client = kube::Client::try_default().await?;
            Arc::new(
                dask_gateway_rs::backend::kubernetes::KubernetesBackend::start(
                    client, k8s, &config,
                )
                .await?,
            )
        }
    };
    let gateway = Arc::new(Gateway::new(&config, backend)?);
    let app = router(gateway.clone(), &config.prefix);
    info!(%address, prefix = %config.prefix, "dask gateway listening (API, dashboards and scheduler TLS on one port)");
    let stopping = stop_signal();
    tokio::select! {
        served = listener::serve(listener, app, gateway.clone()) => served?,
        signal = stopping => info!(signal = signal?, "shutting down"),
    }
    // The listener is closed: no new work while the clusters stop.
    gateway.backend.shutdown(SHUTDOWN_GRACE).await;
    info!("stopped");
    Ok(())
}
