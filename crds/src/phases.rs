//! The phases the operator writes: a DaskCluster's (and DaskWorkerGroup's)
//! `status.phase` and a DaskJob's `status.jobStatus`, spelled as
//! dask-kubernetes spells them: its `KubeCluster` and the gateway wait for
//! `Running`, and its users script against the rest.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// A DaskCluster's `status.phase`, spelled as dask-kubernetes spells it (its
// `KubeCluster` and the gateway wait for `Running`). Not a doc comment: the
// CRD keeps the field's description.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ClusterPhase {
    Created,
    /// Its scheduler is not ready yet, or its Service does not exist yet.
    Pending,
    /// Its scheduler is ready and reachable through its Service.
    Running,
    /// Its spec is invalid (the Degraded condition says why).
    Error,
    /// Its scheduler cannot start and waiting will not help: an image that
    /// cannot be pulled, a crash or a kill at start, a failed init container
    /// (the SchedulerReady condition says why). Not dask-kubernetes'.
    Failed,
}

// A DaskJob's `status.jobStatus`, spelled as dask-kubernetes spells it. Not a
// doc comment: the CRD keeps the field's description.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum JobPhase {
    /// Written by dask-kubernetes only; this operator goes to ClusterCreated at once.
    JobCreated,
    /// The job's DaskCluster exists; the runner starts once it is Running.
    ClusterCreated,
    /// The runner pod runs.
    Running,
    /// The runner pod succeeded (and the cluster was deleted).
    Successful,
    /// The runner pod failed (and the cluster was deleted).
    Failed,
}

impl JobPhase {
    /// The runner finished: nothing more happens to the job.
    pub fn is_finished(self) -> bool {
        matches!(self, JobPhase::Successful | JobPhase::Failed)
    }
}
