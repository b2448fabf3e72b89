//! Whether the operator's watches make progress, for `/healthz`.
//!
//! A watch can stall silently: its connection dead behind a NAT or a frozen
//! API server, no error, no event, while every other request works (kopf's
//! `/healthz` stays green then; dask-kubernetes #620). Progress is measured
//! on the wire, in a layer of the operator's Kubernetes client: a watch
//! progresses when a response to it starts or any of its bytes arrive
//! (events and bookmarks alike), or when a list of the same resources
//! succeeds (a re-list). Each watch is ended by the server after a third of
//! the bound ([`Config::watch_config`](crate::config::Config::watch_config)),
//! so a quiet healthy watch shows progress well within it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};

/// When each watch (a resource path and label selector) last made progress.
#[derive(Default)]
pub struct WatchProgress {
    last: Mutex<HashMap<String, Instant>>,
}

impl WatchProgress {
    /// A watch is being made: it counts from now if it is new.
    fn register(&self, key: &str) {
        let mut last = self.last.lock().expect("progress lock");
        if !last.contains_key(key) {
            last.insert(key.to_string(), Instant::now());
        }
    }

    /// Progress on `key`, if it is a watch.
    fn touch(&self, key: &str) {
        if let Some(at) = self.last.lock().expect("progress lock").get_mut(key) {
            *at = Instant::now();
        }
    }

    /// The watches without progress for longer than `bound`.
    pub fn stalled(&self, bound: Duration) -> Vec<String> {
        stalled_at(&self.last.lock().expect("progress lock"), Instant::now(), bound)
    }

    /// The client layer that measures progress into `self`.
    pub fn layer(self: &Arc<Self>) -> ProgressLayer {
        ProgressLayer(self.clone())
    }
}

/// The keys of `last` older than `bound` at `now`, sorted.
pub fn stalled_at(last: &HashMap<String, Instant>, now: Instant, bound: Duration) -> Vec<String> {
    let mut stalled: Vec<String> = last
        .iter()
        .filter(|(_, at)| now.saturating_duration_since(**at) > bound)
        .map(|(key, _)| key.clone())
        .collect();
    stalled.sort();
    stalled
}

/// The watch a request lists or watches: its path and label selector, and
/// whether it is the watch itself.
pub fn watch_key(uri: &Uri) -> (String, bool) {
    let mut selector = "";
    let mut watch = false;
    for pair in uri.query().unwrap_or_default().split('&') {
        match pair.split_once('=') {
            Some(("labelSelector", value)) => selector = value,
            Some(("watch", "true" | "1")) => watch = true,
            _ => {}
        }
    }
    (format!("{}?{selector}", uri.path()), watch)
}

#[derive(Clone)]
pub struct ProgressLayer(Arc<WatchProgress>);

impl<S> Layer<S> for ProgressLayer {
    type Service = ProgressService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ProgressService { inner, progress: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct ProgressService<S> {
    inner: S,
    progress: Arc<WatchProgress>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ProgressService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<ProgressBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (key, watch) = watch_key(request.uri());
        if watch {
            self.progress.register(&key);
        }
        let progress = self.progress.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let ok = response.status().is_success();
            if ok {
                progress.touch(&key);
            }
            // Only a watch's bytes are progress; a list's end is its response.
            let key = (ok && watch).then_some(key);
            Ok(response.map(|inner| ProgressBody { inner, key, progress }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records progress on each frame that arrives.
    pub struct ProgressBody<B> {
        #[pin]
        inner: B,
        key: Option<String>,
        progress: Arc<WatchProgress>,
    }
}

impl<B: Body> Body for ProgressBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let (Poll::Ready(Some(Ok(_))), Some(key)) = (&polled, this.key.as_ref()) {
            this.progress.touch(key);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_are_keyed_by_path_and_selector() {
        let uri: Uri = "/api/v1/namespaces/a/pods?labelSelector=dask.org%2Fcomponent%3Dworker&watch=true&timeoutSeconds=40"
            .parse()
            .unwrap();
        assert_eq!(
            watch_key(&uri),
            ("/api/v1/namespaces/a/pods?dask.org%2Fcomponent%3Dworker".into(), true)
        );
        let list: Uri = "/api/v1/namespaces/a/pods?labelSelector=dask.org%2Fcomponent%3Dworker"
            .parse()
            .unwrap();
        assert_eq!(watch_key(&list).0, watch_key(&uri).0, "a re-list counts for its watch");
        assert!(!watch_key(&list).1);
    }

    #[test]
    fn only_watches_older_than_the_bound_are_stalled() {
        let now = Instant::now();
        let bound = Duration::from_secs(10);
        let last = HashMap::from([
            ("b".to_string(), now - Duration::from_secs(11)),
            ("a".to_string(), now - Duration::from_secs(30)),
            ("fresh".to_string(), now - Duration::from_secs(9)),
        ]);
        assert_eq!(stalled_at(&last, now, bound), ["a", "b"]);
    }

    #[test]
    fn a_touch_counts_only_for_a_registered_watch() {
        let progress = WatchProgress::default();
        progress.touch("list-only");
        assert!(progress.last.lock().unwrap().is_empty());
        progress.register("w");
        assert!(progress.stalled(Duration::ZERO).len() <= 1);
        assert!(progress.stalled(Duration::from_secs(60)).is_empty());
    }
}
