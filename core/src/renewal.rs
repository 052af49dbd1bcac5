//! Keeps a session's token good while the app runs: the server's tokens
//! expire (7 days by default), and an app left running that long would
//! otherwise be logged out in the middle of use. At half its life the token
//! is exchanged for a new one (`POST /api/user/token`), which the session
//! file keeps for the next start. The socket, opened with the old token, is
//! closed by the server when that one expires; the app reconnects with the
//! new one, as after any drop.
//!
//! The app reads the token's own claims (`iat`, `exp`) to know when, without
//! checking its signature: that is the server's business, and a token the
//! app cannot read is simply not renewed.

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Deserialize;

/// After a renewal that failed for now (the server unreachable), the next try.
pub(crate) const RETRY: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct Claims {
    iat: i64,
    exp: i64,
}

/// When `token` is half through its life, or `None` if it does not say.
pub(crate) fn renew_at(token: &str) -> Option<DateTime<Utc>> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    let half = claims.exp.checked_sub(claims.iat)? / 2;
    DateTime::from_timestamp(claims.iat.checked_add(half)?, 0)
}

/// How long from `now` until `at` (nothing if it is past).
pub(crate) fn wait_until(at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (at - now).to_std().unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(claims: &str) -> String {
        let encode = |part: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(part);
        format!(
            "{}.{}.signature",
            encode(r#"{"alg":"HS256"}"#),
            encode(claims)
        )
    }

    #[test]
    fn a_token_is_renewed_at_half_its_life() {
        let at = renew_at(&token(r#"{"sub":"u","iat":1000,"exp":1600}"#));
        assert_eq!(at.map(|at| at.timestamp()), Some(1300));
    }

    #[test]
    fn a_token_that_does_not_say_when_is_not_renewed() {
        assert_eq!(renew_at("not a token"), None);
        assert_eq!(renew_at(&token(r#"{"sub":"u"}"#)), None);
        assert_eq!(renew_at("a.%%%.b"), None);
    }

    #[test]
    fn a_time_past_is_now() {
        let now = Utc::now();
        assert_eq!(
            wait_until(now - chrono::Duration::seconds(5), now),
            Duration::ZERO
        );
        assert_eq!(
            wait_until(now + chrono::Duration::seconds(5), now),
            Duration::from_secs(5)
        );
    }
}
