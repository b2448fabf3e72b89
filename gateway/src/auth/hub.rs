//! The gateway as a JupyterHub service: who a token belongs to (`GET
//! <hub api>/user`, cached by the token's hash), whether it carries the
//! scope that grants access to this service, and the OAuth code exchange
//! (`POST <hub api>/oauth2/token` with the service's own token).

use std::time::Duration;

use axum::http::header::AUTHORIZATION;
use serde::Deserialize;

use super::error::AuthError;
use crate::config::HubSettings;

/// The `/user` answer, as far as the gateway reads it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct HubIdentity {
    pub name: String,
    /// `user` or `service` (older Hubs omit it: a user).
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub groups: Vec<String>,
    /// The token's own (expanded) scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// The scopes that grant access to the service `service`.
pub fn access_scopes(service: &str) -> [String; 2] {
    [format!("access:services!service={service}"), "access:services".to_string()]
}

/// Whether a token the Hub vouches for may use the gateway.
///
/// A user's token passes by default, whatever its scopes: the token a
/// spawned notebook server has carries only the Hub's `server` role
/// (`users:activity!user`, `access:servers!server`), and dask-gateway-server
/// accepts any token that resolves to a user. With `require_scope` (or for
/// another service's token, which belongs to no user) the token must carry
/// `access:services!service=<service>` or `access:services`: the Hub's own
/// rule for its services.
pub fn check_access(
    identity: &HubIdentity,
    service: &str,
    require_scope: bool,
) -> Result<(), AuthError> {
    let kind = identity.kind.as_deref().unwrap_or("user");
    if kind == "user" && !require_scope {
        return Ok(());
    }
    let [one, all] = access_scopes(service);
    if identity.scopes.iter().any(|s| *s == one || *s == all) {
        return Ok(());
    }
    let grant = if kind == "user" {
        "to the `user` role, and to notebook servers' tokens with          `c.Spawner.server_token_scopes` or a `server` role"
    } else {
        "to the service's role"
    };
    Err(AuthError::Forbidden(format!(
        "The JupyterHub token of {kind} {} lacks the scope {one} (or {all}) that grants access \
         to this gateway; ask the Hub's admin to grant it {grant}",
        identity.name
    )))
}

pub struct Hub {
    api_url: String,
    /// The service's own token: the OAuth client secret.
    service_token: Option<String>,
    pub service_name: String,
    /// Users' tokens need the service's access scope too.
    pub require_access_scope: bool,
    http: reqwest::Client,
    /// `/user` answers by SHA-256 of the token, each for `cache_ttl`, at
    /// most `max_cached` of them; `None` when either is zero.
    cache: Option<moka::sync::Cache<[u8; 32], HubIdentity>>,
    cache_ttl: Duration,
}

/// The Hub's refusals and faults, as the gateway answers them.
fn refusal(status: u16) -> AuthError {
    match status {
        // JupyterHub answers 403 (or 401/404 in older versions) for a token
        // it does not know, 400 for one it cannot parse: a failed login,
        // not a server error.
        400 | 401 | 403 | 404 => AuthError::Failed,
        429 => AuthError::HubRateLimited,
        code if code >= 500 => AuthError::HubUnreachable(format!("the Hub answered {code}")),
        code => AuthError::Hub(format!("the Hub answered {code}")),
    }
}

impl Hub {
    pub fn new(settings: &HubSettings, max_cached: usize) -> anyhow::Result<Self> {
        Ok(Self {
            api_url: settings.api_url.trim_end_matches('/').to_string(),
            service_token: settings.api_token.clone(),
            service_name: settings.service_name.clone(),
            require_access_scope: settings.require_access_scope,
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
            cache: (!settings.cache_ttl.is_zero() && max_cached > 0).then(|| {
                moka::sync::Cache::builder()
                    .time_to_live(settings.cache_ttl)
                    .max_capacity(max_cached as u64)
                    .build()
            }),
            cache_ttl: settings.cache_ttl,
        })
    }

    /// How long an answer is trusted: the bound on a revoked token's life.
    pub fn cache_ttl(&self) -> Duration {
        self.cache_ttl
    }

    /// Who `token` belongs to, from the cache or the Hub.
    pub async fn identify(&self, token: &str, digest: [u8; 32]) -> Result<HubIdentity, AuthError> {
        if let Some(found) = self.cache.as_ref().and_then(|c| c.get(&digest)) {
            return Ok(found);
        }
        let resp = self
            .http
            .get(format!("{}/user", self.api_url))
            .header(AUTHORIZATION, format!("token {token}"))
            .send()
            .await
            .map_err(|e| AuthError::HubUnreachable(e.without_url().to_string()))?;
        if resp.status().as_u16() != 200 {
            if let Some(cache) = &self.cache {
                cache.invalidate(&digest);
            }
            return Err(refusal(resp.status().as_u16()));
        }
        let identity: HubIdentity =
            resp.json().await.map_err(|e| AuthError::Hub(e.without_url().to_string()))?;
        if let Some(cache) = &self.cache {
            cache.insert(digest, identity.clone());
        }
        Ok(identity)
    }

