//! Helpers over the Kubernetes API shared by every controller: the one field
//! manager, status writes, watch caches, and deletions of what is already gone.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::core::object::HasStatus;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Shared with the gateway.
pub use dask_common::kube_api::{cached, cached_readable, ignore_not_found};
use dask_common::readable::Guarded;
use dask_crds::DaskWorkerGroup;

/// The field manager of every server-side apply this operator makes.
pub const MANAGER: &str = "dask-operator";

/// Every server-side apply this operator makes: its one field manager,
/// taking back fields someone else changed (force), as the owner of children.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// Writes `obj`'s status by server-side apply (the status subresource).
pub async fn patch_status<K>(client: &Client, obj: &K, status: &K::Status) -> kube::Result<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + HasStatus
        + Clone
        + Debug
        + DeserializeOwned,
    K::Status: Serialize,
{
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    api.patch_status(&obj.name_any(), &apply_params(), &Patch::Apply(body)).await
}

/// A quorum read of `name`: `None` when it is gone, or when it does not read
/// as `K` (its controller's watch reports that, once per version of its spec).
pub async fn get_readable<K>(
    client: &Client,
    namespace: &str,
    name: &str,
) -> kube::Result<Option<K>>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<Guarded<K>> = Api::namespaced(client.clone(), namespace);
    Ok(api.get_opt(name).await?.and_then(|guarded| guarded.0.ok()))
}

/// Managed fields and `kubectl apply`'s copy of the whole manifest: read by
/// nobody here, and often the largest part of an object.
pub fn strip_bookkeeping<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// A DaskWorkerGroup as the controllers cache it: without its pod template,
/// most of its memory; a reconcile that builds pods reads the group whole.
pub fn trim_group(group: &mut DaskWorkerGroup) {
    strip_bookkeeping(group);
    group.spec.worker.spec = Default::default();
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    #[test]
    fn only_not_found_is_ignored() {
        let error = |code, reason| {
            Err::<(), _>(kube::Error::Api(Status::failure("", reason).with_code(code).boxed()))
        };
        assert!(matches!(ignore_not_found(error(404, "NotFound")), Ok(None)));
        assert!(ignore_not_found(error(403, "Forbidden")).is_err());
        assert!(matches!(ignore_not_found(Ok(1)), Ok(Some(1))));
    }
}
