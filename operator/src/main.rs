use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use dask_operator::autoscaler::{Step, Tuning, parse_seconds};
use dask_operator::config::Config;
use dask_operator::logging::{self, LogFormat};
use dask_operator::metrics::Metrics;
use dask_operator::progress::WatchProgress;
use dask_operator::scheduler_api::SchedulerApi;
use dask_operator::{Context, autoscaler, cluster, job, leader, server, workergroup};
use tracing::info;

/// Reconciles kubernetes.dask.org/v1 DaskCluster, DaskWorkerGroup,
/// DaskAutoscaler and DaskJob resources into Dask scheduler and worker pods.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// DNS domain of the Kubernetes cluster, used in DASK_SCHEDULER_ADDRESS.
    #[arg(long, env = "DASK_OPERATOR_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Address of the /metrics and /healthz endpoints.
    #[arg(long, env = "DASK_OPERATOR_METRICS_ADDR", default_value = "127.0.0.1:8080")]
    metrics_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "DASK_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Name of the Lease for leader election; none means no election (a single replica).
    #[arg(long, env = "DASK_OPERATOR_LEASE_NAME")]
    lease_name: Option<String>,
    /// Namespace of the Lease (in a pod: its own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's name (in a pod: its pod's), its identity in the leader
    /// election and in the Events it publishes.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "DASK_OPERATOR_NAMESPACE")]
    namespace: Option<String>,
    /// Default scale-down window of a DaskAutoscaler, in seconds: how long
    /// its target must stay lower before workers are removed (annotation
    /// kubernetes.dask.org/scale-down-window overrides it per scaler).
    #[arg(long, env = "DASK_OPERATOR_SCALE_DOWN_WINDOW", default_value = "30", value_parser = parse_seconds)]
    scale_down_window: Duration,
    /// Default scale-down step of a DaskAutoscaler: a share of its workers
    /// ("25%") or a count ("2"), at least one (annotation
    /// kubernetes.dask.org/scale-down-step overrides it per scaler).
    #[arg(long, env = "DASK_OPERATOR_SCALE_DOWN_STEP", default_value = "25%")]
    scale_down_step: Step,
    /// Seconds a watch may go without progress (no event, bookmark or
    /// re-list) before /healthz fails.
    #[arg(long, env = "DASK_OPERATOR_WATCH_STALL_TIMEOUT", default_value = "120", value_parser = parse_seconds)]
    watch_stall_timeout: Duration,
    /// Seconds each controller gathers an object's triggers (watch events of
    /// it and its children) into one reconcile.
    #[arg(long, env = "DASK_OPERATOR_DEBOUNCE", default_value = "0.5", value_parser = parse_seconds)]
    debounce: Duration,
    /// Development and tests only: resolve every scheduler's Service name to
    /// this address (schedulers running on the host's loopback).
    #[arg(long)]
    resolve_schedulers_to: Option<IpAddr>,
}

// One thread: the operator waits on the API server, not on the CPU (a
// thousand clusters take a tenth of a core), and a single-threaded runtime
// keeps the allocator to one arena, so memory stays close to what is live.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    logging::init(args.log_format);
    let progress = Arc::new(WatchProgress::default());
    let client = kube::client::ClientBuilder::try_from(kube::Config::infer().await?)?
        .with_layer(&progress.layer())
        .build();
    let metrics = Arc::new(Metrics::default());
    let config = Config {
        cluster_domain: args.cluster_domain,
        namespace: args.namespace,
        instance: args.pod_name.clone(),
        autoscaling: Tuning { window: args.scale_down_window, step: args.scale_down_step },
        watch_stall: args.watch_stall_timeout,
        debounce: args.debounce,
    };
    let scheduler = SchedulerApi::new(args.resolve_schedulers_to);
    let ctx = Arc::new(Context::new(client.clone(), config, metrics.clone(), scheduler));
    let http =
        tokio::spawn(server::serve(args.metrics_addr, metrics, progress, args.watch_stall_timeout));

    let mut leadership = None;
    if let Some(lease) = &args.lease_name {
        let identity =
            args.pod_name.unwrap_or_else(|| format!("dask-operator-{}", std::process::id()));
        leadership = Some(leader::acquire(client, &args.lease_namespace, lease, &identity).await?);
    }
    info!("starting controllers");
    let controllers = async {
        tokio::join!(
            cluster::run(ctx.clone()),
            workergroup::run(ctx.clone()),
            autoscaler::run(ctx.clone()),
            job::run(ctx.clone())
        );
    };
    let lost = async {
        match &mut leadership {
            Some(leadership) => leadership.lost().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = controllers => info!("controllers stopped"),
        _ = lost => anyhow::bail!("lost the leader lease; exiting so a restart starts clean"),
        res = http => anyhow::bail!("the metrics server stopped: {res:?}"),
        signal = dask_common::signals::stop_signal() => info!(signal = signal?, "shutting down"),
    }
    // The controllers are dropped with the select: nothing reconciles any
    // more, so the next leader can start at once.
    if let Some(leadership) = leadership {
        leadership.release(RELEASE_TIMEOUT).await;
    }
    Ok(())
}

/// How long giving the lease back may take at shutdown (Kubernetes waits
/// 30 s by default before it kills a terminating pod).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn arguments_parse() {
        Args::command().debug_assert();
        let args =
            Args::try_parse_from(["dask-operator", "--log-format", "json", "--pod-name", "op-0"])
                .unwrap();
        assert_eq!(args.log_format, LogFormat::Json);
        assert_eq!(args.pod_name.as_deref(), Some("op-0"));
        assert!(Args::try_parse_from(["dask-operator", "--log-format", "yaml"]).is_err());
        let tuned = Args::try_parse_from([
            "dask-operator",
            "--scale-down-window",
            "2",
            "--scale-down-step",
            "50%",
            "--watch-stall-timeout",
            "6",
        ])
        .unwrap();
        assert_eq!(tuned.scale_down_window, Duration::from_secs(2));
        assert_eq!(tuned.scale_down_step, Step::Percent(50));
        assert_eq!(tuned.watch_stall_timeout, Duration::from_secs(6));
        assert!(Args::try_parse_from(["dask-operator", "--scale-down-step", "0"]).is_err());
    }
}
