//! What a sequencer remembers of the messages it sequenced, to recognise a
//! draft it has seen before (a redelivery, or a retry with the same
//! clientId) without asking the database. Bounded: the oldest are
//! forgotten first, and the database answers for them.

use std::collections::VecDeque;
use std::sync::Arc;

use natter_shared::Message;

use super::{Draft, Refusal};
use crate::id_map::IdMap;

/// A sender's messages by the clientIds it chose: std's keyed SipHash, not
/// an `IdMap` (one sender's crafted ids would slow its whole partition).
type ByClientId = std::collections::HashMap<String, Arc<Message>>;

pub(super) struct Memory {
    /// The most messages remembered.
    limit: usize,
    by_id: IdMap<String, Arc<Message>>,
    /// By sender, then clientId. (Two levels, so that a lookup borrows the
    /// draft's strings rather than copy them into a key.)
    by_client: IdMap<String, ByClientId>,
    /// What `by_id` holds, oldest first.
    order: VecDeque<Arc<Message>>,
}

impl Memory {
    pub fn new(limit: usize) -> Self {
        Memory {
            limit,
            by_id: IdMap::default(),
            by_client: IdMap::default(),
            order: VecDeque::new(),
        }
    }

    /// What `draft` became, if remembered: the message with its id, or the
    /// first message of its sender's clientId (`Err` when that one is in
    /// another chat).
    pub fn recall(&self, draft: &Draft) -> Option<Result<Arc<Message>, Refusal>> {
        if let Some(message) = self.by_id.get(&draft.id) {
            return Some(Ok(message.clone()));
        }
        let client_id = draft.client_id.as_ref()?;
        let message = self.by_client.get(&draft.sender_id)?.get(client_id)?;
        Some(same_chat(message.clone(), draft))
    }

