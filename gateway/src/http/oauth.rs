//! Browser login through the Hub's OAuth, as any Hub service does: a
//! browser without a session is sent to the Hub's authorize URL, comes back
//! to `<prefix>/oauth_callback` with a code, which the gateway exchanges
//! (as the OAuth client, with its own API token) for a token; the Hub's
//! `/user` for that token gives the user, checked like any token, and a
//! session cookie. Then back to the page first asked for. With PKCE
//! (S256), as JupyterHub 6's `HubOAuth`: a Hub that predates it ignores it.
//!
//! [`browser_login`] is the reusable piece: any page route calls it instead
//! of [`Login`] to get the user or the redirect to the Hub.

use std::sync::Arc;

use axum::extract::{FromRequestParts, OriginalUri, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tracing::info;

use crate::http::errors::ApiError;
use crate::http::extract::Login;
use crate::http::state::Gateway;

/// The callback's path under the gateway's prefix.
pub const CALLBACK_PATH: &str = "/oauth_callback";

/// Seconds a login may take at the Hub (the state cookie's life).
const STATE_MAX_AGE: u64 = 600;

fn state_cookie_name(gw: &Gateway) -> String {
    format!("{}-oauth-state", gw.auth.cookie_name())
}

/// A browser navigating to a page (not the API client, not a websocket,
/// not a request that brought credentials of its own).
fn is_navigation(parts: &Parts) -> bool {
    matches!(parts.method, Method::GET | Method::HEAD)
        && !parts.headers.contains_key(header::AUTHORIZATION)
        && !parts.headers.contains_key(header::UPGRADE)
        && parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"))
}

/// Percent-encoding of a query value: everything but the unreserved characters.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Where to go after the login: a path of this gateway, never another site
/// (`//evil`, `/\evil`, `https://evil`), else the gateway's root.
pub(crate) fn safe_next(next: &str, prefix: &str) -> String {
    let root = format!("{prefix}/");
    let own = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control)
        && (prefix.is_empty() || next == prefix || next.starts_with(&root));
    if own { next.to_string() } else { root }
}

/// The redirect URI registered at the Hub.
fn callback_url(gw: &Gateway) -> String {
    gw.auth
        .hub_settings()
        .and_then(|s| s.callback_url.clone())
        .unwrap_or_else(|| format!("{}{CALLBACK_PATH}", gw.prefix))
}

/// The answer that sends a browser to the Hub's login, remembering (in an
/// HttpOnly cookie bound to the `state`) where it was going.
fn to_the_hub(gw: &Gateway, next: &str) -> Option<Response> {
    let settings = gw.auth.hub_settings()?;
    let random = || format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let (nonce, verifier) = (random(), random());
    let next = safe_next(next, &gw.prefix);
    let location = format!(
        "{}?client_id={}&redirect_uri={}&response_type=code&state={}&code_challenge={}&code_challenge_method=S256",
        settings.authorize_url,
        encode(&settings.client_id),
        encode(&callback_url(gw)),
        encode(&nonce),
        code_challenge(&verifier),
    );
    let next_b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(next);
    let cookie = format!(
        "{}={nonce}.{verifier}.{next_b64}; Max-Age={STATE_MAX_AGE}; Path={}; HttpOnly; SameSite=Lax",
        state_cookie_name(gw),
        gw.auth.cookie_path(),
    );
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_str(&location).ok()?);
    headers.insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).ok()?);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Some(response)
}

/// The signed-in user of a browser page: the session or credentials as
/// for the API, or, for a browser with neither under JupyterHub auth, the
/// redirect to the Hub's login (which comes back to the same URL).
pub async fn browser_login(gw: &Arc<Gateway>, parts: &mut Parts) -> Result<Login, Response> {
    match Login::from_request_parts(parts, gw).await {
        Ok(login) => Ok(login),
        Err(e @ ApiError::Unauthorized { .. }) => {
            if is_navigation(parts) {
                let next = parts
                    .extensions
                    .get::<OriginalUri>()
                    .map(|u| u.0.to_string())
                    .unwrap_or_else(|| format!("{}{}", gw.prefix, parts.uri));
                if let Some(redirect) = to_the_hub(gw, &next) {
                    return Err(redirect);
                }
            }
            Err(e.into_response())
        }
        Err(e) => Err(e.into_response()),
    }
}

