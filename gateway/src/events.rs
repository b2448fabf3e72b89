//! `GET <prefix>/api/v1/events`: the page's live view as server-sent
//! events. Each event is a whole snapshot ([`crate::ui::view::snapshot`])
//! of what the signed-in user may see, sent when [`Backend::changes`]
//! bumps (coalesced, and only when it differs from the last one sent), so
//! the page never polls. A comment every `keep_alive` keeps proxies and
//! the gateway's own `http_idle_timeout` from cutting a quiet stream.
//!
//! A browser's stream: the session cookie is the only credential taken
//! (a password or token would be checked again at every session check).
//! Bounded: [`MAX_STREAMS_PER_USER`] and [`MAX_STREAMS`] open at once (a
//! 429 past them). A stream follows its session: it ends (after a
//! `signed-out` event) when the session expires or is signed out on this
//! replica (a sealed session cookie stays valid until it expires, so a
//! sign-out is remembered here by the cookie's hash), and when the gateway
//! stops.
//!
//! [`Backend::changes`]: crate::backend::Backend::changes

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use crate::Gateway;
use crate::api::ApiError;
use crate::auth::User;

/// Streams one user may hold open (a few tabs).
pub const MAX_STREAMS_PER_USER: usize = 8;
/// Streams open at once over all users; each holds a connection.
pub const MAX_STREAMS: usize = 512;
/// A burst of changes (a scale, many heartbeats) makes one event.
const COALESCE: Duration = Duration::from_millis(250);
/// How often a stream checks that its session is still valid (sign-outs
/// are noticed at once, expiry within this).
const SESSION_CHECK: Duration = Duration::from_secs(60);
/// The longest pause between keep-alive comments.
const MAX_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Signed-out sessions remembered (the oldest forgotten first).
const MAX_SIGNED_OUT: usize = 4096;

/// The open streams, per user, and what ends them.
pub struct Streams {
    open: Arc<Mutex<HashMap<String, usize>>>,
    max_per_user: usize,
    max_total: usize,
    keep_alive: Duration,
    /// Bumped when a session is signed out: every stream rechecks its own.
    signed_out: watch::Sender<u64>,
    /// Hashes of the session cookies signed out here.
    revoked: Mutex<VecDeque<[u8; 32]>>,
    /// Set when the gateway stops: every stream ends.
    closing: watch::Sender<bool>,
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

    fn admit(&self, user: &str) -> Option<Permit> {
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

    fn is_signed_out(&self, session: &[u8; 32]) -> bool {
        self.revoked.lock().expect("revoked lock").contains(session)
    }

    /// The gateway is stopping: every stream ends (so that draining
    /// connections does not wait for them).
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }
}

fn digest(session: &str) -> [u8; 32] {
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

/// `GET <prefix>/api/v1/events`, with the session cookie (the page's).
pub async fn stream(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let session = session_headers(&headers);
    let user = match gw.auth.authenticate(&session).await {
        Ok((user, _)) => user,
        Err(e) => return ApiError::from_auth(e, gw.auth.challenge()).into_response(),
    };
    let Some(permit) = gw.events.admit(&user.name) else {
        return ApiError::TooManyRequests(format!(
            "too many live streams open (at most {} per user)",
            gw.events.max_per_user
        ))
        .into_response();
    };
    let session_id = digest(cookie(&session, gw.auth.cookie_name()).unwrap_or_default());
    let keep_alive = KeepAlive::new().interval(gw.events.keep_alive);
    let mut check = tokio::time::interval(SESSION_CHECK);
    check.reset();
    let feed = Feed {
        changes: gw.backend.changes(),
        signed_out: gw.events.signed_out.subscribe(),
        closing: gw.events.closing.subscribe(),
        check,
        gw,
        user,
        session,
        session_id,
        last: None,
        done: false,
        _permit: permit,
    };
    let events = futures::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok::<_, Infallible>(event), feed))
    });
    let mut response = Sse::new(events).keep_alive(keep_alive).into_response();
    let out = response.headers_mut();
    // Proxies such as nginx must pass events on as they come.
    out.insert("x-accel-buffering", HeaderValue::from_static("no"));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// What woke a waiting stream.
enum Wake {
    Changed,
    CheckSession,
    Closed,
}

/// One stream's state between events.
struct Feed {
    gw: Arc<Gateway>,
    user: User,
    session: HeaderMap,
    /// The hash of the session cookie's value (see [`Streams::signed_out`]).
    session_id: [u8; 32],
    changes: watch::Receiver<u64>,
    signed_out: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
    /// When to check the session again (it may expire).
    check: tokio::time::Interval,
    /// The last snapshot sent: an unchanged one is not sent again.
    last: Option<String>,
    done: bool,
    _permit: Permit,
}

impl Feed {
    async fn snapshot(&self) -> String {
        let clusters = self.gw.backend.list().await;
        crate::ui::view::snapshot(&clusters, &self.user).to_string()
    }

    /// The next event; `None` ends the stream.
    async fn next(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        if self.last.is_none() {
            self.changes.borrow_and_update();
            let snapshot = self.snapshot().await;
            self.last = Some(snapshot.clone());
            return Some(Event::default().event("clusters").data(snapshot));
        }
        loop {
            let wake = tokio::select! {
                changed = self.changes.changed() => match changed {
                    Ok(()) => Wake::Changed,
                    Err(_) => Wake::Closed,
                },
                _ = self.signed_out.changed() => Wake::CheckSession,
                _ = self.check.tick() => Wake::CheckSession,
                _ = self.closing.wait_for(|closing| *closing) => Wake::Closed,
            };
            match wake {
                Wake::Closed => return None,
                Wake::CheckSession => {
                    if let Some(event) = self.check_session().await {
                        return Some(event);
                    }
                }
                Wake::Changed => {
                    tokio::time::sleep(COALESCE).await;
                    self.changes.borrow_and_update();
                    let snapshot = self.snapshot().await;
                    if self.last.as_deref() != Some(snapshot.as_str()) {
                        self.last = Some(snapshot.clone());
                        return Some(Event::default().event("clusters").data(snapshot));
                    }
                }
            }
        }
    }

    /// `Some(signed-out event)` when the session is no longer valid.
    async fn check_session(&mut self) -> Option<Event> {
        let valid = if self.gw.events.is_signed_out(&self.session_id) {
            None
        } else {
            self.gw.auth.authenticate(&self.session).await.ok()
        };
        match valid {
            Some((user, renewed)) if user.name == self.user.name => {
                // The role may have changed (a Hub recheck), which also
                // renews the sealed cookie: the next check uses that one.
                self.user = user;
                let pair = renewed.as_deref().and_then(|c| c.split(';').next());
                if let Some(pair) = pair.and_then(|p| HeaderValue::from_str(p).ok()) {
                    self.session.insert(header::COOKIE, pair);
                }
                None
            }
            _ => {
                self.done = true;
                Some(Event::default().event("signed-out").data("{}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
