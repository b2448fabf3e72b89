//! Signing in to the page: which sign-in a browser without a session is
//! sent to (the auth kind decides), the login form of `simple` and `basic`
//! auth, and signing out.
//!
//! The form's credentials go through the same [`Authenticator`] as the
//! API's Basic logins (argon2 a few at a time), and the answer is the same
//! sealed session cookie (HttpOnly, SameSite=Lax, scoped to the prefix).
//! Under JupyterHub auth the Hub's OAuth login ([`crate::http::oauth`])
//! takes the form's place. The CSRF guard ([`super::csrf`]) covers both POSTs.
//!
//! [`Authenticator`]: crate::auth::Authenticator

use std::sync::Arc;

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use tracing::info;

use super::page::{self, html};
use crate::auth::AuthError;
use crate::config::AuthKind;
use crate::http::errors::ApiError;
use crate::http::extract::Login;
use crate::http::oauth::safe_next;
use crate::http::state::Gateway;

/// Where a browser without a session goes to sign in.
#[derive(Debug, PartialEq, Eq)]
pub enum SignIn {
    /// The gateway's login form (`simple`, `basic`): its URL.
    Form(String),
    /// The Hub's OAuth login (`jupyterhub`).
    Hub,
}

/// The sign-in of `kind` for a browser that wanted `next`.
pub fn sign_in(kind: AuthKind, prefix: &str, next: &str) -> SignIn {
    match kind {
        AuthKind::Simple | AuthKind::Basic => {
            SignIn::Form(format!("{prefix}/login?next={}", encode(&safe_next(next, prefix))))
        }
        AuthKind::Jupyterhub => SignIn::Hub,
    }
}

/// Percent-encoding of a query value: everything but the unreserved characters.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The signed-in user of a page request, or the answer that signs them in.
pub async fn page_login(gw: &Arc<Gateway>, parts: &mut Parts) -> Result<Login, Response> {
    let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let next = format!("{}{query}", page::full_path(parts));
    match sign_in(gw.auth_kind, &gw.prefix, &next) {
        // The session, or the redirect to the Hub's OAuth login (back to here).
        SignIn::Hub => crate::http::oauth::browser_login(gw, parts).await,
        SignIn::Form(url) => match Login::from_request_parts(parts, gw).await {
            Ok(login) => Ok(login),
            Err(ApiError::Unauthorized { .. }) => Err(see_other(&url)),
            Err(e) => Err(e.into_response()),
        },
    }
}

/// The login page: the form (`simple`, `basic`) or the Hub's link.
fn login_page(gw: &Gateway, status: StatusCode, next: &str, message: &str) -> Response {
    login_page_for(gw, status, next, message, "")
}

/// The login page again after a refused attempt, the user name kept.
fn login_page_for(
    gw: &Gateway,
    status: StatusCode,
    next: &str,
    message: &str,
    username: &str,
) -> Response {
    let form = matches!(gw.auth_kind, AuthKind::Simple | AuthKind::Basic);
    let body = page::render(
        "login.html",
        minijinja::context! {
            prefix => &gw.prefix,
            next => safe_next(next, &gw.prefix),
            message,
            username,
            form,
        },
    );
    (status, html(body)).into_response()
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    signed_out: Option<String>,
}

/// `GET <prefix>/login`: the form, or on to `next` for a signed-in browser.
pub async fn form(
    State(gw): State<Arc<Gateway>>,
    Query(query): Query<LoginQuery>,
    headers: HeaderMap,
) -> Response {
    let next = query.next.unwrap_or_default();
    if gw.auth.authenticate(&crate::http::streams::session_headers(&headers)).await.is_ok() {
        return see_other(&safe_next(&next, &gw.prefix));
    }
    let message = if query.signed_out.is_some() { "You are signed out." } else { "" };
    login_page(&gw, StatusCode::OK, &next, message)
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

/// A user name the form may send on as Basic credentials.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("Enter a user name.");
    }
    if name.contains(':') || name.chars().any(char::is_control) {
        return Err("A user name cannot contain ':' or control characters.");
    }
    Ok(())
}

