//! Per-group policy: the limits and profiles a user gets from the groups
//! the Hub says they are in. A pure decision; the API applies it.
//!
//! A group's unset keys are the base (`[limits]`, `auth.default_profiles`).
//! A user in several configured groups gets, key by key, the most
//! permissive of them; a user in none gets the base.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::limits::Limits;
use crate::domain::options::Memory;

/// `[auth.groups.<group>]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupPolicy {
    pub user_max_clusters: Option<u32>,
    pub user_max_cores: Option<f64>,
    pub user_max_memory: Option<Memory>,
    pub cluster_max_workers: Option<u32>,
    pub cluster_max_cores: Option<f64>,
    pub cluster_max_memory: Option<Memory>,
    /// The profiles the group's members may choose (by name).
    pub profiles: Option<Vec<String>>,
}

/// What one user may do.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub limits: Limits,
    /// Allowed profile names; `None`: all of them.
    pub profiles: Option<Vec<String>>,
}

impl Policy {
    pub fn allows_profile(&self, name: &str) -> bool {
        self.profiles.as_ref().is_none_or(|p| p.iter().any(|n| n == name))
    }
}

/// The configured base and group policies.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    base: Limits,
    default_profiles: Option<Vec<String>>,
    groups: BTreeMap<String, GroupPolicy>,
}

/// `None` is unlimited, so it wins; otherwise the larger.
fn wider<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b > a { b } else { a }),
        _ => None,
    }
}

impl Policies {
    pub fn new(
        base: Limits,
        default_profiles: Option<Vec<String>>,
        groups: BTreeMap<String, GroupPolicy>,
    ) -> Self {
        Self { base, default_profiles, groups }
    }

    /// The base: what a user in no configured group gets.
    pub fn base(&self) -> Policy {
        Policy { limits: self.base.clone(), profiles: self.default_profiles.clone() }
    }

    /// One group's policy, its unset keys taken from the base.
    fn of_group(&self, group: &GroupPolicy) -> Policy {
        let b = &self.base;
        Policy {
            limits: Limits {
                user_max_clusters: group.user_max_clusters.or(b.user_max_clusters),
                user_max_cores: group.user_max_cores.or(b.user_max_cores),
                user_max_memory: group.user_max_memory.or(b.user_max_memory),
                cluster_max_workers: group.cluster_max_workers.or(b.cluster_max_workers),
                cluster_max_cores: group.cluster_max_cores.or(b.cluster_max_cores),
                cluster_max_memory: group.cluster_max_memory.or(b.cluster_max_memory),
                ..b.clone()
            },
            profiles: group.profiles.clone().or_else(|| self.default_profiles.clone()),
        }
    }

    /// The most permissive of two policies, key by key.
    fn widen(a: Policy, b: Policy) -> Policy {
        let (x, y) = (&a.limits, &b.limits);
        let limits = Limits {
            user_max_clusters: wider(x.user_max_clusters, y.user_max_clusters),
            user_max_cores: wider(x.user_max_cores, y.user_max_cores),
            user_max_memory: wider(x.user_max_memory, y.user_max_memory),
            cluster_max_workers: wider(x.cluster_max_workers, y.cluster_max_workers),
            cluster_max_cores: wider(x.cluster_max_cores, y.cluster_max_cores),
            cluster_max_memory: wider(x.cluster_max_memory, y.cluster_max_memory),
            ..a.limits.clone()
        };
        let profiles = match (a.profiles, b.profiles) {
            (Some(mut p), Some(q)) => {
                for name in q {
                    if !p.contains(&name) {
                        p.push(name);
                    }
                }
                Some(p)
            }
            _ => None,
        };
        Policy { limits, profiles }
    }

    /// The policy of a user in `groups` (the Hub's names; unconfigured ones
    /// are ignored).
    pub fn for_groups(&self, groups: &[String]) -> Policy {
        groups
            .iter()
            .filter_map(|g| self.groups.get(g))
            .map(|g| self.of_group(g))
            .reduce(Self::widen)
            .unwrap_or_else(|| self.base())
    }

    /// The widest any user may have: for a cluster whose owner's groups are
    /// not known (the gateway restarted and the owner has not called since),
    /// so that a heartbeat never shrinks a cluster it cannot attribute.
    pub fn widest(&self) -> Policy {
        self.groups.values().map(|g| self.of_group(g)).fold(self.base(), Self::widen)
    }

