//! The `dask.org/*` labels dask-kubernetes puts on what it creates; kept
//! identical so its tooling (and `KubeCluster`) finds our objects.

/// Every key under this prefix is a Dask label describing one object; it is
/// never passed from a parent to its children.
pub const PREFIX: &str = "dask.org/";

pub const CLUSTER_NAME: &str = "dask.org/cluster-name";
pub const COMPONENT: &str = "dask.org/component";
pub const WORKER_GROUP_NAME: &str = "dask.org/workergroup-name";
/// A hash of the worker template a pod was made from (ours, not
/// dask-kubernetes'): a changed template (image, env, args, resources) rolls.
pub const TEMPLATE_HASH: &str = "dask.org/template-hash";

pub const COMPONENT_SCHEDULER: &str = "scheduler";
pub const COMPONENT_WORKER: &str = "worker";
pub const COMPONENT_WORKER_GROUP: &str = "workergroup";
pub const COMPONENT_JOB_RUNNER: &str = "job-runner";
