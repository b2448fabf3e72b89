//! The warm pool on Kubernetes: for each pooled profile, `pool_size`
//! DaskClusters made ahead of time, each with its own name, API token and
//! TLS pair and no user, labelled `gateway.dask.org/pool=<template key>`.
//! They live in the API server, so every gateway replica sees one pool:
//!
//! - A create whose options resolve to exactly a template's settings claims
//!   a ready member (its DaskCluster Running: the scheduler answers its
//!   readiness probe, its Service exists) with a merge patch that carries
//!   the resourceVersion it saw. The API server takes one patch per
//!   version, so two replicas never hand out the same member; a conflict
//!   tries the next member, then starts cold.
//! - Each replica refills from its watch cache (plus its own creates the
//!   cache has not shown yet). Replicas refilling at the same moment may
//!   each create the missing ones: an overshoot of up to `pool_size` per
//!   template per extra replica, used up by the next claims or trimmed
//!   after [`TRIM_GRACE`].
//! - A member that cannot start (the operator says Failed, or the start
//!   timeout passes) is deleted, without a history record, and its template
//!   backs off.
//!
//! Members outlive the gateway (a restarted one reuses them): at most
//! `pool_size` per template, plus a passing overshoot. Members of a template
//! no replica has any more (a changed profile) go after [`TRIM_GRACE`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dask_crds::DaskCluster;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Resource, ResourceExt};
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use tracing::{info, warn};

use super::build::{CLAIMED, CLUSTER, OPTIONS, POOL, USER};
use super::{KubernetesBackend, MANAGER, start_failure};
use crate::backends::templates::{self, Backoff, Template};
use crate::config::{Config, KubernetesConfig};
use crate::domain::models::{Cluster, now_ms};
use crate::domain::options::ClusterConfig;

/// Members beyond `pool_size`, and members of a template no replica has,
/// are deleted once this old: an overshoot of replicas refilling at once,
/// or a rolling update (old and new replicas with other templates), are
/// over by then, so replicas never delete each other's members in a loop.
pub const TRIM_GRACE: Duration = Duration::from_secs(120);
/// How often the pool looks at the cache at most (and at least, idle).
const REFILL_DEBOUNCE: Duration = Duration::from_millis(200);
const REFILL_IDLE: Duration = Duration::from_secs(2);
/// A member this replica created (or deleted) counts as such until the
/// cache shows it, for this long at most.
const UNSEEN_MAX: Duration = Duration::from_secs(30);
/// Ready members a claim tries before starting cold.
const CLAIM_ATTEMPTS: usize = 3;
/// How long a claim waits for the watch cache to show it, so that the
/// client's next request (served from the cache) finds the cluster RUNNING.
const CLAIM_VISIBLE: Duration = Duration::from_secs(2);

/// A template and its key: a digest of the settings it makes, so a member
/// made from a profile that has changed since is never claimed for it.
#[derive(Debug, Clone)]
struct Keyed {
    template: Template,
    key: String,
}

/// The key of the members made with `config` (a valid label value).
pub fn key_of(config: &ClusterConfig) -> String {
    use sha2::{Digest, Sha256};
    let json = serde_json::to_string(config).unwrap_or_default();
    hex::encode(&Sha256::digest(json.as_bytes())[..8])
}

#[derive(Debug, Clone, Default)]
pub struct Pool {
    size: usize,
    templates: Vec<Keyed>,
}

impl Pool {
    pub fn new(config: &Config, k8s: &KubernetesConfig) -> Self {
        let templates = templates::pooled(config, k8s.pool_profiles.as_deref())
            .into_iter()
            .map(|template| Keyed { key: key_of(&template.config), template })
            .collect();
        Self { size: k8s.pool_size as usize, templates }
    }

    /// The template that makes exactly this cluster, if any.
    pub fn template_for(&self, config: &ClusterConfig) -> Option<usize> {
        if self.size == 0 {
            return None;
        }
        self.templates.iter().position(|t| &t.template.config == config)
    }

    fn template_of_key(&self, key: &str) -> Option<usize> {
        self.templates.iter().position(|t| t.key == key)
    }
}

/// Where a member is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Starting,
    /// RUNNING: a claim makes it the user's, RUNNING at once.
    Ready,
    /// It cannot start (the operator's verdict, or past the start timeout).
    Failed(String),
}

/// A pool member as the cache shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// The DaskCluster's name.
    pub resource: String,
    pub key: String,
    pub state: State,
    pub created_ms: i64,
    /// The resourceVersion this view is of: a claim patches that version
    /// alone (a newer one may be claimed already).
    pub version: String,
}

/// What the refill does now.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Members to make, per template.
    pub create: Vec<(usize, usize)>,
    /// Members to delete (DaskCluster names).
    pub delete: Vec<String>,
    /// Templates one of whose members failed (each backs off).
    pub failed: Vec<usize>,
}

