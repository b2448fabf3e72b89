//! `/clusters/<name>/...` → the cluster's Bokeh dashboard, prefix stripped,
//! websockets included (the dashboard's plots stream over them), for the
//! cluster's owner and admins only.
//!
//! The owner's `dashboard_link` carries a per-cluster capability as a path
//! segment, `/clusters/<name>/~<token>/status`, so it opens in a fresh
//! browser with no login. It has to stay in the path, not move into a cookie:
//! the dashboard is served sandboxed (an opaque origin, so a page a
//! scheduler serves cannot act as the visitor against `/api`), and a
//! sandboxed page's scripts, stylesheets and websocket are cross-site
//! requests that never carry SameSite cookies. Relative URLs keep the
//! segment, so every one of them is authorised by it. A request without it
//! needs the gateway session or API credentials of the owner or an admin,
//! and a browser is then redirected to the capability URL.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use subtle::ConstantTimeEq;
use tracing::debug;

use crate::auth::User;
use crate::domain::models::{CAPABILITY_MARK, Cluster};
use crate::http::errors::ApiError;
use crate::http::extract::Login;
use crate::http::state::Gateway;

/// The dashboard runs scripts (Bokeh) but in an opaque origin: no access to
/// the gateway's cookies, storage or same-origin requests.
const SANDBOX: &str = "sandbox allow-scripts allow-forms allow-popups allow-downloads";

/// Headers that belong to one hop, not to the proxied request.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The visitor's credentials for the gateway: never shown to a scheduler.
const CREDENTIALS: [&str; 3] = ["cookie", "authorization", "proxy-authorization"];

/// Response headers a scheduler must not send to a browser on the
/// gateway's origin: cookies (the gateway's own or a cookie bomb), wiping
/// the gateway's site data, widening a service worker's scope, pinning HTTPS.
const UPSTREAM_FORBIDDEN: [&str; 6] = [
    "set-cookie",
    "set-cookie2",
    "clear-site-data",
    "service-worker-allowed",
    "strict-transport-security",
    "alt-svc",
];

/// A dashboard request path (below the prefix), split on the raw,
/// still percent-encoded path so `%2F` and `%20` reach the dashboard as sent.
#[derive(Debug, PartialEq, Eq)]
struct DashboardPath<'a> {
    cluster: &'a str,
    capability: Option<&'a str>,
    /// What the dashboard sees: empty or starting with `/`.
    rest: &'a str,
}

fn split(path: &str) -> Option<DashboardPath<'_>> {
    let tail = path.strip_prefix("/clusters/")?;
    let (cluster, rest) = tail.find('/').map_or((tail, ""), |i| tail.split_at(i));
    let after = rest.strip_prefix('/').unwrap_or_default();
    let (segment, remainder) = after.find('/').map_or((after, ""), |i| after.split_at(i));
    match segment.strip_prefix(CAPABILITY_MARK) {
        Some(capability) => {
            Some(DashboardPath { cluster, capability: Some(capability), rest: remainder })
        }
        None => Some(DashboardPath { cluster, capability: None, rest }),
    }
}

fn capability_matches(cluster: &Cluster, sent: &str) -> bool {
    // A cluster whose token is not known yet has no capability at all.
    !cluster.token.is_empty()
        && bool::from(sent.as_bytes().ct_eq(cluster.dashboard_token().as_bytes()))
}

/// Browsers navigating to a dashboard without the capability are sent to
/// the URL that has it (its subresources then carry it too); API clients
/// and websockets with credentials are proxied as they are.
fn wants_redirect(request: &Request) -> bool {
    matches!(*request.method(), Method::GET | Method::HEAD)
        && !request.headers().contains_key(header::UPGRADE)
}

/// What a signed-in user's dashboard request (without a valid capability) gets.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    NotFound,
    Forbidden,
    /// Cached Basic credentials ride along on a websocket from any site: with
    /// them (not the capability), only the gateway's own pages may open one.
    CrossOrigin,
    /// A browser navigating: on to the capability URL.
    Redirect,
    Forward,
}