    /// The policy of a user whose groups may be unknown.
    pub fn for_known(&self, groups: Option<&[String]>) -> Policy {
        match groups {
            Some(groups) => self.for_groups(groups),
            None if self.groups.is_empty() => self.base(),
            None => self.widest(),
        }
    }

    /// Every profile named by the policies exists.
    pub fn check(&self, profiles: &[String]) -> anyhow::Result<()> {
        let named = self
            .default_profiles
            .iter()
            .flatten()
            .map(|p| ("auth.default_profiles".to_string(), p))
            .chain(self.groups.iter().flat_map(|(g, policy)| {
                policy
                    .profiles
                    .iter()
                    .flatten()
                    .map(move |p| (format!("auth.groups.{g}.profiles"), p))
            }));
        for (key, name) in named {
            anyhow::ensure!(profiles.contains(name), "{key}: no profile named {name:?}");
        }
        for (g, policy) in &self.groups {
            for (key, value) in [
                ("user_max_cores", policy.user_max_cores),
                ("cluster_max_cores", policy.cluster_max_cores),
            ] {
                if let Some(v) = value {
                    anyhow::ensure!(
                        v.is_finite() && v >= 0.0,
                        "auth.groups.{g}.{key}: must be a non-negative number"
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn policies() -> Policies {
        let base = Limits {
            user_max_clusters: Some(1),
            cluster_max_workers: Some(4),
            user_max_cores: None,
            ..Limits::default()
        };
        let groups = BTreeMap::from([
            (
                "students".to_string(),
                GroupPolicy { cluster_max_workers: Some(2), ..Default::default() },
            ),
            (
                "staff".to_string(),
                GroupPolicy {
                    user_max_clusters: Some(3),
                    cluster_max_workers: Some(8),
                    profiles: Some(names(&["small", "medium"])),
                    ..Default::default()
                },
            ),
            (
                "gpu".to_string(),
                GroupPolicy {
                    user_max_cores: Some(16.0),
                    profiles: Some(names(&["gpu"])),
                    ..Default::default()
                },
            ),
        ]);
        Policies::new(base, Some(names(&["small"])), groups)
    }

    #[test]
    fn no_configured_group_gets_the_base() {
        let p = policies();
        for groups in [names(&[]), names(&["chess-club"])] {
            let policy = p.for_groups(&groups);
            assert_eq!(policy.limits.cluster_max_workers, Some(4));
            assert_eq!(policy.profiles, Some(names(&["small"])));
        }
    }

    #[test]
    fn a_group_may_restrict_below_the_base_and_inherits_unset_keys() {
        let policy = policies().for_groups(&names(&["students"]));
        assert_eq!(policy.limits.cluster_max_workers, Some(2));
        assert_eq!(policy.limits.user_max_clusters, Some(1));
        assert_eq!(policy.profiles, Some(names(&["small"])));
        assert!(!policy.allows_profile("medium"));
    }

    #[test]
    fn several_groups_give_the_most_permissive_key_by_key() {
        let policy = policies().for_groups(&names(&["students", "staff", "gpu"]));
        assert_eq!(policy.limits.cluster_max_workers, Some(8));
        assert_eq!(policy.limits.user_max_clusters, Some(3));
        // `user_max_cores` is unlimited in the base, which students and staff inherit.
        assert_eq!(policy.limits.user_max_cores, None);
        assert_eq!(policy.profiles, Some(names(&["small", "medium", "gpu"])));
        let policy = policies().for_groups(&names(&["students", "gpu"]));
        assert_eq!(policy.profiles, Some(names(&["small", "gpu"])));
    }

    #[test]
    fn unknown_membership_gets_the_widest() {
        let p = policies();
        let widest = p.for_known(None);
        assert_eq!(widest.limits.cluster_max_workers, Some(8));
        // The base's, then each group's (in name order), once each.
        assert_eq!(widest.profiles, Some(names(&["small", "gpu", "medium"])));
        let plain = Policies::new(Limits::default(), None, BTreeMap::new());
        assert_eq!(plain.for_known(None), plain.base());
    }

    #[test]
    fn profiles_named_must_exist() {
        let err = policies().check(&names(&["small", "medium"])).unwrap_err().to_string();
        assert_eq!(err, "auth.groups.gpu.profiles: no profile named \"gpu\"");
        policies().check(&names(&["small", "medium", "gpu"])).unwrap();
    }
}
