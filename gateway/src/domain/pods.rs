//! Pod shaping for the Kubernetes backend: the keys an admin sets globally
//! (`[backend]`) and per profile (`[[options.profiles]]`), resolved once at
//! start-up into one [`PodShape`] per profile, and the merge of the extra
//! pod and container patches. Pure: no I/O; `build.rs` applies a shape.
//!
//! Rules, in words for the README:
//! - a profile's key replaces the global one, except the maps (`labels`,
//!   `annotations`, `node_selector`), which merge key by key with the
//!   profile's winning, and the `*_extra_*_config` patches, which are
//!   merged (profile's over global's) like they are merged into the pod;
//! - Kubernetes shapes (tolerations, affinity, volumes, …) are read into the
//!   k8s-openapi types, and a key those types do not know is an error that
//!   names it (k8s-openapi itself would drop it silently);
//! - limits default to their request, and a limit below its request is an error.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, LocalObjectReference, PodSpec, Toleration, Volume, VolumeMount,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::options::{Memory, Profile};
pub use super::options::{PodConfig, PullPolicy};

/// The scheduler's default request: half a core (a scheduler mostly waits
/// on its comms; an admin with big graphs raises it) and 1 GiB (the
/// scheduler with its dashboard idles near 150 MiB; the rest is room for
/// task graphs). Memory limit = request, so memory pressure never evicts a
/// scheduler that stays within it; the CPU limit is at least one core, so
/// bursts (graph submission) are not throttled to the request.
pub const DEFAULT_SCHEDULER_CORES: f64 = 0.5;
pub const DEFAULT_SCHEDULER_MEMORY: u64 = 1 << 30;
pub const MIN_DEFAULT_SCHEDULER_CORES_LIMIT: f64 = 1.0;

/// Requests and limits of one container: cores and bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resources {
    pub cores: f64,
    pub memory: u64,
    pub cores_limit: f64,
    pub memory_limit: u64,
}

/// Everything a profile's pods get beyond what the cluster's options say:
/// global keys with the profile's over them, checked and typed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodShape {
    pub image_pull_policy: Option<PullPolicy>,
    pub image_pull_secrets: Vec<LocalObjectReference>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub affinity: Option<Affinity>,
    pub volumes: Vec<Volume>,
    pub volume_mounts: Vec<VolumeMount>,
    pub service_account: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub scheduler: Option<Resources>,
    /// The profile's worker limits; `None`: the request.
    pub worker_cores_limit: Option<f64>,
    pub worker_memory_limit: Option<u64>,
    pub scheduler_extra_pod_config: Map<String, Value>,
    pub worker_extra_pod_config: Map<String, Value>,
    pub scheduler_extra_container_config: Map<String, Value>,
    pub worker_extra_container_config: Map<String, Value>,
}

impl PodShape {
    /// The scheduler's requests and limits (the defaults when none were resolved).
    pub fn scheduler_resources(&self) -> Resources {
        self.scheduler.unwrap_or(Resources {
            cores: DEFAULT_SCHEDULER_CORES,
            memory: DEFAULT_SCHEDULER_MEMORY,
            cores_limit: MIN_DEFAULT_SCHEDULER_CORES_LIMIT,
            memory_limit: DEFAULT_SCHEDULER_MEMORY,
        })
    }
}

/// Label and annotation prefixes the operator and the gateway keep for themselves.
const RESERVED_PREFIXES: [&str; 3] =
    [dask_crds::labels::PREFIX, dask_crds::annotations::PREFIX, dask_crds::gateway::PREFIX];

/// The shape of every profile, by name. `global` is `[backend]`'s keys;
/// errors name the key, as `backend.<key>` or `options.profiles[<i>].<key>`.
pub fn resolve_all(
    global: &PodConfig,
    profiles: &[Profile],
) -> anyhow::Result<BTreeMap<String, PodShape>> {
    check_keys(global, "backend")?;
    let mut shapes = BTreeMap::new();
    for (i, profile) in profiles.iter().enumerate() {
        let at = format!("options.profiles[{i}]");
        check_keys(&profile.pods, &at)?;
        let shape = resolve(global, profile).map_err(|e| anyhow::anyhow!("{at}.{e}"))?;
        check_patches(&shape).map_err(|e| anyhow::anyhow!("{at} (with backend's): {e}"))?;
        shapes.insert(profile.name.clone(), shape);
    }
    Ok(shapes)
}

