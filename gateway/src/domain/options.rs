//! User options: the spec served at `/api/v1/options` (the client builds its
//! widgets from it and rejects any key it does not know), the validation of
//! a create request against it, and the cluster settings it resolves to.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};

/// Bytes; in config files an integer or a string with a binary unit
/// ("1 GiB", "2 G", "512M": K, M, G, T are powers of 1024, as in dask-gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Memory(pub u64);

impl Memory {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let number: f64 =
            number.parse().map_err(|_| format!("{text:?} is not a memory size like \"2 GiB\""))?;
        let shift = match unit
            .trim()
            .trim_end_matches(['B', 'b'])
            .trim_end_matches('i')
            .to_ascii_uppercase()
            .as_str()
        {
            "" => 0,
            "K" => 10,
            "M" => 20,
            "G" => 30,
            "T" => 40,
            _ => return Err(format!("{text:?} has an unknown unit (use K, M, G or T)")),
        };
        Ok(Memory((number * (1u64 << shift) as f64) as u64))
    }
}

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Memory(n)),
            Raw::Text(t) => Memory::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// One entry of the `profile` option: what each worker gets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    /// The worker's requests (and its limits unless the `*_limit` keys say more).
    pub worker_cores: f64,
    pub worker_memory: Memory,
    /// Threads per worker; by default the whole cores, at least one.
    pub worker_threads: Option<u32>,
    /// Kubernetes: the worker's limits (default: the request).
    pub worker_cores_limit: Option<f64>,
    pub worker_memory_limit: Option<Memory>,
    /// Kubernetes: the scheduler and worker image (default: `backend.image`).
    pub image: Option<String>,
    /// Environment of its schedulers and workers, over `[cluster] environment`.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Its clusters' `[cluster]` timeouts, in seconds, over those defaults.
    pub idle_timeout: Option<f64>,
    pub idle_client_timeout: Option<f64>,
    pub max_lifetime: Option<f64>,
    /// Kubernetes: pod keys over `[backend]`'s (see `pods.rs`).
    #[serde(flatten)]
    pub pods: PodConfig,
}

impl Profile {
    /// A profile of cores and memory alone.
    pub fn new(name: &str, worker_cores: f64, worker_memory: Memory) -> Self {
        Self {
            name: name.into(),
            worker_cores,
            worker_memory,
            worker_threads: None,
            worker_cores_limit: None,
            worker_memory_limit: None,
            image: None,
            environment: BTreeMap::new(),
            idle_timeout: None,
            idle_client_timeout: None,
            max_lifetime: None,
            pods: Default::default(),
        }
    }
}

/// A further option field from the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldConfig {
    pub field: String,
    pub label: Option<String>,
    #[serde(rename = "type")]
    pub kind: FieldKind,
    pub default: Option<Value>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// The choices of a `select`.
    #[serde(default)]
    pub options: Vec<String>,
    /// The cluster setting the value goes to (see [`ClusterConfig`]):
    /// `worker_threads`, `idle_timeout`, `idle_client_timeout`, `environment`, `image`; none keeps
    /// the value as information only.
    pub target: Option<Target>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FieldKind {
    String,
    Bool,
    Int,
    Float,
    Select,
    Mapping,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    WorkerThreads,
    IdleTimeout,
    IdleClientTimeout,
    Environment,
    Image,
}

impl FieldConfig {
    pub fn check(&self) -> anyhow::Result<()> {
        let name = &self.field;
        anyhow::ensure!(
            name != "profile",
            "options.fields: \"profile\" is built in (options.profiles)"
        );
        if self.kind == FieldKind::Select {
            anyhow::ensure!(
                !self.options.is_empty(),
                "options.fields[{name}].options: a select needs choices"
            );
        }
        let default = self.default_value();
        validate(self, &default)
            .map_err(|e| anyhow::anyhow!("options.fields[{name}].default: {e}"))?;
        Ok(())
    }

