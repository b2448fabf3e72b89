//! The logs of a cluster's pods, read through the API server: the scheduler's
//! first, then each worker's (by pod name, which is its Dask name), each cut
//! to the request's bounds. A restarted container's previous log comes
//! first, above a marker line. A pod whose log cannot be read (not started
//! yet, its node does not serve logs) has no lines.

use std::time::Duration;

use dask_crds::labels::{CLUSTER_NAME, COMPONENT, COMPONENT_SCHEDULER, COMPONENT_WORKER};
use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, LogParams};
use tracing::debug;

use crate::backends::logs::{LogBounds, LogSection, LogStream, RESTART_MARKER, Source, TailBuffer};

/// Logs read at once (the answer is still written in order).
const CONCURRENT_READS: usize = 4;
/// One log read, from request to last byte.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// What the API server may send for one log, however long its lines: the
/// tail is cut from this much at most.
const MAX_TRANSFER: i64 = 8 * 1024 * 1024;

/// The logs of the pods of DaskCluster `resource`, scheduler first.
pub async fn cluster_logs(
    pods: Api<Pod>,
    resource: &str,
    bounds: impl Fn(usize) -> LogBounds,
) -> Result<LogStream, kube::Error> {
    let list =
        pods.list(&ListParams::default().labels(&format!("{CLUSTER_NAME}={resource}"))).await?;
    let ours = in_order(list.items);
    let bounds = bounds(ours.len());
    let sections = futures::stream::iter(ours)
        .map(move |(source, pod)| {
            let pods = pods.clone();
            async move { LogSection { lines: pod_lines(&pods, &pod, bounds).await, source } }
        })
        .buffered(CONCURRENT_READS);
    Ok(Box::pin(sections))
}

/// The pods whose logs are shown, in order: the scheduler (the newest,
/// when a rollout left more than one), then the workers by name; pods of
/// other components (a job runner) are left out.
fn in_order(pods: Vec<Pod>) -> Vec<(Source, Pod)> {
    let mut ours: Vec<(Source, Pod)> = pods
        .into_iter()
        .filter_map(|pod| {
            let source = match pod.labels().get(COMPONENT).map(String::as_str) {
                Some(COMPONENT_SCHEDULER) => Source::Scheduler,
                Some(COMPONENT_WORKER) => Source::Worker(pod.name_any()),
                _ => return None,
            };
            Some((source, pod))
        })
        .collect();
    ours.sort_by_key(|(source, pod)| {
        let newest_first = pod.creation_timestamp().map(|t| -t.0.as_second()).unwrap_or_default();
        match source {
            Source::Scheduler => (0, String::new(), newest_first),
            Source::Worker(name) => (1, name.clone(), 0),
        }
    });
    let mut seen = false;
    ours.retain(|(s, _)| *s != Source::Scheduler || !std::mem::replace(&mut seen, true));
    ours
}

/// The pod's first container's log; with a restart, the previous one's above it.
async fn pod_lines(pods: &Api<Pod>, pod: &Pod, bounds: LogBounds) -> Vec<String> {
    let Some(container) = pod.spec.as_ref().and_then(|s| s.containers.first()) else {
        return Vec::new();
    };
    let restarts = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|all| all.iter().find(|c| c.name == container.name))
        .map(|c| c.restart_count)
        .unwrap_or(0);
    let name = pod.name_any();
    if restarts == 0 {
        return read(pods, &name, &container.name, false, bounds).await;
    }
    let half = bounds.halved();
    let mut lines = read(pods, &name, &container.name, true, half).await;
    lines.push(RESTART_MARKER.into());
    lines.extend(read(pods, &name, &container.name, false, half).await);
    lines
}

/// The last lines of one container's log, read as a stream and kept to
/// `bounds.bytes` (the API server's `limitBytes` would keep the *first* bytes).
async fn read(
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    previous: bool,
    bounds: LogBounds,
) -> Vec<String> {
    if bounds.lines == 0 {
        return Vec::new();
    }
    let params = LogParams {
        container: Some(container.into()),
        previous,
        tail_lines: Some(bounds.lines as i64),
        limit_bytes: Some(MAX_TRANSFER),
        ..Default::default()
    };
    let tail = async {
        let mut stream = pods.log_stream(pod, &params).await?;
        let mut tail = TailBuffer::new(bounds.bytes);
        loop {
            let chunk = stream.fill_buf().await?;
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            tail.push(chunk);
            stream.consume_unpin(n);
        }
        Ok::<_, anyhow::Error>(tail)
    };
    match tokio::time::timeout(READ_TIMEOUT, tail).await {
        Ok(Ok(tail)) => tail.lines(bounds),
        Ok(Err(e)) => {
            debug!(pod, previous, error = %e, "no log for this pod");
            Vec::new()
        }
        Err(_) => {
            debug!(pod, previous, "reading the pod's log timed out");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, component: &str, created: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": name, "creationTimestamp": created,
                          "labels": { COMPONENT: component, CLUSTER_NAME: "dask-abc" } },
        }))
        .unwrap()
    }

    #[test]
    fn the_newest_scheduler_first_then_workers_by_name() {
        let pods = vec![
            pod("dask-abc-default-worker-b", "worker", "2026-01-01T00:00:05Z"),
            pod("dask-abc-scheduler-old", "scheduler", "2026-01-01T00:00:00Z"),
            pod("dask-abc-runner", "job-runner", "2026-01-01T00:00:00Z"),
            pod("dask-abc-default-worker-a", "worker", "2026-01-01T00:00:09Z"),
            pod("dask-abc-scheduler-new", "scheduler", "2026-01-01T00:01:00Z"),
        ];
        let order: Vec<(Source, String)> =
            in_order(pods).into_iter().map(|(s, p)| (s, p.name_any())).collect();
        assert_eq!(
            order,
            [
                (Source::Scheduler, "dask-abc-scheduler-new".to_string()),
                (
                    Source::Worker("dask-abc-default-worker-a".into()),
                    "dask-abc-default-worker-a".into()
                ),
                (
                    Source::Worker("dask-abc-default-worker-b".into()),
                    "dask-abc-default-worker-b".into()
                ),
            ]
        );
        assert!(in_order(vec![]).is_empty());
    }
}
