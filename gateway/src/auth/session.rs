//! Session cookies that every gateway replica can read. The session itself
//! is the cookie: sealed (AES-256-GCM, a random nonce each) with a key the
//! replicas share (`auth.cookie_secret_file`, from a mounted Secret), so no
//! replica keeps a table, a request may land on any of them, and a
//! restarted gateway keeps its users signed in. Without a shared key, each
//! gateway draws its own at start (one replica; sessions end with it).
//!
//! Sealed rather than only signed: a Hub session carries the Hub token it
//! was opened with, so that any replica can ask the Hub about it again.
//!
//! Why not `axum-extra`'s `PrivateCookieJar` (the `cookie` crate's private
//! jar, also AES-256-GCM): its jar holds one cookie per name, while a
//! browser may send several `dask-gateway` cookies (one per `Path`, e.g. a
//! stale one from before a prefix change) and `auth` takes the
//! first that opens; its sealed format differs (the cookie's name as
//! associated data, standard base64, a 64-byte key), so every signed-in
//! user would be signed out by the upgrade, and replicas of two versions
//! could not read each other's cookies during a rolling update. The expiry
//! inside the sealed value, the shared key file and the attributes would
//! have fitted; these two do not.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest cookie value accepted (browsers keep 4 KiB per cookie): anything
/// longer is not ours, and is not decoded.
pub const MAX_COOKIE_VALUE: usize = 4000;

/// What a session cookie holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionData {
    #[serde(rename = "u")]
    pub user: String,
    #[serde(rename = "a")]
    pub admin: bool,
    #[serde(rename = "g", default)]
    pub groups: Vec<String>,
    /// Unix seconds after which the cookie is worth nothing.
    #[serde(rename = "x")]
    pub expires: u64,
    /// JupyterHub sessions: the Hub token, and when to ask the Hub again.
    #[serde(rename = "h", default)]
    pub hub: Option<HubCheck>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HubCheck {
    #[serde(rename = "t")]
    pub token: String,
    /// Unix seconds.
    #[serde(rename = "r")]
    pub recheck: u64,
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Seals and opens session cookies with one key.
pub struct Sealer {
    key: LessSafeKey,
}

impl Sealer {
    /// The key every replica derives from the same secret.
    pub fn from_secret(secret: &[u8]) -> Self {
        let digest: [u8; 32] = Sha256::digest(secret).into();
        Self::from_key(&digest)
    }

    /// A key of this process alone.
    pub fn random() -> Self {
        Self::from_key(&rand::random::<[u8; 32]>())
    }

    fn from_key(key: &[u8; 32]) -> Self {
        let key = UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key");
        Self { key: LessSafeKey::new(key) }
    }

    pub fn seal(&self, data: &SessionData) -> String {
        let nonce = rand::random::<[u8; NONCE_LEN]>();
        let mut sealed = serde_json::to_vec(data).expect("session data serializes");
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut sealed,
            )
            .expect("AES-GCM seals any message of a cookie's size");
        let mut value = nonce.to_vec();
        value.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(value)
    }

    /// The session in `value`, if this key sealed it and it has not expired.
    pub fn open(&self, value: &str, now: u64) -> Option<SessionData> {
        if value.len() > MAX_COOKIE_VALUE {
            return None;
        }
        let mut bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let sealed = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).ok()?;
        let mut sealed = sealed;
        let plain = self.key.open_in_place(nonce, Aad::empty(), &mut sealed).ok()?;
        let data: SessionData = serde_json::from_slice(plain).ok()?;
        (data.expires > now).then_some(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice(expires: u64) -> SessionData {
        SessionData {
            user: "alice".into(),
            admin: false,
            groups: vec!["staff".into()],
            expires,
            hub: Some(HubCheck { token: "hub-token".into(), recheck: 5 }),
        }
    }

    #[test]
    fn a_cookie_sealed_by_one_replica_opens_on_another() {
        let (one, other) = (Sealer::from_secret(b"shared"), Sealer::from_secret(b"shared"));
        let cookie = one.seal(&alice(100));
        assert_eq!(other.open(&cookie, 50), Some(alice(100)));
        // Nonces are fresh: the same session seals differently each time.
        assert_ne!(one.seal(&alice(100)), cookie);
        // The Hub token inside is not readable from the cookie.
        assert!(
            !String::from_utf8_lossy(&URL_SAFE_NO_PAD.decode(&cookie).unwrap())
                .contains("hub-token")
        );
    }

    #[test]
    fn expired_forged_tampered_or_foreign_cookies_are_refused() {
        let sealer = Sealer::from_secret(b"shared");
        let cookie = sealer.seal(&alice(100));
        assert_eq!(sealer.open(&cookie, 100), None, "expired");
        assert_eq!(Sealer::from_secret(b"other").open(&cookie, 50), None, "another key");
        assert_eq!(Sealer::random().open(&cookie, 50), None, "a replica's own key");
        let mut bytes = URL_SAFE_NO_PAD.decode(&cookie).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(sealer.open(&URL_SAFE_NO_PAD.encode(bytes), 50), None, "tampered");
        for junk in ["", "x", "!!!!", &"A".repeat(MAX_COOKIE_VALUE + 1)] {
            assert_eq!(sealer.open(junk, 50), None, "{junk:.10}");
        }
    }
}
