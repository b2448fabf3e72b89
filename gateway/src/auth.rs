//! Who is asking. The dask-gateway client sends each request bare first and
//! its credentials only after a 401, then lives on the session cookie it is
//! given; so a login costs one password check (or Hub call) per session.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AuthConfig, AuthKind, CookieSecure, Limits};

/// Longest user name accepted, in bytes (names are labels, annotations and
/// map keys: a header-sized name would cost memory everywhere).
pub const MAX_USER_NAME: usize = 256;

/// How often expired sessions are swept out, at the latest.
const SESSION_SWEEP: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub admin: bool,
}

impl User {
    /// Owners act on their clusters; admins on all of them.
    pub fn may_access(&self, owner: &str) -> bool {
        self.admin || self.name == owner
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("Authentication required")]
    Required,
    #[error("Authentication failed")]
    Failed,
    #[error("JupyterHub: {0}")]
    Hub(String),
    #[error("JupyterHub unreachable: {0}")]
    HubUnreachable(String),
    /// Credentials that can never be valid, e.g. a user name over [`MAX_USER_NAME`].
    #[error("{0}")]
    Invalid(String),
    #[error("JupyterHub is rate-limiting logins; retry later")]
    HubRateLimited,
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

struct Session {
    user: User,
    expires: Instant,
}

/// Sessions by cookie value, and each user's current cookie; at most
/// `max` of them, expired ones swept out.
struct Sessions {
    by_cookie: HashMap<String, Session>,
    by_user: HashMap<String, String>,
    max: usize,
    swept: Instant,
}

impl Sessions {
    fn new(max: usize) -> Self {
        Self { by_cookie: HashMap::new(), by_user: HashMap::new(), max, swept: Instant::now() }
    }

    fn sweep(&mut self, now: Instant) {
        self.by_cookie.retain(|_, s| s.expires > now);
        let by_cookie = &self.by_cookie;
        self.by_user.retain(|_, cookie| by_cookie.contains_key(cookie));
        self.swept = now;
    }

