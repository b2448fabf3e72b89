//! Why a login failed; the HTTP layer turns each into its status and answer.

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("Authentication required")]
    Required,
    #[error("Authentication failed")]
    Failed,
    #[error("JupyterHub: {0}")]
    Hub(String),
    #[error("JupyterHub unreachable: {0}")]
    HubUnreachable(String),
    /// Credentials that can never be valid, e.g. a user name over [`MAX_USER_NAME`](super::MAX_USER_NAME).
    #[error("{0}")]
    Invalid(String),
    #[error("JupyterHub is rate-limiting logins; retry later")]
    HubRateLimited,
    /// A valid login that may not use the gateway (a Hub token without the
    /// service's access scope).
    #[error("{0}")]
    Forbidden(String),
}
