//! A DaskWorkerGroup or DaskAutoscaler is adopted by the DaskCluster its
//! `spec.cluster` names, as dask-kubernetes does: the cluster becomes its
//! controller owner, so deleting the cluster deletes it (and its pods) by
//! garbage collection. An object another controller owns is never taken
//! over; that is a Warning Event on it.
//!
//! [`adoption`] decides (pure); [`adopt`] applies the decision.

use std::fmt::Debug;

use dask_crds::DaskCluster;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::info;

use crate::error::Stage;
use crate::{Context, Result};

#[derive(Clone, Debug, PartialEq)]
pub enum Adoption {
    /// Already controlled by the cluster.
    Owned,
    /// Set these owner references: the child's others, and the cluster as controller.
    Adopt(Vec<OwnerReference>),
    /// Another controller owns the child: leave it be.
    Refused(OwnerReference),
}

/// Whether `child` should be adopted by the owner `cluster` refers to.
pub fn adoption(child: &ObjectMeta, cluster: OwnerReference) -> Adoption {
    let owners = child.owner_references.as_deref().unwrap_or_default();
    if let Some(controller) = owners.iter().find(|o| o.controller == Some(true)) {
        return if controller.uid == cluster.uid {
            Adoption::Owned
        } else {
            Adoption::Refused(controller.clone())
        };
    }
    // A plain reference to the same cluster (written by older versions) is replaced.
    let mut kept: Vec<OwnerReference> =
        owners.iter().filter(|o| o.uid != cluster.uid).cloned().collect();
    kept.push(cluster);
    Adoption::Adopt(kept)
}

/// Makes `cluster` the controller of `child` if it may; a refusal is a
/// Warning Event on the child. The patch carries the child's
/// resourceVersion, so a concurrent change to its owners is never lost: on
/// a conflict nothing is written, and the next reconcile decides again.
pub async fn adopt<K>(ctx: &Context, child: &K, cluster: &DaskCluster) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let owner = cluster.controller_owner_ref(&()).expect("a stored cluster has a name and uid");
    match adoption(child.meta(), owner) {
        Adoption::Owned => {}
        Adoption::Adopt(owners) => {
            let patch = json!({ "metadata": {
                "ownerReferences": owners,
                "resourceVersion": child.resource_version(),
            }});
            let patched = ctx
                .api::<K>(&child.namespace().unwrap_or_default())
                .patch(&child.name_any(), &PatchParams::default(), &Patch::Merge(patch))
                .await;
            match patched {
                // Changed meanwhile: the change wakes the next reconcile, which decides again.
                Err(kube::Error::Api(status)) if status.code == 409 => return Ok(()),
                result => result.applying()?,
            };
            info!(cluster = %cluster.name_any(), "adopted by its cluster");
            let note = format!("Adopted by DaskCluster {}", cluster.name_any());
            ctx.events.normal(child, "Adopted", &note).await;
        }
        Adoption::Refused(controller) => {
            let note = format!(
                "Not adopted by DaskCluster {}: already controlled by {} {}",
                cluster.name_any(),
                controller.kind,
                controller.name
            );
            ctx.events.warning(child, "AdoptionRefused", &note).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(kind: &str, uid: &str, controller: Option<bool>) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: kind.into(),
            name: format!("{kind}-name"),
            uid: uid.into(),
            controller,
            block_owner_deletion: controller,
        }
    }

    fn meta(owners: Vec<OwnerReference>) -> ObjectMeta {
        ObjectMeta { owner_references: Some(owners), ..Default::default() }
    }

    #[test]
    fn an_orphan_is_adopted_and_keeps_its_other_owners() {
        let cluster = owner("DaskCluster", "c1", Some(true));
        let other = owner("ConfigMap", "x", None);
        let stale = owner("DaskCluster", "c1", None);
        let decision = adoption(&meta(vec![other.clone(), stale]), cluster.clone());
        assert_eq!(decision, Adoption::Adopt(vec![other, cluster.clone()]));
        assert_eq!(
            adoption(&ObjectMeta::default(), cluster.clone()),
            Adoption::Adopt(vec![cluster])
        );
    }

    #[test]
    fn an_owned_child_is_left_and_another_controller_is_never_displaced() {
        let cluster = owner("DaskCluster", "c1", Some(true));
        assert_eq!(adoption(&meta(vec![cluster.clone()]), cluster.clone()), Adoption::Owned);
        let theirs = owner("DaskJob", "j1", Some(true));
        assert_eq!(adoption(&meta(vec![theirs.clone()]), cluster), Adoption::Refused(theirs));
    }
}
