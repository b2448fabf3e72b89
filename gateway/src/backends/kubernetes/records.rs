//! Finished clusters on Kubernetes. Stopping or failing a cluster turns its
//! credentials Secret into its history record (owner, options, reason,
//! times; token and key removed, no owner any more) and captures the tail
//! of its pods' logs into a second Secret owned by the record; then the
//! DaskCluster goes, and with it every pod. The records live in the API
//! server, so every gateway replica lists them and a restart loses none;
//! each replica deletes those older than `completed_cluster_max_age` (the
//! logs Secret follows its owner through Kubernetes' garbage collector).

use std::sync::Arc;
use std::time::Duration;

use dask_common::kube_api::ignore_not_found;
use dask_crds::DaskCluster;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::build::{CLUSTER, OPTIONS, SETTINGS, USER, secret_name};
use super::{CREATED, FAILED, STOPPED, pod_logs};
use crate::backends::history::{Record, Retention};
use crate::backends::logs::{CapturedLogs, LogBounds, LogStream, last_lines};
use crate::domain::models::{ClusterStatus, now_ms};

/// Label of a record Secret: `stopped` or `failed`.
pub const RECORD: &str = dask_crds::gateway::RECORD;
/// Why the gateway stopped a cluster on its own (idle, lifetime, …).
pub const STOP_REASON: &str = dask_crds::gateway::STOP_REASON;

