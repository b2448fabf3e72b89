//! The `kubernetes.dask.org/*` annotations the operator reads or writes.
//! COOLDOWN_UNTIL is dask-kubernetes'; the others are ours.

/// Every key under this prefix is the operator's own; it is never passed
/// from a parent to its children.
pub const PREFIX: &str = "kubernetes.dask.org/";

/// On the default DaskWorkerGroup: the cluster's `spec.worker.replicas` it
/// was last applied with, so a group scaled directly is told apart from a
/// cluster scaled.
pub const CLUSTER_REPLICAS: &str = "kubernetes.dask.org/cluster-replicas";
/// On a DaskAutoscaler: its scale-down window in seconds ("5", "0.5").
pub const SCALE_DOWN_WINDOW: &str = "kubernetes.dask.org/scale-down-window";
/// On a DaskAutoscaler: its scale-down step, a share of the current workers
/// ("25%") or a count ("2").
pub const SCALE_DOWN_STEP: &str = "kubernetes.dask.org/scale-down-step";
/// dask-kubernetes' annotation on a DaskAutoscaler: no change before this
/// time (epoch seconds).
pub const COOLDOWN_UNTIL: &str = "kubernetes.dask.org/cooldown-until";
