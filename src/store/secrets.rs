//! Secrets at rest: provider keys given as literals through the admin API are sealed with
//! ChaCha20-Poly1305 (ring) before they reach the store, under a key from `SWITCHYARD_SECRET_KEY`
//! (32 bytes, as 64 hex digits or base64) or, without it, from `data_dir/secret.key`, created
//! with mode 0600 on first start. A sealed value reads `sealed:v1:<base64 of nonce and
//! ciphertext>`; anything else (an `env.NAME` reference) is stored as it is.

use std::path::Path;

use base64::Engine as _;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

const PREFIX: &str = "sealed:v1:";
const KEY_FILE: &str = "secret.key";
/// The variable that holds the key.
pub const KEY_VAR: &str = "SWITCHYARD_SECRET_KEY";

/// Why secrets cannot be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key given is not 32 bytes.
    #[error("{0}")]
    BadKey(String),
    /// The key file could not be read or created.
    #[error("secret key file {path}: {message}")]
    KeyFile {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A sealed value does not open with this key (another key, or damaged).
    #[error(
        "a stored secret does not open with this key (was SWITCHYARD_SECRET_KEY or data_dir/secret.key changed?)"
    )]
    Open,
}

/// Seals and opens secrets with one key.
pub struct SecretBox {
    key: LessSafeKey,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(***)")
    }
}

fn decode_key(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    let bytes = if text.len() == 64 {
        hex::decode(text).ok()?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?
    };
    bytes.try_into().ok()
}

impl SecretBox {
    /// The key from `env_key` (the variable's value) or the key file in `data_dir` (created,
    /// mode 0600, when absent).
    pub fn open(data_dir: &Path, env_key: Option<String>) -> Result<Self, SecretError> {
        let key = match env_key.filter(|k| !k.trim().is_empty()) {
            Some(k) => decode_key(&k).ok_or_else(|| {
                SecretError::BadKey(format!(
                    "{KEY_VAR} must be 32 bytes as 64 hex digits or base64 (e.g. `openssl rand -hex 32`)"
                ))
            })?,
            None => Self::key_file(data_dir)?,
        };
        Self::from_key(key)
    }

    fn from_key(key: [u8; 32]) -> Result<Self, SecretError> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &key)
            .map_err(|_| SecretError::BadKey("the key is not a ChaCha20-Poly1305 key".into()))?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }

    fn key_file(data_dir: &Path) -> Result<[u8; 32], SecretError> {
        let path = data_dir.join(KEY_FILE);
        let fail = |message: String| SecretError::KeyFile {
            path: path.display().to_string(),
            message,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => decode_key(&text).ok_or_else(|| fail("is not 64 hex digits".into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir).map_err(|e| fail(e.to_string()))?;
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| fail(e.to_string()))?;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(&path).map_err(|e| fail(e.to_string()))?;
                std::io::Write::write_all(&mut file, hex::encode(key).as_bytes())
                    .map_err(|e| fail(e.to_string()))?;
                tracing::info!(path = %path.display(), "created the key that seals secrets stored through the admin API (keep it with the data directory, or set SWITCHYARD_SECRET_KEY)");
                Ok(key)
            }
            Err(e) => Err(fail(e.to_string())),
        }
    }

    /// Whether `value` is sealed.
    pub fn is_sealed(value: &str) -> bool {
        value.starts_with(PREFIX)
    }

    /// Seals `plain` (under a fresh random nonce).
    pub fn seal(&self, plain: &str) -> Result<String, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)
            .map_err(|e| SecretError::BadKey(format!("no randomness: {e}")))?;
        let mut data = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
            .map_err(|_| SecretError::BadKey("sealing failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// Opens a sealed value; a value that is not sealed is returned as it is.
    pub fn open_value(&self, value: &str) -> Result<String, SecretError> {
        let Some(b64) = value.strip_prefix(PREFIX) else {
            return Ok(value.to_owned());
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| SecretError::Open)?;
        if bytes.len() < NONCE_LEN {
            return Err(SecretError::Open);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::Open)?;
        let mut data = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut data)
            .map_err(|_| SecretError::Open)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SecretError::Open)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_never_show_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretBox::open(dir.path(), None).unwrap();
        let sealed = a.seal("sk-live-0123456789").unwrap();
        assert!(SecretBox::is_sealed(&sealed));
        assert!(!sealed.contains("sk-live"));
        assert_ne!(
            sealed,
            a.seal("sk-live-0123456789").unwrap(),
            "a fresh nonce each time"
        );
        assert_eq!(a.open_value(&sealed).unwrap(), "sk-live-0123456789");
        // The key file persists the key, with mode 0600.
        let again = SecretBox::open(dir.path(), None).unwrap();
        assert_eq!(again.open_value(&sealed).unwrap(), "sk-live-0123456789");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = SecretBox::open(dir.path(), Some("11".repeat(32))).unwrap();
        assert!(matches!(other.open_value(&sealed), Err(SecretError::Open)));
        assert_eq!(other.open_value("env.X").unwrap(), "env.X");
        assert!(SecretBox::open(dir.path(), Some("short".into())).is_err());
    }
}