/// How a cluster ends, as its record tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending<'a> {
    /// Stopped by its user (`None`) or by the gateway, saying why.
    Stopped(Option<&'a str>),
    Failed(&'a str),
}

impl<'a> Ending<'a> {
    /// The ending a record (or a retirement cut short) already tells.
    pub fn of(annotations: &'a std::collections::BTreeMap<String, String>) -> Self {
        match annotations.get(FAILED) {
            Some(reason) => Ending::Failed(reason),
            None => Ending::Stopped(annotations.get(STOP_REASON).map(String::as_str)),
        }
    }
}
/// The logs Secret's key holding [`CapturedLogs`] as JSON.
const LOGS_KEY: &str = "logs.json";
/// Captured per container at most, and per cluster: a Secret holds 1 MiB.
const CAPTURE: LogBounds = LogBounds { lines: 200, bytes: 16 * 1024 };
const CAPTURE_TOTAL: usize = 768 * 1024;
/// The captured logs' JSON at most (a Secret's data is limited to 1 MiB).
const MAX_CAPTURE_JSON: usize = 900 * 1024;
/// How long a stop may spend capturing logs before the pods go anyway.
const CAPTURE_TIMEOUT: Duration = Duration::from_secs(15);

/// The Secret with a finished cluster's captured logs (not labelled with
/// the instance, so the gateway's Secret cache does not hold it).
pub fn logs_secret_name(cluster: &str) -> String {
    format!("dask-{cluster}-logs")
}

/// The capture bounds when a cluster has `pods` pods: within a Secret's size.
pub fn capture_bounds(pods: usize) -> LogBounds {
    LogBounds { lines: CAPTURE.lines, bytes: CAPTURE.bytes.min(CAPTURE_TOTAL / pods.max(1)) }
}

/// A record Secret as the history [`Record`] it holds.
pub fn record_of(secret: &Secret) -> Option<Record> {
    let status = match secret.labels().get(RECORD)?.as_str() {
        "stopped" => ClusterStatus::Stopped,
        _ => ClusterStatus::Failed,
    };
    let annotations = secret.annotations();
    let millis = |key: &str| annotations.get(key).and_then(|v| v.parse::<i64>().ok());
    let start_time = millis(CREATED).unwrap_or_default();
    Some(Record {
        name: secret.labels().get(CLUSTER)?.clone(),
        username: annotations.get(USER).cloned().unwrap_or_default(),
        status,
        reason: annotations.get(FAILED).or_else(|| annotations.get(STOP_REASON)).cloned(),
        start_time,
        stop_time: millis(STOPPED).unwrap_or(start_time),
        options: annotations
            .get(OPTIONS)
            .and_then(|o| serde_json::from_str(o).ok())
            .unwrap_or_default(),
        config: annotations.get(SETTINGS).and_then(|c| serde_json::from_str(c).ok())?,
    })
}

/// Stops and fails clusters, keeping a record of each.
#[derive(Clone)]
pub struct Retirer {
    pub clusters: Api<DaskCluster>,
    pub secrets: Api<Secret>,
    pub pods: Api<Pod>,
}

impl Retirer {
    /// Records the cluster (STOPPED, with why if the gateway stopped it, or
    /// FAILED with its reason), captures its pods' logs beside the record,
    /// then deletes the DaskCluster: user code of a finished cluster keeps
    /// no resources and gets no heartbeats.
    pub async fn retire(&self, dc: &DaskCluster, ending: Ending<'_>) {
        let Some(name) = dc.labels().get(CLUSTER) else { return };
        let reason = match ending {
            Ending::Failed(reason) => {
                warn!(cluster = %name, reason, "cluster failed; removing its pods");
                Some(reason)
            }
            Ending::Stopped(why) => {
                info!(cluster = %name, why, "cluster stopping; removing its pods");
                None
            }
        };
        // The record first: the cluster is STOPPING from now on, and its
        // token is gone, so its scheduler gets no more say.
        match self.write_record(dc, name, ending).await {
            Ok(record) => {
                let logs = self.capture(&dc.name_any()).await;
                self.keep_logs(name, &record, logs).await
            }
            Err(e) if reason.is_some() => {
                // Without a record, keep the DaskCluster as one and stop its workers.
                warn!(cluster = %name, error = %e, "could not write the failure record; keeping the DaskCluster");
                let patch = json!({ "metadata": { "annotations": { FAILED: reason } }, "spec": { "worker": { "replicas": 0 } } });
                if let Err(e) = self
                    .clusters
                    .patch(&dc.name_any(), &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    warn!(error = %e, "could not mark the cluster failed");
                }
                return;
            }
            // A stop goes on without a record: the cluster leaves the list.
            Err(e) => warn!(cluster = %name, error = %e, "could not write the stop record"),
        }
        let deleted = self.clusters.delete(&dc.name_any(), &DeleteParams::background()).await;
        if let Err(e) = ignore_not_found(deleted) {
            warn!(cluster = %name, error = %e, "could not delete a finished cluster");
        }
    }

    /// The tail of every pod's log, within a Secret's size and a time limit.
    async fn capture(&self, resource: &str) -> CapturedLogs {
        let read = async {
            match pod_logs::cluster_logs(self.pods.clone(), resource, capture_bounds).await {
                Ok(sections) => CapturedLogs::collect(sections).await,
                Err(e) => {
                    warn!(cluster = resource, error = %e, "could not list the cluster's pods for their logs");
                    CapturedLogs::default()
                }
            }
        };
        tokio::time::timeout(CAPTURE_TIMEOUT, read).await.unwrap_or_default()
    }

    /// The cluster's Secret becomes its record.
    async fn write_record(
        &self,
        dc: &DaskCluster,
        name: &str,
        ending: Ending<'_>,
    ) -> Result<Secret, kube::Error> {
        let (failed, stopped_because) = match ending {
            Ending::Failed(reason) => (Some(reason), None),
            Ending::Stopped(why) => (None, why),
        };
        let annotations = dc.annotations();
        let now = now_ms();
        // A pooled cluster's time in the pool is not its user's.
        let created = Some(super::start_time(dc)).filter(|t| *t > 0).unwrap_or(now);
        let record = json!({
            "metadata": {
                "ownerReferences": null,
                "labels": { RECORD: if failed.is_some() { "failed" } else { "stopped" } },
                "annotations": {
                    FAILED: failed,
                    STOP_REASON: stopped_because,
                    USER: annotations.get(USER),
                    OPTIONS: annotations.get(OPTIONS),
                    SETTINGS: annotations.get(SETTINGS),
                    CREATED: created.to_string(),
                    STOPPED: now.to_string(),
                },
            },
            "data": { "api-token": null, "dask.pem": null },
        });
        self.secrets.patch(&secret_name(name), &PatchParams::default(), &Patch::Merge(record)).await
    }

    /// The captured logs, in a Secret the record owns (so it goes with it).
    async fn keep_logs(&self, name: &str, record: &Secret, logs: CapturedLogs) {
        let Some(owner) = record.controller_owner_ref(&()) else { return };
        let data = fit(logs, MAX_CAPTURE_JSON);
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(logs_secret_name(name)),
                labels: Some(
                    [
                        (CLUSTER.to_string(), name.to_string()),
                        ("app.kubernetes.io/component".into(), "cluster-logs".into()),
                    ]
                    .into(),
                ),
                owner_references: Some(vec![owner]),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some([(LOGS_KEY.to_string(), ByteString(data))].into()),
            ..Default::default()
        };
        match self.secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => {}
            // Another replica stopping the same cluster captured them already.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => warn!(cluster = %name, error = %e, "could not keep the captured logs"),
        }
    }
}

