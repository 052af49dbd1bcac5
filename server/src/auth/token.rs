use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::sessions::{EndedSessions, SessionKey, session_key};

/// What a session token says: who, since when, and until when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id.
    pub sub: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expires at, seconds since the epoch.
    pub exp: i64,
    /// When the user gave their password, seconds since the epoch: kept
    /// across renewals, so that a session (however often renewed) ends a
    /// set time after its login. Tokens from before it was added lack it
    /// and count from `iat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// The session's id (32 hex digits, random), kept across renewals, so
    /// that a logout can end every token of it (`sessions`). Tokens from
    /// before it was added lack it, and end only when they expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

impl Claims {
    /// When the session this token belongs to began.
    pub fn logged_in_at(&self) -> i64 {
        self.auth_time.unwrap_or(self.iat)
    }

    /// The session's id in memory's form, if it has one this server made.
    pub fn session(&self) -> Option<SessionKey> {
        self.sid.as_deref().and_then(session_key)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the session token has expired: log in again")]
    Expired,
    #[error("the session has reached the longest this server allows: log in again")]
    SessionEnded,
    #[error("the session was logged out: log in again")]
    LoggedOut,
    #[error("the session token is not valid")]
    Invalid,
}

/// Issues and checks HS256 session tokens. Only HS256 is accepted, so a token
/// that claims `alg: none` or any other algorithm is refused.
///
/// A token lives `ttl`; an app renews it while it is good, and a session
/// lives on through renewals up to `longest_session` after its login. Past
/// that, every token of it is refused (lowering the setting ends older
/// sessions at once), so a stolen token cannot be renewed for ever. A
/// session logged out is refused at once (`ended`).
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: i64,
    longest_session: i64,
    ended: Arc<EndedSessions>,
}

/// Whole seconds of a duration as a timestamp offset.
fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX / 4)
}

