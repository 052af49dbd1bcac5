use std::io::Write;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// What a session token says: who, and until when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id.
    pub sub: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expires at, seconds since the epoch.
    pub exp: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the session token has expired: log in again")]
    Expired,
    #[error("the session token is not valid")]
    Invalid,
}

/// Issues and checks HS256 session tokens. Only HS256 is accepted, so a token
/// that claims `alg: none` or any other algorithm is refused.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl Tokens {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Tokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    pub fn issue(&self, user_id: &str) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let claims = Claims {
            sub: user_id.to_owned(),
            iat: now,
            exp: now.saturating_add(ttl),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// The user id the token was issued to, if it is genuine and unexpired.
    pub fn verify(&self, token: &str) -> Result<String, TokenError> {
        self.claims(token).map(|claims| claims.sub)
    }

    /// What the token says, if it is genuine and unexpired.
    pub fn claims(&self, token: &str) -> Result<Claims, TokenError> {
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(err) => match err.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => Err(TokenError::Expired),
                _ => Err(TokenError::Invalid),
            },
        }
    }
}

/// The configured secret, or the one kept in `data_dir/jwt-secret`, created
/// (random, 256 bits, readable by the owner only) the first time.
pub fn load_or_create_secret(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = configured {
        anyhow::ensure!(
            secret.len() >= 32,
            "NATTER_JWT_SECRET must be at least 32 characters long"
        );
        return Ok(secret.as_bytes().to_vec());
    }
    let path = data_dir.join("jwt-secret");
    match std::fs::read_to_string(&path) {
        Ok(secret) if secret.trim().len() >= 32 => return Ok(secret.trim().as_bytes().to_vec()),
        Ok(_) => anyhow::bail!(
            "{} is too short: delete it to have a new one made",
            path.display()
        ),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(anyhow::anyhow!("reading {}: {err}", path.display())),
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .map_err(|err| anyhow::anyhow!("creating {}: {err}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    tracing::info!(path = %path.display(), "generated a new JWT signing secret");
    Ok(secret.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(&[7u8; 32], Duration::from_secs(60))
    }

    #[test]
    fn an_issued_token_names_its_user() {
        let tokens = tokens();
        let token = tokens.issue("user-1").expect("issue");
        assert_eq!(tokens.verify(&token).expect("valid"), "user-1");
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let other = Tokens::new(&[8u8; 32], Duration::from_secs(60));
        let token = other.issue("user-1").expect("issue");
        assert!(matches!(tokens().verify(&token), Err(TokenError::Invalid)));
    }

    #[test]
    fn the_secret_is_generated_once_and_kept_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create_secret(None, dir.path()).expect("created");
        let second = load_or_create_secret(None, dir.path()).expect("read back");
        assert_eq!(first, second);
        assert!(first.len() >= 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("jwt-secret"))
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(load_or_create_secret(Some("too short"), dir.path()).is_err());
    }
}
