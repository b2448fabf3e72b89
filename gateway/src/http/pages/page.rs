//! The page and its assets, built into the binary (no CDN, no build
//! step): HTML templates filled in on the server (every value escaped),
//! plain CSS and small JavaScript modules. Every answer carries a strict
//! Content-Security-Policy: scripts and styles from the gateway's own
//! files only (none inline), no framing, no plugins.

use std::sync::{Arc, LazyLock};

use axum::extract::{OriginalUri, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::syntax::SyntaxConfig;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};

use super::signin::page_login;
use crate::http::errors::ApiError;
use crate::http::extract::Login;
use crate::http::state::Gateway;

const INDEX_HTML: &str = include_str!("assets/index.html");
const LOGIN_HTML: &str = include_str!("assets/login.html");

/// The files under `<prefix>/ui/`: name, content type, bytes.
const ASSETS: [(&str, &str, &[u8]); 8] = [
    ("style.css", "text/css; charset=utf-8", include_bytes!("assets/style.css")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("assets/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_bytes!("assets/api.js")),
    ("clusters.js", "text/javascript; charset=utf-8", include_bytes!("assets/clusters.js")),
    ("create.js", "text/javascript; charset=utf-8", include_bytes!("assets/create.js")),
    ("format.js", "text/javascript; charset=utf-8", include_bytes!("assets/format.js")),
    ("summary.js", "text/javascript; charset=utf-8", include_bytes!("assets/summary.js")),
    ("icon.svg", "image/svg+xml", include_bytes!("assets/icon.svg")),
];

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
     object-src 'none'";

/// The headers of every page and asset.
fn secured(headers: &mut HeaderMap) {
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Dashboard links carry their capability: no Referer anywhere.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

/// An HTML answer (not cached: it names the signed-in user).
pub fn html(body: String) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secured(headers);
    response
}

/// Escapes text for HTML content and quoted attribute values: the five
/// characters that matter (minijinja's own HTML escaping also turns `/`
/// into `&#x2f;`, which would change every URL on the page).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page templates, auto-escaped (`.html`) with [`escape`]; a value a
/// template names but the caller did not give is an error, not "".
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_syntax(
        SyntaxConfig::builder().keep_trailing_newline(true).build().expect("the default syntax"),
    );
    env.set_formatter(|out, state, value| {
        if *state.auto_escape() == AutoEscape::Html && !value.is_safe() && !value.is_undefined() {
            out.write_str(&escape(&value.to_string()))?;
            Ok(())
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    for (name, source) in [("index.html", INDEX_HTML), ("login.html", LOGIN_HTML)] {
        env.add_template(name, source).expect("a page template parses");
    }
    env
});

/// The template `name` filled in with `values`.
pub fn render(name: &str, values: minijinja::Value) -> String {
    TEMPLATES
        .get_template(name)
        .and_then(|template| template.render(values))
        .expect("a page template renders")
}

/// `GET <prefix>/`: the page for a signed-in user, or on to the sign-in.
pub async fn index(State(gw): State<Arc<Gateway>>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    if !gw.prefix.is_empty() && full_path(&parts) == gw.prefix {
        return to_index(&gw);
    }
    let Login { user, cookie } = match page_login(&gw, &mut parts).await {
        Ok(login) => login,
        Err(response) => return response,
    };
    let body = render(
        "index.html",
        minijinja::context! { prefix => &gw.prefix, user => &user.name, admin => if user.admin { "true" } else { "false" } },
    );
    (cookie, html(body)).into_response()
}

/// The request's path as sent (a nested router sees it without the prefix).
pub fn full_path(parts: &Parts) -> &str {
    parts.extensions.get::<OriginalUri>().map_or(parts.uri.path(), |uri| uri.0.path())
}

/// `GET <prefix>` (a non-empty prefix without its slash): on to the page.
fn to_index(gw: &Gateway) -> Response {
    let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("{}/", gw.prefix)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// `GET <prefix>/ui/<file>`: the same for everyone, no login.
pub async fn asset(Path(file): Path<String>) -> Response {
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(name, ..)| *name == file) else {
        return ApiError::NotFound(format!("no file {file}")).into_response();
    };
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidated each time: a new gateway version serves new files.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secured(headers);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_into_templates() {
        let out = render(
            "login.html",
            minijinja::context! { prefix => "/p", next => "/p/", message => "<script>\"x'&",
            username => "a/b", form => true },
        );
        assert!(out.contains("role=\"alert\">&lt;script&gt;&quot;x&#39;&amp;</p>"), "{out}");
        assert!(out.contains("value=\"a/b\""), "{out}");
        assert!(out.contains("action=\"/p/login\" >") && out.contains("<p id=\"hub\" hidden>"));
        assert!(out.ends_with('\n'));
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        for page in [INDEX_HTML, LOGIN_HTML] {
            let lower = page.to_lowercase();
            assert!(!lower.contains("<script>") && !lower.contains("<style"), "inline code");
            assert!(!lower.contains(" style=") && !lower.contains(" onclick"), "inline attributes");
            assert!(!lower.contains("http://") && !lower.contains("https://"), "no CDN");
        }
        for (name, _, bytes) in ASSETS {
            let text = String::from_utf8_lossy(bytes);
            assert!(!text.contains("innerHTML"), "{name}: no innerHTML");
            let xmlns = name.ends_with(".svg"); // `xmlns="http://www.w3.org/2000/svg"`
            assert!(xmlns || !text.contains("http"), "{name}: no CDN");
        }
    }
}
