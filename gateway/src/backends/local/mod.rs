//! The embedded default backend: each cluster is a `dask scheduler` process
//! with the dask-gateway preload plus `dask worker` processes on this
//! machine, supervised by one task per cluster and driven by the scheduler's
//! heartbeats (it reports how many workers it wants and which it retires).
//! Each cluster's record is kept on disk ([`store`]) and its processes lead
//! process groups of their own ([`process`]): they outlive a restart of the
//! gateway, and the next one adopts them ([`adopt`]). A cluster whose
//! gateway stays away ends itself (the lifeline preloads).

mod adopt;
mod exit;
mod pool;
pub mod process;
mod retention;
pub mod store;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::UnixDatagram;
use tokio::process::{Child, Command};
use tokio::sync::{OwnedSemaphorePermit, RwLock, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tracing::{Instrument, error, info, info_span, warn};

use self::process::{ProcessId, TERMINATE_GRACE};
use super::forkserver::{ForkRequest, ForkServer};
use super::history::Retention;
use super::logs::{LogBounds, LogSection, LogStream, Source};
use super::{Backend, BackendError, Created, StartSource};
use crate::config::{ClusterDefaults, LocalConfig};
use crate::domain::models::{Cluster, ClusterStatus, Heartbeat, now_ms};

/// The scheduler preload that adopts connections the gateway hands over
/// ([`crate::backends::handoff`]) on a socket pair the scheduler inherits.
const HANDOFF_PRELOAD: &str = include_str!("handoff_preload.py");
const HANDOFF_PRELOAD_FILE: &str = "dask_gateway_handoff.py";
/// The scheduler preload that makes its first, slow connection itself.
const WARMUP_PRELOAD: &str = include_str!("warmup_preload.py");
const WARMUP_PRELOAD_FILE: &str = "dask_gateway_warmup.py";
const PRESENCE_PRELOAD_FILE: &str = "dask_gateway_presence.py";
/// The scheduler preload that ends the cluster when its gateway is gone
/// for longer than [`Settings::lifeline`].
const LIFELINE_PRELOAD: &str = include_str!("lifeline_preload.py");
const LIFELINE_PRELOAD_FILE: &str = "dask_gateway_lifeline.py";
/// The nanny preload that ends a worker when its scheduler exits.
const WORKER_LIFELINE_PRELOAD: &str = include_str!("worker_lifeline_preload.py");
const WORKER_LIFELINE_PRELOAD_FILE: &str = "dask_gateway_worker_lifeline.py";
/// Where every gateway writes the URL its heartbeat listener has now: a
/// scheduler reads it again when a heartbeat fails (a restarted gateway
/// may listen on another port).
const API_URL_FILE: &str = "heartbeat-url";

/// How the local backend starts and watches processes.
#[derive(Debug, Clone)]
pub struct Settings {
    pub dask: PathBuf,
    pub state_dir: PathBuf,
    /// Where schedulers send heartbeats: this gateway's `/api`.
    pub api_url: String,
    pub start_timeout: Duration,
    pub heartbeat_period: Duration,
    pub adaptive_period: f64,
    pub max_workers: Option<u32>,
    pub handoff: bool,
    /// Worker processes starting at once, over every cluster: a big scale
    /// starts in batches, so the machine (and this API) stays responsive.
    pub starting: Arc<Semaphore>,
    /// The warm pool of ready schedulers (size 0: none).
    pub pool: pool::Pool,
    /// Fork workers from [`ForkServer`] when it is ready; cold otherwise.
    pub fork_workers: bool,
    /// How long stopped and failed clusters stay listed (with their logs).
    pub retention: Retention,
    forks: Arc<tokio::sync::OnceCell<ForkServer>>,
    /// The environment the fork server runs with: only clusters with the
    /// same one get forked workers (another can change imports).
    default_environment: BTreeMap<String, String>,
    /// How long a scheduler goes on without an acknowledged heartbeat
    /// before it ends its cluster: long enough for a gateway restart.
    pub lifeline: Duration,
}

/// How long a new worker process counts as "starting" (holds a slot of
/// [`Settings::starting`]) unless a heartbeat reports it active sooner.
const WORKER_START_SLOT: Duration = Duration::from_secs(5);

impl Settings {
    pub fn new(
        local: &LocalConfig,
        defaults: &ClusterDefaults,
        api_url: String,
        max_workers: Option<u32>,
        max_starting_workers: u32,
    ) -> Self {
        Self {
            dask: local.dask.clone(),
            state_dir: local.state_dir.clone(),
            api_url,
            start_timeout: Duration::from_secs_f64(defaults.start_timeout),
            heartbeat_period: Duration::from_secs_f64(defaults.heartbeat_period.max(1.0)),
            adaptive_period: defaults.adaptive_period,
            max_workers,
            handoff: local.handoff,
            starting: Arc::new(Semaphore::new(max_starting_workers.max(1) as usize)),
            pool: pool::Pool::default(),
            fork_workers: local.fork_workers,
            retention: Retention::from_seconds(defaults.completed_cluster_max_age),
            forks: Default::default(),
            default_environment: defaults.environment.clone(),
            lifeline: lifeline(defaults.heartbeat_period),
        }
    }

    /// Keeps `local.pool_size` ready schedulers for each pooled profile.
    pub fn with_pool(mut self, config: &crate::config::Config, local: &LocalConfig) -> Self {
        self.pool = pool::Pool::new(config, local);
        self
    }
}

/// Four heartbeat periods, at least 10 s: a gateway restart takes a second
/// or two, and the preload retries a failed heartbeat within one period.
fn lifeline(heartbeat_period: f64) -> Duration {
    Duration::from_secs_f64((heartbeat_period.max(1.0) * 4.0).max(10.0))
}

enum Order {
    Heartbeat(Heartbeat),
    Fail(String),
    /// With why, when the gateway stops it on its own.
    Stop(Option<String>),
}

struct Entry {
    cluster: Cluster,
    commands: mpsc::UnboundedSender<Order>,
    /// Set once the scheduler says it adopts handed-over connections.
    handoff: Option<Arc<UnixDatagram>>,
    /// Waiting in the warm pool (for this template), unseen by users.
    pooled: Option<usize>,
    /// Its process groups, as recorded on disk.
    processes: store::Processes,
}

impl Entry {
    fn visible(&self) -> Option<&Cluster> {
        self.pooled.is_none().then_some(&self.cluster)
    }
}

/// The cluster table, shared by the API and the supervisors.
#[derive(Clone)]
struct Table {
    clusters: Arc<RwLock<HashMap<String, Entry>>>,
    changed: Arc<watch::Sender<u64>>,
    /// Set when the gateway shuts down: the warm pool starts no more
    /// schedulers (their keys would outlive the shutdown).
    closing: Arc<std::sync::atomic::AtomicBool>,
    store: store::Store,
    /// Held while a record is read from the table and written, so that
    /// records reach the disk in the order the table changed.
    persisting: Arc<tokio::sync::Mutex<()>>,
}

impl Table {
    async fn update(&self, name: &str, change: impl FnOnce(&mut Cluster)) {
        if let Some(entry) = self.clusters.write().await.get_mut(name) {
            change(&mut entry.cluster);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Writes `name`'s record as the table holds it now (nothing if it is
    /// unchanged, or gone).
    async fn persist(&self, name: &str) {
        let _order = self.persisting.lock().await;
        let record = {
            let clusters = self.clusters.read().await;
            // A finished cluster's record is gone for good (`forget`).
            let Some(entry) = clusters.get(name).filter(|e| e.cluster.stop_time.is_none()) else {
                return;
            };
            store::ClusterRecord::new(
                &entry.cluster,
                entry.pooled.is_some(),
                entry.processes.clone(),
            )
        };
        if let Err(e) = self.store.put(name, &record).await {
            error!(cluster = name, error = %e, "could not save the cluster's record");
        }
    }

    /// Removes `name`'s record once its cluster is finished (stop time
    /// set: no later [`Self::persist`] writes it again).
    async fn forget(&self, name: &str) {
        let _order = self.persisting.lock().await;
        if let Err(e) = self.store.remove(name).await {
            error!(cluster = name, error = %e, "could not remove the cluster's record");
        }
    }

    async fn set_processes(&self, name: &str, processes: store::Processes) {
        if let Some(entry) = self.clusters.write().await.get_mut(name) {
            entry.processes = processes;
        }
    }

    async fn set_handoff(&self, name: &str, channel: Option<Arc<UnixDatagram>>) {
        if let Some(entry) = self.clusters.write().await.get_mut(name) {
            entry.handoff = channel;
        }
    }
}

pub struct LocalBackend {
    settings: Arc<Settings>,
    table: Table,
    _lock: Arc<store::StateLock>,
}

impl LocalBackend {
    /// Takes the state directory (one gateway at a time), adopts the
    /// clusters a previous gateway left running and stops what cannot be
    /// adopted, then starts, in the background, the worker fork server and
    /// the warm pool's refills.
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        let lock = store::StateLock::acquire(&settings.state_dir)?;
        let store = store::Store::open(&settings.state_dir, "clusters")?;
        let url_file = settings.state_dir.join(API_URL_FILE);
        let url = settings.api_url.clone();
        tokio::task::spawn_blocking(move || store::write_atomic(&url_file, url.as_bytes()))
            .await??;
        let (changed, _) = watch::channel(0);
        let backend = Self {
            settings: Arc::new(settings),
            table: Table {
                clusters: Default::default(),
                changed: Arc::new(changed),
                closing: Default::default(),
                store,
                persisting: Default::default(),
            },
            _lock: Arc::new(lock),
        };
        adopt::recover(&backend.settings, &backend.table).await;
        if backend.settings.fork_workers {
            tokio::spawn(start_fork_server(backend.settings.clone()));
        }
        if !backend.settings.pool.is_empty() {
            tokio::spawn(pool::refill(backend.settings.clone(), backend.table.clone()));
        }
        tokio::spawn(retention::sweep(backend.settings.clone(), backend.table.clone()));
        Ok(backend)
    }

    async fn send(&self, name: &str, command: Order) -> Result<(), BackendError> {
        let clusters = self.table.clusters.read().await;
        let entry = clusters.get(name).ok_or_else(|| BackendError::NotFound(name.into()))?;
        // A finished supervisor has dropped its receiver: nothing left to do.
        entry.commands.send(command).ok();
        Ok(())
    }
}

#[async_trait]
impl Backend for LocalBackend {
    async fn create(
        &self,
        cluster: Cluster,
        max_clusters: Option<u32>,
    ) -> Result<Created, BackendError> {
        // Count and insert under one write lock: parallel creates cannot
        // all pass the check.
        let mut clusters = self.table.clusters.write().await;
        if let Some(max) = max_clusters {
            let mine = clusters
                .values()
                .filter(|e| e.cluster.username == cluster.username && e.cluster.status.is_active())
                .count();
            if mine as u64 >= u64::from(max) {
                return Err(BackendError::LimitReached(format!(
                    "User {} already has {mine} active clusters, the limit is {max}; stop one first",
                    cluster.username
                )));
            }
        }
        let old = retention::to_forget(
            &clusters,
            &self.settings.retention,
            now_ms(),
            retention::MAX_FINISHED,
        );
        retention::forget(&self.settings, &mut clusters, &old);
        let created = match pool::claim(&self.settings.pool, &mut clusters, &cluster) {
            Some(name) => Created { name, source: StartSource::Pool },
            None => {
                let name = cluster.name.clone();
                launch(&self.settings, &self.table, &mut clusters, cluster, None);
                Created { name, source: StartSource::Cold }
            }
        };
        drop(clusters);
        self.table.changed.send_modify(|n| *n += 1);
        // A claimed pooled cluster has an owner now (a cold one is saved
        // by its supervisor once its scheduler runs).
        self.table.persist(&created.name).await;
        Ok(created)
    }

    async fn get(&self, name: &str) -> Option<Cluster> {
        let now = now_ms();
        let clusters = self.table.clusters.read().await;
        let cluster = clusters.get(name).and_then(Entry::visible);
        cluster.filter(|c| self.settings.retention.keeps_cluster(c, now)).cloned()
    }

    async fn for_scheduler(&self, name: &str) -> Option<Cluster> {
        self.table.clusters.read().await.get(name).map(|e| e.cluster.clone())
    }

    async fn list(&self) -> Vec<Cluster> {
        let now = now_ms();
        let clusters = self.table.clusters.read().await;
        let visible = clusters.values().filter_map(Entry::visible);
        visible.filter(|c| self.settings.retention.keeps_cluster(c, now)).cloned().collect()
    }

    async fn pooled(&self) -> Vec<ClusterStatus> {
        let clusters = self.table.clusters.read().await;
        clusters.values().filter(|e| e.pooled.is_some()).map(|e| e.cluster.status).collect()
    }

    async fn stop(&self, name: &str, why: Option<&str>) -> Result<(), BackendError> {
        match self.send(name, Order::Stop(why.map(String::from))).await {
            Err(BackendError::NotFound(_)) => return Ok(()),
            other => other?,
        }
        // STOPPING at once, so a list right after the DELETE says so.
        self.table
            .update(name, |c| {
                if c.status.is_active() {
                    c.status = ClusterStatus::Stopping
                }
            })
            .await;
        self.table.persist(name).await;
        Ok(())
    }

    async fn heartbeat(&self, name: &str, beat: Heartbeat) -> Result<(), BackendError> {
        self.send(name, Order::Heartbeat(beat)).await
    }

    async fn fail(&self, name: &str, reason: &str) {
        self.send(name, Order::Fail(reason.into())).await.ok();
    }

    async fn handoff(&self, name: &str) -> Option<Arc<UnixDatagram>> {
        let clusters = self.table.clusters.read().await;
        let entry = clusters.get(name)?;
        entry.handoff.clone().filter(|_| entry.cluster.status == ClusterStatus::Running)
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.table.changed.subscribe()
    }

    /// The tails of the cluster's log files: `scheduler.log`, then each
    /// `worker-<name>.log` by name, read one at a time as the answer is sent.
    async fn logs(&self, cluster: &Cluster, bounds: LogBounds) -> Result<LogStream, BackendError> {
        let dir = cluster_dir(&self.settings, &cluster.name);
        let mut workers = Vec::new();
        if let Ok(mut entries) = tokio::fs::read_dir(&dir).await {
            while let Ok(Some(entry)) = entries.next_entry().await {
                let file = entry.file_name().to_string_lossy().into_owned();
                if let Some(name) =
                    file.strip_prefix("worker-").and_then(|f| f.strip_suffix(".log"))
                {
                    workers.push(name.to_string());
                }
            }
        }
        workers.sort();
        let mut files = vec![(Source::Scheduler, dir.join("scheduler.log"))];
        for name in workers {
            let path = dir.join(format!("worker-{name}.log"));
            files.push((Source::Worker(name), path));
        }
        use futures::StreamExt;
        let sections = futures::stream::iter(files).then(move |(source, path)| async move {
            let lines = super::logs::read_tail(&path, bounds).await.unwrap_or_else(|e| {
                warn!(path = %path.display(), error = %e, "could not read a log");
                Vec::new()
            });
            LogSection { source, lines }
        });
        Ok(Box::pin(sections))
    }

    /// Leaves users' clusters running (their records are on disk: the next
    /// gateway adopts them), stops the warm pool's schedulers, and waits
    /// (up to `within`) for those and for clusters already stopping.
    async fn shutdown(&self, within: Duration) {
        // Before reading the table: a refill then either sees the flag or
        // has already put its scheduler in the table, where it is stopped too.
        self.table.closing.store(true, std::sync::atomic::Ordering::SeqCst);
        let pooled: Vec<String> = self
            .table
            .clusters
            .read()
            .await
            .values()
            .filter(|e| e.pooled.is_some())
            .map(|e| e.cluster.name.clone())
            .collect();
        let mut changes = self.changes();
        for name in &pooled {
            self.send(name, Order::Stop(None)).await.ok();
        }
        let deadline = Instant::now() + within;
        loop {
            // A supervisor sets the stop time last, once keys and processes are gone.
            let busy = self.table.clusters.read().await.values().any(|e| {
                e.cluster.stop_time.is_none()
                    && (e.pooled.is_some() || e.cluster.status == ClusterStatus::Stopping)
            });
            if !busy {
                break;
            }
            if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                warn!("clusters still stopping at shutdown; the next gateway stops them");
                break;
            }
        }
        // The table does not outlive the gateway: neither do the logs of
        // clusters it stopped (those of failed ones stay for a post-mortem).
        for entry in self.table.clusters.read().await.values() {
            if entry.cluster.status == ClusterStatus::Stopped {
                tokio::fs::remove_dir_all(cluster_dir(&self.settings, &entry.cluster.name))
                    .await
                    .ok();
            }
        }
        let running = self
            .table
            .clusters
            .read()
            .await
            .values()
            .filter(|e| e.cluster.status.is_active())
            .count();
        info!(running, "clusters left running for the next gateway to adopt");
    }
}

/// Adds a cluster to the table and starts its supervisor.
fn launch(
    settings: &Arc<Settings>,
    table: &Table,
    clusters: &mut HashMap<String, Entry>,
    cluster: Cluster,
    pooled: Option<usize>,
) {
    start_supervisor(settings, table, clusters, cluster, pooled, None);
}

/// A cluster a previous gateway started, still running: its scheduler and
/// its live workers, taken over as they are.
struct Adopted {
    scheduler: ProcessId,
    workers: BTreeMap<String, ProcessId>,
}

fn start_supervisor(
    settings: &Arc<Settings>,
    table: &Table,
    clusters: &mut HashMap<String, Entry>,
    cluster: Cluster,
    pooled: Option<usize>,
    adopted: Option<Adopted>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let name = cluster.name.clone();
    let processes = adopted
        .as_ref()
        .map(|a| store::Processes { scheduler: Some(a.scheduler), workers: a.workers.clone() })
        .unwrap_or_default();
    let supervisor = Supervisor {
        settings: settings.clone(),
        table: table.clone(),
        dir: cluster_dir(settings, &name),
        cluster: cluster.clone(),
        workers: HashMap::new(),
        wanted: 0,
        scheduler_address: None,
        scheduler: None,
        active: HashSet::new(),
        cooling: Vec::new(),
    };
    clusters
        .insert(name.clone(), Entry { cluster, commands: tx, handoff: None, pooled, processes });
    let span = info_span!("cluster", cluster = %name);
    tokio::spawn(supervisor.run(rx, adopted).instrument(span));
}

/// Starts the worker fork server; until it is ready (or if it cannot
/// start) workers start cold.
async fn start_fork_server(settings: Arc<Settings>) {
    let Some(python) = super::forkserver::python_of(&settings.dask) else {
        warn!(dask = %settings.dask.display(), "no Python interpreter found in the dask executable: workers start cold");
        return;
    };
    let started = settings
        .forks
        .get_or_try_init(|| {
            ForkServer::start(&python, &settings.state_dir, &settings.default_environment)
        })
        .await;
    if let Err(e) = started {
        warn!(error = %e, "the worker fork server did not start: workers start cold");
    }
}

fn cluster_dir(settings: &Settings, name: &str) -> PathBuf {
    settings.state_dir.join("clusters").join(name)
}

/// Owns one cluster's processes from start to stop.
struct Supervisor {
    settings: Arc<Settings>,
    table: Table,
    dir: PathBuf,
    cluster: Cluster,
    /// Worker processes by Dask worker name.
    workers: HashMap<String, Worker>,
    /// Workers the scheduler last asked for (already clamped to the limits).
    wanted: usize,
    /// The scheduler's address, once it has sent a heartbeat.
    scheduler_address: Option<String>,
    /// The scheduler process, once started (or adopted).
    scheduler: Option<ProcessId>,
    /// Workers the scheduler last reported active.
    active: HashSet<String>,
    /// Start slots of workers that exited while starting, held until their time is up.
    cooling: Vec<(OwnedSemaphorePermit, Instant)>,
}

struct Worker {
    process: WorkerProcess,
    /// Held while the process starts (see [`WORKER_START_SLOT`]).
    starting: Option<(OwnedSemaphorePermit, Instant)>,
}

impl Supervisor {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Order>, adopted: Option<Adopted>) {
        let started = match adopted {
            // Its preloads are written again: the gateway may be a newer one.
            Some(adopted) => match self.prepare().await {
                Ok(()) => {
                    self.adopt_workers(adopted.workers);
                    if self.settings.handoff {
                        let channel = reconnect_handoff(&self.dir).await;
                        self.table.set_handoff(&self.cluster.name, channel.map(Arc::new)).await;
                    }
                    Ok((SchedulerProcess { id: adopted.scheduler, child: None }, None))
                }
                Err(e) => Err(e),
            },
            None => self.prepare().await.and_then(|_| self.spawn_scheduler()),
        };
        let (status, reason) = match started {
            Ok((scheduler, handoff)) => {
                self.scheduler = Some(scheduler.id);
                self.save().await;
                match self.supervise(scheduler, handoff, &mut commands).await {
                    Some(outcome) => outcome,
                    None => return,
                }
            }
            Err(e) => (ClusterStatus::Failed, Some(format!("could not start the scheduler: {e}"))),
        };
        commands.close();
        self.table.set_handoff(&self.cluster.name, None).await;
        self.table.update(&self.cluster.name, |c| c.status = ClusterStatus::Stopping).await;
        self.table.persist(&self.cluster.name).await;
        let workers: Vec<WorkerProcess> = self.workers.drain().map(|(_, w)| w.process).collect();
        futures::future::join_all(workers.into_iter().map(WorkerProcess::terminate)).await;
        // The key is a secret: it does not outlive the cluster. The logs
        // stay while the cluster is listed (`completed_cluster_max_age`).
        for secret in ["dask.pem", "dask.crt"] {
            tokio::fs::remove_file(self.dir.join(secret)).await.ok();
        }
        match (&reason, status) {
            (Some(reason), ClusterStatus::Failed) => {
                let log = tail(&self.dir.join("scheduler.log"), 20).await;
                error!(reason, scheduler_log = %log, "cluster failed");
            }
            (Some(why), _) => info!(why, "cluster stopped"),
            (None, _) => info!("cluster stopped"),
        }
        self.table
            .update(&self.cluster.name, |c| {
                c.status = status;
                c.stop_time = Some(now_ms());
                c.addresses = None;
                c.reason = reason;
            })
            .await;
        // Its processes are gone: nothing left for a next gateway to adopt.
        self.table.forget(&self.cluster.name).await;
    }

    /// Takes over the live workers of an adopted cluster: until the next
    /// heartbeat says otherwise, they count as active (none is started on
    /// top of them).
    fn adopt_workers(&mut self, workers: BTreeMap<String, ProcessId>) {
        for (name, id) in workers {
            self.active.insert(name.clone());
            let process = WorkerProcess { id, child: None };
            self.workers.insert(name, Worker { process, starting: None });
        }
        if let Some(addresses) = &self.cluster.addresses {
            self.scheduler_address = Some(addresses.scheduler.clone());
        }
    }

    /// Records the cluster's processes in the table and on disk.
    async fn save(&self) {
        let processes = store::Processes {
            scheduler: self.scheduler,
            workers: self.workers.iter().map(|(n, w)| (n.clone(), w.process.id)).collect(),
        };
        self.table.set_processes(&self.cluster.name, processes).await;
        self.table.persist(&self.cluster.name).await;
    }

    async fn supervise(
        &mut self,
        mut scheduler: SchedulerProcess,
        handoff: Option<UnixDatagram>,
        commands: &mut mpsc::UnboundedReceiver<Order>,
    ) -> Option<(ClusterStatus, Option<String>)> {
        let handoff = handoff.map(Arc::new);
        let mut awaiting_handoff = handoff.is_some();
        let start_timeout = self.settings.start_timeout;
        // A scheduler that misses two heartbeats (and some slack) is gone.
        let liveness = (self.settings.heartbeat_period * 2).max(Duration::from_secs(30));
        // An adopted cluster runs already; its next heartbeat is due within a period.
        let mut running = self.cluster.status == ClusterStatus::Running;
        let mut deadline = Instant::now() + if running { liveness } else { start_timeout };
        let mut reap = tokio::time::interval(Duration::from_secs(1));
        let outcome = loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Order::Heartbeat(beat)) => {
                        deadline = Instant::now() + liveness;
                        if !running {
                            running = true;
                            let addresses = beat.addresses();
                            info!(scheduler = %addresses.scheduler, dashboard = %addresses.dashboard, "cluster running");
                            self.table.update(&self.cluster.name, |c| {
                                c.status = ClusterStatus::Running;
                                c.addresses = Some(addresses);
                            }).await;
                        }
                        let wanted = beat.count.max(0) as u32;
                        self.table.update(&self.cluster.name, |c| c.workers = wanted).await;
                        self.apply(&beat).await;
                    }
                    Some(Order::Fail(reason)) => break (ClusterStatus::Failed, Some(reason)),
                    Some(Order::Stop(why)) => break (ClusterStatus::Stopped, why),
                    // The table is gone: the gateway is exiting. The
                    // cluster is left running for the next one to adopt.
                    None => return None,
                },
                exit = scheduler.wait() => {
                    let tail = exit::log_tail(&self.dir.join("scheduler.log")).await;
                    let reason = exit::describe_exit("the scheduler", exit.as_ref(), &tail);
                    break (ClusterStatus::Failed, Some(reason));
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let reason = if running {
                        format!("no heartbeat from the scheduler for {}s", liveness.as_secs())
                    } else {
                        format!("the scheduler did not start within {}s", start_timeout.as_secs())
                    };
                    break (ClusterStatus::Failed, Some(reason));
                }
                _ = reap.tick() => {
                    self.reap_workers();
                    self.start_missing().await;
                }
                // The preload's "ready": from now on connections are handed over.
                ready = handoff_ready(handoff.as_deref()), if awaiting_handoff => {
                    awaiting_handoff = false;
                    if ready.is_ok() {
                        self.table.set_handoff(&self.cluster.name, handoff.clone()).await;
                    }
                }
            }
            self.save().await;
        };
        scheduler.stop().await;
        Some(outcome)
    }

    /// Writes the cluster's credentials where its processes read them, and
    /// the handoff preload beside them.
    async fn prepare(&self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        // Keys and logs of every user's clusters: the gateway's user's only.
        // Directories it creates are 0700 from the start; of the existing ones
        // only its own `clusters/` is tightened (state_dir may be shared, e.g. /tmp).
        tokio::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir).await?;
        let clusters = self.dir.parent().expect("a cluster dir is under clusters/");
        for dir in [clusters, &self.dir] {
            tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).await?;
        }
        tokio::fs::write(self.dir.join(HANDOFF_PRELOAD_FILE), HANDOFF_PRELOAD).await?;
        tokio::fs::write(self.dir.join(WARMUP_PRELOAD_FILE), WARMUP_PRELOAD).await?;
        tokio::fs::write(self.dir.join(PRESENCE_PRELOAD_FILE), super::PRESENCE_PRELOAD).await?;
        tokio::fs::write(self.dir.join(LIFELINE_PRELOAD_FILE), LIFELINE_PRELOAD).await?;
        tokio::fs::write(self.dir.join(WORKER_LIFELINE_PRELOAD_FILE), WORKER_LIFELINE_PRELOAD)
            .await?;
        for (file, pem) in
            [("dask.crt", &self.cluster.tls_cert), ("dask.pem", &self.cluster.tls_key)]
        {
            let path = self.dir.join(file);
            tokio::fs::write(&path, pem).await?;
            tokio::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).await?;
        }
        Ok(())
    }

    /// The environment of the cluster's processes: its options', the
    /// gateway's address, and its TLS files. Not the API token: workers run
    /// user code, so only the scheduler gets it (`spawn_scheduler`).
    fn environment(&self) -> BTreeMap<String, String> {
        let (cert, key) = (self.dir.join("dask.crt"), self.dir.join("dask.pem"));
        let tls = dask_crds::env::tls(&cert.to_string_lossy(), &key.to_string_lossy());
        let mut env = self.cluster.config.environment.clone();
        env.extend(
            [
                ("DASK_GATEWAY_API_URL", self.settings.api_url.clone()),
                ("DASK_GATEWAY_CLUSTER_NAME", self.cluster.name.clone()),
            ]
            .into_iter()
            .chain(tls)
            .map(|(k, v)| (k.to_string(), v)),
        );
        env
    }

    fn command(&self, log: &str) -> std::io::Result<Command> {
        let log = std::fs::File::create(self.dir.join(log))?;
        let mut cmd = Command::new(&self.settings.dask);
        cmd.current_dir(&self.dir)
            .envs(self.environment())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // A group of its own, stopped as one; it outlives the gateway
            // (no kill on drop, no parent-death signal) to be adopted.
            .process_group(0);
        Ok(cmd)
    }

    /// Starts the scheduler; returns it and, with handoff on, the gateway's
    /// end of the socket pair it adopts handed-over connections from.
    fn spawn_scheduler(&self) -> std::io::Result<(SchedulerProcess, Option<UnixDatagram>)> {
        let mut cmd = self.command("scheduler.log")?;
        // The scheduler's alone: workers run user code and get the TLS pair only.
        cmd.env("DASK_GATEWAY_API_TOKEN", &self.cluster.token)
            .env("DASK_GATEWAY_LIFELINE_SECONDS", self.settings.lifeline.as_secs_f64().to_string())
            .env("DASK_GATEWAY_API_URL_FILE", self.settings.state_dir.join(API_URL_FILE));
        let pair = if self.settings.handoff {
            Some(std::os::unix::net::UnixDatagram::pair()?)
        } else {
            None
        };
        if let Some((_, theirs)) = &pair {
            let inherited = theirs.as_raw_fd();
            cmd.env("DASK_GATEWAY_HANDOFF_FD", inherited.to_string());
            // SAFETY: fcntl is async-signal-safe; clearing close-on-exec in the
            // forked child lets this scheduler, and no other process, inherit its end.
            unsafe {
                cmd.pre_exec(move || match nix::libc::fcntl(inherited, nix::libc::F_SETFD, 0) {
                    -1 => Err(std::io::Error::last_os_error()),
                    _ => Ok(()),
                });
            }
        }
        cmd.args(["scheduler", "--protocol", "tls", "--port", "0", "--host", "127.0.0.1"])
            .args([
                "--dashboard-address",
                "127.0.0.1:0",
                "--preload",
                "dask_gateway.scheduler_preload",
            ])
            .arg("--preload")
            .arg(self.dir.join(HANDOFF_PRELOAD_FILE))
            .arg("--preload")
            .arg(self.dir.join(WARMUP_PRELOAD_FILE))
            .arg("--preload")
            .arg(self.dir.join(LIFELINE_PRELOAD_FILE))
            .arg("--preload")
            .arg(self.dir.join(PRESENCE_PRELOAD_FILE))
            .args(["--dg-api-address", "127.0.0.1:0"])
            .args([
                "--dg-heartbeat-period",
                &self.settings.heartbeat_period.as_secs_f64().to_string(),
            ])
            .args(["--dg-adaptive-period", &self.settings.adaptive_period.to_string()])
            .args(["--dg-idle-timeout", &self.cluster.config.idle_timeout.to_string()]);
        info!(dask = %self.settings.dask.display(), "starting the scheduler");
        let child = cmd.spawn().map_err(|e| {
            std::io::Error::new(e.kind(), format!("{}: {e}", self.settings.dask.display()))
        })?;
        let id = child
            .id()
            .and_then(|pid| ProcessId::of(pid as i32))
            .ok_or_else(|| std::io::Error::other("the scheduler exited at once"))?;
        let scheduler = SchedulerProcess { id, child: Some(child) };
        let Some((ours, _theirs)) = pair else { return Ok((scheduler, None)) };
        ours.set_nonblocking(true)?;
        Ok((scheduler, Some(UnixDatagram::from_std(ours)?)))
    }

    async fn spawn_worker(&mut self, scheduler: &str, slot: OwnedSemaphorePermit) {
        let name = uuid::Uuid::new_v4().simple().to_string();
        let config = &self.cluster.config;
        let lifeline = self.dir.join(WORKER_LIFELINE_PRELOAD_FILE).to_string_lossy().into_owned();
        let args: Vec<String> = [scheduler, "--dashboard-address", "127.0.0.1:0", "--name", &name]
            .into_iter()
            .chain(["--preload-nanny", &lifeline])
            .map(String::from)
            .chain(["--nthreads".into(), config.worker_threads.to_string()])
            .chain(["--memory-limit".into(), config.worker_memory.to_string()])
            .collect();
        let log = format!("worker-{name}.log");
        let scheduler_pid = self.scheduler.map(|s| s.pid.to_string()).unwrap_or_default();
        let forked = match self.fork_server() {
            Some(forks) => {
                let mut env = self.environment();
                env.insert("DASK_GATEWAY_SCHEDULER_PID".into(), scheduler_pid.clone());
                // The nanny forks its worker too: a spawned one would import
                // `distributed` all over again.
                env.insert(
                    "DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD".into(),
                    "fork".into(),
                );
                let request = ForkRequest {
                    cwd: &self.dir,
                    log: self.dir.join(&log),
                    env,
                    args: args.clone(),
                };
                forks
                    .fork(&request)
                    .await
                    .inspect_err(|e| warn!(error = %e, "could not fork a worker: starting it cold"))
                    .ok()
            }
            None => None,
        };
        let started = match forked {
            Some(worker) => ProcessId::of(worker.pid)
                .map(|id| WorkerProcess { id, child: None })
                .ok_or_else(|| std::io::Error::other("the forked worker exited at once")),
            None => self
                .command(&log)
                .and_then(|mut cmd| {
                    cmd.env("DASK_GATEWAY_SCHEDULER_PID", &scheduler_pid)
                        .arg("worker")
                        .args(&args)
                        .spawn()
                })
                .and_then(|child| {
                    let id = child.id().and_then(|pid| ProcessId::of(pid as i32));
                    let id =
                        id.ok_or_else(|| std::io::Error::other("the worker exited at once"))?;
                    Ok(WorkerProcess { id, child: Some(child) })
                }),
        };
        match started {
            Ok(process) => {
                info!(worker = %name, forked = process.child.is_none(), "starting a worker");
                let starting = Some((slot, Instant::now()));
                self.workers.insert(name, Worker { process, starting });
            }
            Err(e) => warn!(error = %e, "could not start a worker"),
        }
    }

    /// The fork server, if it is ready and this cluster's workers may be
    /// forked from it (same environment as the server's).
    fn fork_server(&self) -> Option<&ForkServer> {
        let forks = self.settings.forks.get()?;
        (self.cluster.config.environment == self.settings.default_environment).then_some(forks)
    }

    /// Brings the worker processes in line with what the scheduler asks for.
    async fn apply(&mut self, beat: &Heartbeat) {
        for closed in &beat.closed_workers {
            // Usually exited already; what is left of its group goes.
            if let Some(worker) = self.workers.remove(closed) {
                worker.process.kill();
            }
        }
        for name in &beat.active_workers {
            if let Some(worker) = self.workers.get_mut(name) {
                worker.starting = None;
            }
        }
        let active: HashSet<&String> = beat.active_workers.iter().collect();
        let closing: HashSet<&String> = beat.closing_workers.iter().collect();
        let pending: Vec<String> = self
            .workers
            .keys()
            .filter(|n| !active.contains(n) && !closing.contains(n))
            .cloned()
            .collect();
        let limit = self.settings.max_workers.map(i64::from).unwrap_or(i64::MAX);
        let wanted = beat.count.clamp(0, limit);
        self.scheduler_address = Some(beat.scheduler_address.clone());
        // What stays wanted from this cluster's own processes once those
        // the scheduler already has are counted.
        let alive = active.len() as i64 + pending.len() as i64;
        self.wanted = usize::try_from(wanted - active.len() as i64).unwrap_or(0);
        if wanted < alive {
            // Workers still starting are the cheapest to give up.
            for name in pending.iter().take((alive - wanted) as usize) {
                info!(worker = %name, "stopping a worker that is no longer wanted");
                if let Some(worker) = self.workers.remove(name) {
                    worker.process.kill();
                }
            }
        }
        self.active = active.union(&closing).map(|n| (*n).clone()).collect();
        self.start_missing().await;
    }

    /// Starts wanted workers while start slots are free; the 1 s tick and
    /// the next heartbeat start the rest.
    async fn start_missing(&mut self) {
        let Some(scheduler) = self.scheduler_address.clone() else { return };
        loop {
            let pending = self.workers.keys().filter(|n| !self.active.contains(*n)).count();
            if pending >= self.wanted {
                return;
            }
            let Ok(slot) = self.settings.starting.clone().try_acquire_owned() else { return };
            self.spawn_worker(&scheduler, slot).await;
        }
    }

    fn reap_workers(&mut self) {
        let cooling = &mut self.cooling;
        self.workers.retain(|name, worker| match worker.process.exited() {
            None => true,
            Some(status) => {
                if let Some(status) = status {
                    warn!(worker = %name, %status, "worker exited");
                }
                // A worker that dies while starting keeps its slot for the
                // full slot time: a crashing command cannot respawn in a loop.
                cooling.extend(worker.starting.take());
                false
            }
        });
        for worker in self.workers.values_mut() {
            if worker.starting.as_ref().is_some_and(|(_, at)| at.elapsed() >= WORKER_START_SLOT) {
                worker.starting = None;
            }
        }
        self.cooling.retain(|(_, at)| at.elapsed() < WORKER_START_SLOT);
    }
}

