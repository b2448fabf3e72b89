//! What the API server would reject only later, or never, checked before
//! anything is built: names that make invalid child names, templates without
//! containers, negative counts. One function per kind; every error names the
//! field at fault by its path in the manifest.

use dask_crds::{
    DaskAutoscaler, DaskCluster, DaskClusterSpec, DaskJob, DaskWorker, DaskWorkerGroup,
};
use kube::ResourceExt;

/// An object whose spec passed its kind's checks. Builders take one, so
/// nothing is built from a spec that was not checked, and building cannot fail.
#[derive(Clone, Debug, PartialEq)]
pub struct Validated<K>(K);

/// A kind with checks of its own.
pub trait Checked {
    fn check(&self) -> Result<(), Invalid>;
}

impl<K: Checked> Validated<K> {
    /// `obj`, once its checks pass.
    pub fn new(obj: K) -> Result<Self, Invalid> {
        obj.check()?;
        Ok(Self(obj))
    }
}

impl<K> Validated<K> {
    /// Tests of the builders start from fixtures they then edit.
    #[cfg(test)]
    pub(crate) fn unchecked(obj: K) -> Self {
        Self(obj)
    }
}

impl<K> std::ops::Deref for Validated<K> {
    type Target = K;
    fn deref(&self) -> &K {
        &self.0
    }
}

impl Checked for DaskCluster {
    fn check(&self) -> Result<(), Invalid> {
        cluster(self)
    }
}

impl Checked for DaskWorkerGroup {
    fn check(&self) -> Result<(), Invalid> {
        worker_group(self)
    }
}

impl Checked for DaskJob {
    fn check(&self) -> Result<(), Invalid> {
        job(self)
    }
}

impl Checked for DaskAutoscaler {
    fn check(&self) -> Result<(), Invalid> {
        autoscaler(self)
    }
}

/// A field of a spec and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct Invalid {
    /// Path of the field in the manifest, e.g. `spec.worker.replicas`.
    pub field: String,
    pub problem: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { field: field.into(), problem: problem.into() }
    }
}

/// The longest cluster name: its Service `<name>-scheduler` must be a DNS-1035
/// label, at most 63 characters.
const MAX_CLUSTER_NAME: usize = 63 - "-scheduler".len();

pub fn cluster(cluster: &DaskCluster) -> Result<(), Invalid> {
    cluster_spec(&cluster.name_any(), &cluster.spec, "")
}

pub fn worker_group(group: &DaskWorkerGroup) -> Result<(), Invalid> {
    worker(&group.spec.worker, "spec.worker")
}

/// A job's runner template, and the cluster it makes (named like the job).
pub fn job(job: &DaskJob) -> Result<(), Invalid> {
    containers(&job.spec.job.spec, "spec.job.spec.containers")?;
    cluster_spec(&job.name_any(), &job.spec.cluster.spec, "spec.cluster.")
}

pub fn autoscaler(scaler: &DaskAutoscaler) -> Result<(), Invalid> {
    let spec = &scaler.spec;
    if spec.minimum < 0 {
        return Err(Invalid::new(
            "spec.minimum",
            format!("must not be negative, got {}", spec.minimum),
        ));
    }
    if spec.maximum < spec.minimum {
        return Err(Invalid::new(
            "spec.maximum",
            format!("({}) must not be less than spec.minimum ({})", spec.maximum, spec.minimum),
        ));
    }
    Ok(())
}

/// `prefix` is where the cluster spec sits in the manifest ("" or "spec.cluster.").
fn cluster_spec(name: &str, spec: &DaskClusterSpec, prefix: &str) -> Result<(), Invalid> {
    let valid_start = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    let valid_chars =
        name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid_start || !valid_chars || name.ends_with('-') || name.len() > MAX_CLUSTER_NAME {
        return Err(Invalid::new(
            "metadata.name",
            format!(
                "{name:?} must start with a letter, use only a-z, 0-9 and '-', and be at most {MAX_CLUSTER_NAME} characters"
            ),
        ));
    }
    containers(&spec.scheduler.spec, &format!("{prefix}spec.scheduler.spec.containers"))?;
    worker(&spec.worker, &format!("{prefix}spec.worker"))
}

fn worker(worker: &DaskWorker, path: &str) -> Result<(), Invalid> {
    if worker.replicas < 0 {
        let problem = format!("must not be negative, got {}", worker.replicas);
        return Err(Invalid::new(format!("{path}.replicas"), problem));
    }
    containers(&worker.spec, &format!("{path}.spec.containers"))
}