/// PKCE's S256 challenge of a verifier (RFC 7636).
fn code_challenge(verifier: &str) -> String {
    use sha2::{Digest, Sha256};
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// What the state cookie holds: the login's state, its PKCE verifier and
/// where to go after it.
#[derive(Debug, PartialEq, Eq)]
struct LoginState {
    nonce: String,
    verifier: String,
    next: String,
}

/// The state cookie, if it is there and well formed.
fn state_cookie(headers: &HeaderMap, name: &str) -> Option<LoginState> {
    let prefix = format!("{name}=");
    let value = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(prefix.as_str()))?;
    let mut parts = value.splitn(3, '.');
    let (nonce, verifier, next) = (parts.next()?, parts.next()?, parts.next()?);
    let next = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(next).ok()?;
    Some(LoginState {
        nonce: nonce.to_string(),
        verifier: verifier.to_string(),
        next: String::from_utf8(next).ok()?,
    })
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET <prefix>/oauth_callback?code=…&state=…`: the Hub sends the browser
/// back here after the login.
pub async fn callback(
    State(gw): State<Arc<Gateway>>,
    Query(query): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let hub = gw
        .auth
        .hub()
        .zip(gw.auth.hub_settings())
        .ok_or_else(|| ApiError::NotFound("no OAuth login without JupyterHub auth".into()))?;
    let (hub, settings) = hub;
    if let Some(error) = query.error {
        let error: String = error.chars().take(200).collect();
        return Err(ApiError::Forbidden(format!("the JupyterHub login did not succeed: {error}")));
    }
    let (Some(code), Some(state)) = (query.code, query.state) else {
        return Err(ApiError::BadRequest("oauth_callback: code and state are required".into()));
    };
    let LoginState { nonce, verifier, next } = state_cookie(&headers, &state_cookie_name(&gw))
        .ok_or_else(|| {
            ApiError::BadRequest(
                "oauth_callback: no login in progress (state cookie missing)".into(),
            )
        })?;
    if !bool::from(nonce.as_bytes().ct_eq(state.as_bytes())) {
        return Err(ApiError::Forbidden("oauth_callback: state does not match".into()));
    }
    let challenge = gw.auth.challenge();
    let token = hub
        .token_for_code(&settings.client_id, &code, &verifier, &callback_url(&gw))
        .await
        .map_err(|e| ApiError::from_auth(e, challenge))?;
    let user = gw.auth.hub_user(&token).await.map_err(|e| ApiError::from_auth(e, challenge))?;
    let cookie = gw
        .auth
        .login(user.clone(), Some(token), &headers)
        .map_err(|e| ApiError::from_auth(e, challenge))?
        .ok_or_else(|| ApiError::Unavailable("too many open sessions; retry later".into()))?;
    info!(user = %user.name, "browser login through JupyterHub");
    let clear = format!(
        "{}=; Max-Age=0; Path={}; HttpOnly; SameSite=Lax",
        state_cookie_name(&gw),
        gw.auth.cookie_path()
    );
    let mut response = StatusCode::FOUND.into_response();
    let out = response.headers_mut();
    let location = HeaderValue::from_str(&safe_next(&next, &gw.prefix))
        .map_err(|e| ApiError::Internal(e.into()))?;
    out.insert(header::LOCATION, location);
    for cookie in [cookie, clear] {
        let value = HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(e.into()))?;
        out.append(header::SET_COOKIE, value);
    }
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_gateways_own_paths_are_destinations() {
        let p = "/services/dask-gateway";
        assert_eq!(
            safe_next("/services/dask-gateway/clusters/a/status?x=1", p),
            "/services/dask-gateway/clusters/a/status?x=1"
        );
        for bad in [
            "//evil.example/",
            "/\\evil",
            "https://evil.example/",
            "/other/path",
            "",
            "/services/dask-gatewayX",
        ] {
            assert_eq!(safe_next(bad, p), "/services/dask-gateway/", "{bad}");
        }
        assert_eq!(safe_next("/clusters/a", ""), "/clusters/a");
        assert_eq!(safe_next("//evil", ""), "/");
        assert_eq!(safe_next("/a\nSet-Cookie: x", ""), "/");
    }

    #[test]
    fn the_pkce_challenge_is_rfc_7636s() {
        // RFC 7636, appendix B.
        assert_eq!(
            code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("http://h:1/a b?c=d&e"), "http%3A%2F%2Fh%3A1%2Fa%20b%3Fc%3Dd%26e");
        assert_eq!(encode("service-dask-gateway"), "service-dask-gateway");
    }

    #[test]
    fn the_state_cookie_carries_nonce_and_destination() {
        let mut headers = HeaderMap::new();
        let next = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("/clusters/a");
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; gw-oauth-state=abc.ver.{next}")).unwrap(),
        );
        let state =
            LoginState { nonce: "abc".into(), verifier: "ver".into(), next: "/clusters/a".into() };
        assert_eq!(state_cookie(&headers, "gw-oauth-state"), Some(state));
        assert_eq!(state_cookie(&headers, "nope"), None);
    }
}
