//! What children inherit from their parent's metadata, as dask-kubernetes
//! does (`_get_labels`, `_get_annotations`): every label and annotation of a
//! DaskCluster (or DaskJob) reaches its Deployment, pod template, Service,
//! worker groups and pods, except kopf's and kubectl's bookkeeping and the
//! operator's own keys. Metadata set closer to the child (a worker group's
//! own, a template's `metadata`) wins. Pure: no I/O.

use std::collections::BTreeMap;

use dask_crds::{SimpleObjectMeta, annotations, labels};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

/// Key prefixes never passed on. The first two are dask-kubernetes' list
/// (prefixes without a slash, as it matches them: its own test manifest
/// annotates `kubectl.kubernetes.io` bare); the others are the operator's
/// own keys, which describe one object and mean nothing on another.
pub const NOT_INHERITED: &[&str] =
    &["kopf.zalando.org", "kubectl.kubernetes.io", labels::PREFIX, annotations::PREFIX];

type Map = BTreeMap<String, String>;

/// Labels and annotations passed from a parent to its children.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Inherited {
    pub labels: Map,
    pub annotations: Map,
}

fn inheritable(map: Option<&Map>) -> Map {
    map.into_iter()
        .flatten()
        .filter(|(k, _)| !NOT_INHERITED.iter().any(|prefix| k.starts_with(prefix)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl Inherited {
    /// What `meta`'s object passes on.
    pub fn from_meta(meta: &ObjectMeta) -> Self {
        Self {
            labels: inheritable(meta.labels.as_ref()),
            annotations: inheritable(meta.annotations.as_ref()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty()
    }

    /// `self` overridden by `nearer` (metadata set closer to the child wins).
    pub fn overridden_by(mut self, nearer: Inherited) -> Self {
        self.labels.extend(nearer.labels);
        self.annotations.extend(nearer.annotations);
        self
    }

    /// `self` overridden by a template's `metadata` (kept whole: the user set it there).
    pub fn with_template(mut self, template: Option<&SimpleObjectMeta>) -> Self {
        if let Some(template) = template {
            self.labels.extend(template.labels.clone().unwrap_or_default());
            self.annotations.extend(template.annotations.clone().unwrap_or_default());
        }
        self
    }

    /// The labels of a child: these, then the operator's (which win).
    pub fn labels_with(&self, ours: &[(&str, &str)]) -> Map {
        let mut labels = self.labels.clone();
        labels.extend(ours.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        labels
    }

    /// The annotations of a child, absent rather than empty: an empty map in
    /// a server-side apply is never a no-op (the API server stores no empty
    /// map, so every apply "adds" it again and writes a new resourceVersion,
    /// which wakes every watcher; a DaskJob re-applying its cluster looped on it).
    pub fn annotations(&self) -> Option<Map> {
        (!self.annotations.is_empty()).then(|| self.annotations.clone())
    }

    /// The labels alone, absent rather than empty.
    pub fn labels(&self) -> Option<Map> {
        (!self.labels.is_empty()).then(|| self.labels.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> Option<Map> {
        Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn bookkeeping_and_operator_keys_are_not_inherited() {
        let meta = ObjectMeta {
            labels: map(&[("team", "geo"), ("dask.org/cluster-name", "x")]),
            annotations: map(&[
                ("sidecar.istio.io/inject", "true"),
                ("kopf.zalando.org/foobar", "no"),
                ("kubectl.kubernetes.io", "no"),
                ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
                ("kubernetes.dask.org/cluster-replicas", "2"),
            ]),
            ..Default::default()
        };
        let inherited = Inherited::from_meta(&meta);
        assert_eq!(Some(inherited.labels.clone()), map(&[("team", "geo")]));
        assert_eq!(inherited.annotations(), map(&[("sidecar.istio.io/inject", "true")]));
    }

    #[test]
    fn nearer_metadata_wins_and_ours_win_over_all() {
        let cluster = Inherited {
            labels: map(&[("team", "geo"), ("tier", "a")]).unwrap(),
            annotations: map(&[("note", "cluster")]).unwrap(),
        };
        let group = Inherited { labels: map(&[("tier", "b")]).unwrap(), ..Default::default() };
        let template = SimpleObjectMeta {
            labels: map(&[("team", "ocean")]),
            annotations: map(&[("note", "template")]),
        };
        let merged = cluster.overridden_by(group).with_template(Some(&template));
        let labels = merged.labels_with(&[("team", "ours")]);
        assert_eq!(Some(labels), map(&[("team", "ours"), ("tier", "b")]));
        assert_eq!(merged.annotations(), map(&[("note", "template")]));
        assert_eq!(Inherited::default().annotations(), None, "absent, not empty");
    }
}