/// Checks the keys of one table on their own, so that an error names the
/// table it is in (`backend` or a profile).
fn check_keys(pods: &PodConfig, at: &str) -> anyhow::Result<()> {
    let typed = || -> Result<(), String> {
        typed::<Vec<LocalObjectReference>>("image_pull_secrets", &pods.image_pull_secrets)?;
        typed::<Vec<Toleration>>("tolerations", &pods.tolerations)?;
        typed::<Affinity>("affinity", &pods.affinity)?;
        typed::<Vec<Volume>>("volumes", &pods.volumes)?;
        typed::<Vec<VolumeMount>>("volume_mounts", &pods.volume_mounts)?;
        for (key, map) in [("labels", &pods.labels), ("node_selector", &pods.node_selector)] {
            for (k, v) in map.iter().flatten() {
                label_key(k).map_err(|e| format!("{key}: key {k:?} {e}"))?;
                label_value(v).map_err(|e| format!("{key}.{k:?}: value {v:?} {e}"))?;
            }
        }
        for k in pods.annotations.iter().flatten().map(|(k, _)| k) {
            label_key(k).map_err(|e| format!("annotations: key {k:?} {e}"))?;
        }
        for (key, map) in [("labels", &pods.labels), ("annotations", &pods.annotations)] {
            for k in map.iter().flatten().map(|(k, _)| k) {
                if RESERVED_PREFIXES.iter().any(|p| k.starts_with(p)) {
                    return Err(format!(
                        "{key}: {k:?} is in a prefix the gateway and operator keep for themselves ({})",
                        RESERVED_PREFIXES.join(", ")
                    ));
                }
            }
        }
        if let Some(account) = &pods.service_account {
            dns_subdomain(account).map_err(|e| format!("service_account: {account:?} {e}"))?;
        }
        for (key, value) in [
            ("scheduler_cores", pods.scheduler_cores),
            ("scheduler_cores_limit", pods.scheduler_cores_limit),
        ] {
            if value.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                return Err(format!("{key}: must be a positive number"));
            }
        }
        for (key, value) in [
            ("scheduler_memory", pods.scheduler_memory),
            ("scheduler_memory_limit", pods.scheduler_memory_limit),
        ] {
            if value.is_some_and(|m| m.0 == 0) {
                return Err(format!("{key}: must be positive"));
            }
        }
        Ok(())
    };
    typed().map_err(|e| anyhow::anyhow!("{at}.{e}"))
}

/// `value` read as `T`, refusing the keys `T` does not have.
fn typed<T: DeserializeOwned + Serialize>(
    key: &str,
    value: &Option<Value>,
) -> Result<Option<T>, String> {
    let Some(value) = value else { return Ok(None) };
    strict::<T>(value).map(Some).map_err(|e| format!("{key}: {e}"))
}

/// `value` as a `T`; an error names the path of a key `T` does not know.
pub fn strict<T: DeserializeOwned + Serialize>(value: &Value) -> Result<T, String> {
    let typed: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    match lost_keys(value, &back, "").first() {
        Some(path) => Err(format!("unknown field {path:?}")),
        None => Ok(typed),
    }
}

/// Keys of `given` (at any depth) that `back` lacks: what a typed
/// round trip dropped. A key given as null is a deletion, not a loss.
fn lost_keys(given: &Value, back: &Value, path: &str) -> Vec<String> {
    match (given, back) {
        (Value::Object(g), Value::Object(b)) => g
            .iter()
            .filter(|(_, v)| !v.is_null())
            .flat_map(|(k, v)| {
                let at = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match b.get(k) {
                    Some(back) => lost_keys(v, back, &at),
                    None => vec![at],
                }
            })
            .collect(),
        (Value::Array(g), Value::Array(b)) => g
            .iter()
            .zip(b)
            .enumerate()
            .flat_map(|(i, (g, b))| lost_keys(g, b, &format!("{path}[{i}]")))
            .collect(),
        _ => vec![],
    }
}