/// The captured logs as JSON of at most `max` bytes: escaping can make
/// JSON several times longer than the lines, so each log is halved until
/// the whole fits.
fn fit(mut logs: CapturedLogs, max: usize) -> Vec<u8> {
    let mut bytes = CAPTURE.bytes;
    loop {
        let data = serde_json::to_vec(&logs).unwrap_or_default();
        if data.len() <= max {
            return data;
        }
        if bytes == 0 {
            return b"{}".to_vec();
        }
        bytes /= 2;
        let bounds = LogBounds { lines: CAPTURE.lines, bytes };
        logs.scheduler = last_lines(std::mem::take(&mut logs.scheduler), bounds);
        for lines in logs.workers.values_mut() {
            *lines = last_lines(std::mem::take(lines), bounds);
        }
    }
}

/// The logs captured when `cluster` finished, cut to `bounds`; none if
/// there are none (captured by an older gateway, or not writable then).
pub async fn captured_logs(
    secrets: &Api<Secret>,
    cluster: &str,
    bounds: LogBounds,
) -> Result<LogStream, kube::Error> {
    let secret = secrets.get_opt(&logs_secret_name(cluster)).await?;
    let captured = secret
        .and_then(|s| s.data)
        .and_then(|data| data.get(LOGS_KEY).cloned())
        .and_then(|bytes| serde_json::from_slice::<CapturedLogs>(&bytes.0).ok())
        .unwrap_or_default();
    Ok(captured.into_stream(bounds))
}

/// Deletes, every sweep period, the records `retention` no longer keeps.
/// Each replica sweeps; a delete names the record's uid, so a replica never
/// deletes a newer object of the same name, and a record another replica
/// deleted first is no error.
pub fn spawn_sweep(store: Store<Secret>, secrets: Api<Secret>, retention: Retention) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(retention.sweep_period()).await;
            let now = now_ms();
            for secret in store.state() {
                let Some(record) = record_of(&secret) else { continue };
                if retention.keeps(record.status, Some(record.stop_time), now) {
                    continue;
                }
                forget(&secrets, &secret, &record.name).await;
            }
        }
    });
}

async fn forget(secrets: &Api<Secret>, secret: &Arc<Secret>, cluster: &str) {
    let preconditions = Preconditions { uid: secret.uid(), resource_version: None };
    let params = DeleteParams { preconditions: Some(preconditions), ..DeleteParams::background() };
    match secrets.delete(&secret.name_any(), &params).await {
        Ok(_) => info!(cluster, "finished cluster forgotten (completed_cluster_max_age)"),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => warn!(cluster, error = %e, "could not delete an expired cluster record"),
    }
}

