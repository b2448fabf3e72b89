//! When an object's reconcile runs after something about it changed.
//!
//! Triggers are gathered as kube's debounce does: a trigger waits until its
//! object has had none for a window, then one reconcile sees the end state
//! of them all (a pod going Pending → Running → Ready, or a Deployment's
//! status settling, fires several watch events within a second), at a
//! fraction of the API server's work.
//!
//! Except the first reconcile of a new object (one the controller has never
//! given a status): it goes at once, so a new DaskCluster gets its scheduler
//! and worker group, and the new group its pods, without two windows' wait.
//! What follows it within the window (the children it created, the echo of
//! its own status write) is gathered as above.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt, TryStreamExt};
use kube::Resource;
use kube::runtime::controller::{self, Action, ReconcileRequest, applier};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tokio::time::Instant;

use crate::Error;

/// A reconcile request, and whether it is a new object's first (see the module).
pub struct Trigger<K: Resource> {
    pub request: ReconcileRequest<K>,
    pub at_once: bool,
}

/// A controller's triggers from one relation (the object itself, its
/// children, related objects).
pub type Triggers<K> = BoxStream<'static, Result<Trigger<K>, watcher::Error>>;

/// Triggers of the objects themselves; `is_new` tells a new object (one the
/// controller has not reconciled yet), whose trigger goes at once.
pub fn own<K, S>(objects: S, is_new: fn(&K) -> bool) -> Triggers<K>
where
    K: Resource<DynamicType = ()> + 'static,
    S: Stream<Item = Result<K, watcher::Error>> + Send + 'static,
{
    objects
        .map_ok(move |obj| Trigger {
            at_once: is_new(&obj),
            request: ObjectRef::from_obj(&obj).into(),
        })
        .boxed()
}

/// Triggers from other objects (kube's `trigger_owners`, `trigger_with`), gathered.
pub fn related<K, S>(requests: S) -> Triggers<K>
where
    K: Resource + 'static,
    S: Stream<Item = Result<ReconcileRequest<K>, watcher::Error>> + Send + 'static,
{
    requests.map_ok(|request| Trigger { request, at_once: false }).boxed()
}

/// What a controller's run yields for each reconcile (as kube's `Controller::run`).
pub type Reconciled<K> = Result<(ObjectRef<K>, Action), controller::Error<Error, watcher::Error>>;

/// Runs a controller: every relation's `triggers` merged, paced per object
/// over the debounce `window`, then reconciled by kube's applier (which also never runs
/// two reconciles of one object at once, and schedules requeues), at most
/// `concurrency` at once.
///
/// kube's `Controller` debounces every trigger, a new object's first too;
/// this is its applier with the [`Pacer`] in front.
pub fn run<K, Ctx, Fut>(
    store: Store<K>,
    triggers: Vec<Triggers<K>>,
    window: Duration,
    concurrency: u16,
    mut reconcile: impl FnMut(Arc<K>, Arc<Ctx>) -> Fut,
    error_policy: impl Fn(Arc<K>, &Error, Arc<Ctx>) -> Action,
    ctx: Arc<Ctx>,
) -> impl Stream<Item = Reconciled<K>>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let config = controller::Config::default().concurrency(concurrency);
    let triggers = futures::stream::select_all(triggers)
        .map_ok(|trigger: Trigger<K>| (trigger.request, trigger.at_once));
    let requests = paced(triggers, window);
    // Each reconcile is a task of its own, as in kube's `Controller::run`: it
    // makes progress while the results wait to be read; dropping the handle
    // cancels it, and a panic reaches the controller.
    let reconcile = move |obj, ctx| {
        let (task, handle) = reconcile(obj, ctx).remote_handle();
        tokio::spawn(task);
        handle
    };
    applier(reconcile, error_policy, ctx, store, requests, config)
}

/// The pure part: which triggers go now and which are due later.
pub struct Pacer<T> {
    window: Duration,
    /// Objects not at rest: when their window ends, and whether a trigger
    /// waits for it.
    busy: HashMap<T, Window>,
    /// The same windows by end time (and a sequence number, as ends tie).
    ends: BTreeMap<(Instant, u64), T>,
    sequence: u64,
}

struct Window {
    end: (Instant, u64),
    waiting: bool,
}

impl<T: Hash + Eq + Clone> Pacer<T> {
    pub fn new(window: Duration) -> Self {
        Self { window, busy: HashMap::new(), ends: BTreeMap::new(), sequence: 0 }
    }

    /// A trigger for `key` at `now`: true when it goes now (`at_once`, and
    /// nothing of `key` in a window); otherwise it is held until `key` has
    /// been quiet for a window (see [`due`](Self::due)).
    pub fn offer(&mut self, key: T, at_once: bool, now: Instant) -> bool {
        if self.window.is_zero() {
            return true;
        }
        let end = self.end_from(now);
        match self.busy.get_mut(&key) {
            None => {
                self.ends.insert(end, key.clone());
                self.busy.insert(key, Window { end, waiting: !at_once });
                at_once
            }
            Some(window) => {
                // Each trigger restarts the window: one reconcile after they stop.
                self.ends.remove(&window.end);
                self.ends.insert(end, key);
                *window = Window { end, waiting: true };
                false
            }
        }
    }