/// The global keys with `profile`'s over them. Errors start with the key.
fn resolve(global: &PodConfig, profile: &Profile) -> Result<PodShape, String> {
    let p = &profile.pods;
    let pick = |g: &Option<Value>, p: &Option<Value>| p.clone().or_else(|| g.clone());
    let maps = |g: &Option<BTreeMap<String, String>>, p: &Option<BTreeMap<String, String>>| {
        let mut merged = g.clone().unwrap_or_default();
        merged.extend(p.clone().unwrap_or_default());
        merged
    };
    let patch = |g: &Option<Map<String, Value>>, p: &Option<Map<String, Value>>| {
        let mut merged = Value::Object(g.clone().unwrap_or_default());
        merge(&mut merged, &Value::Object(p.clone().unwrap_or_default()));
        match merged {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    };
    let either = |g: Option<f64>, p: Option<f64>| p.or(g);
    let either_mem = |g: Option<Memory>, p: Option<Memory>| p.or(g).map(|m| m.0);

    let cores =
        either(global.scheduler_cores, p.scheduler_cores).unwrap_or(DEFAULT_SCHEDULER_CORES);
    let memory =
        either_mem(global.scheduler_memory, p.scheduler_memory).unwrap_or(DEFAULT_SCHEDULER_MEMORY);
    let cores_limit = either(global.scheduler_cores_limit, p.scheduler_cores_limit)
        .unwrap_or(cores.max(MIN_DEFAULT_SCHEDULER_CORES_LIMIT));
    let memory_limit =
        either_mem(global.scheduler_memory_limit, p.scheduler_memory_limit).unwrap_or(memory);
    if cores_limit < cores {
        return Err(format!(
            "scheduler_cores_limit: {cores_limit} is below the request, scheduler_cores = {cores}"
        ));
    }
    if memory_limit < memory {
        return Err(format!(
            "scheduler_memory_limit: {memory_limit} bytes is below the request, scheduler_memory = {memory} bytes"
        ));
    }
    if let Some(limit) = profile.worker_cores_limit
        && !(limit.is_finite() && limit >= profile.worker_cores)
    {
        return Err(format!(
            "worker_cores_limit: {limit} is below the request, worker_cores = {}",
            profile.worker_cores
        ));
    }
    if let Some(limit) = profile.worker_memory_limit
        && limit < profile.worker_memory
    {
        return Err(format!(
            "worker_memory_limit: {} bytes is below the request, worker_memory = {} bytes",
            limit.0, profile.worker_memory.0
        ));
    }
    Ok(PodShape {
        image_pull_policy: p.image_pull_policy.or(global.image_pull_policy),
        image_pull_secrets: typed(
            "image_pull_secrets",
            &pick(&global.image_pull_secrets, &p.image_pull_secrets),
        )?
        .unwrap_or_default(),
        node_selector: maps(&global.node_selector, &p.node_selector),
        tolerations: typed("tolerations", &pick(&global.tolerations, &p.tolerations))?
            .unwrap_or_default(),
        affinity: typed("affinity", &pick(&global.affinity, &p.affinity))?,
        volumes: typed("volumes", &pick(&global.volumes, &p.volumes))?.unwrap_or_default(),
        volume_mounts: typed("volume_mounts", &pick(&global.volume_mounts, &p.volume_mounts))?
            .unwrap_or_default(),
        service_account: p.service_account.clone().or_else(|| global.service_account.clone()),
        labels: maps(&global.labels, &p.labels),
        annotations: maps(&global.annotations, &p.annotations),
        scheduler: Some(Resources { cores, memory, cores_limit, memory_limit }),
        worker_cores_limit: profile.worker_cores_limit,
        worker_memory_limit: profile.worker_memory_limit.map(|m| m.0),
        scheduler_extra_pod_config: patch(
            &global.scheduler_extra_pod_config,
            &p.scheduler_extra_pod_config,
        ),
        worker_extra_pod_config: patch(&global.worker_extra_pod_config, &p.worker_extra_pod_config),
        scheduler_extra_container_config: patch(
            &global.scheduler_extra_container_config,
            &p.scheduler_extra_container_config,
        ),
        worker_extra_container_config: patch(
            &global.worker_extra_container_config,
            &p.worker_extra_container_config,
        ),
    })
}

/// The patches applied to a minimal pod, so a bad one fails at start-up.
fn check_patches(shape: &PodShape) -> Result<(), String> {
    let container = Container { name: "dask".into(), ..Default::default() };
    for (key, patch) in [
        ("scheduler_extra_container_config", &shape.scheduler_extra_container_config),
        ("worker_extra_container_config", &shape.worker_extra_container_config),
    ] {
        patched(&container, patch).map_err(|e| format!("{key}: {e}"))?;
    }
    let pod = PodSpec { containers: vec![container], ..Default::default() };
    for (key, patch) in [
        ("scheduler_extra_pod_config", &shape.scheduler_extra_pod_config),
        ("worker_extra_pod_config", &shape.worker_extra_pod_config),
    ] {
        patched(&pod, patch).map_err(|e| format!("{key}: {e}"))?;
    }
    Ok(())
}

/// `base` with `patch` merged in (see [`merge`]), read back as its type.
pub fn patched<T: DeserializeOwned + Serialize>(
    base: &T,
    patch: &Map<String, Value>,
) -> Result<T, String> {
    if patch.is_empty() {
        return serde_json::from_value(serde_json::to_value(base).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string());
    }
    let mut value = serde_json::to_value(base).map_err(|e| e.to_string())?;
    merge(&mut value, &Value::Object(patch.clone()));
    strict(&value)
}

/// Merges `patch` into `base` as dask-gateway-server's `merge_json_objects`
/// does, so its `*_extra_*_config` carry over unchanged: objects merge key
/// by key, a list is appended to the list it meets (a sidecar container, a
/// volume or an env var is added, never replacing the gateway's own), any
/// other value replaces, and null removes the key.
pub fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    base.remove(key);
                    continue;
                }
                match base.get_mut(key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Array(base), Value::Array(patch)) => base.extend(patch.iter().cloned()),
        (base, patch) => *base = patch.clone(),
    }
}

