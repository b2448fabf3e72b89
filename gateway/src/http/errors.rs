//! Every error answer of the API: a status per kind, and the `{"error": ...}`
//! body the client reads. A server fault is opaque to the client: its detail
//! goes to the log under the request's id, which the answer names.

use std::sync::Arc;

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tower_http::request_id::RequestId;
use tracing::error;

use crate::auth::AuthError;
use crate::backends::BackendError;

pub type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or wrong credentials: the challenge makes the client send them.
    #[error("Authentication required")]
    Unauthorized { challenge: &'static str },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A request the client should not repeat as is (the client's ValueError).
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    TooManyRequests(String),
    /// Something the gateway relies on (the Hub, a dashboard) did not answer.
    #[error("{0}")]
    BadGateway(String),
    #[error("{0}")]
    Unavailable(String),
    /// A 4xx decided elsewhere: the backend refusing the cluster's resources,
    /// or a body over the size cap.
    #[error("{message}")]
    Refused { status: StatusCode, message: String },
    /// A fault of the gateway: the client learns only the request id.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Refused { status, .. } => *status,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A login's failure, with the challenge of the gateway's authenticator.
    pub fn from_auth(e: AuthError, challenge: &'static str) -> Self {
        match e {
            AuthError::Required | AuthError::Failed => Self::Unauthorized { challenge },
            AuthError::HubUnreachable(m) => Self::BadGateway(m),
            AuthError::Invalid(m) => Self::BadRequest(m),
            AuthError::HubRateLimited => Self::TooManyRequests(e.to_string()),
            // An answer the gateway does not understand: the Hub is not usable now.
            AuthError::Hub(m) => Self::Unavailable(m),
            AuthError::Forbidden(m) => Self::Forbidden(m),
        }
    }
}

/// The detail of an [`ApiError::Internal`], handed from the answer to
/// [`opaque_faults`], which logs it with the request id.
#[derive(Clone)]
struct Fault(Arc<anyhow::Error>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(json!({ "error": self.to_string() }))).into_response();
        match self {
            Self::Unauthorized { challenge } => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            }
            Self::Internal(e) => {
                response.extensions_mut().insert(Fault(Arc::new(e)));
            }
            _ => {}
        }
        response
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::NotFound(_) => Self::NotFound(e.to_string()),
            BackendError::NotRunning(_) | BackendError::LimitReached(_) => {
                Self::Conflict(e.to_string())
            }
            BackendError::Refused { status, message } => Self::Refused {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
                message,
            },
            BackendError::Unavailable(m) => Self::Unavailable(m),
            BackendError::Other(e) => Self::Internal(e),
        }
    }
}

/// Middleware (inside `SetRequestId`): a server fault's detail goes to the
/// log, and its answer names the request id to look it up by.
pub async fn opaque_faults(request: Request, next: Next) -> Response {
    let id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or("-")
        .to_string();
    let mut response = next.run(request).await;
    let Some(Fault(fault)) = response.extensions_mut().remove::<Fault>() else {
        return response;
    };
    error!(request_id = %id, error = format!("{fault:#}"), "internal error");
    let body =
        json!({ "error": format!("internal error; see the gateway's log (request id {id})") });
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_status() {
        let cases = [
            (ApiError::Unauthorized { challenge: "Basic" }, 401),
            (ApiError::BadRequest("x".into()), 400),
            (ApiError::Forbidden("x".into()), 403),
            (ApiError::NotFound("x".into()), 404),
            (ApiError::Conflict("x".into()), 409),
            (ApiError::Unprocessable("x".into()), 422),
            (ApiError::TooManyRequests("x".into()), 429),
            (ApiError::BadGateway("x".into()), 502),
            (ApiError::Unavailable("x".into()), 503),
            (ApiError::Internal(anyhow::anyhow!("secret detail")), 500),
        ];
        for (error, status) in cases {
            assert_eq!(error.into_response().status().as_u16(), status);
        }
    }

    #[test]
    fn backend_errors_keep_their_statuses_and_hide_internals() {
        let refused = BackendError::Refused { status: 409, message: "retry".into() };
        assert_eq!(ApiError::from(refused).status(), StatusCode::CONFLICT);
        let other = ApiError::from(BackendError::Other(anyhow::anyhow!("etcd said no")));
        assert_eq!(other.to_string(), "internal error");
        assert_eq!(ApiError::from(BackendError::NotRunning("c".into())).status().as_u16(), 409);
    }
}