    /// The held triggers whose window ended by `now`; an object whose window
    /// ended with nothing held is at rest again. (A trigger that went starts
    /// a window with nothing held, so what comes of its reconcile is gathered.)
    pub fn due(&mut self, now: Instant) -> Vec<T> {
        let mut due = Vec::new();
        while let Some(entry) = self.ends.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            let waiting = self.busy.get(&key).is_some_and(|w| w.waiting);
            self.busy.remove(&key);
            if waiting {
                due.push(key);
            }
        }
        due
    }

    /// When [`due`](Self::due) next has something to do.
    pub fn next_end(&self) -> Option<Instant> {
        self.ends.first_key_value().map(|((end, _), _)| *end)
    }

    fn end_from(&mut self, now: Instant) -> (Instant, u64) {
        self.sequence += 1;
        (now + self.window, self.sequence)
    }
}

/// `triggers` (each with its `at_once`) paced per object by a [`Pacer`] of
/// `window`; errors (a watch failing) pass at once.
pub fn paced<T, E>(
    triggers: impl Stream<Item = Result<(T, bool), E>> + Send + 'static,
    window: Duration,
) -> impl Stream<Item = Result<T, E>> + Send
where
    T: Hash + Eq + Clone + Send + 'static,
    E: Send + 'static,
{
    let state = (triggers.boxed(), Pacer::new(window), VecDeque::new());
    futures::stream::unfold(state, |(mut triggers, mut pacer, mut due)| async move {
        loop {
            if let Some(key) = due.pop_front() {
                return Some((Ok(key), (triggers, pacer, due)));
            }
            let end = pacer.next_end();
            tokio::select! {
                next = triggers.next() => match next {
                    None => return None,
                    Some(Err(e)) => return Some((Err(e), (triggers, pacer, due))),
                    Some(Ok((key, at_once))) => {
                        if pacer.offer(key.clone(), at_once, Instant::now()) {
                            return Some((Ok(key), (triggers, pacer, due)));
                        }
                    }
                },
                () = tokio::time::sleep_until(end.unwrap_or_else(Instant::now)), if end.is_some() => {
                    due.extend(pacer.due(Instant::now()));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(500);

    fn ms(start: Instant, millis: u64) -> Instant {
        start + Duration::from_millis(millis)
    }

    #[test]
    fn triggers_wait_until_their_object_is_quiet_for_a_window() {
        let t = Instant::now();
        let mut pacer = Pacer::new(WINDOW);
        assert!(!pacer.offer("a", false, t));
        assert!(!pacer.offer("b", false, ms(t, 10)));
        assert!(!pacer.offer("a", false, ms(t, 300)));
        assert_eq!(pacer.due(ms(t, 600)), vec!["b"], "each trigger restarts its object's window");
        assert_eq!(pacer.due(ms(t, 800)), vec!["a"], "the held triggers go as one");
        assert_eq!(pacer.next_end(), None, "both at rest");
    }

    #[test]
    fn a_new_objects_first_trigger_goes_at_once_and_what_follows_is_gathered() {
        let t = Instant::now();
        let mut pacer = Pacer::new(WINDOW);
        assert!(pacer.offer("a", true, t));
        // The children it created, the echo of its status write...
        assert!(!pacer.offer("a", false, ms(t, 20)));
        assert!(!pacer.offer("a", true, ms(t, 40)), "within the window, even a first is gathered");
        assert_eq!(pacer.due(ms(t, 539)), Vec::<&str>::new());
        assert_eq!(pacer.due(ms(t, 540)), vec!["a"]);
        // A first trigger with nothing after it holds nothing.
        assert!(pacer.offer("b", true, ms(t, 600)));
        assert_eq!(pacer.due(ms(t, 1100)), Vec::<&str>::new());
        assert_eq!(pacer.next_end(), None);
    }

    #[test]
    fn a_zero_window_holds_nothing() {
        let t = Instant::now();
        let mut pacer = Pacer::new(Duration::ZERO);
        assert!(pacer.offer("a", false, t));
        assert!(pacer.offer("a", false, t));
        assert_eq!(pacer.next_end(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_stream_sends_a_first_at_once_and_the_rest_after_the_window() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<(&str, bool), ()>>();
        let mut paced = Box::pin(paced(rx, WINDOW));
        let start = Instant::now();
        tx.unbounded_send(Ok(("a", true))).unwrap();
        assert_eq!(paced.next().await, Some(Ok("a")));
        assert_eq!(Instant::now(), start, "no wait for a new object");
        tx.unbounded_send(Ok(("a", false))).unwrap();
        tx.unbounded_send(Err(())).unwrap();
        assert_eq!(paced.next().await, Some(Err(())), "errors are not held");
        assert_eq!(paced.next().await, Some(Ok("a")));
        assert_eq!(Instant::now(), start + WINDOW);
        drop(tx);
        assert_eq!(paced.next().await, None);
    }
}