    pub fn knows(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// Remembers `message`, forgetting the oldest beyond the limit plus
    /// `unstored`: the messages delivered and not stored yet, the newest
    /// sequenced, must stay remembered (the database cannot answer for a
    /// retry of one yet: it would be sequenced again, and stored twice),
    /// and a sequencer may hold more of them than the limit.
    pub fn remember(&mut self, message: Arc<Message>, unstored: usize) {
        if let Some(client_id) = &message.client_id {
            // A clientId's first message is the one it stands for. (Looked
            // up before `entry`, which would copy the sender's id each time.)
            let of_sender = match self.by_client.get_mut(&message.sender.id) {
                Some(of_sender) => of_sender,
                None => self.by_client.entry(message.sender.id.clone()).or_default(),
            };
            if !of_sender.contains_key(client_id) {
                of_sender.insert(client_id.clone(), message.clone());
            }
        }
        self.order.push_back(message.clone());
        self.by_id.insert(message.id.clone(), message);
        while self.order.len() > self.limit.saturating_add(unstored) {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if self.by_id.remove(&oldest.id).is_some() {
                self.forget_client_id(&oldest);
            }
        }
    }

    /// Forgets which message `message`'s clientId stands for, if it is that one.
    fn forget_client_id(&mut self, message: &Message) {
        let Some(client_id) = &message.client_id else {
            return;
        };
        let Some(of_sender) = self.by_client.get_mut(&message.sender.id) else {
            return;
        };
        if of_sender
            .get(client_id)
            .is_some_and(|remembered| remembered.id == message.id)
        {
            of_sender.remove(client_id);
        }
        if of_sender.is_empty() {
            self.by_client.remove(&message.sender.id);
        }
    }

    pub fn clear(&mut self) {
        self.by_id.clear();
        self.by_client.clear();
        self.order.clear();
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.assert_consistent();
        self.by_id.len()
    }

    /// Every message remembered by clientId is remembered by id, and every
    /// one remembered by id is in the age order.
    #[cfg(test)]
    fn assert_consistent(&self) {
        for (sender, of_sender) in &self.by_client {
            assert!(!of_sender.is_empty(), "{sender} has an empty map");
            for message in of_sender.values() {
                assert!(
                    self.by_id.contains_key(&message.id),
                    "{} by clientId only",
                    message.id
                );
            }
        }
        for id in self.by_id.keys() {
            assert!(
                self.order.iter().any(|message| &message.id == id),
                "{id} not in order"
            );
        }
    }
}

/// `message` as what `draft` became, unless `draft` uses its clientId in
/// another chat.
pub(super) fn same_chat(message: Arc<Message>, draft: &Draft) -> Result<Arc<Message>, Refusal> {
    if message.chat_id == draft.chat_id {
        Ok(message)
    } else {
        Err(Refusal::ClientIdReused)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use natter_shared::User;

    use super::*;

    fn message(id: &str, chat: &str, sender: &str, client_id: Option<&str>) -> Arc<Message> {
        Arc::new(Message {
            id: id.into(),
            chat_id: chat.into(),
            seq: 1,
            sender: User {
                id: sender.into(),
                name: sender.into(),
                email: format!("{sender}@example.org"),
                pic: None,
            },
            content: "hi".into(),
            client_id: client_id.map(Into::into),
            created_at: Utc::now(),
        })
    }

    fn draft(id: &str, chat: &str, sender: &str, client_id: Option<&str>) -> Draft {
        Draft {
            id: id.into(),
            chat_id: chat.into(),
            sender_id: sender.into(),
            content: "hi".into(),
            client_id: client_id.map(Into::into),
            first_try: false,
            created_at: Utc::now(),
        }
    }

    fn recalled(memory: &Memory, draft: &Draft) -> Option<Result<String, Refusal>> {
        memory
            .recall(draft)
            .map(|found| found.map(|message| message.id.clone()))
    }

    #[test]
    fn a_draft_is_recognised_by_its_id_or_its_senders_client_id() {
        let mut memory = Memory::new(10);
        memory.remember(message("m1", "c1", "ann", Some("k1")), 0);
        assert!(memory.knows("m1"));
        // Redelivered: the same draft id.
        assert_eq!(
            recalled(&memory, &draft("m1", "c1", "ann", None)),
            Some(Ok("m1".into()))
        );
        // A retry: a new draft id, the same clientId.
        assert_eq!(
            recalled(&memory, &draft("m2", "c1", "ann", Some("k1"))),
            Some(Ok("m1".into()))
        );
        // The same clientId in another chat is refused; another sender's is theirs.
        assert_eq!(
            recalled(&memory, &draft("m3", "c2", "ann", Some("k1"))),
            Some(Err(Refusal::ClientIdReused))
        );
        assert_eq!(
            recalled(&memory, &draft("m4", "c1", "bob", Some("k1"))),
            None
        );
    }

    #[test]
    fn a_client_id_stands_for_its_first_message() {
        let mut memory = Memory::new(10);
        memory.remember(message("m1", "c1", "ann", Some("k1")), 0);
        memory.remember(message("m2", "c1", "ann", Some("k1")), 0);
        assert_eq!(
            recalled(&memory, &draft("m9", "c1", "ann", Some("k1"))),
            Some(Ok("m1".into()))
        );
    }

    #[test]
    fn the_oldest_are_forgotten_by_id_and_client_id_alike() {
        let mut memory = Memory::new(2);
        memory.remember(message("m1", "c1", "ann", Some("k1")), 0);
        memory.remember(message("m2", "c1", "ann", Some("k2")), 0);
        memory.remember(message("m3", "c1", "bob", Some("k1")), 0);
        assert_eq!(memory.len(), 2);
        assert!(!memory.knows("m1"));
        assert_eq!(
            recalled(&memory, &draft("m9", "c1", "ann", Some("k1"))),
            None
        );
        assert_eq!(
            recalled(&memory, &draft("m9", "c1", "ann", Some("k2"))),
            Some(Ok("m2".into()))
        );
        // A sender with nothing remembered leaves no map behind.
        memory.remember(message("m4", "c1", "carl", None), 0);
        memory.remember(message("m5", "c1", "carl", None), 0);
        assert!(memory.by_client.is_empty(), "{:?}", memory.by_client.keys());
        // Remembered twice, forgotten once: nothing is left pointing at it.
        memory.remember(message("m6", "c1", "ann", Some("k6")), 0);
        memory.remember(message("m6", "c1", "ann", Some("k6")), 0);
        memory.remember(message("m7", "c1", "ann", None), 0);
        memory.remember(message("m8", "c1", "ann", None), 0);
        assert_eq!(
            recalled(&memory, &draft("m9", "c1", "ann", Some("k6"))),
            None
        );
        memory.clear();
        assert_eq!(memory.len(), 0);
        assert!(memory.order.is_empty());
    }
}