    fn default_value(&self) -> Value {
        self.default.clone().unwrap_or_else(|| match self.kind {
            FieldKind::String => json!(""),
            FieldKind::Bool => json!(false),
            FieldKind::Int => json!(0),
            FieldKind::Float => json!(0.0),
            FieldKind::Select => json!(self.options.first()),
            FieldKind::Mapping => json!({}),
        })
    }

    /// The field as the client expects it; `string`, `bool` and `mapping`
    /// specs carry no key but `type` (the client passes them as kwargs).
    fn spec(&self) -> Value {
        let spec = match self.kind {
            FieldKind::String => json!({ "type": "string" }),
            FieldKind::Bool => json!({ "type": "bool" }),
            FieldKind::Mapping => json!({ "type": "mapping" }),
            FieldKind::Int => {
                json!({ "type": "int", "min": self.min.map(|v| v as i64), "max": self.max.map(|v| v as i64) })
            }
            FieldKind::Float => json!({ "type": "float", "min": self.min, "max": self.max }),
            FieldKind::Select => json!({ "type": "select", "options": self.options }),
        };
        json!({ "field": self.field, "label": self.label.as_deref().unwrap_or(&self.field), "default": self.default_value(), "spec": spec })
    }
}

/// Checks one value against its field, with the message the client shows.
fn validate(field: &FieldConfig, value: &Value) -> Result<(), String> {
    let name = &field.field;
    let in_bounds = |v: f64| {
        if field.min.is_some_and(|min| v < min) || field.max.is_some_and(|max| v > max) {
            Err(format!("{name} must be between {:?} and {:?}, got {v}", field.min, field.max))
        } else {
            Ok(())
        }
    };
    match field.kind {
        FieldKind::String if value.is_string() => Ok(()),
        FieldKind::Bool if value.is_boolean() => Ok(()),
        FieldKind::Mapping if value.is_object() => Ok(()),
        FieldKind::Int if value.is_i64() || value.is_u64() => {
            in_bounds(value.as_f64().unwrap_or_default())
        }
        FieldKind::Float if value.is_number() => in_bounds(value.as_f64().unwrap_or_default()),
        FieldKind::Select => match value.as_str() {
            Some(v) if field.options.iter().any(|o| o == v) => Ok(()),
            _ => Err(format!("{} is not a valid option for {name}", python_repr(value))),
        },
        kind => Err(format!("{name} must be of type {kind:?}, got {value}").to_lowercase()),
    }
}

/// Values in messages as the Python server words them: `'huge'`, not `"huge"`.
fn python_repr(value: &Value) -> String {
    match value {
        Value::String(s) => format!("'{s}'"),
        other => other.to_string(),
    }
}

/// What a cluster is made of, from its profile and options.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct ClusterConfig {
    pub worker_cores: f64,
    pub worker_memory: u64,
    pub worker_threads: u32,
    pub idle_timeout: f64,
    #[serde(default)]
    pub idle_client_timeout: f64,
    /// Seconds from its start after which it is stopped, busy or not; 0 never.
    #[serde(default)]
    pub max_lifetime: f64,
    pub environment: BTreeMap<String, String>,
    pub image: Option<String>,
    /// The profile it was made from (its pod shape on Kubernetes).
    #[serde(default)]
    pub profile: String,
}

/// The options offered, from the config.
#[derive(Debug, Clone)]
pub struct OptionsSpec {
    profiles: Vec<Profile>,
    fields: Vec<FieldConfig>,
}

impl OptionsSpec {
    pub fn new(profiles: Vec<Profile>, fields: Vec<FieldConfig>) -> Self {
        Self { profiles, fields }
    }

    /// The spec a user is offered: only the `allowed` profiles (in the
    /// configured order, the first allowed one the default); `None`: all.
    pub fn with_profiles(&self, allowed: Option<&[String]>) -> OptionsSpec {
        let profiles = self
            .profiles
            .iter()
            .filter(|p| allowed.is_none_or(|a| a.contains(&p.name)))
            .cloned()
            .collect();
        Self { profiles, fields: self.fields.clone() }
    }

    pub fn has_profile(&self, name: &str) -> bool {
        self.profiles.iter().any(|p| p.name == name)
    }