    /// Whether `user` has a single-user server (running or starting), by
    /// the service's own token; `None` when the answer has no `servers`
    /// (the service lacks the `read:servers` scope).
    pub async fn has_server(&self, user: &str) -> Result<Option<bool>, AuthError> {
        #[derive(Deserialize)]
        struct UserModel {
            servers: Option<serde_json::Map<String, serde_json::Value>>,
        }
        let token = self.service_token.as_deref().ok_or_else(|| {
            AuthError::Hub("the gateway has no JupyterHub API token to ask about servers".into())
        })?;
        let mut url = reqwest::Url::parse(&format!("{}/", self.api_url))
            .map_err(|e| AuthError::Hub(format!("auth.jupyterhub_api_url: {e}")))?;
        url.path_segments_mut()
            .map_err(|_| AuthError::Hub("auth.jupyterhub_api_url: not a base URL".into()))?
            .pop_if_empty()
            .extend(["users", user]);
        let resp = self
            .http
            .get(url)
            .header(AUTHORIZATION, format!("token {token}"))
            .send()
            .await
            .map_err(|e| AuthError::HubUnreachable(e.without_url().to_string()))?;
        match resp.status().as_u16() {
            200 => {
                let model: UserModel =
                    resp.json().await.map_err(|e| AuthError::Hub(e.without_url().to_string()))?;
                Ok(model.servers.map(|servers| !servers.is_empty()))
            }
            // A user the Hub no longer has: no server either.
            404 => Ok(Some(false)),
            code => Err(refusal(code)),
        }
    }

    /// The last step of the OAuth login: the code for a token, the service
    /// authenticating as the OAuth client with its own token (as
    /// JupyterHub's `HubOAuth.token_for_code` does).
    pub async fn token_for_code(
        &self,
        client_id: &str,
        code: &str,
        code_verifier: &str,
        redirect_uri: &str,
    ) -> Result<String, AuthError> {
        #[derive(Deserialize)]
        struct TokenReply {
            access_token: String,
        }
        let secret = self.service_token.as_deref().ok_or_else(|| {
            AuthError::Hub("the gateway has no JupyterHub API token for the OAuth login".into())
        })?;
        let form = [
            ("client_id", client_id),
            ("client_secret", secret),
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", code_verifier),
        ];
        let resp = self
            .http
            .post(format!("{}/oauth2/token", self.api_url))
            .form(&form)
            .send()
            .await
            .map_err(|e| AuthError::HubUnreachable(e.without_url().to_string()))?;
        match resp.status().as_u16() {
            200 => Ok(resp
                .json::<TokenReply>()
                .await
                .map_err(|e| AuthError::Hub(e.without_url().to_string()))?
                .access_token),
            // A stale, reused or forged code.
            400 | 401 | 403 => Err(AuthError::Failed),
            code => Err(refusal(code)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(kind: &str, scopes: &[&str]) -> HubIdentity {
        HubIdentity {
            name: "alice".into(),
            kind: Some(kind.into()),
            admin: false,
            groups: vec![],
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        }
    }

    const NARROW: [&[&str]; 4] = [
        &[],
        &["self", "read:users:name!user=alice"],
        &["access:services!service=other"],
        // What a spawned notebook server's own token carries by default.
        &["users:activity!user=alice", "access:servers!server=alice/"],
    ];

    #[test]
    fn a_users_token_passes_whatever_its_scopes_by_default() {
        for scopes in NARROW {
            assert!(check_access(&identity("user", scopes), "dask-gateway", false).is_ok());
        }
    }

    #[test]
    fn with_the_scope_required_every_token_needs_the_service_scope_or_all_services() {
        let gw = "dask-gateway";
        for require in [false, true] {
            let with_scope = identity("user", &["access:services!service=dask-gateway"]);
            assert!(check_access(&with_scope, gw, require).is_ok());
            assert!(
                check_access(&identity("user", &["self", "access:services"]), gw, require).is_ok()
            );
            assert!(check_access(&identity("service", &["access:services"]), gw, require).is_ok());
        }
        for scopes in NARROW {
            let err = check_access(&identity("user", scopes), gw, true).unwrap_err();
            assert!(
                matches!(&err, AuthError::Forbidden(m) if m.contains("access:services!service=dask-gateway")
                    && m.contains("server_token_scopes")),
                "{err}"
            );
        }
    }

    #[test]
    fn another_services_token_always_needs_the_scope() {
        for require in [false, true] {
            let err = check_access(&identity("service", &["read:users"]), "dask-gateway", require)
                .unwrap_err();
            assert!(
                matches!(&err, AuthError::Forbidden(m) if m.contains("service's role")),
                "{err}"
            );
        }
    }

    #[test]
    fn hub_answers_map_to_logins_and_faults() {
        assert!(matches!(refusal(403), AuthError::Failed));
        assert!(matches!(refusal(429), AuthError::HubRateLimited));
        assert!(matches!(refusal(502), AuthError::HubUnreachable(_)));
        assert!(matches!(refusal(418), AuthError::Hub(_)));
    }
}
