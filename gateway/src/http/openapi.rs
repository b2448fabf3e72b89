//! `/api/openapi.json`: the REST API as OpenAPI 3.1, kept next to the routes
//! it describes (a test checks that every route is in it).

use serde_json::{Value, json};

fn error(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn name_param() -> Value {
    json!({ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } })
}

fn body(schema: Value) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema } } })
}

pub fn document() -> Value {
    let cluster = json!({ "$ref": "#/components/schemas/Cluster" });
    let scale_result = json!({ "$ref": "#/components/schemas/ScaleResult" });
    json!({
        "openapi": "3.1.0",
        "info": { "title": "dask-gateway-rs", "version": env!("CARGO_PKG_VERSION"),
                  "description": "The dask-gateway REST API, compatible with the dask-gateway Python client." },
        "components": {
            "securitySchemes": {
                "basic": { "type": "http", "scheme": "basic" },
                "token": { "type": "apiKey", "in": "header", "name": "Authorization",
                           "description": "`Bearer <token>`, `token <token>` or `jupyterhub <token>`" },
                "cookie": { "type": "apiKey", "in": "cookie", "name": "dask-gateway" }
            },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "string" } } },
                "Status": { "type": "string", "enum": ["PENDING", "RUNNING", "STOPPING", "STOPPED", "FAILED"] },
                "Cluster": {
                    "type": "object", "additionalProperties": false,
                    "required": ["name", "dashboard_route", "status", "start_time", "stop_time", "options", "tls_cert", "tls_key"],
                    "properties": {
                        "name": { "type": "string" },
                        "dashboard_route": { "type": ["string", "null"], "description": "`/clusters/<name>/status` when running" },
                        "status": { "$ref": "#/components/schemas/Status" },
                        "start_time": { "type": "integer", "description": "milliseconds since the epoch" },
                        "stop_time": { "type": ["integer", "null"] },
                        "options": { "type": "object" },
                        "tls_cert": { "type": ["string", "null"], "description": "PEM, when running" },
                        "tls_key": { "type": ["string", "null"], "description": "PEM, when running" }
                    }
                },
                "ClusterLogs": {
                    "type": "object", "required": ["name", "status", "reason", "scheduler", "workers", "truncated"],
                    "properties": {
                        "name": { "type": "string" },
                        "status": { "$ref": "#/components/schemas/Status" },
                        "reason": { "type": ["string", "null"], "description": "why a FAILED cluster failed" },
                        "scheduler": { "type": "array", "items": { "type": "string" }, "description": "the scheduler's last lines, oldest first" },
                        "workers": { "type": "object", "additionalProperties": { "type": "array", "items": { "type": "string" } },
                                     "description": "each worker's last lines, by worker name (the pod's name on Kubernetes)" },
                        "truncated": { "type": "boolean", "description": "workers were left out to keep the answer within 4 MiB" }
                    }
                },
                "UserSummary": {
                    "type": "object",
                    "properties": {
                        "user": { "type": "string" }, "clusters": { "type": "integer" },
                        "pending": { "type": "integer" }, "running": { "type": "integer" },
                        "workers": { "type": "integer" }, "cores": { "type": "number" },
                        "memory": { "type": "integer", "description": "bytes" }
                    }
                },
                "ScaleResult": { "type": "object", "properties": { "ok": { "type": "boolean" }, "msg": { "type": ["string", "null"] } } },
                "Heartbeat": {
                    "type": "object", "required": ["scheduler_address", "api_address", "count"],
                    "properties": {
                        "scheduler_address": { "type": "string" }, "dashboard_address": { "type": "string" },
                        "api_address": { "type": "string" }, "count": { "type": "integer" },
                        "active_workers": { "type": "array", "items": { "type": "string" } },
                        "closing_workers": { "type": "array", "items": { "type": "string" } },
                        "closed_workers": { "type": "array", "items": { "type": "string" } }
                    }
                }
            }
        },
        "security": [{ "basic": [] }, { "token": [] }, { "cookie": [] }],
        "paths": {
            "/api/version": { "get": { "security": [], "summary": "Protocol version",
                "responses": { "200": ok("version", json!({ "type": "object", "properties": { "version": { "type": "string" } } })) } } },
            "/api/health": { "get": { "security": [], "summary": "Health",
                "responses": { "200": ok("healthy", json!({ "type": "object", "properties": { "status": { "const": "pass" } } })) } } },
            "/api/v1/options": { "get": { "summary": "The cluster options users may set",
                "responses": { "200": ok("option fields (only the profiles the caller's groups allow)", json!({ "type": "object", "properties": { "cluster_options": { "type": "array" } } })),
                               "401": error("authentication required"),
                               "403": error("a JupyterHub token without the service's access scope") } } },
            "/api/v1/clusters/": {
                "get": { "summary": "The caller's clusters (all clusters for admins)",
                    "parameters": [{ "name": "status", "in": "query", "schema": { "type": "string" },
                                     "description": "comma-separated statuses; default: PENDING,RUNNING" }],
                    "responses": { "200": ok("clusters by name", json!({ "type": "object", "additionalProperties": cluster })),
                                   "401": error("authentication required"),
                                   "403": error("a JupyterHub token without the service's access scope"), "422": error("unknown status") } },
                "post": { "summary": "Create a cluster",
                    "requestBody": body(json!({ "type": "object", "properties": { "cluster_options": { "type": ["object", "null"] } } })),
                    "responses": { "201": ok("created", json!({ "type": "object", "properties": { "name": { "type": "string" } } })),
                                   "401": error("authentication required"),
                                   "403": error("a JupyterHub token without the service's access scope, or no profile allowed"),
                                   "409": error("a per-user limit is reached"),
                                   "422": error("malformed JSON, unknown or invalid options, a profile the caller's groups do not allow") } }
            },
            "/api/v1/clusters/{name}": {
                "get": { "summary": "One cluster", "parameters": [name_param(),
                        { "name": "wait", "in": "query", "schema": { "type": "string" }, "description": "wait up to 20 s for the cluster to start" }],
                    "responses": { "200": ok("the cluster", cluster.clone()), "403": error("another user's cluster"), "404": error("unknown cluster"),
                                   "409": error("with `wait`: the cluster failed, and why") } },
                "delete": { "summary": "Stop a cluster (idempotent); the cluster's own token is accepted", "parameters": [name_param()],
                    "responses": { "204": { "description": "stopped or stopping" }, "403": error("another user's cluster") } }
            },
            "/api/v1/clusters/{name}/scale": { "post": { "summary": "Scale to a number of workers", "parameters": [name_param()],
                "requestBody": body(json!({ "type": "object", "required": ["count"], "properties": { "count": { "type": "integer", "minimum": 0 } } })),
                "responses": { "200": ok("done; msg says how a limit clamped it", scale_result.clone()), "403": error("another user's cluster"),
                               "404": error("unknown cluster"), "409": error("cluster not running"), "422": error("invalid count") } } },
            "/api/v1/clusters/{name}/adapt": { "post": { "summary": "Adaptive scaling between bounds", "parameters": [name_param()],
                "requestBody": body(json!({ "type": "object", "properties": {
                    "minimum": { "type": ["integer", "null"], "minimum": 0 }, "maximum": { "type": ["integer", "null"], "minimum": 0 },
                    "active": { "type": "boolean" } } })),
                "responses": { "200": ok("done", scale_result), "403": error("another user's cluster"), "404": error("unknown cluster"),
                               "409": error("cluster not running"), "422": error("invalid bounds") } } },
            "/api/v1/clusters/{name}/logs": { "get": {
                "summary": "Recent log lines of the scheduler and each worker (a finished cluster's as kept in its history)",
                "parameters": [name_param(),
                    { "name": "lines", "in": "query", "schema": { "type": "integer", "minimum": 0, "maximum": 1000, "default": 100 },
                      "description": "lines per process (larger values are capped at 1000); each log is also cut to 64 KiB, the answer to 4 MiB" }],
                "responses": { "200": ok("the logs, written one process at a time", json!({ "$ref": "#/components/schemas/ClusterLogs" })),
                               "401": error("authentication required"), "403": error("another user's cluster"),
                               "404": error("unknown cluster"), "422": error("invalid lines") } } },
            "/api/v1/admin/summary": { "get": { "summary": "Everyone's active clusters summed per user (admins only)",
                "responses": { "200": ok("per-user totals", json!({ "type": "object", "properties": { "users": { "type": "array",
                                   "items": { "$ref": "#/components/schemas/UserSummary" } } } })),
                               "401": error("authentication required"), "403": error("not an admin") } } },
            "/api/v1/events": { "get": { "summary": "The web page's live view: server-sent events, one `clusters` event (a JSON snapshot of what the caller may see) per change, `signed-out` when the session ends",
                "security": [{ "cookie": [] }],
                "responses": { "200": { "description": "an event stream", "content": { "text/event-stream": { "schema": { "type": "string" } } } },
                               "401": error("no session"), "429": error("too many open streams") } } },
            "/api/v1/clusters/{name}/heartbeat": { "post": { "summary": "Scheduler heartbeat (cluster token only)", "security": [{ "token": [] }],
                "parameters": [name_param()], "requestBody": body(json!({ "$ref": "#/components/schemas/Heartbeat" })),
                "responses": { "200": { "description": "accepted" }, "401": error("bad cluster token"), "422": error("malformed heartbeat") } } }
        }
    })
}