fn containers(spec: &k8s_openapi::api::core::v1::PodSpec, path: &str) -> Result<(), Invalid> {
    if spec.containers.is_empty() {
        return Err(Invalid::new(path, "must not be empty"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use dask_crds::DaskAutoscalerSpec;

    use super::*;

    fn fixture<T: serde::de::DeserializeOwned>(text: &str) -> T {
        serde_yaml::from_str(text).unwrap()
    }

    fn simple_cluster() -> DaskCluster {
        fixture(include_str!("../../crds/tests/fixtures/simplecluster.yaml"))
    }

    fn simple_job() -> DaskJob {
        fixture(include_str!("../../crds/tests/fixtures/simplejob.yaml"))
    }

    fn field<T>(result: Result<T, Invalid>) -> String {
        result.err().expect("invalid").field
    }

    /// The field named by the error of the simple cluster after `edit`.
    fn cluster_field(edit: impl FnOnce(&mut DaskCluster)) -> String {
        let mut c = simple_cluster();
        edit(&mut c);
        field(cluster(&c))
    }

    fn job_field(edit: impl FnOnce(&mut DaskJob)) -> String {
        let mut j = simple_job();
        edit(&mut j);
        field(job(&j))
    }

    #[test]
    fn valid_manifests_pass() {
        assert_eq!(cluster(&simple_cluster()), Ok(()));
        assert_eq!(job(&simple_job()), Ok(()));
        let worker = simple_cluster().spec.worker;
        let spec = dask_crds::DaskWorkerGroupSpec { cluster: "simple".into(), worker };
        assert_eq!(worker_group(&DaskWorkerGroup::new("g", spec)), Ok(()));
        let mut c = simple_cluster();
        c.metadata.name = Some("x".repeat(53));
        assert_eq!(cluster(&c), Ok(()), "53 characters fit");
    }

    #[test]
    fn cluster_names_that_make_invalid_service_names() {
        for name in ["x".repeat(54), "1abc".into(), "Abc".into(), "ab-".into(), "a_b".into()] {
            let named = cluster_field(|c| c.metadata.name = Some(name.clone()));
            assert_eq!(named, "metadata.name", "{name}");
        }
    }

    #[test]
    fn cluster_templates() {
        let scheduler = cluster_field(|c| c.spec.scheduler.spec.containers.clear());
        assert_eq!(scheduler, "spec.scheduler.spec.containers");
        let worker = cluster_field(|c| c.spec.worker.spec.containers.clear());
        assert_eq!(worker, "spec.worker.spec.containers");
        let mut c = simple_cluster();
        c.spec.worker.replicas = -1;
        let error = cluster(&c).unwrap_err();
        assert_eq!(error.to_string(), "spec.worker.replicas must not be negative, got -1");
    }

    #[test]
    fn job_fields_are_named_from_the_job() {
        let runner = job_field(|j| j.spec.job.spec.containers.clear());
        assert_eq!(runner, "spec.job.spec.containers");
        let workers = job_field(|j| j.spec.cluster.spec.worker.spec.containers.clear());
        assert_eq!(workers, "spec.cluster.spec.worker.spec.containers");
        assert_eq!(job_field(|j| j.metadata.name = Some("Job".into())), "metadata.name");
    }

    #[test]
    fn worker_group_fields() {
        let mut group = DaskWorkerGroup::new("g", Default::default());
        assert_eq!(field(worker_group(&group)), "spec.worker.spec.containers");
        group.spec.worker.replicas = -2;
        assert_eq!(field(worker_group(&group)), "spec.worker.replicas");
    }

    #[test]
    fn autoscaler_bounds() {
        let scaler = |minimum, maximum| {
            DaskAutoscaler::new("a", DaskAutoscalerSpec { cluster: "c".into(), minimum, maximum })
        };
        assert_eq!(autoscaler(&scaler(0, 0)), Ok(()));
        assert_eq!(autoscaler(&scaler(1, 5)), Ok(()));
        assert_eq!(field(autoscaler(&scaler(-1, 5))), "spec.minimum");
        let error = autoscaler(&scaler(3, 2)).unwrap_err();
        assert_eq!(error.to_string(), "spec.maximum (2) must not be less than spec.minimum (3)");
    }
}
