//! The page's live streams, bounded: [`MAX_STREAMS_PER_USER`] and
//! [`MAX_STREAMS`] open at once, and the sessions signed out on this
//! replica (a sealed session cookie stays valid until it expires, so a
//! sign-out is remembered by the cookie's hash). Also the cookie helpers
//! the page's routes share.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, header};
use tokio::sync::watch;

/// Streams one user may hold open (a few tabs).
pub const MAX_STREAMS_PER_USER: usize = 8;
/// Streams open at once over all users; each holds a connection.
pub const MAX_STREAMS: usize = 512;
/// The longest pause between keep-alive comments.
const MAX_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Signed-out sessions remembered (the oldest forgotten first).
const MAX_SIGNED_OUT: usize = 4096;

/// The open streams, per user, and what ends them.
pub struct Streams {
    open: Arc<Mutex<HashMap<String, usize>>>,
    pub(super) max_per_user: usize,
    max_total: usize,
    pub(super) keep_alive: Duration,
    /// Bumped when a session is signed out: every stream rechecks its own.
    pub(super) signed_out: watch::Sender<u64>,
    /// Hashes of the session cookies signed out here.
    revoked: Mutex<VecDeque<[u8; 32]>>,
    /// Set when the gateway stops: every stream ends.
    pub(super) closing: watch::Sender<bool>,
}

/// One open stream's place; given back when the stream is dropped.
pub struct Permit {
    open: Arc<Mutex<HashMap<String, usize>>>,
    user: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("streams lock");
        if let Some(n) = open.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

/// Whether one more stream fits: `mine` of the user's, `total` open.
fn admits(mine: usize, total: usize, max_per_user: usize, max_total: usize) -> bool {
    mine < max_per_user && total < max_total
}

/// Keep-alive comments well inside the connection's idle timeout.
fn keep_alive_for(http_idle: Duration) -> Duration {
    (http_idle / 3).clamp(Duration::from_millis(100), MAX_KEEP_ALIVE)
}

impl Streams {
    pub fn new(http_idle: Duration) -> Self {
        Self::with_caps(http_idle, MAX_STREAMS_PER_USER, MAX_STREAMS)
    }

    pub fn with_caps(http_idle: Duration, max_per_user: usize, max_total: usize) -> Self {
        Self {
            open: Arc::default(),
            max_per_user,
            max_total,
            keep_alive: keep_alive_for(http_idle),
            signed_out: watch::Sender::new(0),
            revoked: Mutex::default(),
            closing: watch::Sender::new(false),
        }
    }

    pub(super) fn admit(&self, user: &str) -> Option<Permit> {
        let mut open = self.open.lock().expect("streams lock");
        let total: usize = open.values().sum();
        let mine = open.get(user).copied().unwrap_or(0);
        if !admits(mine, total, self.max_per_user, self.max_total) {
            return None;
        }
        *open.entry(user.to_string()).or_default() += 1;
        Some(Permit { open: self.open.clone(), user: user.to_string() })
    }

    /// Streams open now (all users).
    pub fn open_count(&self) -> usize {
        self.open.lock().expect("streams lock").values().sum()
    }

    /// The session of cookie value `session` was signed out: its streams end now.
    pub fn signed_out(&self, session: &str) {
        let mut revoked = self.revoked.lock().expect("revoked lock");
        if revoked.len() >= MAX_SIGNED_OUT {
            revoked.pop_front();
        }
        revoked.push_back(digest(session));
        drop(revoked);
        self.signed_out.send_modify(|n| *n += 1);
    }

    pub(super) fn is_signed_out(&self, session: &[u8; 32]) -> bool {
        self.revoked.lock().expect("revoked lock").contains(session)
    }

    /// The gateway is stopping: every stream ends (so that draining
    /// connections does not wait for them).
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }
}

pub(super) fn digest(session: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(session.as_bytes()).into()
}

/// The value of cookie `name` in `headers`, if sent.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(name)?.strip_prefix('='))
}

/// The request's cookies alone: a stream follows the browser's session,
/// and is checked against it again and again (never a password or token,
/// which would cost a check every time).
pub fn session_headers(headers: &HeaderMap) -> HeaderMap {
    let mut session = HeaderMap::new();
    for value in headers.get_all(header::COOKIE) {
        session.append(header::COOKIE, value.clone());
    }
    session
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn streams_are_capped_per_user_and_overall() {
        assert!(admits(0, 0, 2, 3));
        assert!(!admits(2, 2, 2, 3), "the user's cap");
        assert!(!admits(0, 3, 2, 3), "the overall cap");
        let streams = Streams::with_caps(Duration::from_secs(120), 2, 3);
        let a1 = streams.admit("alice").unwrap();
        let _a2 = streams.admit("alice").unwrap();
        assert!(streams.admit("alice").is_none());
        let _b1 = streams.admit("bob").unwrap();
        assert!(streams.admit("carol").is_none(), "three open in all");
        drop(a1);
        let carol = streams.admit("carol");
        assert!(carol.is_some(), "a closed stream gives its place back");
        assert_eq!(streams.open_count(), 3);
    }

    #[test]
    fn a_signed_out_session_is_remembered_by_its_hash() {
        let streams = Streams::new(Duration::from_secs(120));
        streams.signed_out("abc");
        assert!(streams.is_signed_out(&digest("abc")) && !streams.is_signed_out(&digest("abd")));
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("x=1; dask-gateway=abc; y=2"));
        assert_eq!(cookie(&headers, "dask-gateway"), Some("abc"));
        assert_eq!(cookie(&headers, "dask"), None);
    }

    #[test]
    fn keep_alives_come_well_inside_the_idle_timeout() {
        assert_eq!(keep_alive_for(Duration::from_secs(120)), MAX_KEEP_ALIVE);
        assert_eq!(keep_alive_for(Duration::from_secs(9)), Duration::from_secs(3));
        assert!(keep_alive_for(Duration::from_millis(500)) < Duration::from_millis(500));
    }
}
