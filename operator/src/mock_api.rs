//! A mocked Kubernetes API for reconcile tests (controller-rs' approach):
//! a `kube::Client` over `tower_test`'s mock service, whose every request is
//! recorded and answered by the test. Reconcile paths that the real API
//! server makes slow to reach (a refused child, a scheduler that does not
//! answer) are tested here by the requests they make.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

use crate::config::Config;
use crate::context::Context;
use crate::metrics::Metrics;
use crate::scheduler_api::SchedulerApi;

/// One request the operator made.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    /// Path and query, e.g. `/apis/apps/v1/namespaces/ns/deployments/x?fieldManager=..`.
    pub path: String,
    pub body: Value,
}

impl Call {
    /// The path without its query.
    pub fn resource(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }

    /// An Event the operator published: (type, reason).
    pub fn event(&self) -> Option<(&str, &str)> {
        if self.method != "POST" || !self.resource().ends_with("/events") {
            return None;
        }
        Some((self.body["type"].as_str()?, self.body["reason"].as_str()?))
    }
}

/// What the mock was asked, in order.
#[derive(Clone, Default)]
pub struct Calls(Arc<Mutex<Vec<Call>>>);

impl Calls {
    pub fn all(&self) -> Vec<Call> {
        self.0.lock().unwrap().clone()
    }

    /// The Events published: (type, reason).
    pub fn events(&self) -> Vec<(String, String)> {
        let calls = self.all();
        calls.iter().filter_map(|c| c.event()).map(|(t, r)| (t.into(), r.into())).collect()
    }

    /// The bodies of the status writes to `resource` (a path up to the name).
    pub fn status_writes(&self, resource: &str) -> Vec<Value> {
        let path = format!("{resource}/status");
        let calls = self.all();
        calls
            .iter()
            .filter(|c| c.method == "PATCH" && c.resource() == path)
            .map(|c| c.body.clone())
            .collect()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap().clear()
    }
}

/// An answer: HTTP status and JSON body.
pub type Answer = (u16, Value);

/// A Context whose client is the mock, answering each request with `answer`,
/// and whose scheduler client reaches every scheduler on 127.0.0.1 (where
/// tests choose ports nothing listens on).
pub fn context(answer: impl Fn(&Call) -> Answer + Send + Sync + 'static) -> (Arc<Context>, Calls) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls = Calls::default();
    let recorded = calls.clone();
    tokio::spawn(async move {
        while let Some((request, reply)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let call = Call {
                method: parts.method.to_string(),
                path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let (status, answer) = answer(&call);
            recorded.0.lock().unwrap().push(call);
            let response = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap();
            reply.send_response(response);
        }
    });
    let client = Client::new(service, "default");
    let scheduler = SchedulerApi::new(Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let ctx = Context::new(client, Config::default(), Arc::new(Metrics::default()), scheduler);
    (Arc::new(ctx), calls)
}

/// The echo of a write: what was sent, as the API server would return it.
pub fn echo(call: &Call) -> Answer {
    (200, call.body.clone())
}

/// A Status answer, as the API server sends for a refused request.
pub fn refused(code: u16, reason: &str, message: &str) -> Answer {
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    (code, status)
}

/// `obj` with the status a status write sent.
pub fn with_status(obj: &Value, call: &Call) -> Answer {
    let mut obj = obj.clone();
    obj["status"] = call.body["status"].clone();
    (200, obj)
}