/// A label or annotation key: `[prefix/]name`, the prefix a DNS subdomain,
/// the name at most 63 alphanumerics, `-`, `_`, `.`, alphanumeric at both ends.
fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        dns_subdomain(prefix).map_err(|e| format!("has a prefix that {e}"))?;
    }
    if name.is_empty() {
        return Err("has an empty name".into());
    }
    label_value(name).map_err(|e| format!("has a name that {e}"))
}

/// A label value: empty, or at most 63 alphanumerics, `-`, `_`, `.`, alphanumeric at both ends.
fn label_value(value: &str) -> Result<(), String> {
    let ok_end = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 63 {
        return Err("is longer than 63 characters".into());
    }
    if !value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        || !ok_end(value.chars().next())
        || !ok_end(value.chars().last())
    {
        return Err(
            "must be alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
                .into(),
        );
    }
    Ok(())
}

/// A DNS subdomain (RFC 1123): lowercase alphanumerics, `-` and `.`, at most 253.
fn dns_subdomain(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err("is not a DNS subdomain (lowercase alphanumerics, '-' and '.')".into())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn profile(toml: &str) -> Profile {
        let text = format!("name = \"p\"\nworker_cores = 1\nworker_memory = \"1 GiB\"\n{toml}");
        toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn global(toml: &str) -> PodConfig {
        toml::from_str(toml).unwrap()
    }

    fn shape(global_toml: &str, profile_toml: &str) -> Result<PodShape, String> {
        let shapes = resolve_all(&global(global_toml), &[profile(profile_toml)]);
        shapes.map(|mut s| s.remove("p").unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_profile_replaces_global_keys_and_merges_maps() {
        let shape = shape(
            r#"image_pull_policy = "Always"
               tolerations = [{key = "a", operator = "Exists"}]
               node_selector = {pool = "default", zone = "x"}
               labels = {team = "geo"}
               service_account = "dask""#,
            r#"tolerations = [{key = "dedicated", value = "dask", effect = "NoSchedule"}]
               node_selector = {pool = "dask-workers"}
               labels = {tier = "gpu"}"#,
        )
        .unwrap();
        assert_eq!(shape.image_pull_policy, Some(PullPolicy::Always));
        assert_eq!(shape.tolerations.len(), 1);
        assert_eq!(shape.tolerations[0].key.as_deref(), Some("dedicated"));
        assert_eq!(shape.node_selector["pool"], "dask-workers");
        assert_eq!(shape.node_selector["zone"], "x");
        assert_eq!(shape.labels.len(), 2);
        assert_eq!(shape.service_account.as_deref(), Some("dask"));
    }

    #[test]
    fn the_scheduler_is_never_best_effort_and_limits_default_to_requests() {
        let default = shape("", "").unwrap().scheduler_resources();
        assert_eq!((default.cores, default.memory), (0.5, 1 << 30));
        assert_eq!((default.cores_limit, default.memory_limit), (1.0, 1 << 30));
        let big = shape("scheduler_cores = 2\nscheduler_memory = \"4 GiB\"", "").unwrap();
        let big = big.scheduler_resources();
        assert_eq!((big.cores_limit, big.memory_limit), (2.0, 4 << 30));
        let limits = shape("", "worker_cores_limit = 2\nworker_memory_limit = \"2 GiB\"").unwrap();
        assert_eq!(
            (limits.worker_cores_limit, limits.worker_memory_limit),
            (Some(2.0), Some(2 << 30))
        );
    }

    #[test]
    fn a_limit_below_its_request_is_refused_naming_the_key() {
        let err = shape("", "worker_cores_limit = 0.5").unwrap_err();
        assert!(err.contains("options.profiles[0].worker_cores_limit"), "{err}");
        let err = shape("", "worker_memory_limit = \"512 MiB\"").unwrap_err();
        assert!(err.contains("options.profiles[0].worker_memory_limit"), "{err}");
        let err = shape("scheduler_memory = \"2 GiB\"\nscheduler_memory_limit = \"1 GiB\"", "")
            .unwrap_err();
        assert!(err.contains("scheduler_memory_limit"), "{err}");
        let err = shape("scheduler_cores = 0", "").unwrap_err();
        assert!(err.contains("backend.scheduler_cores"), "{err}");
    }

    #[test]
    fn bad_kubernetes_shapes_fail_naming_the_key_and_field() {
        let err = shape("tolerations = [{key = \"a\", operater = \"Exists\"}]", "").unwrap_err();
        assert!(err.contains("backend.tolerations") && err.contains("operater"), "{err}");
        let err =
            shape("", "volumes = [{name = \"x\", emptyDir = {sizeLimt = \"1Gi\"}}]").unwrap_err();
        assert!(
            err.contains("options.profiles[0].volumes") && err.contains("[0].emptyDir.sizeLimt"),
            "{err}"
        );
        let err = shape("affinity = \"anywhere\"", "").unwrap_err();
        assert!(err.contains("backend.affinity"), "{err}");
        let err = shape("", "worker_extra_pod_config = {nodeSelecter = {a = \"b\"}}").unwrap_err();
        assert!(err.contains("worker_extra_pod_config") && err.contains("nodeSelecter"), "{err}");
        let err = shape("image_pull_secrets = [\"regcred\"]", "").unwrap_err();
        assert!(err.contains("backend.image_pull_secrets"), "{err}");
    }

    #[test]
    fn labels_and_annotations_are_kubernetes_keys_outside_reserved_prefixes() {
        for bad in [
            "labels = {\"-x\" = \"1\"}",
            "labels = {ok = \"a b\"}",
            "labels = {\"Example.com/x\" = \"1\"}",
            "annotations = {\"gateway.dask.org/user\" = \"mallory\"}",
            "labels = {\"dask.org/component\" = \"worker\"}",
            "node_selector = {pool = \"a/b\"}",
        ] {
            assert!(shape(bad, "").is_err(), "{bad} was accepted");
        }
        let long = "v".repeat(64);
        assert!(shape(&format!("labels = {{a = \"{long}\"}}"), "").is_err());
        let ok = shape(
            "labels = {\"example.com/team\" = \"geo\", empty = \"\"}\nannotations = {\"example.com/note\" = \"any text at all\"}",
            "",
        );
        assert!(ok.is_ok(), "{ok:?}");
        assert!(shape("service_account = \"Not_A_Name\"", "").is_err());
    }

    #[test]
    fn patches_merge_like_dask_gateway_server() {
        let mut base = json!({"a": {"x": 1, "y": 2}, "list": [1], "gone": true, "keep": "v"});
        merge(&mut base, &json!({"a": {"y": 3}, "list": [2], "gone": null, "keep": "w"}));
        assert_eq!(base, json!({"a": {"x": 1, "y": 3}, "list": [1, 2], "keep": "w"}));
        // A profile's patch goes over the global one the same way.
        let shape = shape(
            "worker_extra_pod_config = {priorityClassName = \"low\", hostAliases = [{ip = \"10.0.0.1\", hostnames = [\"a\"]}]}",
            "worker_extra_pod_config = {priorityClassName = \"high\", hostAliases = [{ip = \"10.0.0.2\", hostnames = [\"b\"]}]}",
        )
        .unwrap();
        let patch = Value::Object(shape.worker_extra_pod_config);
        assert_eq!(patch["priorityClassName"], "high");
        assert_eq!(patch["hostAliases"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_gpu_limit_merges_into_the_resources() {
        let container = Container {
            name: "worker".into(),
            resources: Some(k8s_openapi::api::core::v1::ResourceRequirements {
                limits: Some(
                    [(
                        "cpu".to_string(),
                        k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".into()),
                    )]
                    .into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        let patch = json!({"resources": {"limits": {"nvidia.com/gpu": 1}}});
        let merged = patched(&container, patch.as_object().unwrap()).unwrap();
        let limits = merged.resources.unwrap().limits.unwrap();
        assert_eq!((limits["cpu"].0.as_str(), limits["nvidia.com/gpu"].0.as_str()), ("1", "1"));
    }
}
