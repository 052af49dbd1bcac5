//! Keeps a session's token good while the app runs: the server's tokens
//! expire (7 days by default), and an app left running that long would
//! otherwise be logged out in the middle of use. At half its life the token
//! is exchanged for a new one (`POST /api/user/token`), which the session
//! file keeps for the next start and the open socket is handed (a `token`
//! frame), so that the server does not close it when the old one expires.
//! The server ends a session a set time after its login however often it
//! is renewed: a renewal that comes back with the same expiry has reached
//! that end, and is the last.
//!
//! The app reads the token's own claims (`iat`, `exp`) to know when, without
//! checking its signature: that is the server's business, and a token the
//! app cannot read is simply not renewed.

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Deserialize;

/// After a renewal that failed for now (the server unreachable), the next
/// try: this, or sooner for a short-lived token (`retry_after`).
const RETRY: Duration = Duration::from_secs(60);

/// The least time between two renewals, whatever the tokens say: a token
/// whose half-life is nothing (a one-second TTL), or a clock far off the
/// server's, must not have the app renew without pause.
const LEAST_GAP: Duration = Duration::from_secs(30);

/// The longest single sleep: the clock it counts stops while the machine
/// is suspended, so a long wait is made of short ones, each checked
/// against the wall clock (a laptop closed for the night must not wake
/// past its token's expiry still waiting).
pub(crate) const LONGEST_NAP: Duration = Duration::from_secs(5 * 60);

#[derive(Deserialize)]
struct Claims {
    iat: i64,
    exp: i64,
}

