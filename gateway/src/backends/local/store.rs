//! The local backend's state on disk, so that a restarted gateway finds its
//! clusters again ([`super::adopt`]): one JSON file per record under
//! `<state_dir>/store/<kind>/`, replaced atomically (written to a temporary
//! file, fsynced, renamed over the old one, directory fsynced). A crash
//! leaves each record either old or new, never half-written.
//!
//! Why files and not SQLite: one writer (this gateway, held by a lock
//! file), records that are independent of each other, no queries beyond
//! "all of them" at start. A file per record gives the same crash safety
//! with no C library to build and nothing to migrate.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::warn;

use super::process::ProcessId;
use crate::domain::models::{Addresses, Cluster, ClusterStatus};
use crate::domain::options::ClusterConfig;

/// Records of one kind (a directory): `clusters` here; others (a history
/// of stopped clusters) can use their own.
#[derive(Clone)]
pub struct Store {
    dir: PathBuf,
    /// One write at a time, and the last bytes written per record: a
    /// heartbeat that changes nothing writes nothing.
    written: Arc<tokio::sync::Mutex<HashMap<String, Vec<u8>>>>,
}

impl Store {
    /// The records of `kind` under `state_dir` (created 0700).
    pub fn open(state_dir: &Path, kind: &str) -> std::io::Result<Self> {
        let dir = state_dir.join("store").join(kind);
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        Ok(Self { dir, written: Default::default() })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Writes `record` as `name`, unless it is what was written last.
    pub async fn put<T: Serialize>(&self, name: &str, record: &T) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(record)?;
        let mut written = self.written.lock().await;
        if written.get(name) == Some(&bytes) {
            return Ok(());
        }
        let (path, data) = (self.path(name), bytes.clone());
        tokio::task::spawn_blocking(move || write_atomic(&path, &data))
            .await
            .map_err(std::io::Error::other)??;
        written.insert(name.to_string(), bytes);
        Ok(())
    }

    /// Removes `name`'s record (none is no error).
    pub async fn remove(&self, name: &str) -> std::io::Result<()> {
        let mut written = self.written.lock().await;
        written.remove(name);
        match tokio::fs::remove_file(self.path(name)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every readable record; an unreadable one is logged and skipped (and
    /// left on disk for a person to look at).
    pub fn load_all<T: DeserializeOwned>(&self) -> Vec<(String, T)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .map(String::from)
            else {
                continue;
            };
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<T>(&b).map_err(|e| e.to_string()))
            {
                Ok(record) => records.push((name, record)),
                Err(error) => warn!(path = %path.display(), error, "unreadable record skipped"),
            }
        }
        records
    }
}

/// Replaces `path`'s content atomically and durably: a temporary file
/// (0600: records hold secrets), fsync, rename, fsync of the directory so
/// the rename itself is on disk.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// Held for as long as the gateway runs: two gateways on one state
/// directory would each adopt, and stop, the other's clusters.
pub struct StateLock {
    _file: File,
}

impl StateLock {
    pub fn acquire(state_dir: &Path) -> anyhow::Result<Self> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(state_dir)?;
        let path = state_dir.join("gateway.lock");
        let file =
            std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
        // SAFETY: flock on a descriptor this function owns; released when it closes.
        let locked =
            unsafe { nix::libc::flock(file.as_raw_fd(), nix::libc::LOCK_EX | nix::libc::LOCK_NB) };
        if locked != 0 {
            anyhow::bail!(
                "backend.state_dir {}: another gateway is using it ({})",
                state_dir.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(Self { _file: file })
    }
}

/// What survives a restart of one cluster: everything to list it, proxy
/// to it, take its heartbeats and stop it, with the same credentials.
/// Its files are 0600 in a 0700 directory: it holds the cluster's token
/// (the gateway sends it with every order to the scheduler) and TLS key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterRecord {
    pub name: String,
    pub username: String,
    pub token: String,
    pub options: Map<String, Value>,
    pub config: ClusterConfig,
    pub status: ClusterStatus,
    pub start_time: i64,
    pub stop_time: Option<i64>,
    pub tls_cert: String,
    pub tls_key: String,
    pub addresses: Option<Addresses>,
    /// Workers the scheduler last asked for.
    pub workers: u32,
    /// Why a FAILED cluster failed, or why the gateway stopped it on its own.
    #[serde(default)]
    pub reason: Option<String>,
    /// Waiting in the warm pool (never adopted: stopped at restart).
    pub pooled: bool,
    pub processes: Processes,
}

