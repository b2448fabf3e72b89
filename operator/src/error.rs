//! The operator's errors, by the stage of the reconcile pipeline that failed
//! (validate → dereference → build → apply → status), and typed by who has to
//! act on them: the user (an invalid spec), the cluster's administrator
//! (RBAC, quota), or nobody (a transient API or scheduler failure, retried).
//!
//! Building has no error: builders take a [`Validated`](crate::validate::Validated)
//! object, and validation checks everything they rely on.

use crate::scheduler_api::SchedulerError;
use crate::validate::Invalid;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// validate: the spec is invalid; only its owner can fix it.
    #[error("invalid spec: {0}")]
    Invalid(#[from] Invalid),
    /// dereference: reading the object, or what it refers to.
    #[error("kubernetes API, reading: {0}")]
    Read(#[source] kube::Error),
    /// apply: creating, changing or deleting a child, or the object itself.
    #[error("kubernetes API, applying: {0}")]
    Apply(#[source] kube::Error),
    /// status: writing the object's status.
    #[error("kubernetes API, writing the status: {0}")]
    Status(#[source] kube::Error),
    /// dereference or apply through the cluster's scheduler.
    #[error("scheduler API: {0}")]
    Scheduler(#[from] SchedulerError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Names the stage of a failed Kubernetes API call: `api.get(..).await.reading()?`.
pub trait Stage<T> {
    fn reading(self) -> Result<T>;
    fn applying(self) -> Result<T>;
    fn writing_status(self) -> Result<T>;
}

impl<T> Stage<T> for kube::Result<T> {
    fn reading(self) -> Result<T> {
        self.map_err(Error::Read)
    }

    fn applying(self) -> Result<T> {
        self.map_err(Error::Apply)
    }

    fn writing_status(self) -> Result<T> {
        self.map_err(Error::Status)
    }
}

impl Error {
    /// A short, bounded label for metrics: the stage that failed.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Invalid(_) => "invalid",
            Error::Read(_) => "read",
            Error::Apply(_) => "apply",
            Error::Status(_) => "status",
            Error::Scheduler(_) => "scheduler",
        }
    }

    /// The Kubernetes API's answer, when that is what failed.
    pub fn kube(&self) -> Option<&kube::Error> {
        match self {
            Error::Read(e) | Error::Apply(e) | Error::Status(e) => Some(e),
            Error::Invalid(_) | Error::Scheduler(_) => None,
        }
    }

    /// The reason of the Warning Event a failed reconcile publishes: it tells
    /// `kubectl describe` readers whether the fix is theirs (the spec), the
    /// administrator's (permissions, quota) or nobody's (it is retried).
    pub fn reason(&self) -> &'static str {
        match (self, self.kube()) {
            (Error::Invalid(_), _) => dask_crds::conditions::reason::INVALID_SPEC,
            (Error::Scheduler(_), _) => "SchedulerUnavailable",
            (_, Some(kube::Error::Api(status))) if status.is_forbidden() => {
                if status.message.contains("exceeded quota") {
                    "QuotaExceeded"
                } else {
                    "Forbidden"
                }
            }
            _ => "ApiError",
        }
    }

    /// Only the user can fix it: retrying before the spec changes is pointless.
    pub fn is_invalid_spec(&self) -> bool {
        matches!(self, Error::Invalid(_))
    }
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Status::failure(message, reason).with_code(code).boxed())
    }

    #[test]
    fn reasons_say_who_has_to_act() {
        let invalid = Invalid::new("spec.worker.replicas", "must not be negative, got -1");
        assert_eq!(Error::from(invalid).reason(), "InvalidSpec");
        let rbac = api_error(403, "Forbidden", r#"pods is forbidden: User "op" cannot create"#);
        assert_eq!(Error::Apply(rbac).reason(), "Forbidden");
        let quota = api_error(
            403,
            "Forbidden",
            r#"pods "w" is forbidden: exceeded quota: q, requested: pods=1, used: pods=4, limited: pods=4"#,
        );
        assert_eq!(Error::Apply(quota).reason(), "QuotaExceeded");
        assert_eq!(Error::Read(api_error(409, "Conflict", "conflict")).reason(), "ApiError");
    }

    #[test]
    fn the_stage_is_in_the_message_and_the_metric() {
        let failed: kube::Result<()> = Err(api_error(500, "InternalError", "etcd timeout"));
        let error = failed.writing_status().unwrap_err();
        assert_eq!(error.metric_label(), "status");
        assert!(error.to_string().starts_with("kubernetes API, writing the status: "), "{error}");
        assert!(error.to_string().contains("etcd timeout"), "{error}");
    }
}
