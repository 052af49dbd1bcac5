//! How often a chat may notify. The first message in a while notifies at
//! once; more in the same chat within `NOTICE_EVERY` wait, and only the
//! newest of them is shown when that time is up (the desktop replaces the
//! chat's earlier notification with it). A busy group, or a burst after a
//! while away, is one notification that keeps up, not one per message.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::views::Notification;

/// Least time between two notifications of one chat.
pub const NOTICE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct Notices {
    /// chat id -> its last notification shown, and the newest waiting.
    chats: HashMap<String, Chat>,
}

#[derive(Debug)]
struct Chat {
    shown: Instant,
    waiting: Option<Notification>,
}

impl Chat {
    fn due(&self) -> Instant {
        self.shown + NOTICE_EVERY
    }
}

impl Notices {
    /// A message wants to notify: returns it if it may be shown now;
    /// otherwise it waits (in place of any older one of its chat).
    pub fn offer(&mut self, notification: Notification, now: Instant) -> Option<Notification> {
        match self.chats.get_mut(&notification.chat_id) {
            Some(chat) if chat.waiting.is_some() || now < chat.due() => {
                chat.waiting = Some(notification);
                None
            }
            _ => {
                let chat = Chat {
                    shown: now,
                    waiting: None,
                };
                self.chats.insert(notification.chat_id.clone(), chat);
                Some(notification)
            }
        }
    }

    /// When the next waiting notification may be shown, if one waits.
    pub fn due(&self) -> Option<Instant> {
        self.chats
            .values()
            .filter(|chat| chat.waiting.is_some())
            .map(Chat::due)
            .min()
    }

    /// The waiting notifications whose time has come, to be shown now.
    pub fn take_due(&mut self, now: Instant) -> Vec<Notification> {
        let mut due = Vec::new();
        for chat in self.chats.values_mut() {
            if now >= chat.due()
                && let Some(notification) = chat.waiting.take()
            {
                chat.shown = now;
                due.push(notification);
            }
        }
        // A chat quiet for a while needs no entry: its next message notifies at once.
        self.chats
            .retain(|_, chat| chat.waiting.is_some() || now < chat.due());
        due
    }

    /// Every waiting notification, whatever its time (the link dropped:
    /// what arrived should still be told).
    pub fn take_all(&mut self) -> Vec<Notification> {
        self.chats
            .values_mut()
            .filter_map(|chat| chat.waiting.take())
            .collect()
    }

    /// The user read the chat: what waits for it is no news any more.
    pub fn forget(&mut self, chat_id: &str) {
        self.chats.remove(chat_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(chat_id: &str, body: &str) -> Notification {
        Notification {
            chat_id: chat_id.into(),
            message_id: body.into(),
            title: chat_id.into(),
            body: body.into(),
        }
    }

    fn bodies(notifications: Vec<Notification>) -> Vec<String> {
        let mut bodies: Vec<String> = notifications.into_iter().map(|n| n.body).collect();
        bodies.sort();
        bodies
    }

    #[test]
    fn the_first_message_notifies_at_once_and_a_burst_waits_for_its_newest() {
        let mut notices = Notices::default();
        let start = Instant::now();
        assert!(notices.offer(notice("c1", "1"), start).is_some());
        for body in ["2", "3", "4"] {
            assert!(notices.offer(notice("c1", body), start).is_none());
        }
        assert_eq!(notices.due(), Some(start + NOTICE_EVERY));
        assert!(notices.take_due(start + NOTICE_EVERY / 2).is_empty());
        assert_eq!(bodies(notices.take_due(start + NOTICE_EVERY)), ["4"]);
        assert_eq!(notices.due(), None, "nothing waits any more");
    }

    #[test]
    fn chats_keep_their_own_time() {
        let mut notices = Notices::default();
        let start = Instant::now();
        assert!(notices.offer(notice("c1", "a"), start).is_some());
        assert!(
            notices.offer(notice("c2", "b"), start).is_some(),
            "another chat is not held back"
        );
        assert!(notices.offer(notice("c1", "c"), start).is_none());
        assert_eq!(bodies(notices.take_due(start + NOTICE_EVERY)), ["c"]);
    }

    #[test]
    fn a_message_after_a_quiet_while_notifies_at_once() {
        let mut notices = Notices::default();
        let start = Instant::now();
        assert!(notices.offer(notice("c1", "a"), start).is_some());
        assert!(notices.take_due(start + NOTICE_EVERY).is_empty());
        let later = start + NOTICE_EVERY * 3;
        assert!(notices.offer(notice("c1", "b"), later).is_some());
    }

    #[test]
    fn a_message_behind_a_waiting_one_waits_too_even_when_its_time_has_come() {
        let mut notices = Notices::default();
        let start = Instant::now();
        assert!(notices.offer(notice("c1", "a"), start).is_some());
        assert!(notices.offer(notice("c1", "b"), start).is_none());
        // The timer has not fired yet, but the time is up: still one notification.
        assert!(
            notices
                .offer(notice("c1", "c"), start + NOTICE_EVERY)
                .is_none()
        );
        assert_eq!(bodies(notices.take_due(start + NOTICE_EVERY)), ["c"]);
    }

    #[test]
    fn reading_a_chat_drops_what_waits_and_take_all_empties_the_rest() {
        let mut notices = Notices::default();
        let start = Instant::now();
        for chat in ["c1", "c2"] {
            notices.offer(notice(chat, "first"), start);
            notices.offer(notice(chat, "second"), start);
        }
        notices.forget("c1");
        assert_eq!(bodies(notices.take_all()), ["second"]);
        assert!(notices.take_due(start + NOTICE_EVERY).is_empty());
    }
}
