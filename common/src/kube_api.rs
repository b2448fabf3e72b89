//! Kubernetes API helpers: watch caches, and deletions of what is already gone.

use std::fmt::Debug;

use futures::Stream;
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;

use crate::readable::{Guarded, Unreadable, readable};

/// `Ok(None)` for a 404: deleting or reading what is already gone is no error.
pub fn ignore_not_found<T>(result: kube::Result<T>) -> kube::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// A watch cache of `api`'s objects, each trimmed by `trim` before it is
/// kept, and the stream of changes that feeds it as its consumer polls it.
pub fn cached<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: impl FnMut(&mut K) + Send + 'static,
) -> (Store<K>, impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    (store, reflector(writer, watcher(api, config).default_backoff().modify(trim)))
}

/// [`cached`] for a kind whose objects may not read as `K` (custom
/// resources: their schema leaves embedded pod specs open). Those are left
/// out of the cache and its stream, and each goes to `unreadable` once per
/// version of its spec (see [`crate::readable`]).
pub fn cached_readable<K>(
    api: Api<Guarded<K>>,
    config: watcher::Config,
    trim: impl FnMut(&mut K) + Send + 'static,
    unreadable: impl FnMut(Unreadable) + Send + 'static,
) -> (Store<K>, impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()>
        + Clone
        + Debug
        + Default
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let events = readable(watcher(api, config).default_backoff(), unreadable).modify(trim);
    (store, reflector(writer, events))
}
