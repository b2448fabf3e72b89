//! `GET /api/v1/clusters/<name>/logs[?lines=N]`: the recent log lines of a
//! cluster's scheduler and workers, for its owner or an admin.
//!
//! ```json
//! {"name": "...", "status": "FAILED", "reason": "the scheduler exited (exit status: 1)",
//!  "scheduler": ["line", ...], "workers": {"<worker>": ["line", ...]}, "truncated": false}
//! ```
//!
//! The body is written one process at a time as the backend reads the logs
//! (chunked), so a big cluster's answer is never held whole; each log is cut
//! to `lines` (default 100, at most 1000) and 64 KiB, the whole answer to
//! 4 MiB of lines (`truncated` says when workers were left out).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::errors::{ApiError, ApiResult};
use super::extract::Login;
use super::owned::owned_cluster;
use crate::backends::logs::{LogBounds, LogSection, LogStream, MAX_BYTES_PER_ANSWER, Source};
use crate::domain::models::Cluster;
use crate::http::state::Gateway;

#[derive(Deserialize)]
pub(super) struct LogsQuery {
    lines: Option<String>,
}

pub(super) async fn cluster_logs(
    State(gw): State<Arc<Gateway>>,
    Login { user, .. }: Login,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    let bounds = LogBounds::from_query(q.lines.as_deref()).map_err(ApiError::Unprocessable)?;
    let cluster = owned_cluster(&gw, &user, &name, "view the logs of").await?;
    let sections = gw.backend.logs(&cluster, bounds).await?;
    let body = Body::from_stream(
        render(&cluster, sections, MAX_BYTES_PER_ANSWER).map(Ok::<_, std::convert::Infallible>),
    );
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Where the writer is in the JSON document.
enum Phase {
    /// Nothing written yet: the head, then the scheduler's lines.
    Start,
    /// Inside `"workers": {`; `first`: no worker written yet.
    Workers {
        first: bool,
    },
    Done,
}

struct Writer {
    head: String,
    sections: LogStream,
    /// A worker's section read while looking for the scheduler's.
    pending: Option<LogSection>,
    phase: Phase,
    /// Bytes of lines still allowed in this answer.
    budget: usize,
    truncated: bool,
}

/// The answer's JSON in chunks: the head and the scheduler's lines, then
/// one chunk per worker, then the tail.
pub fn render(cluster: &Cluster, sections: LogStream, budget: usize) -> LogBody {
    let head = json!({
        "name": cluster.name,
        "status": cluster.status.name(),
        "reason": cluster.reason,
    })
    .to_string();
    let writer = Writer {
        // The object without its closing brace, to go on writing into it.
        head: head[..head.len() - 1].to_string(),
        sections,
        pending: None,
        phase: Phase::Start,
        budget,
        truncated: false,
    };
    Box::pin(futures::stream::unfold(writer, |mut w| async move {
        let chunk = w.next_chunk().await?;
        Some((Bytes::from(chunk), w))
    }))
}

pub type LogBody = futures::stream::BoxStream<'static, Bytes>;

fn lines_json(lines: &[String]) -> String {
    serde_json::to_string(lines).expect("strings serialise")
}

fn size(lines: &[String]) -> usize {
    lines.iter().map(|l| l.len() + 1).sum()
}

impl Writer {
    async fn next_chunk(&mut self) -> Option<String> {
        match self.phase {
            Phase::Done => None,
            Phase::Start => {
                let scheduler = match self.sections.next().await {
                    Some(LogSection { source: Source::Scheduler, lines }) => lines,
                    other => {
                        self.pending = other;
                        Vec::new()
                    }
                };
                let lines = self.spend(scheduler).unwrap_or_default();
                self.phase = Phase::Workers { first: true };
                Some(format!("{},\"scheduler\":{},\"workers\":{{", self.head, lines_json(&lines)))
            }
            Phase::Workers { first } => {
                let next = match self.pending.take() {
                    Some(section) => Some(section),
                    None => self.sections.next().await,
                };
                let worker = match next {
                    Some(LogSection { source: Source::Worker(name), lines }) => {
                        self.spend(lines).map(|lines| (name, lines))
                    }
                    // A second scheduler section is the backend's mistake: skipped.
                    Some(LogSection { source: Source::Scheduler, .. }) => {
                        return Some(String::new());
                    }
                    None => None,
                };
                let Some((name, lines)) = worker else {
                    // The end, or the budget is spent: stop reading logs.
                    self.phase = Phase::Done;
                    return Some(format!("}},\"truncated\":{}}}", self.truncated));
                };
                self.phase = Phase::Workers { first: false };
                let comma = if first { "" } else { "," };
                Some(format!("{comma}{}:{}", json!(name), lines_json(&lines)))
            }
        }
    }

    /// The lines if they fit what is left of the budget.
    fn spend(&mut self, lines: Vec<String>) -> Option<Vec<String>> {
        let bytes = size(&lines);
        if bytes > self.budget {
            self.truncated = true;
            return None;
        }
        self.budget -= bytes;
        Some(lines)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::domain::models::ClusterStatus;
    use crate::domain::models::tests::sample;

    fn section(source: Source, lines: &[&str]) -> LogSection {
        LogSection { source, lines: lines.iter().map(|l| l.to_string()).collect() }
    }

    async fn rendered(cluster: &Cluster, sections: Vec<LogSection>, budget: usize) -> Value {
        let chunks: Vec<Bytes> =
            render(cluster, Box::pin(futures::stream::iter(sections)), budget).collect().await;
        let body: Vec<u8> = chunks.concat();
        serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)))
    }

    #[tokio::test]
    async fn scheduler_and_workers_make_one_json_document() {
        let mut cluster = sample("c1", "alice", ClusterStatus::Failed);
        cluster.reason = Some("the scheduler exited".into());
        let body = rendered(
            &cluster,
            vec![
                section(Source::Scheduler, &["s1", "s\"2"]),
                section(Source::Worker("w1".into()), &["a"]),
                section(Source::Worker("w\"2".into()), &[]),
            ],
            1 << 20,
        )
        .await;
        assert_eq!(
            body,
            json!({ "name": "c1", "status": "FAILED", "reason": "the scheduler exited",
                    "scheduler": ["s1", "s\"2"], "workers": { "w1": ["a"], "w\"2": [] }, "truncated": false })
        );
    }

    #[tokio::test]
    async fn no_scheduler_section_and_no_sections_at_all() {
        let cluster = sample("c1", "alice", ClusterStatus::Running);
        let body = rendered(&cluster, vec![section(Source::Worker("w".into()), &["x"])], 100).await;
        assert_eq!((&body["scheduler"], &body["workers"]), (&json!([]), &json!({ "w": ["x"] })));
        let body = rendered(&cluster, vec![], 100).await;
        assert_eq!((&body["workers"], &body["reason"]), (&json!({}), &Value::Null));
    }

    #[tokio::test]
    async fn the_answer_stops_at_its_budget() {
        let cluster = sample("c1", "alice", ClusterStatus::Running);
        let line = "x".repeat(99); // 100 bytes with its newline
        let workers = (0..10).map(|i| section(Source::Worker(format!("w{i}")), &[&line, &line]));
        let sections: Vec<_> =
            std::iter::once(section(Source::Scheduler, &[&line])).chain(workers).collect();
        let body = rendered(&cluster, sections, 700).await;
        assert_eq!(body["scheduler"].as_array().unwrap().len(), 1);
        // 100 for the scheduler, then 200 per worker: three fit in 700.
        assert_eq!(body["workers"].as_object().unwrap().len(), 3);
        assert_eq!(body["truncated"], true);
    }
}
