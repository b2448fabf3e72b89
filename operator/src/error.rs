//! The operator's errors, typed by who has to act on them: the user (an
//! invalid spec), the cluster's administrator (RBAC, quota), or nobody (a
//! transient API or scheduler failure, retried).

use crate::scheduler_api::SchedulerError;
use crate::validate::Invalid;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("invalid spec: {0}")]
    Invalid(#[from] Invalid),
    #[error("scheduler API: {0}")]
    Scheduler(#[from] SchedulerError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Invalid(_) => "invalid",
            Error::Scheduler(_) => "scheduler",
        }
    }

    /// The reason of the Warning Event a failed reconcile publishes: it tells
    /// `kubectl describe` readers whether the fix is theirs (the spec), the
    /// administrator's (permissions, quota) or nobody's (it is retried).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Invalid(_) => dask_crds::conditions::reason::INVALID_SPEC,
            Error::Kube(kube::Error::Api(status)) if status.is_forbidden() => {
                if status.message.contains("exceeded quota") {
                    "QuotaExceeded"
                } else {
                    "Forbidden"
                }
            }
            Error::Kube(_) => "ApiError",
            Error::Scheduler(_) => "SchedulerUnavailable",
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

    fn api_error(code: u16, reason: &str, message: &str) -> Error {
        Error::Kube(kube::Error::Api(Status::failure(message, reason).with_code(code).boxed()))
    }

    #[test]
    fn reasons_say_who_has_to_act() {
        let invalid = Invalid::new("spec.worker.replicas", "must not be negative, got -1");
        assert_eq!(Error::from(invalid).reason(), "InvalidSpec");
        let rbac = api_error(403, "Forbidden", r#"pods is forbidden: User "op" cannot create"#);
        assert_eq!(rbac.reason(), "Forbidden");
        let quota = api_error(
            403,
            "Forbidden",
            r#"pods "w" is forbidden: exceeded quota: q, requested: pods=1, used: pods=4, limited: pods=4"#,
        );
        assert_eq!(quota.reason(), "QuotaExceeded");
        assert_eq!(api_error(409, "Conflict", "conflict").reason(), "ApiError");
    }
}
