//! Forgotten clusters: a cluster that has had no connected client for
//! `idle_client_timeout` is stopped, whatever its workers do. This is the
//! notebook that was closed without `cluster.shutdown()`. And a cluster
//! older than its `max_lifetime` is stopped, whatever it does: the bound on
//! what any cluster can cost, even one whose client stays connected.
//!
//! The scheduler keeps the clock (its preload reports `clientless_seconds`
//! in each heartbeat, see `backends/presence_preload.py`), so the decision
//! needs no state here: it holds across gateway restarts and replicas.

use std::time::Duration;

use crate::domain::models::Heartbeat;

/// Why the cluster should stop now, or `None` to keep it.
///
/// `claimed_for` is how long the user has had the cluster: a scheduler that
/// waited in a warm pool was alone before anyone claimed it, and that time
/// does not count.
pub fn stop_reason(timeout: f64, beat: &Heartbeat, claimed_for: Duration) -> Option<String> {
    // No timeout, or an image whose scheduler does not report presence.
    let alone = beat.clientless_seconds.filter(|_| timeout > 0.0)?;
    let alone = alone.min(claimed_for.as_secs_f64());
    (beat.clients == Some(0) && alone >= timeout).then(|| {
        format!("no client connected for {alone:.0} s (cluster.idle_client_timeout = {timeout} s)")
    })
}

/// Why the cluster should stop now because of its age, or `None`.
/// `claimed_for` counts from the user's create (a warm pool's wait does
/// not count); heartbeats check it, so a cluster stops within one
/// heartbeat period of its lifetime.
pub fn lifetime_reason(max_lifetime: f64, claimed_for: Duration) -> Option<String> {
    let age = claimed_for.as_secs_f64();
    (max_lifetime > 0.0 && age >= max_lifetime).then(|| {
        format!("its lifetime is over: {age:.0} s since it started (cluster.max_lifetime = {max_lifetime} s)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(clients: Option<u32>, alone: Option<f64>) -> Heartbeat {
        Heartbeat {
            scheduler_address: "tls://s:8786".into(),
            dashboard_address: String::new(),
            api_address: "http://s:8788".into(),
            count: 2,
            active_workers: vec![],
            closing_workers: vec![],
            closed_workers: vec![],
            clients,
            clientless_seconds: alone,
        }
    }

    const LONG: Duration = Duration::from_secs(3600);

    #[test]
    fn a_cluster_alone_for_the_timeout_stops() {
        let reason = stop_reason(60.0, &beat(Some(0), Some(61.0)), LONG).unwrap();
        assert!(reason.contains("no client connected for 61 s"), "{reason}");
        assert!(reason.contains("idle_client_timeout"), "{reason}");
    }

    #[test]
    fn connected_recent_or_unreported_clusters_stay() {
        assert_eq!(stop_reason(60.0, &beat(Some(1), Some(0.0)), LONG), None);
        assert_eq!(stop_reason(60.0, &beat(Some(0), Some(59.0)), LONG), None);
        // An older scheduler image without the presence preload.
        assert_eq!(stop_reason(60.0, &beat(None, None), LONG), None);
        // Disabled.
        assert_eq!(stop_reason(0.0, &beat(Some(0), Some(1e6)), LONG), None);
    }

    #[test]
    fn a_cluster_past_its_lifetime_stops_busy_or_not() {
        let reason = lifetime_reason(600.0, Duration::from_secs(601)).unwrap();
        assert!(reason.contains("601 s") && reason.contains("max_lifetime = 600 s"), "{reason}");
        assert_eq!(lifetime_reason(600.0, Duration::from_secs(599)), None);
        assert_eq!(lifetime_reason(0.0, Duration::from_secs(1 << 30)), None, "0: no lifetime");
    }

    #[test]
    fn time_in_the_warm_pool_does_not_count() {
        let pooled_long_ago = beat(Some(0), Some(600.0));
        assert_eq!(stop_reason(60.0, &pooled_long_ago, Duration::from_secs(30)), None);
        assert!(stop_reason(60.0, &pooled_long_ago, Duration::from_secs(61)).is_some());
    }
}
