//! Secrets at rest: provider keys given as literals through the admin API are sealed with
//! ChaCha20-Poly1305 (ring) before they reach the store, under a key from `SWITCHYARD_SECRET_KEY`
//! (32 bytes, as 64 hex digits or base64) or, without it, from `data_dir/secret.key`, created
//! with mode 0600 on first start. A sealed value reads `sealed:v1:<base64 of nonce and
//! ciphertext>`; anything else (an `env.NAME` reference) is stored as it is.

use std::path::Path;

use base64::Engine as _;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// How a sealed value begins.
pub const PREFIX: &str = "sealed:v1:";
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

    /// The key that sealed a config's secrets, for reading them: from `env_key`, or the key
    /// file in `data_dir` if there is one (never created here); `None` when neither.
    pub fn existing(data_dir: &Path, env_key: Option<String>) -> Result<Option<Self>, SecretError> {
        if env_key.as_deref().is_some_and(|k| !k.trim().is_empty()) {
            return Self::open(data_dir, env_key).map(Some);
        }
        if data_dir.join(KEY_FILE).exists() {
            return Self::open(data_dir, None).map(Some);
        }
        Ok(None)
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

/// Fields that hold secrets wherever they appear in a config (and every value of a `headers` or
/// `env` table): what an export seals.
const SECRET_FIELDS: &[&str] = &[
    "keys",
    "value",
    "admin_token",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "postgres_url",
    "redis_url",
    "qdrant_api_key",
    "otlp_headers",
    "headers",
    "env",
];

impl SecretBox {
    /// Seals the literal secrets of a runtime layer (`env.NAME` references and values already
    /// sealed stay as they are).
    pub fn seal_layer(&self, layer: &mut super::layer::Layer) -> Result<(), SecretError> {
        layer.secrets_mut(|s| {
            if super::layer::is_literal(s) && !Self::is_sealed(s) {
                *s = self.seal(s)?;
            }
            Ok(())
        })
    }

    /// Seals every literal secret in a config document (`env.NAME` references stay as they
    /// are; a Vertex `credentials` path is not a secret, its inline JSON is).
    pub fn seal_doc(&self, doc: &mut toml::Table) -> Result<(), SecretError> {
        for (k, v) in doc.iter_mut() {
            self.seal_value(v, k, false)?;
        }
        Ok(())
    }

    fn seal_value(&self, v: &mut toml::Value, key: &str, secret: bool) -> Result<(), SecretError> {
        let secret = secret
            || (SECRET_FIELDS.contains(&key) && !v.is_table())
            || (key == "credentials"
                && v.as_str().is_some_and(|s| s.trim_start().starts_with('{')));
        match v {
            toml::Value::String(s) if secret && !s.starts_with("env.") && !Self::is_sealed(s) => {
                *s = self.seal(s)?;
            }
            toml::Value::Array(items) => {
                for item in items {
                    self.seal_value(item, key, secret)?;
                }
            }
            toml::Value::Table(t) => {
                // Every value of a headers or env table is secret; in other tables (a weighted
                // key, a virtual key, a section) each field is judged by its own name.
                let all = matches!(key, "headers" | "env" | "otlp_headers");
                for (k, item) in t.iter_mut() {
                    self.seal_value(item, k, all)?;
                }
            }
            _ => {}
        }
        Ok(())
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
        // An export seals secrets wherever they are, and only secrets.
        let mut doc: toml::Table = r#"
            [server]
            admin_token = "adm-secret"
            data_dir = "./d"
            [[providers]]
            name = "p"
            keys = ["sk-plain", { value = "sk-weighted", weight = 2.0 }, "env.K"]
            headers = { x-token = "hdr" }
            [[governance.keys]]
            id = "k1"
            value = "vk-secret"
            models = ["a/*"]
        "#
        .parse()
        .unwrap();
        a.seal_doc(&mut doc).unwrap();
        let text = toml::to_string(&doc).unwrap();
        for secret in ["adm-secret", "sk-plain", "sk-weighted", "hdr", "vk-secret"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        for kept in ["./d", "env.K", "k1", "a/*", "name = \"p\""] {
            assert!(text.contains(kept), "{kept} not in {text}");
        }
        assert!(matches!(other.open_value(&sealed), Err(SecretError::Open)));
        assert_eq!(other.open_value("env.X").unwrap(), "env.X");
        assert!(SecretBox::open(dir.path(), Some("short".into())).is_err());
    }
}
