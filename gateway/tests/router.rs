//! The REST API in process: the gateway's real axum `Router`, authenticator,
//! options and limits, with an in-memory [`Backend`] in place of dask
//! processes or a Kubernetes API. Each request goes through
//! `tower::ServiceExt::oneshot`; no socket, no control plane.
//!
//! The status codes are the ones the dask-gateway client relies on: 401 makes
//! it send credentials, 404 and 422 become `ValueError`, 409
//! `GatewayClusterError`, and every error body is `{"error": "..."}`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use base64::Engine;
use dask_gateway::backends::logs::{LogBounds, LogSection, LogStream, Source, last_lines};
use dask_gateway::backends::{Backend, BackendError, Created, StartSource};
use dask_gateway::config::Config;
use dask_gateway::domain::models::{Cluster, ClusterStatus, Heartbeat};
use dask_gateway::{Gateway, heartbeat_router, router};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::watch;
use tower::ServiceExt;

/// Clusters in a map: created PENDING, RUNNING on a heartbeat, STOPPED on stop.
struct FakeBackend {
    clusters: Mutex<BTreeMap<String, Cluster>>,
    changes: watch::Sender<u64>,
    /// When set, creates fail with this internal detail (a store's own words).
    fault: Mutex<Option<&'static str>>,
    /// The worker count of each cluster's last heartbeat, as the gateway passed it on.
    counts: Mutex<BTreeMap<String, i64>>,
}

impl FakeBackend {
    fn new() -> Self {
        Self {
            clusters: Mutex::default(),
            changes: watch::Sender::new(0),
            fault: Mutex::default(),
            counts: Mutex::default(),
        }
    }

    fn cluster(&self, name: &str) -> Option<Cluster> {
        self.clusters.lock().unwrap().get(name).cloned()
    }

    fn count(&self) -> usize {
        self.clusters.lock().unwrap().len()
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut Cluster)) -> Result<(), BackendError> {
        let mut clusters = self.clusters.lock().unwrap();
        let cluster = clusters.get_mut(name).ok_or_else(|| BackendError::NotFound(name.into()))?;
        change(cluster);
        self.changes.send_modify(|n| *n += 1);
        Ok(())
    }
}

#[async_trait]
impl Backend for FakeBackend {
    async fn create(&self, cluster: Cluster, max: Option<u32>) -> Result<Created, BackendError> {
        if let Some(detail) = *self.fault.lock().unwrap() {
            return Err(BackendError::Other(anyhow::anyhow!(detail)));
        }
        let mut clusters = self.clusters.lock().unwrap();
        let mine = clusters
            .values()
            .filter(|c| c.username == cluster.username && c.status.is_active())
            .count();
        if let Some(max) = max
            && mine as u64 >= u64::from(max)
        {
            return Err(BackendError::LimitReached(format!("the limit is {max}")));
        }
        let created = Created { name: cluster.name.clone(), source: StartSource::Cold };
        clusters.insert(cluster.name.clone(), cluster);
        drop(clusters);
        self.changes.send_modify(|n| *n += 1);
        Ok(created)
    }
    async fn get(&self, name: &str) -> Option<Cluster> {
        self.cluster(name)
    }
    async fn list(&self) -> Vec<Cluster> {
        self.clusters.lock().unwrap().values().cloned().collect()
    }
    async fn stop(&self, name: &str, _why: Option<&str>) -> Result<(), BackendError> {
        // Stopping an unknown cluster is no error (the trait's contract).
        let _ = self.update(name, |c| c.status = ClusterStatus::Stopped);
        Ok(())
    }
    async fn heartbeat(&self, name: &str, beat: Heartbeat) -> Result<(), BackendError> {
        self.counts.lock().unwrap().insert(name.to_owned(), beat.count);
        self.update(name, |c| {
            c.status = ClusterStatus::Running;
            c.addresses = Some(beat.addresses());
        })
    }
    async fn fail(&self, name: &str, reason: &str) {
        let _ = self.update(name, |c| {
            c.status = ClusterStatus::Failed;
            c.reason = Some(reason.into());
        });
    }
    /// 1500 lines for the scheduler, three for worker `w1`, cut to the bounds.
    async fn logs(&self, _cluster: &Cluster, bounds: LogBounds) -> Result<LogStream, BackendError> {
        let lines = |n: usize| (0..n).map(|i| format!("line {i}")).collect::<Vec<_>>();
        let sections = [
            LogSection { source: Source::Scheduler, lines: last_lines(lines(1500), bounds) },
            LogSection { source: Source::Worker("w1".into()), lines: last_lines(lines(3), bounds) },
        ];
        Ok(Box::pin(futures::stream::iter(sections)))
    }
    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// The gateway's router over a fresh fake backend, with `config` (TOML).
fn gateway(config: &str) -> (Router, Arc<FakeBackend>) {
    let backend = Arc::new(FakeBackend::new());
    let config = Config::parse(config).expect("test config");
    let gateway = Gateway::new(&config, backend.clone()).expect("gateway");
    (router(Arc::new(gateway), ""), backend)
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    /// The `{"error": ...}` message, which every error answer must carry.
    fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_else(|| panic!("no error message: {}", self.body))
    }
}