impl Tokens {
    pub fn new(
        secret: &[u8],
        ttl: Duration,
        longest_session: Duration,
        ended: Arc<EndedSessions>,
    ) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Tokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl: seconds(ttl),
            longest_session: seconds(longest_session),
            ended,
        }
    }

    /// The sessions ended early that this node knows of.
    pub fn ended(&self) -> &Arc<EndedSessions> {
        &self.ended
    }

    /// A token for a user who just gave their password: a new session.
    pub fn issue(&self, user_id: &str) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let mut sid = [0u8; 16];
        rand::rng().fill_bytes(&mut sid);
        let sid = format!("{:032x}", SessionKey::from_be_bytes(sid));
        self.sign(user_id, Some(sid), now, now)
    }

    /// A token for the same session as `claims` (checked by `claims`), that
    /// expires later unless the session's end comes first.
    pub fn renew(&self, claims: &Claims) -> anyhow::Result<String> {
        self.sign(
            &claims.sub,
            claims.sid.clone(),
            claims.logged_in_at(),
            chrono::Utc::now().timestamp(),
        )
    }

    fn sign(
        &self,
        user_id: &str,
        sid: Option<String>,
        logged_in_at: i64,
        now: i64,
    ) -> anyhow::Result<String> {
        let claims = Claims {
            sub: user_id.to_owned(),
            iat: now,
            exp: now
                .saturating_add(self.ttl)
                .min(self.session_end(logged_in_at)),
            auth_time: Some(logged_in_at),
            sid,
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// The last second of a session that began at `logged_in_at`.
    fn session_end(&self, logged_in_at: i64) -> i64 {
        logged_in_at.saturating_add(self.longest_session)
    }

    /// The last second a token with these claims is good for: its own
    /// expiry or its session's end, whichever comes first.
    pub fn good_until(&self, claims: &Claims) -> i64 {
        claims.exp.min(self.session_end(claims.logged_in_at()))
    }

    /// The last second any token of the session of `claims` can be good
    /// for: how long its logout is kept. Not "now plus a token's life": a
    /// node that has not heard of the logout yet may renew a token of it
    /// meanwhile, and that one must be refused as long as it lasts.
    pub fn session_ends_at(&self, claims: &Claims) -> i64 {
        self.session_end(claims.logged_in_at())
    }

    /// Whether the session `key` was logged out (`None`: a token without
    /// one, which cannot be).
    pub fn is_ended(&self, key: Option<SessionKey>) -> bool {
        key.is_some_and(|key| self.ended.is_ended(key))
    }

    /// What the token says, if it is genuine, unexpired, and its session
    /// has not outlived the longest allowed nor been logged out.
    pub fn claims(&self, token: &str) -> Result<Claims, TokenError> {
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => {
                // Like `exp`, good through its last second.
                let ended =
                    chrono::Utc::now().timestamp() > self.session_end(data.claims.logged_in_at());
                if ended {
                    return Err(TokenError::SessionEnded);
                }
                if self.is_ended(data.claims.session()) {
                    return Err(TokenError::LoggedOut);
                }
                Ok(data.claims)
            }
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

    const HOUR: Duration = Duration::from_secs(3600);

    fn tokens() -> Tokens {
        Tokens::new(&[7u8; 32], Duration::from_secs(60), HOUR, Arc::default())
    }

    fn signed(tokens: &Tokens, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &tokens.encoding)
            .expect("sign")
    }

    #[test]
    fn an_issued_token_names_its_user() {
        let tokens = tokens();
        let token = tokens.issue("user-1").expect("issue");
        assert_eq!(tokens.claims(&token).expect("valid").sub, "user-1");
    }

    #[test]
    fn a_logged_out_session_is_refused_renewed_tokens_too_and_others_are_not() {
        let tokens = tokens();
        let token = tokens.issue("user-1").expect("issue");
        let claims = tokens.claims(&token).expect("good");
        let renewed = tokens.renew(&claims).expect("renewed");
        assert_eq!(tokens.claims(&renewed).expect("good").sid, claims.sid);
        let other = tokens.issue("user-1").expect("another login");
        assert_ne!(tokens.claims(&other).expect("good").sid, claims.sid);

        let key = claims.session().expect("a session id");
        tokens.ended().end(key, tokens.session_ends_at(&claims));
        for token in [&token, &renewed] {
            assert!(matches!(tokens.claims(token), Err(TokenError::LoggedOut)));
        }
        assert!(tokens.claims(&other).is_ok(), "another session goes on");
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let other = Tokens::new(&[8u8; 32], Duration::from_secs(60), HOUR, Arc::default());
        let token = other.issue("user-1").expect("issue");
        assert!(matches!(tokens().claims(&token), Err(TokenError::Invalid)));
    }

    #[test]
    fn a_renewed_token_keeps_its_sessions_start_and_end() {
        let tokens = tokens();
        let now = chrono::Utc::now().timestamp();
        let logged_in = now - 3590;
        let old = signed(
            &tokens,
            &serde_json::json!({"sub": "u", "iat": now - 30, "exp": now + 30, "auth_time": logged_in}),
        );
        let claims = tokens.claims(&old).expect("still good");
        let renewed = tokens
            .claims(&tokens.renew(&claims).expect("renewed"))
            .expect("good");
        assert_eq!(renewed.auth_time, Some(logged_in));
        assert_eq!(
            renewed.exp,
            logged_in + 3600,
            "ends with the session, not a minute on"
        );
    }

    #[test]
    fn a_session_past_its_longest_is_refused_however_fresh_its_token() {
        let tokens = tokens();
        let now = chrono::Utc::now().timestamp();
        let too_old = signed(
            &tokens,
            &serde_json::json!({"sub": "u", "iat": now, "exp": now + 60, "auth_time": now - 3601}),
        );
        assert!(matches!(
            tokens.claims(&too_old),
            Err(TokenError::SessionEnded)
        ));
        // A token from before `auth_time` counts its session from `iat`.
        let older_kind = signed(
            &tokens,
            &serde_json::json!({"sub": "u", "iat": now - 10, "exp": now + 60}),
        );
        let claims = tokens.claims(&older_kind).expect("good");
        assert_eq!(claims.logged_in_at(), now - 10);
        assert_eq!(tokens.good_until(&claims), now + 60);
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
