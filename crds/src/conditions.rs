//! The status conditions of the four kinds: their types, and the reasons
//! that someone other than the operator reads (the gateway, `kubectl wait`,
//! tests). Conditions are `metav1.Condition`s, one per type; see
//! docs/operator.md for what each says.

/// DaskCluster, DaskWorkerGroup: everything wanted runs.
pub const READY: &str = "Ready";
/// DaskCluster: the operator is still bringing children to what is wanted.
pub const PROGRESSING: &str = "Progressing";
/// Every kind: something is wrong that waiting will not fix (an invalid
/// spec, a scheduler that cannot start, a child the API server refuses).
pub const DEGRADED: &str = "Degraded";
/// DaskCluster: why its scheduler pod does not run, if it says. The gateway
/// reads it to tell a user why a cluster does not start.
pub const SCHEDULER_READY: &str = "SchedulerReady";
/// DaskWorkerGroup, and the DaskCluster of its default group: why its
/// worker pods do not run, if they say.
pub const WORKERS_READY: &str = "WorkersReady";
/// DaskCluster with an `idleTimeout`: whether its scheduler answers the
/// operator's idleness checks.
pub const IDLE_CHECK: &str = "IdleCheck";
/// DaskAutoscaler: whether it reads its cluster's adaptive target and scales.
pub const SCALING_ACTIVE: &str = "ScalingActive";
/// DaskJob: whether its cluster runs (its runner starts only then).
pub const CLUSTER_READY: &str = "ClusterReady";

/// Reasons read by others than the operator.
pub mod reason {
    /// Degraded: the spec is invalid (the message names the field at fault).
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Degraded is False: nothing is wrong.
    pub const VALID: &str = "Valid";
    /// SchedulerReady/WorkersReady is False only because pods are starting:
    /// no problem to tell.
    pub const STARTING: &str = "Starting";
    /// Degraded: the API server refused a child the operator applies.
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// IdleCheck/ScalingActive: the scheduler's HTTP API did not answer.
    pub const SCHEDULER_UNAVAILABLE: &str = "SchedulerUnavailable";
}