/// The named handoff socket an adopted scheduler's preload bound in its
/// cluster directory (the socket pair died with the gateway that made it);
/// `None`: its connections are relayed. Reached through the directory's
/// descriptor: a socket path may be at most 108 bytes, state_dir's may not.
async fn reconnect_handoff(dir: &Path) -> Option<UnixDatagram> {
    let dir = std::fs::File::open(dir).ok()?;
    let path = format!("/proc/self/fd/{}/handoff.sock", dir.as_raw_fd());
    let channel = UnixDatagram::unbound().ok()?;
    match channel.connect(&path) {
        Ok(()) => Some(channel),
        Err(e) => {
            warn!(error = %e, "no handoff socket from the adopted scheduler: relaying its connections");
            None
        }
    }
}

/// The preload's one message on the handoff channel, sent once it adopts
/// connections; never, without a channel.
async fn handoff_ready(channel: Option<&UnixDatagram>) -> std::io::Result<()> {
    match channel {
        Some(channel) => channel.recv(&mut [0u8; 16]).await.map(drop),
        None => std::future::pending().await,
    }
}

/// A worker's process group: a `dask worker` we spawned (`child`), one the
/// fork server forked, or one a previous gateway started. Nothing ends it
/// on drop: a gateway that exits leaves it to the next one.
struct WorkerProcess {
    id: ProcessId,
    child: Option<Child>,
}

