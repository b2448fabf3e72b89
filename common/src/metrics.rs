//! `/metrics`: a registry in the OpenMetrics text format, with the content
//! type that says so (Prometheus then parses it as OpenMetrics).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::registry::Registry;

/// The one content type of both binaries' `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A registry's exposition, as an HTTP answer.
pub struct Exposition(Result<String, std::fmt::Error>);

/// Encodes `registry` now.
pub fn render(registry: &Registry) -> Exposition {
    let mut text = String::new();
    Exposition(prometheus_client::encoding::text::encode(&mut text, registry).map(|()| text))
}

impl Exposition {
    /// The text, or `None` if a metric could not be encoded.
    pub fn text(self) -> Option<String> {
        self.0.ok()
    }
}

impl IntoResponse for Exposition {
    fn into_response(self) -> Response {
        match self.0 {
            Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn exposition_is_openmetrics_with_its_content_type() {
        let mut registry = Registry::with_prefix("test");
        let counter = Counter::<u64>::default();
        registry.register("things", "Things seen", counter.clone());
        counter.inc();
        let response = render(&registry).into_response();
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let text = render(&registry).text().unwrap();
        assert!(text.contains("test_things_total 1") && text.ends_with("# EOF\n"), "{text}");
    }
}