/// The refill's decision: failed members go (and their template backs
/// off); each template whose `ready` allows it gets up to `size` members,
/// counting the `unseen` ones this replica made; members beyond that, or
/// of no template, go once older than [`TRIM_GRACE`] (those not ready
/// first, then the youngest: every replica picks the same).
pub fn plan(
    pool: &Pool,
    members: &[Member],
    unseen: &[usize],
    now_ms: i64,
    ready: impl Fn(usize) -> bool,
) -> Plan {
    let mut plan = Plan::default();
    let old = |m: &Member| now_ms.saturating_sub(m.created_ms) >= TRIM_GRACE.as_millis() as i64;
    let mut live: Vec<Vec<&Member>> = vec![Vec::new(); pool.templates.len()];
    for member in members {
        let template = pool.template_of_key(&member.key);
        match (&member.state, template) {
            (State::Failed(_), _) => {
                plan.delete.push(member.resource.clone());
                plan.failed.extend(template);
            }
            (_, Some(t)) => live[t].push(member),
            (_, None) if old(member) => plan.delete.push(member.resource.clone()),
            (_, None) => {}
        }
    }
    for (t, mut members) in live.into_iter().enumerate() {
        let count = members.len() + unseen.iter().filter(|u| **u == t).count();
        // A template that failed just now waits for its backoff first.
        if count < pool.size && ready(t) && !plan.failed.contains(&t) {
            plan.create.push((t, pool.size - count));
        }
        members.retain(|m| old(m));
        // Creation times have whole seconds: the name breaks ties alike everywhere.
        members.sort_by_key(|m| {
            (m.state == State::Ready, std::cmp::Reverse((m.created_ms, m.resource.clone())))
        });
        let excess = count.saturating_sub(pool.size);
        plan.delete.extend(members.iter().take(excess).map(|m| m.resource.clone()));
    }
    plan
}

/// The ready members of template `key` a claim tries, oldest first.
pub fn claimable<'a>(members: &'a [Member], key: &str) -> Vec<&'a Member> {
    let mut ready: Vec<&Member> =
        members.iter().filter(|m| m.key == key && m.state == State::Ready).collect();
    ready.sort_by(|a, b| (a.created_ms, &a.resource).cmp(&(b.created_ms, &b.resource)));
    ready
}

/// The patch that makes a member `user`'s: only if it is still at
/// `version` (the API server refuses it with 409 otherwise), out of the
/// pool, with the user's options and the claim's time.
pub fn claim_patch(version: &str, user: &str, options: &Map<String, Value>, now_ms: i64) -> Value {
    json!({
        "metadata": {
            "resourceVersion": version,
            "labels": { POOL: null },
            "annotations": {
                USER: user,
                OPTIONS: serde_json::to_string(options).unwrap_or_default(),
                CLAIMED: now_ms.to_string(),
            },
        },
    })
}

impl KubernetesBackend {
    /// The pool members in the cache (those being deleted are gone already).
    fn members(&self, start_timeout: Duration) -> Vec<(Member, Arc<DaskCluster>)> {
        let now = k8s_openapi::jiff::Timestamp::now();
        self.clusters
            .state()
            .into_iter()
            .filter(|dc| dc.meta().deletion_timestamp.is_none())
            .filter_map(|dc| {
                let key = dc.labels().get(POOL)?.clone();
                let created = dc.creation_timestamp().map(|t| t.0).unwrap_or(now);
                let age = now.duration_since(created).as_secs_f64();
                let has_secret = self.secret_of(&dc).is_some();
                let state = match start_failure(&dc, age, start_timeout) {
                    Some(reason) => State::Failed(reason),
                    None if dc.is_running() && has_secret => State::Ready,
                    None => State::Starting,
                };
                let member = Member {
                    resource: dc.name_any(),
                    key,
                    state,
                    created_ms: created.as_millisecond(),
                    version: dc.resource_version().unwrap_or_default(),
                };
                Some((member, dc))
            })
            .collect()
    }

    /// Makes a ready member of `template` `request`'s owner's, if there is
    /// one; `None`: start cold.
    pub(super) async fn claim(&self, template: usize, request: &Cluster) -> Option<DaskCluster> {
        let key = &self.pool.templates.get(template)?.key;
        let members: Vec<Member> =
            self.members(self.start_timeout).into_iter().map(|(m, _)| m).collect();
        for member in claimable(&members, key).into_iter().take(CLAIM_ATTEMPTS) {
            let patch = claim_patch(&member.version, &request.username, &request.options, now_ms());
            let params = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
            match self.api().patch(&member.resource, &params, &Patch::Merge(patch)).await {
                Ok(claimed) => {
                    self.until_cached(&claimed).await;
                    return Some(claimed);
                }
                // Claimed (or deleted) by another create, here or on another replica.
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => continue,
                Err(e) => {
                    warn!(error = %e, "could not claim a pooled cluster; starting cold");
                    return None;
                }
            }
        }
        None
    }