impl WorkerProcess {
    /// `None` while it runs; once it has exited, its failure if it failed
    /// and that is known (only a spawned worker's status is).
    fn exited(&mut self) -> Option<Option<std::process::ExitStatus>> {
        match &mut self.child {
            Some(child) => match child.try_wait() {
                Ok(None) => None,
                Ok(Some(status)) => Some(Some(status).filter(|s| !s.success())),
                Err(_) => Some(None),
            },
            None => (!self.id.is_alive()).then_some(None),
        }
    }

    /// SIGKILL to the group, now.
    fn kill(mut self) {
        self.id.signal_group(nix::sys::signal::Signal::SIGKILL);
        if let Some(child) = &mut self.child {
            child.try_wait().ok();
        }
    }

    async fn terminate(mut self) {
        self.id.stop_group(TERMINATE_GRACE).await;
        if let Some(child) = &mut self.child {
            child.wait().await.ok();
        }
    }
}

/// The scheduler's process group; `child` when this gateway started it.
struct SchedulerProcess {
    id: ProcessId,
    child: Option<Child>,
}

impl SchedulerProcess {
    /// Resolves when the scheduler exits, with how, if known (not for one
    /// adopted from an earlier gateway: it is not this process's child).
    async fn wait(&mut self) -> Option<std::process::ExitStatus> {
        match &mut self.child {
            Some(child) => child.wait().await.ok(),
            None => {
                while self.id.is_alive() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                None
            }
        }
    }

    /// SIGTERM to the group, SIGKILL after [`TERMINATE_GRACE`].
    async fn stop(mut self) {
        self.id.stop_group(TERMINATE_GRACE).await;
        if let Some(child) = &mut self.child {
            child.wait().await.ok();
        }
    }
}

async fn tail(path: &Path, lines: usize) -> String {
    let text = tokio::fs::read_to_string(path).await.unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
