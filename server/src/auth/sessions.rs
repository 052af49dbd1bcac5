//! Sessions ended before their tokens expire: a logout ends its session on
//! every node. Tokens are stateless, so a logged-out token would otherwise
//! stay good until its `exp` (a week by default) and could be renewed for
//! the rest of the session. Each session carries an id (the `sid` claim,
//! kept across renewals); a logout records it in the database until the
//! session's longest end (`NATTER_SESSION_MAX_SECS` after its login: no
//! token of it, however renewed, lasts longer), and every node keeps the
//! ended ids in memory, so that checking a token costs no query. Nodes
//! learn of the other nodes' logouts by reading the table every second
//! (`follow`, when the database is shared): a logout takes effect on its
//! own node at once and on the others within about a second.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::store::Store;
use crate::sync::{read, write};

/// How often a node reads the logouts recorded since it last looked.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// How far back each reading goes before the previous one began: a logout
/// recorded with an earlier `ended_at` than one already read (its commit
/// came later, or another node's clock is behind) is still seen.
const OVERLAP_SECS: i64 = 60;

/// How often the database forgets sessions whose tokens have all expired.
const FORGET_EVERY: Duration = Duration::from_secs(600);

/// A session's id as kept in memory: the `sid` claim's 32 hex digits.
pub type SessionKey = u128;

/// The key of a `sid` claim; `None` for one this server did not make
/// (tokens from before `sid` have none, and cannot be ended early).
pub fn session_key(sid: &str) -> Option<SessionKey> {
    if sid.len() != 32 {
        return None;
    }
    SessionKey::from_str_radix(sid, 16).ok()
}

/// The ended sessions this node knows of, each with the last second any of
/// its tokens could be good for.
#[derive(Default)]
pub struct EndedSessions {
    ended: RwLock<HashMap<SessionKey, i64>>,
}

impl EndedSessions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ends `key` here, until `until`, and lets go of what has expired
    /// (a node on the embedded database reads nothing after its start:
    /// its own logouts are where the list is kept short).
    pub fn end(&self, key: SessionKey, until: i64) {
        let mut ended = write(&self.ended);
        keep_latest(&mut ended, key, until);
        let now = chrono::Utc::now().timestamp();
        ended.retain(|_, until| *until >= now);
    }

    pub fn is_ended(&self, key: SessionKey) -> bool {
        read(&self.ended).contains_key(&key)
    }

    /// Takes in what the database holds (`sid`, until), and lets go of
    /// what has expired by `now`.
    pub fn absorb(&self, rows: &[(String, i64)], now: i64) {
        let mut ended = write(&self.ended);
        for (sid, until) in rows {
            if let Some(key) = session_key(sid) {
                keep_latest(&mut ended, key, *until);
            }
        }
        ended.retain(|_, until| *until >= now);
    }
}

/// Records `key` as ended until `until`, or later if it is already.
fn keep_latest(ended: &mut HashMap<SessionKey, i64>, key: SessionKey, until: i64) {
    let kept = ended.entry(key).or_insert(until);
    *kept = (*kept).max(until);
}

/// Reads the sessions ended so far (at start, before serving).
pub async fn load(store: &dyn Store, ended: &EndedSessions) -> crate::store::StoreResult<()> {
    let now = chrono::Utc::now().timestamp();
    store.forget_ended_sessions(now).await?;
    ended.absorb(&store.ended_sessions(i64::MIN, now).await?, now);
    Ok(())
}

/// Keeps `ended` in step with the logouts every node records, until the
/// task is aborted. A reading that fails is tried again at the next one,
/// from the same point.
pub async fn follow(store: Arc<dyn Store>, ended: Arc<EndedSessions>) {
    let mut since = chrono::Utc::now().timestamp() - OVERLAP_SECS;
    let mut every = tokio::time::interval(FOLLOW_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut forgot = tokio::time::Instant::now();
    loop {
        every.tick().await;
        let now = chrono::Utc::now().timestamp();
        match store.ended_sessions(since, now).await {
            Ok(rows) => {
                ended.absorb(&rows, now);
                since = now - OVERLAP_SECS;
            }
            Err(err) => tracing::warn!(error = %err, "reading the sessions logged out"),
        }
        if forgot.elapsed() >= FORGET_EVERY {
            forgot = tokio::time::Instant::now();
            if let Err(err) = store.forget_ended_sessions(now).await {
                tracing::warn!(error = %err, "forgetting expired logouts");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_sid_this_server_makes_is_a_key() {
        assert_eq!(session_key("0000000000000000000000000000002a"), Some(42));
        assert_eq!(session_key("2a"), None);
        assert_eq!(session_key("zz00000000000000000000000000002a"), None);
    }

    #[test]
    fn an_ended_session_is_kept_until_its_tokens_have_expired() {
        let now = chrono::Utc::now().timestamp();
        let ended = EndedSessions::new();
        ended.end(1, now + 100);
        let sid = format!("{:032x}", 2u128);
        ended.absorb(&[(sid, now + 200)], now);
        assert!(ended.is_ended(1) && ended.is_ended(2));
        ended.absorb(&[], now + 150);
        assert!(!ended.is_ended(1), "past its end, let go");
        assert!(ended.is_ended(2));
        assert!(!ended.is_ended(3));
        // A logout also lets go of what has expired (the embedded database's
        // node reads nothing after its start).
        let ended = EndedSessions::new();
        ended.absorb(&[(format!("{:032x}", 4u128), now + 1)], now);
        write(&ended.ended).insert(5, now - 1);
        ended.end(6, now + 60);
        assert!(!ended.is_ended(5) && ended.is_ended(4) && ended.is_ended(6));
    }
}