    pub fn has_profiles(&self) -> bool {
        !self.profiles.is_empty()
    }

    fn profile_field(&self) -> FieldConfig {
        FieldConfig {
            field: "profile".into(),
            label: Some("Cluster profile".into()),
            kind: FieldKind::Select,
            default: None,
            min: None,
            max: None,
            options: self.profiles.iter().map(|p| p.name.clone()).collect(),
            target: None,
        }
    }

    fn all_fields(&self) -> Vec<FieldConfig> {
        std::iter::once(self.profile_field()).chain(self.fields.iter().cloned()).collect()
    }

    /// `{"cluster_options": [...]}` for `GET /api/v1/options`.
    pub fn to_json(&self) -> Value {
        json!({ "cluster_options": self.all_fields().iter().map(FieldConfig::spec).collect::<Vec<_>>() })
    }

    /// Validates a create request's options: unknown fields and bad values
    /// are refused, missing ones take their defaults. Returns the complete
    /// options (as reported back to the client) and the cluster they make.
    pub fn resolve(
        &self,
        requested: &Map<String, Value>,
        base: &ClusterDefaults,
    ) -> Result<(Map<String, Value>, ClusterConfig), String> {
        let fields = self.all_fields();
        let mut unknown: Vec<&String> =
            requested.keys().filter(|k| !fields.iter().any(|f| &f.field == *k)).collect();
        if !unknown.is_empty() {
            unknown.sort();
            let names: Vec<String> = unknown.iter().map(|k| format!("'{k}'")).collect();
            return Err(format!("Unknown fields [{}]", names.join(", ")));
        }
        let mut options = Map::new();
        for field in &fields {
            let value =
                requested.get(&field.field).cloned().unwrap_or_else(|| field.default_value());
            validate(field, &value)?;
            options.insert(field.field.clone(), value);
        }
        let profile_name = options["profile"].as_str().unwrap_or_default();
        let profile =
            self.profiles.iter().find(|p| p.name == profile_name).expect("validated above");
        let mut config = ClusterConfig {
            worker_cores: profile.worker_cores,
            worker_memory: profile.worker_memory.0,
            worker_threads: profile
                .worker_threads
                .unwrap_or((profile.worker_cores.floor() as u32).max(1)),
            idle_timeout: profile.idle_timeout.unwrap_or(base.idle_timeout),
            idle_client_timeout: profile.idle_client_timeout.unwrap_or(base.idle_client_timeout),
            max_lifetime: profile.max_lifetime.unwrap_or(base.max_lifetime),
            environment: base.environment.clone(),
            image: profile.image.clone(),
            profile: profile.name.clone(),
        };
        config.environment.extend(profile.environment.clone());
        for field in &self.fields {
            let value = &options[&field.field];
            match field.target {
                Some(Target::WorkerThreads) => {
                    config.worker_threads = value.as_f64().unwrap_or(1.0).max(1.0) as u32
                }
                Some(Target::IdleTimeout) => config.idle_timeout = value.as_f64().unwrap_or(0.0),
                Some(Target::IdleClientTimeout) => {
                    config.idle_client_timeout = value.as_f64().unwrap_or(0.0)
                }
                Some(Target::Image) => {
                    // An empty value keeps the profile's image.
                    if let Some(image) = value.as_str().filter(|s| !s.is_empty()) {
                        config.image = Some(image.into());
                    }
                }
                Some(Target::Environment) => {
                    for (k, v) in value.as_object().into_iter().flatten() {
                        let v = v.as_str().map(String::from).unwrap_or_else(|| v.to_string());
                        config.environment.insert(k.clone(), v);
                    }
                }
                None => {}
            }
        }
        Ok((options, config))
    }
}

