//! Monitoring-link tokens: unguessable and signed.
//!
//! A token is `base64url(key_id ‖ link_id ‖ endpoint ‖ HMAC-SHA256(key, key_id ‖ link_id ‖ endpoint)[..16])`:
//! 26 bytes, 35 characters. `link_id` is 64 random bits, so links cannot be enumerated; the MAC
//! makes a forged or tampered token fail verification before any lookup, in constant time,
//! so bad tokens cost nothing and are counted. `key_id` allows rotating the signing key while
//! links already in media ad orders keep working.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const MAC_LEN: usize = 16;
const TOKEN_LEN: usize = 1 + 8 + 1 + MAC_LEN;
/// Length of a token in characters.
pub const TOKEN_CHARS: usize = (TOKEN_LEN * 4).div_ceil(3);

/// Which endpoint a link is for; part of the signed token, so an impression token cannot be
/// replayed as a click.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `/i/{token}`
    Impression,
    /// `/c/{token}`
    Click,
    /// `/fb/{token}` (Tencent Ads feedback URL)
    Feedback,
}

impl Endpoint {
    fn code(self) -> u8 {
        match self {
            Endpoint::Impression => 1,
            Endpoint::Click => 2,
            Endpoint::Feedback => 3,
        }
    }

    /// The path prefix of the endpoint.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Impression => "/i/",
            Endpoint::Click => "/c/",
            Endpoint::Feedback => "/fb/",
        }
    }
}

/// Why a token was refused (each counted separately; all answered 404).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("token is not a well-formed link token")]
    Malformed,
    #[error("token was signed with a key this server does not have")]
    UnknownKey,
    #[error("token signature does not match")]
    BadSignature,
    #[error("token is for another endpoint")]
    WrongEndpoint,
}

impl Rejected {
    /// A bounded metric label.
    pub fn label(self) -> &'static str {
        match self {
            Rejected::Malformed => "malformed",
            Rejected::UnknownKey => "unknown_key",
            Rejected::BadSignature => "bad_signature",
            Rejected::WrongEndpoint => "wrong_endpoint",
        }
    }
}

