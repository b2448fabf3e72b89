//! Who is asking. The dask-gateway client sends each request bare first and
//! its credentials only after a 401, then lives on the session cookie it is
//! given; so a login costs one password check (or Hub call) per session.
//!
//! Sessions live in their cookies, sealed with a key the replicas share
//! ([`session`]): any replica reads any session, and none keeps a table.
//! With JupyterHub auth a session also carries the Hub token it was opened
//! with and asks the Hub again once the cached answer has expired, so a
//! token revoked at the Hub stops working within
//! `auth.jupyterhub_cache_seconds`, cookie or not.

mod error;
pub mod hub;
pub mod session;

pub use self::error::AuthError;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use self::session::{HubCheck, Sealer, SessionData};
use crate::config::{AuthConfig, AuthKind, CookieSecure, HubSettings, Limits};

/// Longest user name accepted, in bytes (names are labels, annotations and
/// map keys: a header-sized name would cost memory everywhere).
pub const MAX_USER_NAME: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    pub name: String,
    pub admin: bool,
    /// The Hub's groups (empty for other kinds of auth): per-group policy.
    pub groups: Vec<String>,
}

impl User {
    /// Owners act on their clusters; admins on all of them.
    pub fn may_access(&self, owner: &str) -> bool {
        self.admin || self.name == owner
    }
}

/// The users file: `[users.<name>]` with an argon2 `password` hash (PHC
/// string, from `dask-gateway hash-password`) and an optional `admin` flag.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    users: HashMap<String, UserEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    password: String,
    #[serde(default)]
    admin: bool,
}

/// What a session cookie is worth now.
enum Found {
    Valid(User),
    /// A JupyterHub session whose Hub answer has expired: ask again.
    Recheck(SessionData),
}

/// Argon2 checks off the async threads, a few at a time, and the same work
/// for unknown users (against a dummy hash), so that timing does not say
/// which names exist.
struct PasswordChecks {
    permits: tokio::sync::Semaphore,
    dummy_hash: String,
}

impl PasswordChecks {
    fn new(concurrent: usize) -> anyhow::Result<Self> {
        let dummy = uuid::Uuid::new_v4().simple().to_string();
        Ok(Self {
            permits: tokio::sync::Semaphore::new(concurrent.max(1)),
            dummy_hash: hash_password(&dummy)?,
        })
    }

    /// Whether `password` matches `hash` (`None`: an unknown user, always false).
    async fn verify(&self, hash: Option<&str>, password: &str) -> bool {
        let Ok(_permit) = self.permits.acquire().await else { return false };
        let known = hash.is_some();
        let hash = hash.unwrap_or(&self.dummy_hash).to_string();
        let password = password.to_string();
        let matched = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
        })
        .await
        .unwrap_or(false);
        known && matched
    }
}

pub struct Authenticator {
    kind: AuthKind,
    shared_password: Option<[u8; 32]>,
    users: HashMap<String, UserEntry>,
    passwords: Arc<PasswordChecks>,
    hub: Option<hub::Hub>,
    /// The Hub settings, for the browser login.
    hub_settings: Option<HubSettings>,
    /// The last groups seen per user, for the limits of heartbeats (which
    /// carry no login); bounded like the sessions.
    memberships: Mutex<HashMap<String, Vec<String>>>,
    max_memberships: usize,
    /// (user, SHA-256 of the token).
    tokens: Vec<(String, [u8; 32])>,
    admins: HashSet<String>,
    cookie_name: String,
    max_age: Duration,
    /// The session cookie's `Path`: the gateway's prefix.
    cookie_path: String,
    cookie_secure: CookieSecure,
    sealer: Sealer,
    /// The last `Set-Cookie` made, with what it holds. A client that sends
    /// its credentials with every request and keeps no cookie (curl, a load
    /// generator) would otherwise cost a seal (AES-GCM, JSON, base64) on
    /// each: about a tenth of such a request's CPU. Reused only for the
    /// same session data (expiry included, in whole seconds) and `Secure`
    /// flag, so the value is exactly what a fresh seal would say.
    last_cookie: Mutex<Option<(SessionData, bool, String)>>,
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_string())
}

