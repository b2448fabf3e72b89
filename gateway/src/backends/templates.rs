//! The clusters a warm pool keeps ready, for both backends: one template
//! per pooled profile, the cluster that profile makes with its default
//! options. A create is served from the pool only when its options resolve
//! to exactly a template's settings.

use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::time::Instant;
use tracing::warn;

use crate::config::Config;
use crate::domain::options::{ClusterConfig, OptionsSpec};

/// The cluster a pooled profile makes with its default options.
#[derive(Debug, Clone)]
pub struct Template {
    pub profile: String,
    pub options: Map<String, Value>,
    pub config: ClusterConfig,
}

/// The templates of `pool_profiles` (default: the first profile, the
/// default one). A profile whose clusters have an idle timeout is not
/// pooled: a pooled scheduler's idle clock would start long before its
/// cluster does.
pub fn pooled(config: &Config, pool_profiles: Option<&[String]>) -> Vec<Template> {
    let spec = OptionsSpec::new(config.options.profiles.clone(), config.options.fields.clone());
    let profiles: Vec<String> = match pool_profiles {
        Some(names) => names.to_vec(),
        None => config.options.profiles.iter().take(1).map(|p| p.name.clone()).collect(),
    };
    profiles
        .into_iter()
        .filter_map(|profile| {
            let requested = json!({ "profile": profile });
            let requested = requested.as_object().expect("an object");
            let (options, config) = spec
                .resolve(requested, &config.cluster)
                .inspect_err(|e| warn!(profile, error = %e, "profile not pooled"))
                .ok()?;
            if config.idle_timeout > 0.0 {
                warn!(profile, "profile not pooled: its clusters have an idle timeout");
                return None;
            }
            Some(Template { profile, options, config })
        })
        .collect()
}

/// After a pooled scheduler fails, the next start of its template waits
/// this long, doubling up to [`MAX_BACKOFF`]: a broken image or `dask`
/// does not respawn in a loop.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Per template: when it may start again after failures.
#[derive(Debug, Default)]
pub struct Backoff {
    delay: Option<Duration>,
    until: Option<Instant>,
}

impl Backoff {
    pub fn failed(&mut self) {
        let delay = self.delay.map_or(FIRST_BACKOFF, |d| (d * 2).min(MAX_BACKOFF));
        self.delay = Some(delay);
        self.until = Some(Instant::now() + delay);
    }

    /// One of the template's schedulers is ready: the next failure starts over.
    pub fn reset(&mut self) {
        self.delay = None;
    }

    pub fn ready(&self) -> bool {
        self.until.is_none_or(|t| Instant::now() >= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_doubling_up_to_a_minute() {
        let mut backoff = Backoff::default();
        assert!(backoff.ready());
        backoff.failed();
        assert!(!backoff.ready());
        backoff.failed();
        assert_eq!(backoff.delay, Some(FIRST_BACKOFF * 2));
        (0..10).for_each(|_| backoff.failed());
        assert_eq!(backoff.delay, Some(MAX_BACKOFF));
        backoff.reset();
        backoff.failed();
        assert_eq!(backoff.delay, Some(FIRST_BACKOFF));
    }
}
