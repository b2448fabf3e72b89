//! The web page on the gateway's port, under `prefix`: sign in, see and
//! manage one's clusters (admins: everyone's, with a per-user summary),
//! live through [`crate::http::events`]. The page calls the existing JSON API;
//! its own routes are the page and assets, the login form and sign-out,
//! and the admin summary.

pub mod csrf;
pub mod page;
pub mod signin;
pub mod view;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::http::errors::ApiError;
use crate::http::extract::Login;
use crate::http::state::Gateway;

/// The page's routes (below the prefix).
pub fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/", get(page::index))
        .route("/ui/{file}", get(page::asset))
        .route("/login", get(signin::form).post(signin::submit))
        .route("/logout", post(signin::sign_out))
        .route("/api/v1/admin/summary", get(admin_summary))
}

/// `GET <prefix>/api/v1/admin/summary`: everyone's active clusters summed
/// per user; admins only.
async fn admin_summary(
    State(gw): State<Arc<Gateway>>,
    Login { user, cookie }: Login,
) -> Result<Response, ApiError> {
    if !user.admin {
        return Err(ApiError::Forbidden(format!("User {} is not an admin", user.name)));
    }
    let clusters = gw.backend.list().await;
    Ok((cookie, Json(json!({ "users": view::summary(&clusters) }))).into_response())
}
