//! Which clusters a caller may act on, and whose clusters count against
//! an owner's limits: the ownership rules the routes share.

use super::errors::{ApiError, ApiResult};
use super::state::Gateway;
use crate::auth::User;
use crate::backends::BackendError;
use crate::domain::models::Cluster;

/// Whether `user` may act on `cluster` ("view", "scale" or "stop" in messages).
pub fn may_act_on(user: &User, cluster: &Cluster, verb: &str) -> ApiResult<()> {
    if user.may_access(&cluster.username) {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "User {} lacks permissions to {verb} cluster {}",
        user.name, cluster.name
    )))
}

/// The cluster, if it exists and the caller may act on it.
pub async fn owned_cluster(
    gw: &Gateway,
    user: &User,
    name: &str,
    verb: &str,
) -> ApiResult<Cluster> {
    let cluster = gw.backend.get(name).await.ok_or_else(|| BackendError::NotFound(name.into()))?;
    may_act_on(user, &cluster, verb)?;
    Ok(cluster)
}

/// The owner's active clusters, which the per-user limits count.
pub async fn active_clusters_of(gw: &Gateway, owner: &str) -> Vec<Cluster> {
    let mut clusters = gw.backend.list().await;
    clusters.retain(|c| c.username == owner && c.status.is_active());
    clusters
}
