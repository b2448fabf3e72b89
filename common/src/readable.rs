//! Watches that survive objects the API server accepted but that do not
//! read as their kind: a wrong type where the schema leaves an embedded pod
//! spec open (`ports: "oops"`), a number past `i32`. Read plainly, one such
//! object fails the whole list and every later re-list of its kind, and
//! every object of the kind goes unseen.
//!
//! Objects are read as [`Guarded`] (kube's `DeserializeGuard`, with the path
//! of the field at fault in the error); [`readable`] turns the watch back
//! into one of `K` without them, and hands each one, once per spec
//! generation, to whoever reports it.

use std::borrow::Cow;
use std::collections::HashMap;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::ObjectMeta;
use kube::runtime::watcher::{self, Event};
use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer};

/// An object of `K`'s kind, read as `K` if it can be.
#[derive(Clone, Debug)]
pub struct Guarded<K>(pub Result<K, Unreadable>);

/// An object that does not read as its kind: its metadata, and why.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Unreadable {
    pub metadata: ObjectMeta,
    /// The path of the field at fault, e.g. `spec.worker.spec.containers[0].ports`.
    pub field: String,
    /// The reader's complaint, e.g. `invalid type: string "oops", expected a sequence`.
    pub problem: String,
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Guarded<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        // Read from the value in place: no copy of the object is made.
        match serde_path_to_error::deserialize::<_, K>(&value) {
            Ok(obj) => Ok(Self(Ok(obj))),
            Err(error) => {
                let metadata = value.get("metadata").unwrap_or(&serde_json::Value::Null);
                let metadata = ObjectMeta::deserialize(metadata).map_err(de::Error::custom)?;
                let field = error.path().to_string();
                let problem = error.into_inner().to_string();
                Ok(Self(Err(Unreadable { metadata, field, problem })))
            }
        }
    }
}

impl<K: Resource> Resource for Guarded<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        self.0.as_ref().map_or_else(|u| &u.metadata, K::meta)
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.as_mut().map_or_else(|u| &mut u.metadata, K::meta_mut)
    }
}

/// The unreadable objects already handed on, by uid: the version of the
/// spec each was handed on at. The echo of a status write or a re-list
/// shows the same spec again; only an edit makes a new one.
#[derive(Default)]
pub struct Reported(HashMap<String, String>);

impl Reported {
    /// True the first time `meta`'s object is seen unreadable at its current spec.
    pub fn first(&mut self, meta: &ObjectMeta) -> bool {
        let version = spec_version(meta);
        let uid = meta.uid.clone().unwrap_or_default();
        self.0.insert(uid, version.clone()) != Some(version)
    }

    /// The object was deleted or reads again: next time it is news.
    pub fn forget(&mut self, meta: &ObjectMeta) {
        self.0.remove(meta.uid.as_deref().unwrap_or_default());
    }
}

/// What moves when a spec is edited: the generation (kinds with a status
/// subresource bump it on spec changes only), else the resourceVersion.
fn spec_version(meta: &ObjectMeta) -> String {
    match meta.generation {
        Some(generation) => format!("g{generation}"),
        None => format!("rv{}", meta.resource_version.as_deref().unwrap_or_default()),
    }
}

/// One watch event of [`Guarded`] objects as an event of `K` (if any), and
/// the unreadable object to hand on (if it is news). An object that stops
/// being readable leaves the cache as if deleted: nothing acts on a version
/// older than what the API server holds.
pub fn sort<K>(
    event: Event<Guarded<K>>,
    reported: &mut Reported,
) -> (Option<Event<K>>, Option<Unreadable>)
where
    K: Resource + Default,
{
    let news = |unreadable: Unreadable, reported: &mut Reported| {
        reported.first(&unreadable.metadata).then_some(unreadable)
    };
    match event {
        Event::Init => (Some(Event::Init), None),
        Event::InitDone => (Some(Event::InitDone), None),
        Event::InitApply(Guarded(Ok(obj))) => {
            reported.forget(obj.meta());
            (Some(Event::InitApply(obj)), None)
        }
        Event::InitApply(Guarded(Err(unreadable))) => (None, news(unreadable, reported)),
        Event::Apply(Guarded(Ok(obj))) => {
            reported.forget(obj.meta());
            (Some(Event::Apply(obj)), None)
        }
        Event::Apply(Guarded(Err(unreadable))) => {
            let gone = Event::Delete(stand_in(unreadable.metadata.clone()));
            (Some(gone), news(unreadable, reported))
        }
        Event::Delete(guarded) => {
            reported.forget(guarded.meta());
            let obj = match guarded.0 {
                Ok(obj) => obj,
                Err(unreadable) => stand_in(unreadable.metadata),
            };
            (Some(Event::Delete(obj)), None)
        }
    }
}

/// A `K` with only `metadata`: enough for a cache to find what to delete.
fn stand_in<K: Resource + Default>(metadata: ObjectMeta) -> K {
    let mut obj = K::default();
    *obj.meta_mut() = metadata;
    obj
}