fn decide(cluster: Option<&Cluster>, user: &User, same_origin: bool, navigation: bool) -> Decision {
    match cluster {
        None => Decision::NotFound,
        Some(c) if !user.may_access(&c.username) => Decision::Forbidden,
        Some(_) if !same_origin => Decision::CrossOrigin,
        Some(c) if navigation && c.dashboard_target().is_some() => Decision::Redirect,
        Some(_) => Decision::Forward,
    }
}

pub async fn proxy(State(gw): State<Arc<Gateway>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let Some(parsed) = split(&path) else {
        return ApiError::NotFound("Not found".into()).into_response();
    };
    let cluster = gw.backend.get(parsed.cluster).await;
    if let (Some(cluster), Some(sent)) = (&cluster, parsed.capability)
        && capability_matches(cluster, sent)
    {
        return forward(&gw, cluster, parsed.rest, request).await;
    }
    // No valid capability: the gateway's own credentials decide.
    let (mut parts, body) = request.into_parts();
    // A browser with no session is sent to the Hub's login (JupyterHub auth).
    let Login { user, cookie } = match crate::http::oauth::browser_login(&gw, &mut parts).await {
        Ok(login) => login,
        Err(response) => return response,
    };
    let request = Request::from_parts(parts, body);
    let name = parsed.cluster;
    let decision = decide(
        cluster.as_ref(),
        &user,
        same_origin_or_none(request.headers()),
        wants_redirect(&request),
    );
    let response = match (decision, cluster) {
        (Decision::Forward, Some(cluster)) => forward(&gw, &cluster, parsed.rest, request).await,
        (Decision::Redirect, Some(cluster)) => {
            let query = request.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
            let location = format!(
                "{}/clusters/{name}/{CAPABILITY_MARK}{}{}{query}",
                gw.prefix,
                cluster.dashboard_token(),
                if parsed.rest.is_empty() { "/" } else { parsed.rest },
            );
            let mut response = StatusCode::FOUND.into_response();
            if let Ok(location) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            sandboxed(response.headers_mut());
            response
        }
        (Decision::Forbidden, _) => ApiError::Forbidden(format!(
            "User {} lacks permissions to view the dashboard of cluster {name}",
            user.name
        ))
        .into_response(),
        (Decision::CrossOrigin, _) => {
            ApiError::Forbidden("cross-origin requests to a dashboard need its link's token".into())
                .into_response()
        }
        _ => ApiError::NotFound(format!("Cluster {name} not found")).into_response(),
    };
    (cookie, response).into_response()
}

/// No `Origin` (not a browser's cross-origin request), or the gateway's own.
fn same_origin_or_none(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    origin_host.is_some() && origin_host == host
}