/// Settings of every cluster that options do not change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterDefaults {
    /// Seconds a cluster may take from creation to its first heartbeat.
    pub start_timeout: f64,
    /// Seconds between scheduler heartbeats (local backend).
    pub heartbeat_period: f64,
    /// Seconds between the scheduler's adaptive scaling decisions.
    pub adaptive_period: f64,
    /// Seconds of inactivity after which a cluster shuts down; 0 disables.
    pub idle_timeout: f64,
    /// Seconds with no connected client after which a cluster is stopped,
    /// busy or not (the notebook that started it is gone); 0 disables.
    pub idle_client_timeout: f64,
    /// Seconds from its start after which a cluster is stopped, busy or
    /// not: a bound on what a forgotten one costs; 0 disables.
    pub max_lifetime: f64,
    /// Environment of every scheduler and worker.
    pub environment: BTreeMap<String, String>,
    /// Seconds a stopped or failed cluster stays listed (with
    /// `?status=STOPPED,FAILED`) before it is forgotten, as dask-gateway-server's.
    pub completed_cluster_max_age: f64,
}

impl Default for ClusterDefaults {
    fn default() -> Self {
        Self {
            start_timeout: 60.0,
            heartbeat_period: 15.0,
            adaptive_period: 3.0,
            idle_timeout: 0.0,
            idle_client_timeout: 0.0,
            max_lifetime: 0.0,
            environment: BTreeMap::new(),
            completed_cluster_max_age: 86_400.0,
        }
    }
}

/// Pod keys, all optional: set in `[backend]` (every cluster) and in a profile
/// (its clusters). TOML tables and arrays in the Kubernetes (camelCase) shapes.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct PodConfig {
    /// `Always`, `IfNotPresent` or `Never`.
    pub image_pull_policy: Option<PullPolicy>,
    /// `[{name = "regcred"}]`, as in a PodSpec.
    pub image_pull_secrets: Option<Value>,
    pub node_selector: Option<BTreeMap<String, String>>,
    pub tolerations: Option<Value>,
    pub affinity: Option<Value>,
    /// Volumes of both pods, after the gateway's credentials volume.
    pub volumes: Option<Value>,
    /// Mounts of both containers, after the credentials mount.
    pub volume_mounts: Option<Value>,
    /// Both pods' service account; with one, its token is mounted as the
    /// account says (none by default: Dask pods never call the API).
    pub service_account: Option<String>,
    /// Extra labels and annotations of the scheduler and worker pods.
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
    pub scheduler_cores: Option<f64>,
    pub scheduler_memory: Option<Memory>,
    pub scheduler_cores_limit: Option<f64>,
    pub scheduler_memory_limit: Option<Memory>,
    /// Merged into the PodSpec / the container (see [`merge`]).
    pub scheduler_extra_pod_config: Option<Map<String, Value>>,
    pub worker_extra_pod_config: Option<Map<String, Value>>,
    pub scheduler_extra_container_config: Option<Map<String, Value>>,
    pub worker_extra_container_config: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// The development setup's profiles, offered when the config names none.