impl Claims {
    /// What `token` says of itself, if it says.
    fn of(token: &str) -> Option<Claims> {
        let payload = token.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Half of the token's life, in seconds.
    fn half_life(&self) -> Option<i64> {
        Some(self.exp.checked_sub(self.iat)?.max(0) / 2)
    }
}

/// Half of `token`'s life, by its own claims.
fn half_life(token: &str) -> Option<Duration> {
    let half = Claims::of(token)?.half_life()?;
    Some(Duration::from_secs(u64::try_from(half).ok()?))
}

/// When a token the app found (at start, from its session file) is half
/// through its life, or `None` if it does not say.
pub(crate) fn renew_at(token: &str) -> Option<DateTime<Utc>> {
    let claims = Claims::of(token)?;
    DateTime::from_timestamp(claims.iat.checked_add(claims.half_life()?)?, 0)
}

/// When to renew the token a session starts with (from its login, or its
/// file): half through its life by its own claims, which count in the
/// server's clock, or half its life from now, by this machine's, whichever
/// comes first: a clock behind the server's by more than half the token's
/// life would otherwise wait for the first past the token's end.
pub(crate) fn first_renewal(token: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let claimed = renew_at(token)?;
    Some(next_after_renewal(token, now).map_or(claimed, |local| claimed.min(local)))
}

/// When to renew a token just received: half its life from now, by this
/// machine's clock (the server's may differ), and never sooner than
/// `LEAST_GAP`. `None` if it does not say.
pub(crate) fn next_after_renewal(token: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let wait = half_life(token)?.max(LEAST_GAP);
    Some(now + chrono::Duration::from_std(wait).ok()?)
}

/// Whether `renewed` expires when `old` does: the server capped it at the
/// session's end, and renewing again would bring nothing more.
pub(crate) fn at_session_end(renewed: &str, old: &str) -> bool {
    matches!((Claims::of(renewed), Claims::of(old)), (Some(new), Some(old)) if new.exp == old.exp)
}

/// After a failed try, how long until the next: `RETRY`, or a quarter of
/// the token's half-life if that is shorter (but at least a second).
pub(crate) fn retry_after(token: &str) -> Duration {
    let quarter = half_life(token).map_or(RETRY, |half| half / 4);
    RETRY.min(quarter).max(Duration::from_secs(1))
}

/// The longest wait after a renewal the server said it does not take.
const RETRY_NOT_TAKEN: Duration = Duration::from_secs(60 * 60);

/// After a renewal answered 404 or 405 (a server from before renewals, or
/// a proxy's brief 404 while a deploy rolls over), the next try: an hour,
/// or a quarter of the token's life if that is shorter, but never sooner
/// than after another failure (`retry_after`). A server without renewals
/// costs a request an hour; a brief 404 no longer ends the session when
/// its token expires.
pub(crate) fn retry_not_taken_after(token: &str) -> Duration {
    let quarter_life = half_life(token).map_or(RETRY_NOT_TAKEN, |half| half / 2);
    RETRY_NOT_TAKEN.min(quarter_life).max(retry_after(token))
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
    fn a_clock_behind_the_servers_renews_its_first_token_in_its_life_all_the_same() {
        let first = token(r#"{"sub":"u","iat":1000,"exp":1600}"#);
        let at = |now: i64| {
            first_renewal(&first, DateTime::from_timestamp(now, 0).expect("a time"))
                .map(|at| at.timestamp())
        };
        // This machine's clock 500 s behind the server's, at the login.
        assert_eq!(at(500), Some(800));
        // In step, or ahead: the claims' own half-life.
        assert_eq!(at(1000), Some(1300));
        assert_eq!(at(1200), Some(1300));
        assert_eq!(first_renewal("not a token", Utc::now()), None);
    }

    #[test]
    fn a_renewal_not_taken_is_tried_again_within_the_tokens_life() {
        // Seven days: an hour later.
        let week = token(r#"{"iat":0,"exp":604800}"#);
        assert_eq!(retry_not_taken_after(&week), Duration::from_secs(3600));
        // A minute: a quarter of it.
        let minute = token(r#"{"iat":0,"exp":60}"#);
        assert_eq!(retry_not_taken_after(&minute), Duration::from_secs(15));
        assert_eq!(retry_not_taken_after("not a token"), RETRY_NOT_TAKEN);
    }

    #[test]
    fn a_token_that_does_not_say_when_is_not_renewed() {
        assert_eq!(renew_at("not a token"), None);
        assert_eq!(renew_at(&token(r#"{"sub":"u"}"#)), None);
        assert_eq!(renew_at("a.%%%.b"), None);
    }

    #[test]
    fn a_renewal_that_expires_with_the_old_token_is_the_last() {
        let old = token(r#"{"iat":1000,"exp":1600}"#);
        assert!(at_session_end(&token(r#"{"iat":1300,"exp":1600}"#), &old));
        assert!(!at_session_end(&token(r#"{"iat":1300,"exp":1900}"#), &old));
        // A shorter token (the server's setting lowered) is not the end.
        assert!(!at_session_end(&token(r#"{"iat":1300,"exp":1400}"#), &old));
        assert!(!at_session_end("not a token", &old));
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

    #[test]
    fn after_a_renewal_the_next_is_half_a_life_away_by_this_clock_and_never_at_once() {
        let now = Utc::now();
        // Issued by a server whose clock is a day behind: still 300 s on.
        let behind = now.timestamp() - 86_400;
        let skewed = token(&format!(r#"{{"iat":{behind},"exp":{}}}"#, behind + 600));
        assert_eq!(
            next_after_renewal(&skewed, now),
            Some(now + chrono::Duration::seconds(300))
        );
        // A one-second token: not renewed without pause.
        let brief = token(r#"{"iat":1000,"exp":1001}"#);
        assert_eq!(
            next_after_renewal(&brief, now),
            Some(now + chrono::Duration::seconds(30))
        );
    }

    #[test]
    fn a_failed_renewal_is_tried_again_within_the_token_s_life() {
        assert_eq!(retry_after(&token(r#"{"iat":0,"exp":604800}"#)), RETRY);
        assert_eq!(
            retry_after(&token(r#"{"iat":0,"exp":8}"#)),
            Duration::from_secs(1)
        );
        assert_eq!(
            retry_after(&token(r#"{"iat":0,"exp":80}"#)),
            Duration::from_secs(10)
        );
        assert_eq!(retry_after("unreadable"), RETRY);
    }
}