/// Headers every dashboard answer carries: the sandbox, and no Referer
/// (the capability is in the URL).
fn sandboxed(headers: &mut HeaderMap) {
    headers.append(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(SANDBOX));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

/// Proxies an authorised request to the cluster's dashboard.
async fn forward(gw: &Gateway, cluster: &Cluster, rest: &str, mut request: Request) -> Response {
    let name = &cluster.name;
    let Some(target) = cluster.dashboard_target() else {
        return ApiError::NotFound(format!("Cluster {name} not found or has no dashboard"))
            .into_response();
    };
    let query = request.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    let rest = if rest.is_empty() { "/" } else { rest };
    let Ok(uri) = format!("{target}{rest}{query}").parse::<Uri>() else {
        return ApiError::BadRequest("invalid dashboard path".into()).into_response();
    };
    let upgrade = request.headers().get(header::UPGRADE).cloned();
    let client_side = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut request));
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.remove(header::HOST);
    for name in HOP_BY_HOP.iter().chain(&CREDENTIALS) {
        headers.remove(*name);
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    let mut response = match gw.proxy.request(request).await {
        Ok(response) => response,
        Err(e) => {
            debug!(cluster = %name, error = %e, "dashboard unreachable");
            return ApiError::BadGateway(format!("the dashboard of cluster {name} is unreachable"))
                .into_response();
        }
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_side) = client_side
    {
        let server_side = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            if let (Ok(client), Ok(server)) = (client_side.await, server_side.await) {
                let (mut client, mut server) = (TokioIo::new(client), TokioIo::new(server));
                tokio::io::copy_bidirectional(&mut client, &mut server).await.ok();
            }
        });
    }
    let headers = response.headers_mut();
    for name in UPSTREAM_FORBIDDEN {
        headers.remove(name);
    }
    sandboxed(headers);
    response.map(Body::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_on_the_raw_path_with_or_without_a_capability() {
        assert_eq!(
            split("/clusters/abc/~tok/status/ws"),
            Some(DashboardPath { cluster: "abc", capability: Some("tok"), rest: "/status/ws" })
        );
        assert_eq!(
            split("/clusters/abc/~tok"),
            Some(DashboardPath { cluster: "abc", capability: Some("tok"), rest: "" })
        );
        assert_eq!(
            split("/clusters/abc/info/a%2Fb%20c"),
            Some(DashboardPath { cluster: "abc", capability: None, rest: "/info/a%2Fb%20c" })
        );
        assert_eq!(
            split("/clusters/abc"),
            Some(DashboardPath { cluster: "abc", capability: None, rest: "" })
        );
        assert_eq!(split("/api/v1/clusters/"), None);
    }

    #[test]
    fn owners_and_admins_get_the_dashboard_others_do_not() {
        use crate::domain::models::ClusterStatus;
        use crate::domain::models::tests::sample;
        let user = |name: &str, admin| User { name: name.into(), admin, groups: vec![] };
        let (alice, bob, root) = (user("alice", false), user("bob", false), user("root", true));
        let running = sample("a", "alice", ClusterStatus::Running);
        let pending = sample("a", "alice", ClusterStatus::Pending);
        assert_eq!(decide(Some(&running), &alice, true, true), Decision::Redirect);
        assert_eq!(decide(Some(&running), &root, true, true), Decision::Redirect);
        assert_eq!(decide(Some(&running), &alice, true, false), Decision::Forward);
        assert_eq!(decide(Some(&pending), &alice, true, true), Decision::Forward);
        assert_eq!(decide(Some(&running), &bob, true, true), Decision::Forbidden);
        assert_eq!(decide(Some(&running), &alice, false, false), Decision::CrossOrigin);
        assert_eq!(decide(None, &alice, true, true), Decision::NotFound);
    }

    #[test]
    fn only_the_gateways_own_origin_may_use_its_credentials() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert!(same_origin_or_none(&headers(&[("host", "gw:8000")])));
        assert!(same_origin_or_none(&headers(&[
            ("host", "gw:8000"),
            ("origin", "https://gw:8000")
        ])));
        assert!(!same_origin_or_none(&headers(&[("host", "gw:8000"), ("origin", "https://evil")])));
        assert!(!same_origin_or_none(&headers(&[("host", "gw:8000"), ("origin", "null")])));
    }

    #[test]
    fn the_capability_is_the_clusters_own() {
        use crate::domain::models::ClusterStatus;
        use crate::domain::models::tests::sample;
        let alice = sample("a", "alice", ClusterStatus::Running);
        let mut other = sample("a", "alice", ClusterStatus::Running);
        other.token = "another".into();
        assert!(capability_matches(&alice, &alice.dashboard_token()));
        assert!(!capability_matches(&alice, &other.dashboard_token()));
        assert!(!capability_matches(&alice, ""));
        assert_eq!(
            alice.dashboard_route(),
            format!("/clusters/a/~{}/status", alice.dashboard_token())
        );
    }
}