/// Who sends a request: nobody, a user (simple auth: any name, no password)
/// or a cluster's scheduler with the cluster's token.
enum As<'a> {
    Anonymous,
    User(&'a str),
    Token(&'a str),
}

async fn call(app: &Router, method: Method, uri: &str, who: As<'_>, body: &str) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    request = match who {
        As::Anonymous => request,
        As::User(name) => {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{name}:"));
            request.header(header::AUTHORIZATION, format!("Basic {basic}"))
        }
        As::Token(token) => request.header(header::AUTHORIZATION, format!("token {token}")),
    };
    if !body.is_empty() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let response =
        app.clone().oneshot(request.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!("{status}: not JSON ({e}): {}", String::from_utf8_lossy(&bytes))
        })
    };
    Answer { status, headers, body }
}

/// Creates a cluster as `user`; its name.
async fn create(app: &Router, user: &str) -> String {
    let answer = call(app, Method::POST, "/api/v1/clusters/", As::User(user), "{}").await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    answer.body["name"].as_str().expect("a name").to_owned()
}

#[tokio::test]
async fn a_cluster_lives_pending_running_stopped_through_the_api() {
    let (app, backend) = gateway("");
    let name = create(&app, "alice").await;
    let cluster = backend.cluster(&name).expect("the backend was asked to create it");
    assert_eq!((cluster.username.as_str(), cluster.status), ("alice", ClusterStatus::Pending));

    let report =
        call(&app, Method::GET, &format!("/api/v1/clusters/{name}"), As::User("alice"), "").await;
    assert_eq!(report.status, StatusCode::OK);
    assert_eq!(report.body["status"], "PENDING");
    assert_eq!(report.body["tls_cert"], Value::Null, "credentials only once it runs");

    let beat = json!({
        "scheduler_address": "tls://127.0.0.1:1", "api_address": "http://127.0.0.1:1", "count": 0,
    });
    let uri = format!("/api/v1/clusters/{name}/heartbeat");
    let answer = call(&app, Method::POST, &uri, As::Token(&cluster.token), &beat.to_string()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let report =
        call(&app, Method::GET, &format!("/api/v1/clusters/{name}"), As::User("alice"), "").await;
    assert_eq!(report.body["status"], "RUNNING");
    assert_eq!(report.body["tls_cert"], cluster.tls_cert.as_str());

    let answer =
        call(&app, Method::DELETE, &format!("/api/v1/clusters/{name}"), As::User("alice"), "")
            .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(backend.cluster(&name).unwrap().status, ClusterStatus::Stopped);
    let list = call(&app, Method::GET, "/api/v1/clusters/", As::User("alice"), "").await;
    assert_eq!(list.body, json!({}), "a stopped cluster leaves the default list");
}

#[tokio::test]
async fn missing_or_bad_credentials_are_401_with_a_challenge() {
    let (app, backend) = gateway("");
    for uri in ["/api/v1/clusters/", "/api/v1/options", "/api/v1/clusters/some-name"] {
        let answer = call(&app, Method::GET, uri, As::Anonymous, "").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(answer.headers[header::WWW_AUTHENTICATE], "Basic", "{uri}");
        assert_eq!(answer.error(), "Authentication required");
    }
    let answer = call(&app, Method::POST, "/api/v1/clusters/", As::Token("nobody's"), "{}").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(backend.count(), 0, "nothing was created");

    // A heartbeat needs its cluster's own token; a user's login is not enough.
    let name = create(&app, "alice").await;
    let uri = format!("/api/v1/clusters/{name}/heartbeat");
    for who in [As::Anonymous, As::User("alice"), As::Token("not-the-token")] {
        let answer = call(&app, Method::POST, &uri, who, "{}").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.headers[header::WWW_AUTHENTICATE], "token");
    }
    assert_eq!(backend.cluster(&name).unwrap().status, ClusterStatus::Pending);
}

