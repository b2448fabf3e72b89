//! `GET <prefix>/api/v1/events`: the page's live view as server-sent
//! events. Each event is a whole snapshot ([`crate::http::pages::view::snapshot`])
//! of what the signed-in user may see, sent when [`Backend::changes`]
//! bumps (coalesced, and only when it differs from the last one sent), so
//! the page never polls. A comment every `keep_alive` keeps proxies and
//! the gateway's own `http_idle_timeout` from cutting a quiet stream.
//!
//! A browser's stream: the session cookie is the only credential taken
//! (a password or token would be checked again at every session check).
//! Bounded ([`super::streams`]): a few streams per user and overall open at once (a
//! 429 past them). A stream follows its session: it ends (after a
//! `signed-out` event) when the session expires or is signed out on this
//! replica (a sealed session cookie stays valid until it expires, so a
//! sign-out is remembered here by the cookie's hash), and when the gateway
//! stops.
//!
//! [`Backend::changes`]: crate::backends::Backend::changes

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use super::streams::{Permit, cookie, digest, session_headers};
use crate::auth::User;
use crate::http::errors::ApiError;
use crate::http::state::Gateway;

/// A burst of changes (a scale, many heartbeats) makes one event.
const COALESCE: Duration = Duration::from_millis(250);
/// How often a stream checks that its session is still valid (sign-outs
/// are noticed at once, expiry within this).
const SESSION_CHECK: Duration = Duration::from_secs(60);

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
        crate::http::pages::view::snapshot(&clusters, &self.user).to_string()
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