    /// Waits (briefly) until the cache shows the claim.
    async fn until_cached(&self, claimed: &DaskCluster) {
        let name = claimed.labels().get(CLUSTER).cloned().unwrap_or_default();
        let mut changes = self.changed.subscribe();
        let seen = || self.find(&name).is_some_and(|dc| !dc.labels().contains_key(POOL));
        let wait = async {
            while !seen() {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        if tokio::time::timeout(CLAIM_VISIBLE, wait).await.is_err() {
            warn!(cluster = %name, "the claimed cluster is not in the cache yet");
        }
    }

    /// Makes one member of `template`; returns its DaskCluster's name.
    async fn create_member(&self, template: usize) -> anyhow::Result<String> {
        let keyed = &self.pool.templates[template];
        let t = &keyed.template;
        let cluster = Cluster::fresh("", t.options.clone(), t.config.clone())?;
        info!(cluster = %cluster.name, profile = %t.profile, "starting a pooled cluster");
        let dc = self
            .create_resources(&cluster, Some(&keyed.key))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(dc.name_any())
    }

    /// Deletes a member, unless it changed since the cache showed it (a
    /// claim got it meanwhile). No record: users never saw it.
    pub(super) async fn delete_member(&self, dc: &DaskCluster) {
        let preconditions =
            Preconditions { resource_version: dc.resource_version(), uid: dc.uid() };
        let params =
            DeleteParams { preconditions: Some(preconditions), ..DeleteParams::background() };
        match self.api().delete(&dc.name_any(), &params).await {
            Ok(_) => info!(resource = %dc.name_any(), "deleted a pooled cluster"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => {
                warn!(resource = %dc.name_any(), error = %e, "could not delete a pooled cluster")
            }
        }
    }
}

/// Keeps each template's members at `pool_size` for as long as the
/// gateway runs (also with no pool: it removes members left by an earlier
/// configuration).
pub(super) async fn refill(backend: KubernetesBackend) {
    let pool = backend.pool.clone();
    let mut backoff: Vec<Backoff> = pool.templates.iter().map(|_| Backoff::default()).collect();
    // Made or deleted by this replica, not shown so by the cache yet.
    let mut created: HashMap<String, (usize, Instant)> = HashMap::new();
    let mut deleted: HashMap<String, Instant> = HashMap::new();
    let mut changes = backend.changed.subscribe();
    loop {
        let members = backend.members(backend.start_timeout);
        created.retain(|name, (_, at)| {
            at.elapsed() < UNSEEN_MAX && !members.iter().any(|(m, _)| &m.resource == name)
        });
        deleted.retain(|name, at| {
            at.elapsed() < UNSEEN_MAX && members.iter().any(|(m, _)| &m.resource == name)
        });
        let members: Vec<(Member, Arc<DaskCluster>)> =
            members.into_iter().filter(|(m, _)| !deleted.contains_key(&m.resource)).collect();
        for (member, _) in &members {
            if let (State::Ready, Some(t)) = (&member.state, pool.template_of_key(&member.key)) {
                backoff[t].reset();
            }
        }
        let unseen: Vec<usize> = created.values().map(|(t, _)| *t).collect();
        let view: Vec<Member> = members.iter().map(|(m, _)| m.clone()).collect();
        let plan = plan(&pool, &view, &unseen, now_ms(), |t| backoff[t].ready());
        for t in plan.failed {
            backoff[t].failed();
        }
        for name in plan.delete {
            if let Some((member, dc)) = members.iter().find(|(m, _)| m.resource == name) {
                if let State::Failed(reason) = &member.state {
                    warn!(resource = %name, %reason, "a pooled cluster failed; replacing it");
                }
                backend.delete_member(dc).await;
                deleted.insert(name, Instant::now());
            }
        }
        for (t, missing) in plan.create {
            for _ in 0..missing {
                match backend.create_member(t).await {
                    Ok(name) => {
                        created.insert(name, (t, Instant::now()));
                    }
                    Err(e) => {
                        warn!(error = %e, "could not make a pooled cluster");
                        backoff[t].failed();
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(REFILL_DEBOUNCE).await;
        if let Ok(Err(_)) = tokio::time::timeout(REFILL_IDLE, changes.changed()).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::models::ClusterStatus;
    use crate::domain::models::tests::sample;

    fn pool(size: usize) -> Pool {
        let config = sample("x", "", ClusterStatus::Pending).config;
        let template = Template { profile: "small".into(), options: Map::new(), config };
        Pool { size, templates: vec![Keyed { key: key_of(&template.config), template }] }
    }

    fn member(name: &str, key: &str, state: State, created_ms: i64) -> Member {
        Member { resource: name.into(), key: key.into(), state, created_ms, version: "1".into() }
    }

    const LATER: i64 = 1_000_000;

    #[test]
    fn only_the_same_settings_are_served_and_keys_follow_the_settings() {
        let pool = pool(1);
        let config = pool.templates[0].template.config.clone();
        assert_eq!(pool.template_for(&config), Some(0));
        let other = ClusterConfig { worker_threads: config.worker_threads + 1, ..config.clone() };
        assert_eq!(pool.template_for(&other), None);
        assert_ne!(key_of(&other), key_of(&config));
        assert_eq!(key_of(&config), key_of(&config.clone()));
        assert!(key_of(&config).len() <= 63, "a label value");
        assert_eq!(self::pool(0).template_for(&config), None, "no pool, no claims");
    }

    #[test]
    fn the_refill_makes_what_is_missing_counting_its_unseen_creates() {
        let pool = pool(2);
        let key = pool.templates[0].key.clone();
        let all = |_| true;
        assert_eq!(plan(&pool, &[], &[], 0, all).create, [(0, 2)]);
        let one = [member("a", &key, State::Starting, 0)];
        assert_eq!(plan(&pool, &one, &[], 0, all).create, [(0, 1)]);
        assert_eq!(
            plan(&pool, &one, &[0], 0, all),
            Plan::default(),
            "its own create is on the way"
        );
        assert_eq!(plan(&pool, &[], &[], 0, |_| false).create, [], "backing off");
    }

    #[test]
    fn a_failed_member_goes_and_its_template_backs_off() {
        let pool = pool(1);
        let key = pool.templates[0].key.clone();
        let failed = [member("a", &key, State::Failed("ImagePullBackOff".into()), 0)];
        let plan = plan(&pool, &failed, &[], 0, |_| true);
        assert_eq!(plan.delete, ["a"]);
        assert_eq!(plan.failed, [0]);
        assert_eq!(plan.create, [], "replaced once the backoff allows");
    }

    #[test]
    fn an_overshoot_is_trimmed_after_the_grace_the_same_on_every_replica() {
        let pool = pool(1);
        let key = pool.templates[0].key.clone();
        let members = [
            member("old-ready", &key, State::Ready, 0),
            member("young-ready", &key, State::Ready, 10),
            member("starting", &key, State::Starting, 5),
        ];
        assert_eq!(plan(&pool, &members, &[], 20, |_| true), Plan::default(), "within the grace");
        let plan = plan(&pool, &members, &[], LATER, |_| true);
        assert_eq!(plan.delete, ["starting", "young-ready"]);
        assert!(plan.create.is_empty());
        // Two as young as each other: every replica trims the same one.
        let twins = [member("b", &key, State::Ready, 0), member("a", &key, State::Ready, 0)];
        assert_eq!(self::plan(&pool, &twins, &[], LATER, |_| true).delete, ["b"]);
    }

    #[test]
    fn members_of_no_template_go_after_the_grace() {
        let pool = pool(1);
        let stale = [member("stale", "0123abcd", State::Ready, 0)];
        assert!(plan(&pool, &stale, &[], 1, |_| true).delete.is_empty());
        assert_eq!(plan(&pool, &stale, &[], LATER, |_| true).delete, ["stale"]);
        // With no pool at all, leftovers go too.
        let key = pool.templates[0].key.clone();
        let leftover = [member("left", &key, State::Ready, 0)];
        assert_eq!(plan(&self::pool(0), &leftover, &[], LATER, |_| true).delete, ["left"]);
    }

    #[test]
    fn a_claim_tries_ready_members_of_its_template_oldest_first() {
        let members = [
            member("b", "k", State::Ready, 2),
            member("a", "k", State::Ready, 1),
            member("starting", "k", State::Starting, 0),
            member("other", "j", State::Ready, 0),
        ];
        let order: Vec<&str> =
            claimable(&members, "k").iter().map(|m| m.resource.as_str()).collect();
        assert_eq!(order, ["a", "b"]);
    }

    #[test]
    fn a_claim_is_conditional_and_gives_the_member_its_owner() {
        let options = Map::from_iter([("profile".into(), json!("small"))]);
        let patch = claim_patch("42", "alice", &options, 7);
        let meta = &patch["metadata"];
        assert_eq!(meta["resourceVersion"], "42", "the API server's precondition");
        assert_eq!(meta["labels"][POOL], Value::Null, "out of the pool");
        assert_eq!(meta["annotations"][USER], "alice");
        assert_eq!(meta["annotations"][OPTIONS], r#"{"profile":"small"}"#);
        assert_eq!(meta["annotations"][CLAIMED], "7");
    }
}