    /// Room for one more session: expired ones go first; when every slot
    /// is live, none (the login works, without a cookie) rather than
    /// logging someone else out.
    fn has_room(&mut self, now: Instant) -> bool {
        if self.by_cookie.len() >= self.max || now.duration_since(self.swept) > SESSION_SWEEP {
            self.sweep(now);
        }
        self.by_cookie.len() < self.max
    }
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
    hub_url: Option<String>,
    http: reqwest::Client,
    /// (user, SHA-256 of the token).
    tokens: Vec<(String, [u8; 32])>,
    admins: HashSet<String>,
    cookie_name: String,
    max_age: Duration,
    /// The session cookie's `Path`: the gateway's prefix.
    cookie_path: String,
    cookie_secure: CookieSecure,
    sessions: Mutex<Sessions>,
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
        Ok(Self {
            kind: config.kind,
            shared_password: shared_password.map(|p| sha256(p.as_bytes())),
            users,
            passwords: Arc::new(PasswordChecks::new(limits.max_concurrent_password_checks)?),
            hub_url: config
                .jupyterhub_api_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_string()),
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
            tokens,
            admins: config.admins.iter().cloned().collect(),
            cookie_name: config.cookie_name.clone(),
            max_age: Duration::from_secs(config.cookie_max_age),
            cookie_path: "/".into(),
            cookie_secure: config.cookie_secure,
            sessions: Mutex::new(Sessions::new(limits.max_sessions)),
        })
    }

    /// Scopes the session cookie to the gateway's path prefix.
    pub fn under_prefix(mut self, prefix: &str) -> Self {
        self.cookie_path = if prefix.is_empty() { "/".into() } else { prefix.into() };
        self
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
        if let Some(user) = self.session(headers) {
            return Ok((user, None));
        }
        let header =
            headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or(AuthError::Required)?;
        let (scheme, credentials) = header.split_once(' ').ok_or(AuthError::Failed)?;
        let credentials = credentials.trim();
        let user = match scheme.to_ascii_lowercase().as_str() {
            "basic" => self.basic(credentials).await?,
            "bearer" | "token" | "jupyterhub" => match self.static_token(credentials) {
                Some(user) => user,
                None if self.kind == AuthKind::Jupyterhub => self.hub_user(credentials).await?,
                None => return Err(AuthError::Failed),
            },
            _ => return Err(AuthError::Failed),
        };
        check_user_name(&user.name)?;
        let secure = match self.cookie_secure {
            CookieSecure::Always => true,
            CookieSecure::Never => false,
            CookieSecure::Auto => came_over_https(headers),
        };
        let cookie = self.open_session(user.clone(), secure);
        Ok((user, cookie))
    }

    fn with_role(&self, name: String, admin: bool) -> User {
        let admin = admin || self.admins.contains(&name);
        User { name, admin }
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

    async fn hub_user(&self, token: &str) -> Result<User, AuthError> {
        #[derive(Deserialize)]
        struct HubUser {
            name: String,
            #[serde(default)]
            kind: Option<String>,
            #[serde(default)]
            admin: bool,
        }
        let url = format!("{}/user", self.hub_url.as_deref().unwrap_or_default());
        let resp = self
            .http
            .get(&url)
            .header(AUTHORIZATION, format!("token {token}"))
            .send()
            .await
            .map_err(|e| AuthError::HubUnreachable(e.without_url().to_string()))?;
        match resp.status().as_u16() {
            200 => {
                let user: HubUser =
                    resp.json().await.map_err(|e| AuthError::Hub(e.without_url().to_string()))?;
                let name = match user.kind.as_deref() {
                    None | Some("user") => user.name,
                    Some(kind) => format!("{kind}:{}", user.name),
                };
                Ok(self.with_role(name, user.admin))
            }
            // JupyterHub answers 403 (or 401/404 in older versions) for a
            // token it does not know, 400 for one it cannot parse: that is a
            // failed login, not a server error.
            400 | 401 | 403 | 404 => Err(AuthError::Failed),
            429 => Err(AuthError::HubRateLimited),
            code if code >= 500 => {
                Err(AuthError::HubUnreachable(format!("the Hub answered {code}")))
            }
            code => Err(AuthError::Hub(format!("the Hub answered {code}"))),
        }
    }

    fn session(&self, headers: &HeaderMap) -> Option<User> {
        let prefix = format!("{}=", self.cookie_name);
        let value = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix(prefix.as_str()))?;
        let sessions = self.sessions.lock().expect("sessions lock");
        let session = sessions.by_cookie.get(value)?;
        (session.expires > Instant::now()).then(|| session.user.clone())
    }

    /// One session per user, as in dask-gateway: clients that ignore cookies
    /// (scripts, load tests) reuse it instead of filling memory with new ones.
    /// `None` when the table is full of live sessions.
    fn open_session(&self, user: User, secure: bool) -> Option<String> {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let now = Instant::now();
        let fresh = |s: &Session| s.user == user && s.expires > now + self.max_age / 2;
        let value = match sessions
            .by_user
            .get(&user.name)
            .filter(|v| sessions.by_cookie.get(*v).is_some_and(fresh))
        {
            Some(value) => value.clone(),
            None => {
                if let Some(old) = sessions.by_user.remove(&user.name) {
                    sessions.by_cookie.remove(&old);
                }
                if !sessions.has_room(now) {
                    return None;
                }
                let value =
                    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
                sessions.by_user.insert(user.name.clone(), value.clone());
                sessions
                    .by_cookie
                    .insert(value.clone(), Session { user, expires: now + self.max_age });
                value
            }
        };
        Some(format!(
            "{}={value}; Max-Age={}; Path={}; HttpOnly; SameSite=Lax{}",
            self.cookie_name,
            self.max_age.as_secs(),
            self.cookie_path,
            if secure { "; Secure" } else { "" },
        ))
    }

    /// Signs the request's session out (the page's "Sign out"): the
    /// session ends here, and the `Set-Cookie` value returned clears it in
    /// the browser.
    pub fn sign_out(&self, headers: &HeaderMap) -> String {
        let prefix = format!("{}=", self.cookie_name);
        let values = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().strip_prefix(prefix.as_str()));
        let mut sessions = self.sessions.lock().expect("sessions lock");
        for value in values {
            if let Some(session) = sessions.by_cookie.remove(value)
                && sessions.by_user.get(&session.user.name).is_some_and(|c| c == value)
            {
                sessions.by_user.remove(&session.user.name);
            }
        }
        format!(
            "{}=; Max-Age=0; Path={}; HttpOnly; SameSite=Lax",
            self.cookie_name, self.cookie_path
        )
    }

    #[cfg(test)]
    fn session_count(&self) -> usize {
        self.sessions.lock().expect("sessions lock").by_cookie.len()
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
        assert_eq!(user, User { name: "alice".into(), admin: true });
        // The cookie alone is enough afterwards.
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_str(cookie.unwrap().split(';').next().unwrap()).unwrap(),
        );
        assert_eq!(auth.authenticate(&h).await.unwrap(), (user, None));
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
            User { name: "bob".into(), admin: false }
        );
        assert!(auth.authenticate(&basic("root", "pw")).await.unwrap().0.admin);
        assert!(auth.authenticate(&basic("bob", "nope")).await.is_err());
    }

    #[tokio::test]
    async fn long_names_are_refused_and_sessions_are_capped() {
        let limits = Limits { max_sessions: 3, ..Limits::default() };
        let auth = Authenticator::new(&AuthConfig::default(), &limits).unwrap();
        let long = "x".repeat(MAX_USER_NAME + 1);
        assert!(matches!(
            auth.authenticate(&basic(&long, "")).await,
            Err(AuthError::Invalid(m)) if m.contains("user name")
        ));
        assert!(auth.authenticate(&basic(&"y".repeat(MAX_USER_NAME), "")).await.is_ok());
        for i in 0..10 {
            let (user, _) = auth.authenticate(&basic(&format!("u{i}"), "")).await.unwrap();
            assert_eq!(user.name, format!("u{i}"));
        }
        assert_eq!(auth.session_count(), 3);
    }

    #[tokio::test]
    async fn expired_sessions_make_room() {
        let limits = Limits { max_sessions: 2, ..Limits::default() };
        let config = AuthConfig { cookie_max_age: 0, ..Default::default() };
        let auth = Authenticator::new(&config, &limits).unwrap();
        for i in 0..5 {
            let (_, cookie) = auth.authenticate(&basic(&format!("u{i}"), "")).await.unwrap();
            assert!(cookie.is_some(), "expired sessions are swept for new ones");
        }
        assert!(auth.session_count() <= 2);
    }

    #[tokio::test]
    async fn unknown_users_cost_a_password_check_too() {
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
