//! `/clusters/<name>/...` → the cluster's Bokeh dashboard, prefix stripped,
//! websockets included (the dashboard's plots stream over them).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tracing::debug;

use crate::Gateway;
use crate::api::ApiError;

pub type ProxyClient = Client<HttpConnector, Body>;

pub fn client() -> ProxyClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

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

pub async fn root(
    state: State<Arc<Gateway>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    forward(state, name, String::new(), request).await
}

pub async fn path(
    state: State<Arc<Gateway>>,
    Path((name, rest)): Path<(String, String)>,
    request: Request,
) -> Response {
    forward(state, name, rest, request).await
}

async fn forward(
    State(gw): State<Arc<Gateway>>,
    name: String,
    rest: String,
    mut request: Request,
) -> Response {
    let Some(target) = gw.backend.get(&name).await.and_then(|c| c.dashboard_target()) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Cluster {name} not found or has no dashboard"),
        )
        .into_response();
    };
    let query = request.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    let Ok(uri) = format!("{target}/{rest}{query}").parse::<Uri>() else {
        return ApiError::new(StatusCode::BAD_REQUEST, "invalid dashboard path").into_response();
    };
    let upgrade = request.headers().get(header::UPGRADE).cloned();
    let client_side = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut request));
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.remove(header::HOST);
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    let mut response = match gw.proxy.request(request).await {
        Ok(response) => response,
        Err(e) => {
            debug!(cluster = %name, error = %e, "dashboard unreachable");
            return ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("the dashboard of cluster {name} is unreachable"),
            )
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
    response.map(Body::new)
}