/// `events` of [`Guarded`] objects as events of `K`, without the unreadable
/// ones; each of those goes to `unreadable` once per spec version.
pub fn readable<K, S>(
    events: S,
    mut unreadable: impl FnMut(Unreadable) + Send + 'static,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: Resource + Default + Send,
    S: Stream<Item = Result<Event<Guarded<K>>, watcher::Error>> + Send,
{
    let mut reported = Reported::default();
    events.filter_map(move |event| {
        let event = match event {
            Ok(event) => {
                let (event, news) = sort(event, &mut reported);
                news.into_iter().for_each(&mut unreadable);
                event.map(Ok)
            }
            Err(e) => Some(Err(e)),
        };
        futures::future::ready(event)
    })
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;
    use serde::Serialize;
    use serde_json::json;

    use super::*;

    /// A resource with a typed spec, as the CRDs have.
    #[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
    struct Probe {
        metadata: ObjectMeta,
        spec: ProbeSpec,
    }

    #[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
    struct ProbeSpec {
        ports: Vec<i32>,
    }

    impl Resource for Probe {
        type DynamicType = ();
        type Scope = kube::core::NamespaceResourceScope;

        fn kind(_: &()) -> Cow<'_, str> {
            "Probe".into()
        }
        fn group(_: &()) -> Cow<'_, str> {
            "example.org".into()
        }
        fn version(_: &()) -> Cow<'_, str> {
            "v1".into()
        }
        fn plural(_: &()) -> Cow<'_, str> {
            "probes".into()
        }
        fn meta(&self) -> &ObjectMeta {
            &self.metadata
        }
        fn meta_mut(&mut self) -> &mut ObjectMeta {
            &mut self.metadata
        }
    }

    fn read(ports: serde_json::Value, generation: i64) -> Guarded<Probe> {
        serde_json::from_value(json!({
            "metadata": { "name": "p", "namespace": "ns", "uid": "u1", "generation": generation },
            "spec": { "ports": ports },
        }))
        .unwrap()
    }

    #[test]
    fn an_unreadable_object_keeps_its_metadata_and_says_which_field() {
        let good = read(json!([1]), 1);
        assert_eq!(good.0.unwrap().spec.ports, [1]);
        let bad = read(json!("oops"), 1);
        assert_eq!(bad.meta().name.as_deref(), Some("p"));
        let unreadable = bad.0.unwrap_err();
        assert_eq!(unreadable.field, "spec.ports");
        assert!(unreadable.problem.starts_with("invalid type: string \"oops\""), "{unreadable}");
    }

    #[test]
    fn each_unreadable_spec_is_news_once_and_leaves_the_cache() {
        let mut reported = Reported::default();
        let (event, news) = sort(Event::Apply(read(json!([1]), 1)), &mut reported);
        assert!(matches!(event, Some(Event::Apply(_))) && news.is_none());

        // It turns unreadable: out of the cache, handed on once.
        let (event, news) = sort(Event::Apply(read(json!("oops"), 2)), &mut reported);
        match event {
            Some(Event::Delete(obj)) => assert_eq!(obj.metadata.name.as_deref(), Some("p")),
            _ => panic!("an unreadable object leaves the cache"),
        }
        assert!(news.is_some());
        // The echo of a status write, a re-list: same spec, no news.
        assert!(sort(Event::Apply(read(json!("oops"), 2)), &mut reported).1.is_none());
        assert!(sort(Event::InitApply(read(json!("oops"), 2)), &mut reported).1.is_none());
        // An edit that is still wrong is news again.
        assert!(sort(Event::Apply(read(json!({}), 3)), &mut reported).1.is_some());
        // Fixed, then broken again: news again.
        sort(Event::Apply(read(json!([2]), 4)), &mut reported);
        assert!(sort(Event::Apply(read(json!(true), 5)), &mut reported).1.is_some());
        let (event, news) = sort(Event::InitApply(read(json!(true), 5)), &mut reported);
        assert!(event.is_none() && news.is_none(), "a re-list leaves it out, quietly");
        sort(Event::Delete(read(json!(true), 5)), &mut reported);
        assert!(reported.0.is_empty(), "deleted objects are forgotten");
    }

    #[tokio::test]
    async fn the_stream_keeps_the_readable_and_hands_on_the_rest() {
        let events = futures::stream::iter(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(read(json!("oops"), 1))),
            Ok(Event::InitApply(
                serde_json::from_value(json!({
                    "metadata": { "name": "q", "uid": "u2" }, "spec": { "ports": [] }
                }))
                .unwrap(),
            )),
            Ok(Event::InitDone),
            Err(watcher::Error::NoResourceVersion),
        ]);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let out: Vec<_> = readable::<Probe, _>(events, move |u| sink.lock().unwrap().push(u.field))
            .collect()
            .await;
        assert_eq!(out.len(), 4, "Init, q, InitDone, the error");
        assert!(
            matches!(&out[1], Ok(Event::InitApply(p)) if p.metadata.name.as_deref() == Some("q"))
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}