pub fn default_profiles() -> Vec<Profile> {
    let profile = |name: &str, cores: f64, gib: u64| Profile::new(name, cores, Memory(gib << 30));
    vec![profile("small", 0.5, 1), profile("medium", 2.0, 2), profile("larger", 4.0, 4)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> OptionsSpec {
        OptionsSpec::new(default_profiles(), vec![])
    }

    #[test]
    fn spec_matches_the_python_server() {
        assert_eq!(
            spec().to_json(),
            json!({ "cluster_options": [{ "field": "profile", "label": "Cluster profile", "default": "small",
                "spec": { "type": "select", "options": ["small", "medium", "larger"] } }] })
        );
    }

    #[test]
    fn profiles_resolve_to_cores_memory_and_threads() {
        let base = ClusterDefaults::default();
        let (options, small) = spec().resolve(&Map::new(), &base).unwrap();
        assert_eq!(options["profile"], "small");
        assert_eq!(
            (small.worker_cores, small.worker_memory, small.worker_threads),
            (0.5, 1 << 30, 1)
        );
        let medium = json!({ "profile": "medium" });
        let (_, medium) = spec().resolve(medium.as_object().unwrap(), &base).unwrap();
        assert_eq!(
            (medium.worker_cores, medium.worker_memory, medium.worker_threads),
            (2.0, 2 << 30, 2)
        );
    }

    #[test]
    fn bad_options_are_refused_with_the_reference_messages() {
        let base = ClusterDefaults::default();
        let bogus = json!({ "bogus": 1, "profile": "small" });
        assert_eq!(
            spec().resolve(bogus.as_object().unwrap(), &base).unwrap_err(),
            "Unknown fields ['bogus']"
        );
        let huge = json!({ "profile": "huge" });
        assert_eq!(
            spec().resolve(huge.as_object().unwrap(), &base).unwrap_err(),
            "'huge' is not a valid option for profile"
        );
    }

    #[test]
    fn a_restricted_spec_offers_and_resolves_only_the_allowed_profiles() {
        let base = ClusterDefaults::default();
        let allowed = ["medium".to_string(), "larger".to_string()];
        let spec = spec().with_profiles(Some(&allowed));
        let json = spec.to_json();
        assert_eq!(json["cluster_options"][0]["default"], "medium");
        assert_eq!(json["cluster_options"][0]["spec"]["options"], json!(["medium", "larger"]));
        assert_eq!(spec.resolve(&Map::new(), &base).unwrap().0["profile"], "medium");
        let small = json!({ "profile": "small" });
        assert!(spec.resolve(small.as_object().unwrap(), &base).is_err());
        assert!(!spec.with_profiles(Some(&[])).has_profiles());
        assert!(spec.has_profile("larger") && !spec.has_profile("small"));
    }

    #[test]
    fn memory_units_are_binary() {
        assert_eq!(Memory::parse("2 G").unwrap().0, 2 << 30);
        assert_eq!(Memory::parse("1GiB").unwrap().0, 1 << 30);
        assert_eq!(Memory::parse("512 MiB").unwrap().0, 512 << 20);
        assert_eq!(Memory::parse("1000").unwrap().0, 1000);
        assert!(Memory::parse("2 parsecs").is_err());
    }

    #[test]
    fn extra_fields_are_typed_and_bounded() {
        let field: FieldConfig =
            toml::from_str("field = \"threads\"\ntype = \"int\"\ndefault = 1\nmin = 1\nmax = 4\ntarget = \"worker_threads\"").unwrap();
        field.check().unwrap();
        let spec = OptionsSpec::new(default_profiles(), vec![field]);
        let base = ClusterDefaults::default();
        let (_, config) =
            spec.resolve(json!({ "threads": 3 }).as_object().unwrap(), &base).unwrap();
        assert_eq!(config.worker_threads, 3);
        assert!(spec.resolve(json!({ "threads": 9 }).as_object().unwrap(), &base).is_err());
        assert!(spec.resolve(json!({ "threads": "two" }).as_object().unwrap(), &base).is_err());
    }

    #[test]
    fn a_profile_sets_image_and_environment_and_an_image_option_wins() {
        let mut gpu = Profile::new("gpu", 4.0, Memory(16 << 30));
        gpu.image = Some("pangeo/ml:1".into());
        gpu.environment = BTreeMap::from([("SHARED".into(), "profile".into())]);
        let field: FieldConfig =
            toml::from_str("field = \"image\"\ntype = \"string\"\ntarget = \"image\"").unwrap();
        let spec = OptionsSpec::new(vec![gpu], vec![field]);
        let environment =
            BTreeMap::from([("SHARED".into(), "global".into()), ("G".into(), "1".into())]);
        let base = ClusterDefaults { environment, ..Default::default() };
        let (_, config) = spec.resolve(&Map::new(), &base).unwrap();
        assert_eq!(
            config.image.as_deref(),
            Some("pangeo/ml:1"),
            "an empty option keeps the profile's"
        );
        assert_eq!(
            (config.environment["SHARED"].as_str(), config.environment["G"].as_str()),
            ("profile", "1")
        );
        assert_eq!(config.profile, "gpu");
        let mine = json!({ "image": "mine:2" });
        let (_, config) = spec.resolve(mine.as_object().unwrap(), &base).unwrap();
        assert_eq!(config.image.as_deref(), Some("mine:2"));
    }
}
