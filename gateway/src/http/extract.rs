//! What handlers take from a request, each rejecting with the answer the
//! Python client expects: JSON bodies (422 naming what is wrong), the
//! signed-in user (401 with the challenge), a scheduler's cluster token.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponseParts, ResponseParts};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::errors::ApiError;
use crate::auth::User;
use crate::domain::models::Cluster;
use crate::http::state::Gateway;

/// A JSON body of type `T`. A malformed one, or one of another shape (a
/// string where an object belongs), is a 422 that says what is wrong. The
/// size cap is the router's `DefaultBodyLimit`; the content type is not
/// checked (the client always sends JSON).
pub struct JsonBody<T>(pub T);

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::Unprocessable(format!("Invalid JSON body: {e}")))
}

async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    // Over the cap: the 413 axum gives (the connection may hold no more).
    Bytes::from_request(request, state)
        .await
        .map_err(|e| ApiError::Refused { status: e.status(), message: e.body_text() })
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        Ok(Self(parse(&read_body(request, state).await?)?))
    }
}

/// `Option<JsonBody<T>>`: an empty body is `None` (a request with no fields).
impl<T: DeserializeOwned, S: Send + Sync> OptionalFromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, ApiError> {
        let body = read_body(request, state).await?;
        if body.is_empty() { Ok(None) } else { Ok(Some(Self(parse(&body)?))) }
    }
}

/// The signed-in caller, and the session cookie to give them (see
/// [`SessionCookie`]). Behind the `authenticate` middleware it is the user
/// that middleware found; elsewhere this logs in.
pub struct Login {
    pub user: User,
    pub cookie: SessionCookie,
}

impl FromRequestParts<Arc<Gateway>> for Login {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, ApiError> {
        if let Some(user) = parts.extensions.get::<User>() {
            return Ok(Self { user: user.clone(), cookie: SessionCookie(None) });
        }
        let (user, cookie) = gw
            .auth
            .authenticate(&parts.headers)
            .await
            .map_err(|e| ApiError::from_auth(e, gw.auth.challenge()))?;
        let cookie = SessionCookie(cookie.and_then(|c| HeaderValue::from_str(&c).ok()));
        Ok(Self { user, cookie })
    }
}

/// The `Set-Cookie` of a new session, if the login opened one: part of the
/// answer, so the next request costs no password check or Hub call.
pub struct SessionCookie(Option<HeaderValue>);

impl IntoResponseParts for SessionCookie {
    type Error = std::convert::Infallible;

    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Self::Error> {
        if let Some(cookie) = self.0 {
            res.headers_mut().append(header::SET_COOKIE, cookie);
        }
        Ok(res)
    }
}

/// The cluster of the path (`/api/v1/clusters/{name}/...`), called by its
/// own scheduler: `Authorization: token <its token>`, compared in constant time.
pub struct ClusterCaller(pub Cluster);

/// The cluster's token, from `Authorization: token <t>`, compared in constant time.
fn has_cluster_token(headers: &HeaderMap, cluster: &Cluster) -> bool {
    let sent = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("token "));
    // A failed cluster's record keeps no token: an empty one matches nothing.
    !cluster.token.is_empty()
        && sent.is_some_and(|t| bool::from(t.trim().as_bytes().ct_eq(cluster.token.as_bytes())))
}

impl FromRequestParts<Arc<Gateway>> for ClusterCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, ApiError> {
        let unauthorized = ApiError::Unauthorized { challenge: "token" };
        let Ok(Path(name)) = Path::<String>::from_request_parts(parts, gw).await else {
            return Err(unauthorized);
        };
        // Pooled schedulers (hidden from users) heartbeat too.
        match gw.backend.for_scheduler(&name).await {
            Some(cluster) if has_cluster_token(&parts.headers, &cluster) => Ok(Self(cluster)),
            _ => Err(unauthorized),
        }
    }
}

/// Who may stop a cluster: its scheduler (idle timeout) or a signed-in user.
pub enum Caller {
    Scheduler(Box<ClusterCaller>),
    User(Login),
}

impl FromRequestParts<Arc<Gateway>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, ApiError> {
        // The scheduler's token first: it must never go to the Hub as a user's.
        if let Ok(scheduler) = ClusterCaller::from_request_parts(parts, gw).await {
            return Ok(Self::Scheduler(Box::new(scheduler)));
        }
        Ok(Self::User(Login::from_request_parts(parts, gw).await?))
    }
}
