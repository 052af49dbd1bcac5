//! Who is typing where. A "started typing" counts for `TYPING_TTL` unless
//! refreshed, so a lost "stopped typing" (a peer whose connection dropped)
//! does not leave "typing…" on screen forever.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a "typing" lasts without a refresh. Clients refresh every
/// `TYPING_REFRESH`, well inside it.
pub const TYPING_TTL: Duration = Duration::from_secs(6);
/// How often the engine repeats "I am typing" while the user types.
pub const TYPING_REFRESH: Duration = Duration::from_secs(3);

#[derive(Debug, Default)]
pub struct Typing {
    /// chat id -> user id -> until when
    chats: HashMap<String, HashMap<String, Instant>>,
}

impl Typing {
    /// Records a typing event; true when the chat's set of typists changed.
    pub fn set(&mut self, chat_id: &str, user_id: &str, is_typing: bool, now: Instant) -> bool {
        if is_typing {
            let users = self.chats.entry(chat_id.to_owned()).or_default();
            users.insert(user_id.to_owned(), now + TYPING_TTL).is_none()
        } else {
            let removed = self
                .chats
                .get_mut(chat_id)
                .is_some_and(|users| users.remove(user_id).is_some());
            self.chats.retain(|_, users| !users.is_empty());
            removed
        }
    }

    /// Forgets typists whose time ran out; returns the chats that changed.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let mut changed = Vec::new();
        for (chat_id, users) in &mut self.chats {
            let before = users.len();
            users.retain(|_, until| *until > now);
            if users.len() != before {
                changed.push(chat_id.clone());
            }
        }
        self.chats.retain(|_, users| !users.is_empty());
        changed.sort();
        changed
    }

    /// Who is typing in a chat, in a stable order.
    pub fn typists(&self, chat_id: &str) -> Vec<String> {
        let mut users: Vec<String> = self
            .chats
            .get(chat_id)
            .map(|users| users.keys().cloned().collect())
            .unwrap_or_default();
        users.sort();
        users
    }

    /// The chats someone is typing in.
    pub fn chats(&self) -> Vec<String> {
        self.chats.keys().cloned().collect()
    }

    pub fn clear(&mut self) -> Vec<String> {
        let chats = self.chats.keys().cloned().collect();
        self.chats.clear();
        chats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn started_and_stopped() {
        let now = Instant::now();
        let mut typing = Typing::default();
        assert!(typing.set("c", "bob", true, now));
        assert!(
            !typing.set("c", "bob", true, now),
            "a refresh changes nothing shown"
        );
        assert!(typing.set("c", "ann", true, now));
        assert_eq!(typing.typists("c"), ["ann", "bob"]);
        assert!(typing.set("c", "bob", false, now));
        assert_eq!(typing.typists("c"), ["ann"]);
        assert!(!typing.set("c", "zed", false, now));
    }

    #[test]
    fn a_lost_stop_expires() {
        let now = Instant::now();
        let mut typing = Typing::default();
        typing.set("c", "bob", true, now);
        assert!(typing.expire(now + TYPING_TTL / 2).is_empty());
        // A refresh pushes the expiry out.
        typing.set("c", "bob", true, now + TYPING_TTL / 2);
        assert!(typing.expire(now + TYPING_TTL).is_empty());
        assert_eq!(typing.expire(now + TYPING_TTL * 2), ["c"]);
        assert!(typing.typists("c").is_empty());
    }
}