/// The process groups of a cluster: the scheduler's and each worker's
/// (each leads its own group, which holds its nanny's worker process too).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Processes {
    pub scheduler: Option<ProcessId>,
    /// By Dask worker name.
    pub workers: BTreeMap<String, ProcessId>,
}

impl Processes {
    pub fn all(&self) -> impl Iterator<Item = ProcessId> + '_ {
        self.scheduler.iter().chain(self.workers.values()).copied()
    }
}

impl ClusterRecord {
    pub fn new(cluster: &Cluster, pooled: bool, processes: Processes) -> Self {
        Self {
            name: cluster.name.clone(),
            username: cluster.username.clone(),
            token: cluster.token.clone(),
            options: cluster.options.clone(),
            config: cluster.config.clone(),
            status: cluster.status,
            start_time: cluster.start_time,
            stop_time: cluster.stop_time,
            tls_cert: cluster.tls_cert.clone(),
            tls_key: cluster.tls_key.clone(),
            addresses: cluster.addresses.clone(),
            workers: cluster.workers,
            reason: cluster.reason.clone(),
            pooled,
            processes,
        }
    }

    pub fn cluster(&self) -> Cluster {
        Cluster {
            name: self.name.clone(),
            username: self.username.clone(),
            token: self.token.clone(),
            options: self.options.clone(),
            config: self.config.clone(),
            status: self.status,
            start_time: self.start_time,
            stop_time: self.stop_time,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            addresses: self.addresses.clone(),
            workers: self.workers,
            reason: self.reason.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::models::tests::sample;

    #[tokio::test]
    async fn records_survive_a_reopen_and_a_removal_sticks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "clusters").unwrap();
        let processes = Processes {
            scheduler: Some(ProcessId { pid: 42, start: 7 }),
            workers: [("w1".to_string(), ProcessId { pid: 43, start: 8 })].into(),
        };
        let record =
            ClusterRecord::new(&sample("c1", "alice", ClusterStatus::Running), false, processes);
        store.put("c1", &record).await.unwrap();
        store.put("c2", &record).await.unwrap();
        store.remove("c2").await.unwrap();
        store.remove("never-there").await.unwrap();
        // A crash between write and rename leaves a temporary file: ignored.
        std::fs::write(dir.path().join("store/clusters/c3.json.tmp"), b"{").unwrap();
        let reopened = Store::open(dir.path(), "clusters").unwrap();
        let loaded: Vec<(String, ClusterRecord)> = reopened.load_all();
        assert_eq!(loaded, vec![("c1".to_string(), record.clone())]);
        assert_eq!(loaded[0].1.cluster().token, record.token);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("store/clusters/c1.json")).unwrap();
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    }

    #[tokio::test]
    async fn a_corrupt_record_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "clusters").unwrap();
        std::fs::write(dir.path().join("store/clusters/bad.json"), b"{\"name\": 1").unwrap();
        assert!(store.load_all::<ClusterRecord>().is_empty());
    }

    #[test]
    fn a_second_gateway_on_the_same_state_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let held = StateLock::acquire(dir.path()).unwrap();
        let refused = StateLock::acquire(dir.path()).err().unwrap();
        assert!(refused.to_string().contains("another gateway"), "{refused}");
        drop(held);
        StateLock::acquire(dir.path()).unwrap();
    }
}