impl Authenticator {
    pub fn new(config: &AuthConfig, limits: &Limits) -> anyhow::Result<Self> {
        let users = match &config.users_file {
            Some(path) => load_users(path)?,
            None => HashMap::new(),
        };
        let mut tokens = Vec::new();
        for token in &config.tokens {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(&token.sha256, &mut digest)?;
            tokens.push((token.user.clone(), digest));
        }
        let shared_password = match &config.password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("auth.password_file {}: {e}", path.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            None => config.password.clone(),
        };
        let hub_settings = match config.kind {
            AuthKind::Jupyterhub => Some(config.hub_settings(|k| std::env::var(k).ok())?),
            _ => None,
        };
        let hub =
            hub_settings.as_ref().map(|s| hub::Hub::new(s, limits.max_sessions)).transpose()?;
        Ok(Self {
            kind: config.kind,
            shared_password: shared_password.map(|p| sha256(p.as_bytes())),
            users,
            passwords: Arc::new(PasswordChecks::new(limits.max_concurrent_password_checks)?),
            hub,
            hub_settings,
            memberships: Mutex::new(HashMap::new()),
            max_memberships: limits.max_sessions,
            tokens,
            admins: config.admins.iter().cloned().collect(),
            cookie_name: config.cookie_name.clone(),
            max_age: Duration::from_secs(config.cookie_max_age),
            cookie_path: "/".into(),
            cookie_secure: config.cookie_secure,
            sealer: match &config.cookie_secret_file {
                Some(path) => Sealer::from_secret(&read_cookie_secret(path)?),
                None => Sealer::random(),
            },
            last_cookie: Mutex::new(None),
        })
    }

    /// Scopes the session cookie to the gateway's path prefix.
    pub fn under_prefix(mut self, prefix: &str) -> Self {
        self.cookie_path = if prefix.is_empty() { "/".into() } else { prefix.into() };
        self
    }

    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// The session cookie's `Path`.
    pub fn cookie_path(&self) -> &str {
        &self.cookie_path
    }

