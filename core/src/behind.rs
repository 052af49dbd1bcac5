//! Chats left behind on one link: the server failed on their history alone
//! (an internal error: a damaged row, a bug), so the other chats went on
//! without them. Each is read again after a wait that doubles (`Retries`).
//!
//! The cache keeps one contiguous run of seqs per chat and reads on from
//! its top, so a live frame of such a chat that would leave a hole is not
//! stored; its seq is remembered instead. The server delivers before it
//! stores, so a read of the chat may come before that message is in its
//! history: the chat stays behind until the cache reaches every seq a live
//! frame brought.

use std::collections::HashMap;

use tokio::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::retries::Retries;

pub(crate) struct Behind {
    retries: Retries,
    /// Per chat, the highest seq a live frame brought and the cache did
    /// not keep.
    skipped: HashMap<String, i64>,
}

impl Behind {
    pub fn new(backoff: Backoff) -> Self {
        Behind {
            retries: Retries::new(backoff),
            skipped: HashMap::new(),
        }
    }

    /// Whether `chat_id` is behind (waiting, or being read).
    pub fn contains(&self, chat_id: &str) -> bool {
        self.retries.contains(chat_id)
    }

    /// Reading `chat_id` failed: it is read again after the returned wait.
    pub fn failed(&mut self, chat_id: &str) -> Duration {
        self.retries
            .failed(chat_id, Instant::now(), &mut rand::rng())
    }

    /// Whether a live message `seq` of `chat_id`, whose cache holds up to
    /// `held`, is to be left out: it is, in a chat behind, unless it
    /// follows on from what is held. Then its seq is remembered, for the
    /// read to reach.
    pub fn skips(&mut self, chat_id: &str, held: Option<i64>, seq: i64) -> bool {
        if !self.contains(chat_id) || held.is_some_and(|held| seq <= held + 1) {
            return false;
        }
        self.skip(chat_id, seq);
        true
    }

    /// A live message `seq` of `chat_id` was left out: the chat's read
    /// must reach it.
    pub fn skip(&mut self, chat_id: &str, seq: i64) {
        let highest = self.skipped.entry(chat_id.to_owned()).or_insert(seq);
        *highest = (*highest).max(seq);
    }

    /// `chat_id` was read, and its cache now holds up to `held`: done
    /// unless a message a live frame brought is still missing (the server
    /// had not stored it yet), in which case it is read again after a
    /// wait. Returns whether it is done.
    pub fn read(&mut self, chat_id: &str, held: Option<i64>) -> bool {
        let missing = self
            .skipped
            .get(chat_id)
            .is_some_and(|skipped| held < Some(*skipped));
        if missing {
            self.failed(chat_id);
            return false;
        }
        self.done(chat_id);
        true
    }

    /// `chat_id` is no longer read (read whole, or forgotten).
    pub fn done(&mut self, chat_id: &str) {
        self.retries.done(chat_id);
        self.skipped.remove(chat_id);
    }

    /// Every chat behind.
    pub fn chat_ids(&self) -> impl Iterator<Item = &str> {
        self.retries.ids()
    }

    /// When the next read is due, if any chat is waiting.
    pub fn next_due(&self) -> Option<Instant> {
        self.retries.next_due()
    }

    /// The chats due now, in the order they fell due.
    pub fn take_due(&mut self) -> Vec<String> {
        self.retries.take_due(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn behind() -> Behind {
        Behind::new(Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
        })
    }

    #[test]
    fn only_a_chat_behind_skips_and_only_what_would_leave_a_hole() {
        let mut behind = behind();
        assert!(!behind.skips("a", Some(1), 5), "not behind: kept");
        behind.failed("a");
        assert!(behind.skips("a", Some(1), 5));
        assert!(!behind.skips("a", Some(1), 2), "follows on: kept");
        assert!(!behind.skips("a", Some(3), 2), "held already: kept");
        assert!(behind.skips("a", None, 1), "nothing held: its read decides");
    }

    #[test]
    fn a_chat_read_short_of_a_skipped_message_stays_behind() {
        let mut behind = behind();
        behind.failed("a");
        behind.skips("a", Some(1), 7);
        behind.skips("a", Some(1), 5);
        assert!(!behind.read("a", Some(6)), "7 not there yet");
        assert!(behind.contains("a"));
        assert!(behind.next_due().is_some(), "read again after a wait");
        assert!(behind.read("a", Some(7)));
        assert!(!behind.contains("a"));
        // Behind again later: what was skipped before counts no more.
        behind.failed("a");
        assert!(behind.read("a", Some(1)));
    }
}