/// `POST <prefix>/login` (a form): the session cookie and on to `next`, or
/// the form again with what went wrong.
pub async fn submit(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    if gw.auth_kind == AuthKind::Jupyterhub {
        return ApiError::NotFound("sign in through JupyterHub".into()).into_response();
    }
    let Ok(Form(form)) = form else {
        return login_page(&gw, StatusCode::BAD_REQUEST, "", "The form was incomplete.");
    };
    if let Err(message) = check_name(&form.username) {
        return login_page_for(&gw, StatusCode::BAD_REQUEST, &form.next, message, &form.username);
    }
    // The same check as an API client's Basic login.
    let mut credentials = HeaderMap::new();
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", form.username, form.password));
    let Ok(value) = HeaderValue::from_str(&format!("Basic {basic}")) else {
        return login_page(&gw, StatusCode::BAD_REQUEST, &form.next, "Invalid credentials.");
    };
    credentials.insert(header::AUTHORIZATION, value);
    if let Some(proto) = headers.get("x-forwarded-proto") {
        credentials.insert("x-forwarded-proto", proto.clone());
    }
    match gw.auth.authenticate(&credentials).await {
        Ok((user, Some(cookie))) => {
            info!(user = %user.name, "signed in to the page");
            let mut response = see_other(&safe_next(&form.next, &gw.prefix));
            if let Ok(cookie) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            response
        }
        Ok((_, None)) => login_page(
            &gw,
            StatusCode::SERVICE_UNAVAILABLE,
            &form.next,
            "Too many open sessions; try again later.",
        ),
        Err(AuthError::Invalid(message)) => {
            login_page(&gw, StatusCode::BAD_REQUEST, &form.next, &message)
        }
        Err(_) => {
            let refused = "Wrong user name or password.";
            login_page_for(&gw, StatusCode::UNAUTHORIZED, &form.next, refused, &form.username)
        }
    }
}

/// `POST <prefix>/logout`: the browser forgets the session cookie, and the
/// session's live streams end. (A sealed session is not recorded anywhere:
/// a copy of the cookie would stay valid until it expires.)
pub async fn sign_out(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Some(session) = crate::http::streams::cookie(&headers, gw.auth.cookie_name()) {
        gw.events.signed_out(session);
    }
    let clear = format!(
        "{}=; Max-Age=0; Path={}; HttpOnly; SameSite=Lax",
        gw.auth.cookie_name(),
        gw.auth.cookie_path()
    );
    let mut response = see_other(&format!("{}/login?signed_out=1", gw.prefix));
    if let Ok(clear) = HeaderValue::from_str(&clear) {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auth_kind_decides_the_sign_in() {
        assert_eq!(
            sign_in(AuthKind::Basic, "/gw", "/gw/"),
            SignIn::Form("/gw/login?next=/gw/".into())
        );
        assert_eq!(
            sign_in(AuthKind::Simple, "", "/?a=b"),
            SignIn::Form("/login?next=/%3Fa%3Db".into())
        );
        assert_eq!(sign_in(AuthKind::Jupyterhub, "/gw", "/gw/"), SignIn::Hub);
    }

    #[test]
    fn only_the_gateways_own_paths_are_destinations() {
        let p = "/services/dask-gateway";
        assert_eq!(safe_next("/services/dask-gateway/", p), "/services/dask-gateway/");
        for bad in ["//evil.example/", "/\\evil", "https://evil.example/", "/other", "", "/a\nb"] {
            assert_eq!(safe_next(bad, p), "/services/dask-gateway/", "{bad}");
        }
        assert_eq!(safe_next("//evil", ""), "/");
    }

    #[test]
    fn names_the_basic_scheme_cannot_carry_are_refused() {
        assert!(check_name("alice").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a:b").is_err());
        assert!(check_name("a\nb").is_err());
    }
}