    /// The `WWW-Authenticate` scheme that makes the client send credentials.
    pub fn challenge(&self) -> &'static str {
        match self.kind {
            AuthKind::Simple | AuthKind::Basic => "Basic",
            AuthKind::Jupyterhub => "jupyterhub",
        }
    }

    /// The user, and a `Set-Cookie` value when a new session was opened.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
    ) -> Result<(User, Option<String>), AuthError> {
        match self.session(headers) {
            Some(Found::Valid(user)) => return Ok((user, None)),
            Some(Found::Recheck(data)) => {
                let token = data.hub.as_ref().map(|h| h.token.clone()).unwrap_or_default();
                match self.hub_user(&token).await {
                    Ok(user) => {
                        let cookie = self.rechecked(data, &user, headers);
                        return Ok((user, cookie));
                    }
                    // Revoked, or no longer allowed: the session is worth
                    // nothing, and the request's own credentials (if any) decide.
                    Err(AuthError::Failed | AuthError::Forbidden(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            None => {}
        }
        let header =
            headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or(AuthError::Required)?;
        let (scheme, credentials) = header.split_once(' ').ok_or(AuthError::Failed)?;
        let credentials = credentials.trim();
        let mut hub_token = None;
        let user = match scheme.to_ascii_lowercase().as_str() {
            "basic" => self.basic(credentials).await?,
            "bearer" | "token" | "jupyterhub" => match self.static_token(credentials) {
                Some(user) => user,
                None if self.kind == AuthKind::Jupyterhub => {
                    hub_token = Some(credentials.to_string());
                    self.hub_user(credentials).await?
                }
                None => return Err(AuthError::Failed),
            },
            _ => return Err(AuthError::Failed),
        };
        let cookie = self.login(user.clone(), hub_token, headers)?;
        Ok((user, cookie))
    }

    /// Opens the session of a user just authenticated (with the Hub token
    /// behind it, if any); the `Set-Cookie` value, if the table had room.
    pub(crate) fn login(
        &self,
        user: User,
        hub_token: Option<String>,
        headers: &HeaderMap,
    ) -> Result<Option<String>, AuthError> {
        check_user_name(&user.name)?;
        let secure = self.secure_for(headers);
        let now = session::unix_now();
        let ttl = self.hub.as_ref().map(|h| h.cache_ttl()).unwrap_or_default();
        let data = SessionData {
            user: user.name,
            admin: user.admin,
            groups: user.groups,
            expires: now + self.max_age.as_secs(),
            hub: hub_token.map(|token| HubCheck { token, recheck: now + ttl.as_secs() }),
        };
        Ok(self.set_cookie(&data, secure))
    }

    /// The Hub settings, with JupyterHub auth.
    pub fn hub_settings(&self) -> Option<&HubSettings> {
        self.hub_settings.as_ref()
    }

    pub fn hub(&self) -> Option<&hub::Hub> {
        self.hub.as_ref()
    }

    /// The groups last seen for `user`; `None` when the gateway has not
    /// seen them log in (since it started).
    pub fn groups_of(&self, user: &str) -> Option<Vec<String>> {
        if self.hub.is_none() {
            // Only the Hub knows groups: everyone else is in none.
            return Some(vec![]);
        }
        self.memberships.lock().expect("memberships lock").get(user).cloned()
    }

    fn remember_groups(&self, user: &User) {
        let mut memberships = self.memberships.lock().expect("memberships lock");
        if memberships.len() < self.max_memberships || memberships.contains_key(&user.name) {
            memberships.insert(user.name.clone(), user.groups.clone());
        }
    }

    fn with_role(&self, name: String, admin: bool) -> User {
        let admin = admin || self.admins.contains(&name);
        User { name, admin, groups: vec![] }
    }

    async fn basic(&self, credentials: &str) -> Result<User, AuthError> {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .map_err(|_| AuthError::Failed)?;
        let decoded = String::from_utf8(decoded).map_err(|_| AuthError::Failed)?;
        let (name, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
        if name.is_empty() {
            return Err(AuthError::Failed);
        }
        check_user_name(name)?;
        match self.kind {
            AuthKind::Simple => {
                let ok = self.shared_password.is_none_or(|expected| {
                    bool::from(sha256(password.as_bytes()).ct_eq(&expected))
                });
                ok.then(|| self.with_role(name.into(), false)).ok_or(AuthError::Failed)
            }
            AuthKind::Basic => {
                let entry = self.users.get(name);
                let hash = entry.map(|e| e.password.as_str());
                if !self.passwords.verify(hash, password).await {
                    return Err(AuthError::Failed);
                }
                let admin = entry.is_some_and(|e| e.admin);
                Ok(self.with_role(name.into(), admin))
            }
            AuthKind::Jupyterhub => Err(AuthError::Failed),
        }
    }

    fn static_token(&self, token: &str) -> Option<User> {
        let digest = sha256(token.as_bytes());
        // Every entry is compared, in constant time, so timing tells nothing.
        let mut found = None;
        for (user, expected) in &self.tokens {
            if bool::from(digest.ct_eq(expected)) {
                found = Some(user.clone());
            }
        }
        found.map(|name| self.with_role(name, false))
    }

    /// The Hub's user (or service) for `token`, if it may use this gateway.
    pub(crate) async fn hub_user(&self, token: &str) -> Result<User, AuthError> {
        let hub = self.hub.as_ref().ok_or(AuthError::Failed)?;
        let identity = hub.identify(token, sha256(token.as_bytes())).await?;
        hub::check_access(&identity, &hub.service_name, hub.require_access_scope)?;
        let name = match identity.kind.as_deref() {
            None | Some("user") => identity.name,
            Some(kind) => format!("{kind}:{}", identity.name),
        };
        check_user_name(&name)?;
        let user = User { groups: identity.groups, ..self.with_role(name, identity.admin) };
        self.remember_groups(&user);
        Ok(user)
    }

    fn session(&self, headers: &HeaderMap) -> Option<Found> {
        let now = session::unix_now();
        // Several cookies of the name (another path's, a stale one): the
        // first that opens.
        let data = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().strip_prefix(self.cookie_name.as_str())?.strip_prefix('='))
            .find_map(|value| self.sealer.open(value, now))?;
        Some(match &data.hub {
            Some(check) if check.recheck <= now => Found::Recheck(data),
            _ => Found::Valid(User { name: data.user, admin: data.admin, groups: data.groups }),
        })
    }

    /// The Hub still vouches for the session's token: the same session,
    /// with the Hub's current groups and role, trusted for another cache
    /// period (its expiry does not move).
    fn rechecked(&self, data: SessionData, user: &User, headers: &HeaderMap) -> Option<String> {
        let ttl = self.hub.as_ref().map(|h| h.cache_ttl()).unwrap_or_default();
        let hub = data
            .hub
            .map(|check| HubCheck { recheck: session::unix_now() + ttl.as_secs(), ..check });
        let data = SessionData {
            user: user.name.clone(),
            admin: user.admin,
            groups: user.groups.clone(),
            hub,
            ..data
        };
        self.set_cookie(&data, self.secure_for(headers))
    }

    fn secure_for(&self, headers: &HeaderMap) -> bool {
        match self.cookie_secure {
            CookieSecure::Always => true,
            CookieSecure::Never => false,
            CookieSecure::Auto => came_over_https(headers),
        }
    }

    /// The `Set-Cookie` value holding `data`; `None` when it would not fit
    /// a cookie (a user in very many groups logs in on each request instead).
    fn set_cookie(&self, data: &SessionData, secure: bool) -> Option<String> {
        if let Some((last, last_secure, cookie)) = &*self.last_cookie.lock().expect("cookie lock")
            && last == data
            && *last_secure == secure
        {
            return Some(cookie.clone());
        }
        let cookie = self.seal_cookie(data, secure)?;
        *self.last_cookie.lock().expect("cookie lock") =
            Some((data.clone(), secure, cookie.clone()));
        Some(cookie)
    }

    fn seal_cookie(&self, data: &SessionData, secure: bool) -> Option<String> {
        let value = self.sealer.seal(data);
        if value.len() > session::MAX_COOKIE_VALUE {
            return None;
        }
        Some(format!(
            "{}={value}; Max-Age={}; Path={}; HttpOnly; SameSite=Lax{}",
            self.cookie_name,
            data.expires.saturating_sub(session::unix_now()),
            self.cookie_path,
            if secure { "; Secure" } else { "" },
        ))
    }
}

fn check_user_name(name: &str) -> Result<(), AuthError> {
    if name.len() > MAX_USER_NAME {
        return Err(AuthError::Invalid(format!(
            "user name: at most {MAX_USER_NAME} bytes, got {}",
            name.len()
        )));
    }
    Ok(())
}

/// Whether the proxy in front (an ingress, a load balancer) received the
/// request over HTTPS. A forged header only makes the sender's own cookie
/// `Secure`, so it needs no trust.
fn came_over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// The replicas' shared session key, from a file (a mounted Secret).
fn read_cookie_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    let secret = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("auth.cookie_secret_file {}: {e}", path.display()))?;
    anyhow::ensure!(
        secret.trim_ascii().len() >= 32,
        "auth.cookie_secret_file {}: at least 32 bytes of secret are needed",
        path.display()
    );
    Ok(secret.trim_ascii().to_vec())
}

fn load_users(path: &Path) -> anyhow::Result<HashMap<String, UserEntry>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("auth.users_file {}: {e}", path.display()))?;
    let file: UsersFile = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("auth.users_file {}: {e}", path.display()))?;
    for (name, entry) in &file.users {
        PasswordHash::new(&entry.password).map_err(|e| {
            anyhow::anyhow!(
                "auth.users_file {}: users.{name}.password is not an argon2 hash: {e}",
                path.display()
            )
        })?;
    }
    Ok(file.users)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StaticToken;
    use axum::http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        headers(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        ))
    }

    #[tokio::test]
    async fn users_file_checks_hashed_passwords_and_opens_a_session() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("users.toml");
        let hash = hash_password("s3cret").unwrap();
        std::fs::write(&file, format!("[users.alice]\npassword = \"{hash}\"\nadmin = true\n"))
            .unwrap();
        let config =
            AuthConfig { kind: AuthKind::Basic, users_file: Some(file), ..Default::default() };
        let auth = Authenticator::new(&config, &Limits::default()).unwrap();
        assert!(matches!(
            auth.authenticate(&basic("alice", "wrong")).await,
            Err(AuthError::Failed)
        ));
        assert!(matches!(
            auth.authenticate(&basic("mallory", "s3cret")).await,
            Err(AuthError::Failed)
        ));
        assert!(matches!(auth.authenticate(&HeaderMap::new()).await, Err(AuthError::Required)));
        let (user, cookie) = auth.authenticate(&basic("alice", "s3cret")).await.unwrap();
        assert_eq!(user, User { name: "alice".into(), admin: true, groups: vec![] });
        // The cookie alone is enough afterwards.
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_str(cookie.unwrap().split(';').next().unwrap()).unwrap(),
        );
        assert_eq!(auth.authenticate(&h).await.unwrap(), (user, None));
    }

    #[test]
    fn a_session_sealed_again_reuses_its_cookie_and_another_gets_its_own() {
        let auth = Authenticator::new(&AuthConfig::default(), &Limits::default()).unwrap();
        let expires = session::unix_now() + 600;
        let session = |user: &str| SessionData {
            user: user.into(),
            admin: false,
            groups: vec![],
            expires,
            hub: None,
        };
        let first = auth.set_cookie(&session("alice"), false).unwrap();
        assert_eq!(auth.set_cookie(&session("alice"), false).unwrap(), first);
        let secure = auth.set_cookie(&session("alice"), true).unwrap();
        assert!(secure.ends_with("; Secure") && secure != first);
        let bob = auth.set_cookie(&session("bob"), false).unwrap();
        assert_ne!(bob.split(';').next(), first.split(';').next());
        let later = SessionData { expires: expires + 1, ..session("alice") };
        assert_ne!(auth.set_cookie(&later, false).unwrap(), first);
        // Each opens to exactly what it was sealed from.
        let value =
            |cookie: &str| cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_string();
        let now = session::unix_now();
        assert_eq!(auth.sealer.open(&value(&bob), now).unwrap().user, "bob");
        assert_eq!(auth.sealer.open(&value(&first), now).unwrap(), session("alice"));
    }

    #[tokio::test]
    async fn static_tokens_are_matched_by_hash() {
        let token = "tok-123";
        let config = AuthConfig {
            tokens: vec![StaticToken {
                user: "bot".into(),
                sha256: hex::encode(sha256(token.as_bytes())),
            }],
            ..Default::default()
        };
        let auth = Authenticator::new(&config, &Limits::default()).unwrap();
        assert_eq!(auth.authenticate(&headers("Bearer tok-123")).await.unwrap().0.name, "bot");
        assert!(auth.authenticate(&headers("Bearer tok-124")).await.is_err());
    }

    #[tokio::test]
    async fn simple_auth_takes_any_name_and_the_shared_password() {
        let config = AuthConfig {
            password: Some("pw".into()),
            admins: vec!["root".into()],
            ..Default::default()
        };
        let auth = Authenticator::new(&config, &Limits::default()).unwrap();
        assert_eq!(
            auth.authenticate(&basic("bob", "pw")).await.unwrap().0,
            User { name: "bob".into(), admin: false, groups: vec![] }
        );
        assert!(auth.authenticate(&basic("root", "pw")).await.unwrap().0.admin);
        assert!(auth.authenticate(&basic("bob", "nope")).await.is_err());
    }

    fn cookie_header(set_cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(set_cookie.split(';').next().unwrap()).unwrap());
        h
    }

    #[tokio::test]
    async fn long_names_are_refused() {
        let auth = Authenticator::new(&AuthConfig::default(), &Limits::default()).unwrap();
        let long = "x".repeat(MAX_USER_NAME + 1);
        assert!(matches!(
            auth.authenticate(&basic(&long, "")).await,
            Err(AuthError::Invalid(m)) if m.contains("user name")
        ));
        assert!(auth.authenticate(&basic(&"y".repeat(MAX_USER_NAME), "")).await.is_ok());
    }

    #[tokio::test]
    async fn expired_sessions_are_worth_nothing() {
        let config = AuthConfig { cookie_max_age: 0, ..Default::default() };
        let auth = Authenticator::new(&config, &Limits::default()).unwrap();
        let (_, cookie) = auth.authenticate(&basic("alice", "")).await.unwrap();
        assert!(matches!(
            auth.authenticate(&cookie_header(&cookie.unwrap())).await,
            Err(AuthError::Required)
        ));
    }

    #[tokio::test]
    async fn replicas_sharing_the_cookie_secret_accept_each_others_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("cookie-secret");
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
        let config = AuthConfig {
            cookie_secret_file: Some(secret.clone()),
            admins: vec!["root".into()],
            ..Default::default()
        };
        let (one, other) = (
            Authenticator::new(&config, &Limits::default()).unwrap(),
            Authenticator::new(&config, &Limits::default()).unwrap(),
        );
        let (_, cookie) = one.authenticate(&basic("root", "")).await.unwrap();
        let session = cookie_header(&cookie.unwrap());
        let (user, renewed) = other.authenticate(&session).await.unwrap();
        assert_eq!((user.name.as_str(), user.admin, renewed), ("root", true, None));
        // A replica with a key of its own does not.
        let alone = Authenticator::new(&AuthConfig::default(), &Limits::default()).unwrap();
        assert!(matches!(alone.authenticate(&session).await, Err(AuthError::Required)));
        // A short secret is refused at start, naming the key.
        std::fs::write(&secret, "short").unwrap();
        let error = Authenticator::new(&config, &Limits::default()).err().unwrap().to_string();
        assert!(error.contains("auth.cookie_secret_file"), "{error}");
    }

    #[tokio::test]
    async fn unknown_users_cost_a_password_check_too() {
        use std::time::Instant;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("users.toml");
        let hash = hash_password("s3cret").unwrap();
        std::fs::write(&file, format!("[users.alice]\npassword = \"{hash}\"\n")).unwrap();
        let config =
            AuthConfig { kind: AuthKind::Basic, users_file: Some(file), ..Default::default() };
        let auth = Authenticator::new(&config, &Limits::default()).unwrap();
        let timed = |user: &'static str| {
            let auth = &auth;
            async move {
                let started = Instant::now();
                assert!(auth.authenticate(&basic(user, "wrong")).await.is_err());
                started.elapsed()
            }
        };
        let (known, unknown) = (timed("alice").await, timed("mallory").await);
        // Both ran argon2 (tens of ms in a debug build); an early return would be ~0.
        assert!(unknown * 4 > known, "known {known:?}, unknown {unknown:?}");
    }

    #[tokio::test]
    async fn the_session_cookie_is_scoped_httponly_and_secure_behind_https() {
        let auth = Authenticator::new(&AuthConfig::default(), &Limits::default())
            .unwrap()
            .under_prefix("/services/dask-gateway");
        let cookie = auth.authenticate(&basic("alice", "")).await.unwrap().1.unwrap();
        assert!(cookie.contains("; Path=/services/dask-gateway;"), "{cookie}");
        assert!(cookie.contains("; HttpOnly") && cookie.contains("; SameSite=Lax"), "{cookie}");
        assert!(!cookie.contains("Secure"), "{cookie}");
        let mut over_https = basic("bob", "");
        over_https.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let cookie = auth.authenticate(&over_https).await.unwrap().1.unwrap();
        assert!(cookie.ends_with("; Secure"), "{cookie}");

        let config = AuthConfig { cookie_secure: CookieSecure::Always, ..Default::default() };
        let auth = Authenticator::new(&config, &Limits::default()).unwrap();
        let cookie = auth.authenticate(&basic("alice", "")).await.unwrap().1.unwrap();
        assert!(cookie.contains("; Path=/;") && cookie.ends_with("; Secure"), "{cookie}");
    }

    /// A Hub answering `/hub/api/user` from a token table the test edits,
    /// counting the calls.
    async fn fake_hub(
        tokens: Arc<Mutex<HashMap<String, serde_json::Value>>>,
        calls: Arc<std::sync::atomic::AtomicUsize>,
    ) -> String {
        use axum::extract::State;
        use axum::http::StatusCode;
        use axum::response::IntoResponse;
        type Table = Arc<Mutex<HashMap<String, serde_json::Value>>>;
        async fn user(
            State((tokens, calls)): State<(Table, Arc<std::sync::atomic::AtomicUsize>)>,
            headers: HeaderMap,
        ) -> axum::response::Response {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let token = headers
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("token "))
                .unwrap_or_default();
            match tokens.lock().unwrap().get(token) {
                Some(body) => axum::Json(body.clone()).into_response(),
                None => StatusCode::FORBIDDEN.into_response(),
            }
        }
        let app = axum::Router::new()
            .route("/hub/api/user", axum::routing::get(user))
            .with_state((tokens, calls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        format!("http://{addr}/hub/api")
    }

    fn hub_config(url: String, cache_seconds: u64) -> AuthConfig {
        AuthConfig {
            kind: AuthKind::Jupyterhub,
            jupyterhub_api_url: Some(url),
            jupyterhub_service_name: Some("dask-gateway".into()),
            jupyterhub_cache_seconds: cache_seconds,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn hub_answers_are_cached_and_a_revoked_token_stops_within_the_expiry() {
        use std::sync::atomic::Ordering;
        let tokens = Arc::new(Mutex::new(HashMap::from([
            (
                "alice-token".to_string(),
                serde_json::json!({"kind": "user", "name": "alice", "groups": ["staff"],
                    "scopes": ["self", "access:services!service=dask-gateway"]}),
            ),
            (
                "narrow-token".to_string(),
                serde_json::json!({"kind": "user", "name": "bob", "scopes": ["read:users:name!user=bob"]}),
            ),
        ])));
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let url = fake_hub(tokens.clone(), calls.clone()).await;
        let auth_config = hub_config(url, 1);
        let auth = Authenticator::new(&auth_config, &Limits::default()).unwrap();

        let (user, cookie) = auth.authenticate(&headers("jupyterhub alice-token")).await.unwrap();
        assert_eq!(user.groups, ["staff"]);
        assert_eq!(auth.groups_of("alice"), Some(vec!["staff".to_string()]));
        // A second login with the token is answered from the cache.
        auth.authenticate(&headers("token alice-token")).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // A user's token without the service's scope passes by default; with
        // the scope required it is a 403, not a 401.
        let (bob, _) = auth.authenticate(&headers("token narrow-token")).await.unwrap();
        assert_eq!(bob.name, "bob");
        let strict = AuthConfig { jupyterhub_require_access_scope: true, ..auth_config.clone() };
        let strict = Authenticator::new(&strict, &Limits::default()).unwrap();
        assert!(matches!(
            strict.authenticate(&headers("token narrow-token")).await,
            Err(AuthError::Forbidden(m)) if m.contains("access:services!service=dask-gateway")
        ));

        // Revoked at the Hub: still trusted until the cached answer expires,
        // then neither the token nor the session it opened works.
        tokens.lock().unwrap().remove("alice-token");
        let mut by_cookie = HeaderMap::new();
        by_cookie.insert(
            COOKIE,
            HeaderValue::from_str(cookie.unwrap().split(';').next().unwrap()).unwrap(),
        );
        assert_eq!(auth.authenticate(&by_cookie).await.unwrap().0.name, "alice");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(matches!(auth.authenticate(&by_cookie).await, Err(AuthError::Required)));
        assert!(matches!(
            auth.authenticate(&headers("jupyterhub alice-token")).await,
            Err(AuthError::Failed)
        ));
    }

    #[tokio::test]
    async fn a_service_token_needs_the_scope_too_and_is_named_as_a_service() {
        let tokens = Arc::new(Mutex::new(HashMap::from([
            (
                "cron".to_string(),
                serde_json::json!({"kind": "service", "name": "cron", "scopes": ["access:services"]}),
            ),
            (
                "other".to_string(),
                serde_json::json!({"kind": "service", "name": "other", "scopes": []}),
            ),
        ])));
        let url = fake_hub(tokens, Default::default()).await;
        let auth = Authenticator::new(&hub_config(url, 0), &Limits::default()).unwrap();
        assert_eq!(auth.authenticate(&headers("token cron")).await.unwrap().0.name, "service:cron");
        assert!(matches!(
            auth.authenticate(&headers("token other")).await,
            Err(AuthError::Forbidden(_))
        ));
    }

    #[test]
    fn hub_settings_default_from_the_services_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| vars.iter().find(|(key, _)| *key == k).map(|(_, v)| v.to_string())
        };
        let unset = AuthConfig::default();
        let missing = unset.hub_settings(env(&[])).unwrap_err().to_string();
        assert!(missing.contains("auth.jupyterhub_api_url: required"), "{missing}");
        let from_env =
            unset.hub_settings(env(&[("JUPYTERHUB_API_URL", "http://hub:8081/hub/api")]));
        assert_eq!(from_env.unwrap().api_url, "http://hub:8081/hub/api");
        let config = AuthConfig {
            jupyterhub_api_url: Some("http://hub:8081/hub/api".into()),
            ..Default::default()
        };
        let plain = config.hub_settings(env(&[])).unwrap();
        assert_eq!(plain.service_name, "dask-gateway");
        assert_eq!(plain.client_id, "service-dask-gateway");
        assert_eq!(plain.authorize_url, "/hub/api/oauth2/authorize");
        assert_eq!((plain.api_token, plain.callback_url), (None, None));
        let managed = config
            .hub_settings(env(&[
                ("JUPYTERHUB_API_TOKEN", "svc-secret"),
                ("JUPYTERHUB_SERVICE_NAME", "gw"),
                ("JUPYTERHUB_PUBLIC_HUB_URL", "https://hub.example.org/hub/"),
                ("JUPYTERHUB_OAUTH_CALLBACK_URL", "/services/gw/oauth_callback"),
            ]))
            .unwrap();
        assert_eq!(managed.api_token.as_deref(), Some("svc-secret"));
        assert_eq!(managed.client_id, "service-gw");
        assert_eq!(managed.authorize_url, "https://hub.example.org/hub/api/oauth2/authorize");
        assert_eq!(managed.callback_url.as_deref(), Some("/services/gw/oauth_callback"));
        // The config file wins over the environment.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-a-secret\n").unwrap();
        let config = AuthConfig { jupyterhub_api_token_file: Some(file), ..config };
        let settings = config.hub_settings(env(&[("JUPYTERHUB_API_TOKEN", "env")])).unwrap();
        assert_eq!(settings.api_token.as_deref(), Some("from-a-secret"));
    }

    #[tokio::test]
    async fn the_shared_password_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "from-a-secret\n").unwrap();
        let config = AuthConfig { password_file: Some(file), ..Default::default() };
        let auth = Authenticator::new(&config, &Limits::default()).unwrap();
        assert!(auth.authenticate(&basic("bob", "from-a-secret")).await.is_ok());
        assert!(auth.authenticate(&basic("bob", "")).await.is_err());
    }
}