#[tokio::test]
async fn another_users_cluster_is_403_and_stays_untouched() {
    let (app, backend) = gateway("[auth]\nadmins = [\"root\"]\n");
    let name = create(&app, "alice").await;
    let uri = format!("/api/v1/clusters/{name}");

    let answer = call(&app, Method::GET, &uri, As::User("bob"), "").await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(answer.error().contains("bob"), "{}", answer.error());
    for (method, path, body) in [
        (Method::DELETE, uri.clone(), ""),
        (Method::POST, format!("{uri}/scale"), r#"{"count": 2}"#),
        (Method::POST, format!("{uri}/adapt"), r#"{"minimum": 1, "maximum": 2}"#),
    ] {
        let answer = call(&app, method.clone(), &path, As::User("bob"), body).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {path}");
    }
    assert_eq!(backend.cluster(&name).unwrap().status, ClusterStatus::Pending);
    let list = call(&app, Method::GET, "/api/v1/clusters/", As::User("bob"), "").await;
    assert_eq!(list.body, json!({}), "bob does not see alice's cluster");

    // An admin sees and manages everybody's.
    let answer = call(&app, Method::GET, &uri, As::User("root"), "").await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = call(&app, Method::DELETE, &uri, As::User("root"), "").await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(backend.cluster(&name).unwrap().status, ClusterStatus::Stopped);
}

#[tokio::test]
async fn an_unknown_cluster_is_404() {
    let (app, _) = gateway("");
    let answer = call(&app, Method::GET, "/api/v1/clusters/nope", As::User("alice"), "").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.error().contains("nope"), "{}", answer.error());
    let answer = call(
        &app,
        Method::POST,
        "/api/v1/clusters/nope/scale",
        As::User("alice"),
        r#"{"count": 1}"#,
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    // Stopping is idempotent, so an unknown cluster stops without complaint.
    let answer = call(&app, Method::DELETE, "/api/v1/clusters/nope", As::User("alice"), "").await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn limits_and_clusters_not_running_are_409() {
    let (app, backend) = gateway("[limits]\nuser_max_clusters = 1\n");
    let name = create(&app, "alice").await;

    let answer = call(&app, Method::POST, "/api/v1/clusters/", As::User("alice"), "{}").await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert!(answer.error().contains("limit is 1"), "{}", answer.error());
    assert_eq!(backend.count(), 1, "the refused cluster was not created");
    // The limit is per user.
    create(&app, "bob").await;

    // A PENDING cluster has no scheduler to take orders yet.
    for (path, body) in [("scale", r#"{"count": 2}"#), ("adapt", r#"{"maximum": 2}"#)] {
        let uri = format!("/api/v1/clusters/{name}/{path}");
        let answer = call(&app, Method::POST, &uri, As::User("alice"), body).await;
        assert_eq!(answer.status, StatusCode::CONFLICT, "{path}");
        assert!(answer.error().contains("not running"), "{}", answer.error());
    }
}

#[tokio::test]
async fn bad_input_is_422_and_creates_nothing() {
    let (app, backend) = gateway("");
    for (body, names) in [
        ("{not json", "JSON"),
        // An object or nothing: other JSON is no request.
        (r#""x""#, "JSON"),
        ("[1, 2]", "JSON"),
        (r#"{"cluster_options": 5}"#, "cluster_options"),
        (r#"{"cluster_options": {"profile": "enormous"}}"#, "enormous"),
    ] {
        let answer = call(&app, Method::POST, "/api/v1/clusters/", As::User("alice"), body).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(answer.error().contains(names), "{body}: {}", answer.error());
    }
    assert_eq!(backend.count(), 0, "no half-created cluster");

    let answer =
        call(&app, Method::GET, "/api/v1/clusters/?status=bogus", As::User("alice"), "").await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(answer.error().contains("bogus"), "{}", answer.error());

    // Bodies are checked before the cluster's state: these are 422, not 409.
    let name = create(&app, "alice").await;
    for (path, body, names) in [
        ("scale", r#"{"count": -1}"#, "-1"),
        ("scale", r#"{"count": "two"}"#, "two"),
        ("scale", "{}", "null"),
        ("adapt", r#"{"minimum": 3, "maximum": 1}"#, "minimum"),
        ("adapt", r#"{"active": "yes"}"#, "active"),
        ("adapt", "[1, 2]", "JSON"),
    ] {
        let uri = format!("/api/v1/clusters/{name}/{path}");
        let answer = call(&app, Method::POST, &uri, As::User("alice"), body).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{path} {body}");
        assert!(answer.error().contains(names), "{path} {body}: {}", answer.error());
    }
}

#[tokio::test]
async fn a_backend_fault_is_an_opaque_500_naming_its_request_id() {
    let (app, backend) = gateway("");
    *backend.fault.lock().unwrap() = Some("etcd: secret internal detail");
    let answer = call(&app, Method::POST, "/api/v1/clusters/", As::User("alice"), "{}").await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    let id = answer.headers["x-request-id"].to_str().unwrap();
    assert!(!id.is_empty() && answer.error().contains(id), "{}", answer.error());
    assert!(!answer.error().contains("secret"), "internals stay in the log: {}", answer.error());
    // Every answer carries its id, errors or not.
    let answer = call(&app, Method::GET, "/api/v1/clusters/", As::User("alice"), "").await;
    assert!(answer.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn a_scheduler_stops_its_own_cluster_with_its_token_alone() {
    let (app, backend) = gateway("");
    let name = create(&app, "alice").await;
    let token = backend.cluster(&name).unwrap().token;
    let uri = format!("/api/v1/clusters/{name}");
    let answer = call(&app, Method::DELETE, &uri, As::Token("not-the-token"), "").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "a wrong token is no login either");
    assert_eq!(backend.cluster(&name).unwrap().status, ClusterStatus::Pending);
    let answer = call(&app, Method::DELETE, &uri, As::Token(&token), "").await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(backend.cluster(&name).unwrap().status, ClusterStatus::Stopped);
}

#[tokio::test]
async fn the_heartbeat_listener_takes_cluster_tokens_and_no_user_logins() {
    let backend = Arc::new(FakeBackend::new());
    let config = Config::parse("").expect("test config");
    let gateway = Arc::new(Gateway::new(&config, backend.clone()).expect("gateway"));
    let (public, heartbeats) = (router(gateway.clone(), ""), heartbeat_router(gateway));
    let name = create(&public, "alice").await;
    let uri = format!("/api/v1/clusters/{name}");
    // The owner's login works on the public port, never on the schedulers' one
    // (pods running user code reach it: no password checks to spend there).
    let answer = call(&heartbeats, Method::DELETE, &uri, As::User("alice"), "").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let answer = call(&heartbeats, Method::GET, "/api/v1/clusters/", As::User("alice"), "").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "no user routes there");
    assert_eq!(backend.cluster(&name).unwrap().status, ClusterStatus::Pending);
    let token = backend.cluster(&name).unwrap().token;
    let answer = call(&heartbeats, Method::DELETE, &uri, As::Token(&token), "").await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(backend.cluster(&name).unwrap().status, ClusterStatus::Stopped);
}

#[tokio::test]
async fn logs_go_to_the_owner_and_admins_bounded() {
    let (app, backend) = gateway("[auth]\nadmins = [\"root\"]\n");
    let name = create(&app, "alice").await;
    let uri = format!("/api/v1/clusters/{name}/logs");

    let answer = call(&app, Method::GET, &uri, As::User("alice"), "").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.headers[header::CONTENT_TYPE], "application/json");
    let scheduler = answer.body["scheduler"].as_array().unwrap();
    assert_eq!(
        (scheduler.len(), scheduler[99].as_str()),
        (100, Some("line 1499")),
        "100 by default"
    );
    assert_eq!(answer.body["workers"], json!({ "w1": ["line 0", "line 1", "line 2"] }));
    assert_eq!((&answer.body["status"], &answer.body["reason"]), (&json!("PENDING"), &Value::Null));
    assert_eq!(answer.body["truncated"], false);

    let answer = call(&app, Method::GET, &format!("{uri}?lines=2"), As::User("alice"), "").await;
    assert_eq!(answer.body["scheduler"], json!(["line 1498", "line 1499"]));
    assert_eq!(answer.body["workers"]["w1"], json!(["line 1", "line 2"]));
    let answer =
        call(&app, Method::GET, &format!("{uri}?lines=99999"), As::User("alice"), "").await;
    assert_eq!(answer.body["scheduler"].as_array().unwrap().len(), 1000, "capped at 1000");
    for bad in ["ten", "-1", "1.5"] {
        let answer =
            call(&app, Method::GET, &format!("{uri}?lines={bad}"), As::User("alice"), "").await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert!(answer.error().contains("lines"), "{}", answer.error());
    }

    let answer = call(&app, Method::GET, &uri, As::User("bob"), "").await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(answer.error().contains("bob"), "{}", answer.error());
    assert_eq!(
        call(&app, Method::GET, &uri, As::Anonymous, "").await.status,
        StatusCode::UNAUTHORIZED
    );
    let answer = call(&app, Method::GET, &uri, As::User("root"), "").await;
    assert_eq!(answer.status, StatusCode::OK, "admins read every cluster's logs");
    let answer = call(&app, Method::GET, "/api/v1/clusters/nope/logs", As::User("alice"), "").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    // The cluster's own token is for heartbeats, not for reading logs.
    let token = backend.cluster(&name).unwrap().token;
    assert_eq!(
        call(&app, Method::GET, &uri, As::Token(&token), "").await.status,
        StatusCode::UNAUTHORIZED
    );

    // A failed cluster's logs say why it failed.
    backend.fail(&name, "the scheduler exited (exit status: 1)").await;
    let answer = call(&app, Method::GET, &uri, As::User("alice"), "").await;
    assert_eq!(answer.body["status"], "FAILED");
    assert_eq!(answer.body["reason"], "the scheduler exited (exit status: 1)");
}

#[tokio::test]
async fn every_user_route_is_in_the_openapi_document() {
    let (app, _) = gateway("");
    let doc = call(&app, Method::GET, "/api/openapi.json", As::Anonymous, "").await.body;
    let logs = &doc["paths"]["/api/v1/clusters/{name}/logs"]["get"];
    assert_eq!(
        logs["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ClusterLogs"
    );
    assert!(
        doc["components"]["schemas"]["ClusterLogs"]["required"]
            .as_array()
            .unwrap()
            .contains(&json!("workers"))
    );
}

/// A JupyterHub answering `GET /hub/api/user` from `tokens` (token → the
/// Hub's user model), on loopback; its API URL.
async fn fake_hub(tokens: Value) -> String {
    let app = Router::new().route(
        "/hub/api/user",
        axum::routing::get(move |headers: HeaderMap| {
            let tokens = tokens.clone();
            async move {
                let token = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("token "))
                    .unwrap_or_default();
                match tokens.get(token) {
                    Some(user) => (StatusCode::OK, axum::Json(user.clone())),
                    None => (StatusCode::FORBIDDEN, axum::Json(json!({"status": 403}))),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    format!("http://{addr}/hub/api")
}

/// By default the Hub's word that a token is a user's is enough, as in
/// dask-gateway-server: a notebook server's own token has only the Hub's
/// `server` role scopes. Another service's token still needs the scope.
#[tokio::test]
async fn by_default_any_users_token_passes_and_a_service_needs_the_scope() {
    let hub = fake_hub(json!({
        "server": {"kind": "user", "name": "alice", "groups": [],
                   "scopes": ["users:activity!user=alice", "access:servers!server=alice/"]},
        "cron": {"kind": "service", "name": "cron", "scopes": ["read:users"]},
    }))
    .await;
    let (app, _) =
        gateway(&format!("[auth]\ntype = \"jupyterhub\"\njupyterhub_api_url = \"{hub}\"\n"));
    let server = call(&app, Method::GET, "/api/v1/clusters/", As::Token("server"), "").await;
    assert_eq!(server.status, StatusCode::OK, "{}", server.body);
    let cron = call(&app, Method::GET, "/api/v1/clusters/", As::Token("cron"), "").await;
    assert_eq!(cron.status, StatusCode::FORBIDDEN);
    assert!(cron.error().contains("access:services!service=dask-gateway"), "{}", cron.error());
    let unknown = call(&app, Method::GET, "/api/v1/clusters/", As::Token("mallory"), "").await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn hub_groups_choose_profiles_and_limits_and_the_service_scope_is_required() {
    let hub = fake_hub(json!({
        "alice": {"kind": "user", "name": "alice", "groups": ["staff"],
                  "scopes": ["self", "access:services!service=dask-gateway"]},
        "bob": {"kind": "user", "name": "bob", "groups": ["chess"], "scopes": ["access:services"]},
        "eve": {"kind": "user", "name": "eve", "groups": ["staff"], "scopes": ["self"]},
    }))
    .await;
    let (app, backend) = gateway(&format!(
        r#"
[auth]
type = "jupyterhub"
jupyterhub_api_url = "{hub}"
jupyterhub_require_access_scope = true
default_profiles = ["small"]
[auth.groups.staff]
profiles = ["small", "medium"]
user_max_clusters = 2
cluster_max_workers = 4
[limits]
user_max_clusters = 1
cluster_max_workers = 1
"#
    ));
    let offered = |answer: &Answer| answer.body["cluster_options"][0]["spec"]["options"].clone();
    let alice = call(&app, Method::GET, "/api/v1/options", As::Token("alice"), "").await;
    assert_eq!(offered(&alice), json!(["small", "medium"]));
    let bob = call(&app, Method::GET, "/api/v1/options", As::Token("bob"), "").await;
    assert_eq!(offered(&bob), json!(["small"]));

    // A token without access to the service: 403 naming the scope.
    let eve = call(&app, Method::GET, "/api/v1/options", As::Token("eve"), "").await;
    assert_eq!(eve.status, StatusCode::FORBIDDEN);
    assert!(eve.error().contains("access:services!service=dask-gateway"), "{}", eve.error());
    let unknown = call(&app, Method::GET, "/api/v1/options", As::Token("mallory"), "").await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);

    // A profile the groups do not allow: 422 naming it, nothing created.
    let medium = r#"{"cluster_options": {"profile": "medium"}}"#;
    let answer = call(&app, Method::POST, "/api/v1/clusters/", As::Token("bob"), medium).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(answer.error().contains("Profile 'medium' is not allowed"), "{}", answer.error());
    assert_eq!(backend.count(), 0);

    // Limits: staff may have two clusters, the others one.
    for _ in 0..2 {
        let answer =
            call(&app, Method::POST, "/api/v1/clusters/", As::Token("alice"), medium).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    }
    let third = call(&app, Method::POST, "/api/v1/clusters/", As::Token("alice"), "{}").await;
    assert_eq!(third.status, StatusCode::CONFLICT, "{}", third.body);
    let first = call(&app, Method::POST, "/api/v1/clusters/", As::Token("bob"), "{}").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let second = call(&app, Method::POST, "/api/v1/clusters/", As::Token("bob"), "{}").await;
    assert_eq!(second.status, StatusCode::CONFLICT, "{}", second.body);

    // A heartbeat (no login) gets the owner's limits: staff's 4 workers, not the default 1.
    let name = first.body["name"].as_str().unwrap();
    let mine = backend.list().await.into_iter().find(|c| c.username == "alice").unwrap();
    for (cluster, expected) in [(&mine, 4), (&backend.cluster(name).unwrap(), 1)] {
        let beat = json!({
            "scheduler_address": "tls://127.0.0.1:1", "api_address": "http://127.0.0.1:1", "count": 10,
        });
        let uri = format!("/api/v1/clusters/{}/heartbeat", cluster.name);
        let answer =
            call(&app, Method::POST, &uri, As::Token(&cluster.token), &beat.to_string()).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(backend.counts.lock().unwrap()[&cluster.name], expected, "{}", cluster.username);
    }
}

#[tokio::test]
async fn a_browser_without_a_session_is_sent_to_the_hubs_login() {
    let hub = fake_hub(json!({})).await;
    let (app, _) = gateway(&format!(
        "[auth]\ntype = \"jupyterhub\"\njupyterhub_api_url = \"{hub}\"\njupyterhub_authorize_url = \"https://hub.example/hub/api/oauth2/authorize\"\n"
    ));
    let page = |accept: &'static str| {
        Request::get("/clusters/abc/status")
            .header(header::ACCEPT, accept)
            .body(Body::empty())
            .unwrap()
    };
    let response = app.clone().oneshot(page("text/html,*/*")).await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()[header::LOCATION].to_str().unwrap();
    let state = location
        .strip_prefix("https://hub.example/hub/api/oauth2/authorize?client_id=service-dask-gateway&redirect_uri=%2Foauth_callback&response_type=code&state=")
        .and_then(|rest| rest.split_once("&code_challenge="))
        .filter(|(_, pkce)| pkce.ends_with("&code_challenge_method=S256"))
        .unwrap_or_else(|| panic!("{location}"))
        .0;
    let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.starts_with(&format!("dask-gateway-oauth-state={state}.")), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");

    // The API client (no text/html) still gets the 401 and its challenge.
    let response = app.clone().oneshot(page("application/json")).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "jupyterhub");
}

// --- The web page (gateway/src/ui*, events.rs) -----------------------------

/// The gateway's router under `prefix`, over a fresh fake backend.
fn gateway_under(prefix: &str, config: &str) -> (Router, Arc<FakeBackend>) {
    let backend = Arc::new(FakeBackend::new());
    let config = Config::parse(&format!("prefix = \"{prefix}\"\n{config}")).expect("test config");
    let gateway = Gateway::new(&config, backend.clone()).expect("gateway");
    (router(Arc::new(gateway), prefix), backend)
}

async fn send(app: &Router, request: Request<Body>) -> axum::response::Response {
    app.clone().oneshot(request).await.unwrap()
}

async fn text(response: axum::response::Response) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Signs in through the login form; the session cookie (`name=value`).
async fn sign_in(app: &Router, prefix: &str, user: &str, password: &str) -> String {
    let request = Request::post(format!("{prefix}/login"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .body(Body::from(format!("username={user}&password={password}&next={prefix}/")))
        .unwrap();
    let response = send(app, request).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[header::LOCATION], format!("{prefix}/").as_str());
    let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    cookie.split(';').next().unwrap().to_owned()
}

fn get_with(uri: &str, cookie: &str) -> Request<Body> {
    Request::get(uri).header(header::COOKIE, cookie).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn the_page_sends_strangers_to_the_login_form_and_serves_the_signed_in() {
    for prefix in ["", "/services/dask-gateway"] {
        let (app, _) = gateway_under(prefix, "[auth]\npassword = \"pw\"\n");
        let response =
            send(&app, Request::get(format!("{prefix}/")).body(Body::empty()).unwrap()).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let login = response.headers()[header::LOCATION].to_str().unwrap().to_owned();
        assert_eq!(login, format!("{prefix}/login?next={prefix}/"));

        let form = send(&app, Request::get(&login).body(Body::empty()).unwrap()).await;
        assert_eq!(form.status(), StatusCode::OK);
        let csp = form.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().to_owned();
        assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
        let html = text(form).await;
        assert!(html.contains(&format!("action=\"{prefix}/login\"")), "{html}");

        let cookie = sign_in(&app, prefix, "alice", "pw").await;
        let page = send(&app, get_with(&format!("{prefix}/"), &cookie)).await;
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()[header::X_FRAME_OPTIONS], "DENY");
        let html = text(page).await;
        assert!(html.contains(&format!("src=\"{prefix}/ui/app.js\"")), "{html}");
        assert!(html.contains("content=\"alice\""));

        let script =
            send(&app, Request::get(format!("{prefix}/ui/app.js")).body(Body::empty()).unwrap())
                .await;
        assert_eq!(script.status(), StatusCode::OK);
        assert!(
            script.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/javascript")
        );
        let missing =
            send(&app, Request::get(format!("{prefix}/ui/nope.js")).body(Body::empty()).unwrap())
                .await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        if !prefix.is_empty() {
            let bare = send(&app, Request::get(prefix).body(Body::empty()).unwrap()).await;
            assert_eq!(bare.status(), StatusCode::PERMANENT_REDIRECT);
            assert_eq!(bare.headers()[header::LOCATION], format!("{prefix}/").as_str());
        }
    }
}

#[tokio::test]
async fn the_login_form_checks_the_password_and_refuses_other_sites() {
    let (app, _) = gateway("[auth]\npassword = \"pw\"\n");
    let post = |body: &'static str, site: &'static str| {
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("sec-fetch-site", site)
            .body(Body::from(body))
            .unwrap()
    };
    let wrong = send(&app, post("username=alice&password=nope", "same-origin")).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(header::SET_COOKIE).is_none());
    assert!(text(wrong).await.contains("Wrong user name or password"));
    let colon = send(&app, post("username=a%3Ab&password=pw", "same-origin")).await;
    assert_eq!(colon.status(), StatusCode::BAD_REQUEST);
    // Login CSRF: another site's form is refused before any check.
    let forged = send(&app, post("username=alice&password=pw", "cross-site")).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    // `next` never leads off the gateway.
    let away =
        send(&app, post("username=alice&password=pw&next=//evil.example/", "same-origin")).await;
    assert_eq!(away.headers()[header::LOCATION], "/");

    // Signing out: the browser forgets the (sealed, stateless) session.
    let cookie = sign_in(&app, "", "alice", "pw").await;
    let options = send(&app, get_with("/api/v1/options", &cookie)).await;
    assert_eq!(options.status(), StatusCode::OK);
    let out = Request::post("/logout")
        .header(header::COOKIE, &cookie)
        .header("sec-fetch-site", "same-origin")
        .body(Body::empty())
        .unwrap();
    let out = send(&app, out).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let cleared = out.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(cleared.starts_with("dask-gateway=;") && cleared.contains("Max-Age=0"), "{cleared}");
}

#[tokio::test]
async fn browsers_on_other_origins_cannot_change_state_api_clients_can() {
    let (app, backend) = gateway("");
    let create = |pairs: &[(&'static str, &'static str)]| {
        let basic = base64::engine::general_purpose::STANDARD.encode("alice:");
        let mut request = Request::post("/api/v1/clusters/")
            .header(header::AUTHORIZATION, format!("Basic {basic}"))
            .header(header::HOST, "gw:8000");
        for (k, v) in pairs {
            request = request.header(*k, *v);
        }
        request.body(Body::from("{}")).unwrap()
    };
    assert_eq!(send(&app, create(&[("origin", "https://evil.example")])).await.status(), 403);
    assert_eq!(send(&app, create(&[("sec-fetch-site", "same-site")])).await.status(), 403);
    assert_eq!(backend.count(), 0, "nothing was created");
    assert_eq!(send(&app, create(&[])).await.status(), 201, "the Python client sends neither");
    assert_eq!(send(&app, create(&[("sec-fetch-site", "same-origin")])).await.status(), 201);
    assert_eq!(send(&app, create(&[("origin", "http://gw:8000")])).await.status(), 201);
    // The page's calls get no Basic challenge (no browser password prompt).
    let anonymous = Request::get("/api/v1/options")
        .header("x-dask-gateway-page", "1")
        .body(Body::empty())
        .unwrap();
    let answer = send(&app, anonymous).await;
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert!(answer.headers().get(header::WWW_AUTHENTICATE).is_none());
}

#[tokio::test]
async fn only_admins_get_the_per_user_summary() {
    let (app, backend) = gateway("[auth]\nadmins = [\"root\"]\n");
    let a = create(&app, "alice").await;
    create(&app, "alice").await;
    create(&app, "bob").await;
    backend.update(&a, |c| c.workers = 3).unwrap();
    for (who, status) in [(As::Anonymous, 401), (As::User("alice"), 403)] {
        let answer = call(&app, Method::GET, "/api/v1/admin/summary", who, "").await;
        assert_eq!(answer.status, status, "{}", answer.body);
    }
    let answer = call(&app, Method::GET, "/api/v1/admin/summary", As::User("root"), "").await;
    assert_eq!(answer.status, StatusCode::OK);
    let users = answer.body["users"].as_array().unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(
        (users[0]["user"].as_str(), users[0]["clusters"].as_u64()),
        (Some("alice"), Some(2))
    );
    assert_eq!(users[0]["workers"], 3);
    assert_eq!(users[1]["user"], "bob");
}

/// The next server-sent event of `body` (`event` name, `data`), skipping
/// keep-alive comments; `None` when the stream ends.
async fn next_event(body: &mut Body) -> Option<(String, Value)> {
    let mut buffer = String::new();
    loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
            .await
            .expect("an event within 10 s")?
            .unwrap();
        if let Ok(data) = frame.into_data() {
            buffer.push_str(&String::from_utf8_lossy(&data));
        }
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if !name.is_empty() {
                return Some((name, serde_json::from_str(&data).unwrap()));
            }
        }
    }
}

#[tokio::test]
async fn live_events_show_the_users_own_clusters_and_end_with_the_session() {
    let (app, backend) = gateway("[auth]\nadmins = [\"root\"]\n");
    let bobs = create(&app, "bob").await;
    let anonymous = send(&app, Request::get("/api/v1/events").body(Body::empty()).unwrap()).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // A browser's stream: the session cookie, not API credentials.
    let basic = call(&app, Method::GET, "/api/v1/events", As::User("alice"), "").await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED);

    let cookie = sign_in(&app, "", "alice", "").await;
    let response = send(&app, get_with("/api/v1/events", &cookie)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = response.into_body();
    let (name, first) = next_event(&mut body).await.unwrap();
    assert_eq!((name.as_str(), &first["user"]), ("clusters", &json!("alice")));
    assert_eq!(first["clusters"], json!([]), "bob's cluster is not alice's to see");
    assert!(first["summary"].is_null());

    // A change is pushed: alice's new cluster, and still nothing of bob's.
    let mine = create(&app, "alice").await;
    backend.update(&bobs, |c| c.workers = 5).unwrap();
    let (_, next) = next_event(&mut body).await.unwrap();
    let names: Vec<&str> =
        next["clusters"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, [mine.as_str()]);
    assert_eq!(next["clusters"][0]["user"], "alice");
    assert!(next["clusters"][0].get("tls_key").is_none(), "no secrets in the page's view");

    // A failure is pushed with its reason.
    backend.fail(&mine, "the scheduler did not start within 60 s").await;
    let (_, failed) = next_event(&mut body).await.unwrap();
    assert_eq!(failed["clusters"][0]["status"], "FAILED");
    assert_eq!(failed["clusters"][0]["reason"], "the scheduler did not start within 60 s");

    // An admin's stream has everyone's clusters and the summary.
    let root = sign_in(&app, "", "root", "").await;
    let mut admin = send(&app, get_with("/api/v1/events", &root)).await.into_body();
    let (_, all) = next_event(&mut admin).await.unwrap();
    assert_eq!(all["clusters"].as_array().unwrap().len(), 2, "bob's, and alice's failed one");
    let summary = all["summary"].as_array().unwrap();
    assert_eq!(summary.len(), 1, "active clusters only: {summary:?}");
    assert_eq!((&summary[0]["user"], &summary[0]["workers"]), (&json!("bob"), &json!(5)));

    // Signing out ends alice's stream (and only hers) at once.
    let out = Request::post("/logout")
        .header(header::COOKIE, &cookie)
        .header("sec-fetch-site", "same-origin")
        .body(Body::empty())
        .unwrap();
    send(&app, out).await;
    let (name, _) = next_event(&mut body).await.unwrap();
    assert_eq!(name, "signed-out");
    assert!(next_event(&mut body).await.is_none(), "the stream ends");
    backend.update(&mine, |c| c.workers = 1).unwrap();
    let (name, _) = next_event(&mut admin).await.unwrap();
    assert_eq!(name, "clusters", "root's stream goes on");
}

#[tokio::test]
async fn live_streams_are_capped_per_user() {
    let (app, _) = gateway("");
    let cookie = sign_in(&app, "", "alice", "").await;
    let mut open = Vec::new();
    for _ in 0..dask_gateway::http::streams::MAX_STREAMS_PER_USER {
        let response = send(&app, get_with("/api/v1/events", &cookie)).await;
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
    }
    let over = send(&app, get_with("/api/v1/events", &cookie)).await;
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    let bob = sign_in(&app, "", "bob", "").await;
    assert_eq!(send(&app, get_with("/api/v1/events", &bob)).await.status(), StatusCode::OK);
    open.pop();
    let again = send(&app, get_with("/api/v1/events", &cookie)).await;
    assert_eq!(again.status(), StatusCode::OK, "a closed stream gives its place back");
}

#[tokio::test]
async fn under_jupyterhub_auth_the_page_sends_a_stranger_to_the_hub() {
    let hub = fake_hub(json!({})).await;
    let (app, _) = gateway(&format!(
        "[auth]\ntype = \"jupyterhub\"\njupyterhub_api_url = \"{hub}\"\njupyterhub_authorize_url = \"https://hub.example/hub/api/oauth2/authorize\"\n"
    ));
    let page = Request::get("/").header(header::ACCEPT, "text/html").body(Body::empty()).unwrap();
    let response = send(&app, page).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()[header::LOCATION].to_str().unwrap();
    assert!(location.starts_with("https://hub.example/hub/api/oauth2/authorize?"), "{location}");
    // No password form under JupyterHub auth.
    let form = Request::post("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("username=alice&password=x"))
        .unwrap();
    assert_eq!(send(&app, form).await.status(), StatusCode::NOT_FOUND);
}