/// Signing keys: the current one signs, all verify.
#[derive(Clone)]
pub struct LinkSigner {
    current: u8,
    keys: Vec<(u8, [u8; 32])>,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("LinkSigner")
            .field("current", &self.current)
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl LinkSigner {
    /// A signer with one key.
    pub fn new(key_id: u8, key: [u8; 32]) -> Self {
        LinkSigner {
            current: key_id,
            keys: vec![(key_id, key)],
        }
    }

    /// Adds an older key that still verifies (rotation); the current key keeps signing.
    pub fn with_verify_key(mut self, key_id: u8, key: [u8; 32]) -> Self {
        self.keys.retain(|(id, _)| *id != key_id);
        self.keys.push((key_id, key));
        self
    }

    fn mac(key: &[u8; 32], body: &[u8]) -> Option<HmacSha256> {
        let mut mac = HmacSha256::new_from_slice(key).ok()?;
        mac.update(body);
        Some(mac)
    }

    /// Mints the token of `link_id` for `endpoint`.
    pub fn mint(&self, link_id: u64, endpoint: Endpoint) -> String {
        let mut bytes = Vec::with_capacity(TOKEN_LEN);
        bytes.push(self.current);
        bytes.extend_from_slice(&link_id.to_be_bytes());
        bytes.push(endpoint.code());
        let key = self
            .keys
            .iter()
            .find(|(id, _)| *id == self.current)
            .map(|(_, k)| k);
        // HMAC accepts keys of any length: construction cannot fail for a 32-byte key.
        let tag = key
            .and_then(|k| Self::mac(k, &bytes))
            .map(|m| m.finalize().into_bytes().to_vec())
            .unwrap_or_default();
        bytes.extend_from_slice(&tag[..MAC_LEN.min(tag.len())]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Verifies a token presented on `endpoint`; returns its link id.
    pub fn verify(&self, token: &str, endpoint: Endpoint) -> Result<u64, Rejected> {
        if token.len() != TOKEN_CHARS {
            return Err(Rejected::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| Rejected::Malformed)?;
        if bytes.len() != TOKEN_LEN {
            return Err(Rejected::Malformed);
        }
        let (body, tag) = bytes.split_at(TOKEN_LEN - MAC_LEN);
        let key = self
            .keys
            .iter()
            .find(|(id, _)| *id == body[0])
            .map(|(_, k)| k)
            .ok_or(Rejected::UnknownKey)?;
        let mac = Self::mac(key, body).ok_or(Rejected::BadSignature)?;
        mac.verify_truncated_left(tag)
            .map_err(|_| Rejected::BadSignature)?;
        if body[9] != endpoint.code() {
            return Err(Rejected::WrongEndpoint);
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&body[1..9]);
        Ok(u64::from_be_bytes(id))
    }
}

/// A fresh random link id (never 0).
pub fn new_link_id() -> u64 {
    loop {
        let id = rand::rng().next_u64();
        if id != 0 {
            return id;
        }
    }
}

/// Reads the 32-byte signing key at `path`, creating it (random, mode 0600) if absent.
pub fn load_or_create_key(path: &Path) -> std::io::Result<[u8; 32]> {
    match std::fs::read(path) {
        Ok(bytes) => bytes.try_into().map_err(|b: Vec<u8>| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: expected a 32-byte key, found {} bytes",
                    path.display(),
                    b.len()
                ),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut key = [0u8; 32];
            rand::rng().fill_bytes(&mut key);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path)?;
            std::io::Write::write_all(&mut file, &key)?;
            file.sync_all()?;
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> LinkSigner {
        LinkSigner::new(1, [7u8; 32])
    }

    #[test]
    fn minted_tokens_verify_for_their_endpoint_only() {
        let s = signer();
        let id = new_link_id();
        let token = s.mint(id, Endpoint::Click);
        assert_eq!(token.len(), TOKEN_CHARS);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(s.verify(&token, Endpoint::Click), Ok(id));
        assert_eq!(
            s.verify(&token, Endpoint::Impression),
            Err(Rejected::WrongEndpoint)
        );
    }

    #[test]
    fn any_tampering_is_refused() {
        let s = signer();
        let token = s.mint(42, Endpoint::Impression);
        let mut chars: Vec<char> = token.chars().collect();
        for i in 0..chars.len() {
            let original = chars[i];
            chars[i] = if original == 'A' { 'B' } else { 'A' };
            let tampered: String = chars.iter().collect();
            assert!(
                s.verify(&tampered, Endpoint::Impression).is_err(),
                "position {i}"
            );
            chars[i] = original;
        }
        assert_eq!(
            s.verify("short", Endpoint::Impression),
            Err(Rejected::Malformed)
        );
        assert_eq!(
            s.verify(&"!".repeat(TOKEN_CHARS), Endpoint::Impression),
            Err(Rejected::Malformed)
        );
        let other = LinkSigner::new(1, [8u8; 32]);
        assert_eq!(
            other.verify(&token, Endpoint::Impression),
            Err(Rejected::BadSignature)
        );
        let unknown = LinkSigner::new(2, [7u8; 32]);
        assert_eq!(
            unknown.verify(&token, Endpoint::Impression),
            Err(Rejected::UnknownKey)
        );
    }

    #[test]
    fn rotation_keeps_old_links_working() {
        let old = signer();
        let token = old.mint(9, Endpoint::Click);
        let rotated = LinkSigner::new(2, [9u8; 32]).with_verify_key(1, [7u8; 32]);
        assert_eq!(rotated.verify(&token, Endpoint::Click), Ok(9));
        assert_ne!(rotated.mint(9, Endpoint::Click), token);
    }

    #[test]
    fn the_key_file_is_created_once_and_reread() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("secrets/link.key");
        let first = load_or_create_key(&path)?;
        assert_eq!(load_or_create_key(&path)?, first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path)?.permissions().mode() & 0o777,
                0o600
            );
        }
        std::fs::write(&path, b"short")?;
        assert!(load_or_create_key(&path).is_err());
        Ok(())
    }
}
