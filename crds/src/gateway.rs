//! The `gateway.dask.org/*` labels and annotations the gateway puts on the
//! DaskClusters and Secrets it makes. The operator never reads them; they
//! are here so that every key either side writes is spelled in one place.

/// Every key under this prefix is the gateway's own.
pub const PREFIX: &str = "gateway.dask.org/";

/// Label: the gateway instance that owns the cluster.
pub const INSTANCE: &str = "gateway.dask.org/instance";
/// Label: the gateway's cluster name.
pub const CLUSTER: &str = "gateway.dask.org/cluster";
/// Label: the cluster's user.
pub const USER: &str = "gateway.dask.org/user";
/// Annotation: the cluster options the user asked for (JSON).
pub const OPTIONS: &str = "gateway.dask.org/options";
/// Annotation: the settings the options resolved to (JSON).
pub const CONFIG: &str = "gateway.dask.org/config";
/// Label of a warm-pool member: its template's key.
pub const POOL: &str = "gateway.dask.org/pool";
/// Annotation: when a user claimed a pool member (ms since the epoch).
pub const CLAIMED: &str = "gateway.dask.org/claimed";
/// Label of a record Secret: `stopped` or `failed`.
pub const RECORD: &str = "gateway.dask.org/record";
/// Annotation on a record: why the gateway stopped a cluster on its own
/// (idle, lifetime, ...).
pub const STOP_REASON: &str = "gateway.dask.org/stop-reason";
/// Annotation: why the cluster failed.
pub const FAILED: &str = "gateway.dask.org/failed";
/// Annotation: when the cluster was created.
pub const CREATED: &str = "gateway.dask.org/created";
/// Annotation: when the cluster was stopped.
pub const STOPPED: &str = "gateway.dask.org/stopped";
