//! Sends the server refused for now (its database or broker down or
//! behind), by chat. Such a chat's outbox waits (`Retries`), then goes
//! again one message at a time, oldest first, each once the one before it
//! is answered, until it is empty. Sent as they came, a message written
//! after the refused one could be stored before it (the server able to
//! take it by then), and the chat would read out of order for everyone.
//! One already on its way when the refusal came still may be: holding
//! every chat to one send at a time would cost a round trip per message.
//!
//! One link's schedule: a new link sends the whole outbox again anyway.

use std::collections::{HashMap, HashSet};

use rand::Rng;
use tokio::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::retries::Retries;

pub(crate) struct Resends {
    /// Every chat whose sends wait their turn in the outbox.
    held: HashSet<String>,
    /// Those waiting before their oldest goes again; the wait doubles with
    /// each refusal of the one sent again, and starts over once one is
    /// taken.
    waits: Retries,
    /// Per chat being sent again, the message sent and not answered yet.
    sending: HashMap<String, String>,
    /// Chats whose message sent again was answered, and that message:
    /// their next goes now.
    next: Vec<(String, String)>,
}

/// A chat whose next message is due, and the one answered before it, if
/// any: its next is written after that one, so that one left in the
/// outbox by its answer is not sent again in a loop.
pub(crate) struct Due {
    pub chat_id: String,
    pub answered: Option<String>,
}

impl Resends {
    pub fn new(backoff: Backoff) -> Self {
        Resends {
            held: HashSet::new(),
            waits: Retries::new(backoff),
            sending: HashMap::new(),
            next: Vec::new(),
        }
    }

    /// `client_id` in `chat_id` was refused for now at `now`. The first in
    /// its chat, or the one sent again: the chat's outbox goes again, from
    /// its oldest message, after the returned wait. Another (a copy sent
    /// before, answered late) changes nothing: it goes in its turn.
    pub fn refused(
        &mut self,
        chat_id: &str,
        client_id: &str,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        let again = self
            .sending
            .get(chat_id)
            .is_some_and(|sent| sent == client_id);
        if self.held.contains(chat_id) && !again {
            return None;
        }
        self.held.insert(chat_id.to_owned());
        self.sending.remove(chat_id);
        Some(self.waits.failed(chat_id, now, rng))
    }

    /// Whether a new send in `chat_id` waits its turn in the outbox rather
    /// than going at once.
    pub fn holds(&self, chat_id: &str) -> bool {
        self.held.contains(chat_id)
    }

    /// When a chat's next message is due, if any is waiting.
    pub fn next_due(&self) -> Option<Instant> {
        if self.next.is_empty() {
            self.waits.next_due()
        } else {
            Some(Instant::now())
        }
    }

    /// The chats whose next message is due at `now`; each is to send its
    /// oldest unsent one (`sending`), or is `done` if it has none.
    pub fn take_due(&mut self, now: Instant) -> Vec<Due> {
        let next = std::mem::take(&mut self.next);
        let next = next.into_iter().map(|(chat_id, answered)| Due {
            chat_id,
            answered: Some(answered),
        });
        let waited = self.waits.take_due(now).into_iter().map(|chat_id| Due {
            chat_id,
            answered: None,
        });
        next.chain(waited).collect()
    }

    /// `client_id` went again as `chat_id`'s next message.
    pub fn sending(&mut self, chat_id: &str, client_id: &str) {
        self.sending
            .insert(chat_id.to_owned(), client_id.to_owned());
    }

    /// `client_id` was answered for good (stored, or refused for good, or
    /// gone from the outbox): if it was its chat's message sent again, the
    /// chat's next one is due now, and a refusal waits the least again.
    pub fn answered(&mut self, client_id: &str) {
        let chat = self
            .sending
            .iter()
            .find(|(_, sent)| *sent == client_id)
            .map(|(chat, _)| chat.clone());
        if let Some(chat) = chat {
            self.sending.remove(&chat);
            self.waits.done(&chat);
            self.next.push((chat, client_id.to_owned()));
        }
    }

    /// `chat_id`'s outbox is empty: its sends go at once again.
    pub fn done(&mut self, chat_id: &str) {
        self.held.remove(chat_id);
        self.waits.done(chat_id);
        self.sending.remove(chat_id);
        self.next.retain(|(chat, _)| chat != chat_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn chats(due: Vec<Due>) -> Vec<String> {
        due.into_iter().map(|due| due.chat_id).collect()
    }

    fn resends() -> Resends {
        Resends::new(Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
        })
    }

    /// A chat refused for now holds its sends until its outbox is empty,
    /// one message at a time: the next is due only once the one sent is
    /// answered.
    #[test]
    fn a_refused_chat_sends_one_at_a_time_until_done() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut resends = resends();
        let now = Instant::now();
        assert!(!resends.holds("c"));
        let wait = resends.refused("c", "m1", now, &mut rng).expect("a wait");
        assert!(resends.holds("c") && !resends.holds("d"));
        assert!(resends.take_due(now).is_empty(), "waits first");
        assert_eq!(chats(resends.take_due(now + wait)), ["c"]);
        resends.sending("c", "m1");
        assert_eq!(resends.next_due(), None, "until m1 is answered");
        resends.answered("another chat's message");
        assert_eq!(resends.next_due(), None);
        resends.answered("m1");
        assert!(resends.next_due().is_some_and(|due| due <= Instant::now()));
        let due = resends.take_due(now + wait);
        assert_eq!(
            due.iter()
                .map(|due| (due.chat_id.as_str(), due.answered.as_deref()))
                .collect::<Vec<_>>(),
            [("c", Some("m1"))],
            "with the one answered, not to be sent again should it stay"
        );
        assert!(resends.holds("c"), "held until its outbox is empty");
        resends.done("c");
        assert!(!resends.holds("c"));
        assert_eq!(resends.next_due(), None);
    }

    /// The one sent again refused again: the chat waits longer. A copy
    /// sent before, refused late, changes nothing; once one is taken, a
    /// refusal waits the least again.
    #[test]
    fn only_the_one_sent_again_refused_makes_the_chat_wait_longer() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut resends = resends();
        let now = Instant::now();
        let first = resends.refused("c", "m1", now, &mut rng).expect("a wait");
        assert_eq!(
            resends.refused("c", "m2", now, &mut rng),
            None,
            "m2 was on its way"
        );
        assert_eq!(resends.next_due(), Some(now + first));
        resends.take_due(now + first);
        resends.sending("c", "m1");
        assert_eq!(resends.refused("c", "m2", now + first, &mut rng), None);
        let second = resends
            .refused("c", "m1", now + first, &mut rng)
            .expect("a longer wait");
        assert!(
            second >= Duration::from_millis(100),
            "the wait doubled: {second:?}"
        );
        resends.answered("m1");
        assert!(
            resends.take_due(now + first).is_empty(),
            "an answer to the one sent before does not end the wait"
        );
        assert_eq!(chats(resends.take_due(now + first + second)), ["c"]);
        resends.sending("c", "m1");
        resends.answered("m1");
        assert_eq!(chats(resends.take_due(now + first + second)), ["c"]);
        resends.sending("c", "m2");
        let third = resends
            .refused("c", "m2", now + first + second, &mut rng)
            .expect("a wait");
        assert!(
            third <= Duration::from_millis(100),
            "the least again: {third:?}"
        );
    }
}