/// A record is only the gateway's if its DaskCluster is gone.
pub fn is_record(secret: &Secret) -> bool {
    secret.labels().contains_key(RECORD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_fit_in_one_secret() {
        assert_eq!(capture_bounds(1).bytes, 16 * 1024);
        for pods in [1, 33, 100, 10_000] {
            let bounds = capture_bounds(pods);
            assert!(bounds.bytes * pods <= CAPTURE_TOTAL, "{pods} pods");
        }
    }

    #[test]
    fn captured_logs_fit_a_secret_however_they_escape() {
        // Control characters take six bytes each in JSON.
        let hostile = "\u{1}".repeat(200);
        let pods = 40;
        let lines = last_lines(vec![hostile; 1000], capture_bounds(pods));
        let logs = CapturedLogs {
            scheduler: lines.clone(),
            workers: (0..pods).map(|i| (format!("w{i}"), lines.clone())).collect(),
        };
        assert!(serde_json::to_vec(&logs).unwrap().len() > MAX_CAPTURE_JSON);
        let data = fit(logs, MAX_CAPTURE_JSON);
        assert!(data.len() <= MAX_CAPTURE_JSON);
        let back: CapturedLogs = serde_json::from_slice(&data).unwrap();
        assert_eq!(back.workers.len(), pods, "every worker is still named");
        assert!(!back.scheduler.is_empty(), "the newest lines are kept");
        let small = CapturedLogs { scheduler: vec!["ok".into()], ..Default::default() };
        assert_eq!(fit(small.clone(), MAX_CAPTURE_JSON), serde_json::to_vec(&small).unwrap());
    }

    #[test]
    fn a_record_secret_reads_back() {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {
                "name": "dask-abc-gateway",
                "labels": { RECORD: "stopped", CLUSTER: "abc" },
                "annotations": {
                    USER: "alice", CREATED: "1000", STOPPED: "5000",
                    OPTIONS: "{\"profile\":\"small\"}",
                    SETTINGS: "{\"worker_cores\":1.0,\"worker_memory\":1,\"worker_threads\":1,\"idle_timeout\":0.0,\"environment\":{},\"image\":null}",
                },
            },
        }))
        .unwrap();
        let record = record_of(&secret).unwrap();
        assert_eq!((record.status, record.reason.as_deref()), (ClusterStatus::Stopped, None));
        assert_eq!((record.start_time, record.stop_time), (1000, 5000));
        assert_eq!(record.options["profile"], "small");
        let mut failed = secret.clone();
        failed.labels_mut().insert(RECORD.into(), "failed".into());
        failed.annotations_mut().insert(FAILED.into(), "no scheduler".into());
        let record = record_of(&failed).unwrap();
        assert_eq!(
            (record.status, record.reason.as_deref()),
            (ClusterStatus::Failed, Some("no scheduler"))
        );
        let mut stopped_by_gateway = secret.clone();
        stopped_by_gateway.annotations_mut().insert(STOP_REASON.into(), "idle".into());
        let record = record_of(&stopped_by_gateway).unwrap();
        assert_eq!(
            (record.status, record.reason.as_deref()),
            (ClusterStatus::Stopped, Some("idle"))
        );
        let mut live = secret;
        live.labels_mut().remove(RECORD);
        assert!(record_of(&live).is_none() && !is_record(&live));
    }

    #[test]
    fn an_ending_is_read_back_from_the_record_it_wrote() {
        use std::collections::BTreeMap;
        let failed = BTreeMap::from([(FAILED.to_string(), "no scheduler".to_string())]);
        assert_eq!(Ending::of(&failed), Ending::Failed("no scheduler"));
        let why = BTreeMap::from([(STOP_REASON.to_string(), "lifetime".to_string())]);
        assert_eq!(Ending::of(&why), Ending::Stopped(Some("lifetime")));
        assert_eq!(Ending::of(&BTreeMap::new()), Ending::Stopped(None));
    }
}
