//! Cross-site request forgery: the session cookie is `SameSite=Lax`, so a
//! cross-site form or fetch does not carry it; this guard also refuses
//! state-changing requests that a browser marks as coming from another
//! origin, which covers same-site neighbours (another port or subdomain)
//! and login CSRF. API clients (the Python client, curl) send neither
//! `Sec-Fetch-Site` nor `Origin` and pass as before.
//!
//! It also keeps the browser's own Basic prompt away from the page: a 401
//! to a request marked with [`PAGE_HEADER`] loses its `WWW-Authenticate`.

use axum::extract::Request;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::errors::ApiError;

/// Sent by the page's scripts with every API call.
pub const PAGE_HEADER: &str = "x-dask-gateway-page";

/// Whether a request may change state: safe methods always may; otherwise
/// a browser must say it comes from this origin.
pub fn allowed(method: &Method, headers: &HeaderMap) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    let value = |name| headers.get(name).and_then(|v| v.to_str().ok());
    // Set by the browser itself (scripts cannot), whatever proxies do to `Host`.
    if let Some(site) = value("sec-fetch-site") {
        return matches!(site, "same-origin" | "none");
    }
    // Older browsers: the Origin must name the host the request was sent to.
    let Some(origin) = value(header::ORIGIN.as_str()) else { return true };
    let Some((_, origin_host)) = origin.split_once("://") else { return false };
    let origin_host = origin_host.trim_end_matches('/');
    let forwarded = value("x-forwarded-host").and_then(|h| h.split(',').next()).map(str::trim);
    [value(header::HOST.as_str()), forwarded].into_iter().flatten().any(|h| h == origin_host)
}

/// Middleware over the API and the page's own routes (not the dashboards,
/// whose sandboxed pages are cross-origin by design and use capabilities).
pub async fn guard(request: Request, next: Next) -> Response {
    if !allowed(request.method(), request.headers()) {
        return ApiError::Forbidden(
            "cross-origin request refused: the gateway's page and API clients only".into(),
        )
        .into_response();
    }
    let from_page = request.headers().contains_key(PAGE_HEADER);
    let mut response = next.run(request).await;
    if from_page {
        response.headers_mut().remove(header::WWW_AUTHENTICATE);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn api_clients_and_safe_methods_pass() {
        assert!(allowed(&Method::POST, &headers(&[("host", "gw:8000")])));
        assert!(allowed(&Method::GET, &headers(&[("sec-fetch-site", "cross-site")])));
    }

    #[test]
    fn browsers_must_come_from_the_gateways_origin() {
        let post = Method::POST;
        assert!(allowed(&post, &headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!allowed(&post, &headers(&[("sec-fetch-site", "same-site")])));
        assert!(!allowed(&Method::DELETE, &headers(&[("sec-fetch-site", "cross-site")])));
        let host = ("host", "gw:8000");
        assert!(allowed(&post, &headers(&[host, ("origin", "http://gw:8000")])));
        assert!(!allowed(&post, &headers(&[host, ("origin", "http://evil:8000")])));
        assert!(!allowed(&post, &headers(&[host, ("origin", "null")])));
        assert!(allowed(
            &post,
            &headers(&[
                host,
                ("origin", "https://hub.example"),
                ("x-forwarded-host", "hub.example")
            ])
        ));
    }
}
