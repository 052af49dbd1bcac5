//! What the engine tells the UI: plain, serializable views of chats and
//! messages, and the events that say something changed. The shell forwards
//! them as they are; the UI renders them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use natter_shared::{Chat, Message, User};
use serde::Serialize;

use crate::cache::Outgoing;

/// A message as the user sees it: sent (it has a seq), or still in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    /// The server's id once sent; the client id while pending.
    pub id: String,
    pub client_id: Option<String>,
    pub chat_id: String,
    /// Position in the chat; none while pending.
    pub seq: Option<i64>,
    pub sender: User,
    pub content: String,
    pub created_at: DateTime<Utc>,
    /// Sent by the logged-in user.
    pub mine: bool,
    pub status: Delivery,
    /// Why the server refused it: for good when `status` is `failed`; for
    /// now when `pending` (it is being sent again, and waits meanwhile).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Delivery {
    /// Stored by the server.
    Sent,
    /// In the outbox: written, not acknowledged yet.
    Pending,
    /// Refused by the server for good; kept for the user to see or discard.
    Failed,
}

impl MessageView {
    pub fn sent(message: &Message, me: &str) -> Self {
        MessageView {
            id: message.id.clone(),
            client_id: message.client_id.clone(),
            chat_id: message.chat_id.clone(),
            seq: Some(message.seq),
            sender: message.sender.clone(),
            content: message.content.clone(),
            created_at: message.created_at,
            mine: message.sender.id == me,
            status: Delivery::Sent,
            error: None,
        }
    }

    pub fn outgoing(outgoing: &Outgoing, me: &User) -> Self {
        MessageView {
            id: outgoing.client_id.clone(),
            client_id: Some(outgoing.client_id.clone()),
            chat_id: outgoing.chat_id.clone(),
            seq: None,
            sender: me.clone(),
            content: outgoing.content.clone(),
            created_at: outgoing.created_at,
            mine: true,
            status: if outgoing.error.is_some() {
                Delivery::Failed
            } else {
                Delivery::Pending
            },
            error: outgoing.error.clone(),
        }
    }

    /// A message of ours the server refused for now, for `reason`: still
    /// pending, sent again after a wait.
    pub fn waiting(outgoing: &Outgoing, me: &User, reason: &str) -> Self {
        MessageView {
            status: Delivery::Pending,
            error: Some(reason.to_owned()),
            ..MessageView::outgoing(outgoing, me)
        }
    }
}

/// One row of the chat list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatSummary {
    pub id: String,
    /// The group's name, or the other person's name in a 1:1 chat.
    pub name: String,
    pub is_group: bool,
    /// The other person's picture in a 1:1 chat (a server path: see `Engine::picture`).
    pub pic: Option<String>,
    pub members: Vec<User>,
    pub admin_id: Option<String>,
    pub last_message: Option<MessageView>,
    pub updated_at: DateTime<Utc>,
    pub unread: u32,
    /// The user is no longer in it (left, or removed): readable, not
    /// writable, and deletable.
    pub left: bool,
    /// The server failed to give some of its messages (an error on this
    /// chat alone): what it shows may be short of them until it is read
    /// again, after a wait.
    pub behind: bool,
}

impl ChatSummary {
    pub fn new(chat: &Chat, unread: u32, me: &str) -> Self {
        let other = (!chat.is_group_chat)
            .then(|| chat.users.iter().find(|user| user.id != me))
            .flatten();
        ChatSummary {
            id: chat.id.clone(),
            name: match other {
                Some(user) => user.name.clone(),
                None => chat.chat_name.clone(),
            },
            is_group: chat.is_group_chat,
            pic: other.and_then(|user| user.pic.clone()),
            members: chat.users.clone(),
            admin_id: chat.group_admin.as_ref().map(|admin| admin.id.clone()),
            last_message: chat
                .latest_message
                .as_ref()
                .map(|message| MessageView::sent(message, me)),
            updated_at: chat.updated_at,
            unread,
            left: !chat.has_member(me),
            behind: false,
        }
    }
}

/// The state of the link to the server, for the offline banner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ConnectionState {
    /// No session, or waiting before the next attempt.
    Offline,
    /// Connecting, or catching up after connecting.
    Connecting,
    /// Connected and caught up: what is shown is current.
    Online,
    /// Turned away for now: this account has as many connections open to
    /// the server as it allows (Natter open on other computers). Tried
    /// again when the server says, until one of them closes.
    Crowded,
}

/// A desktop notification to show: the shell decides how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub chat_id: String,
    pub message_id: String,
    /// The sender, or the group's name for a group.
    pub title: String,
    /// The text, prefixed with the sender's name in a group.
    pub body: String,
}

impl Notification {
    /// A new message, in a chat that now has `unread` messages not read
    /// (more than one is said in the title: the notification stands for
    /// them all, as it replaces the chat's earlier one).
    pub fn for_message(message: &Message, chat: Option<&Chat>, unread: u32) -> Self {
        let (name, body) = match chat.filter(|chat| chat.is_group_chat) {
            Some(group) => (
                group.chat_name.clone(),
                format!("{}: {}", message.sender.name, message.content),
            ),
            None => (message.sender.name.clone(), message.content.clone()),
        };
        let title = match unread {
            0 | 1 => name,
            n => format!("{name} ({n} new messages)"),
        };
        Notification {
            chat_id: message.chat_id.clone(),
            message_id: message.id.clone(),
            title,
            body,
        }
    }
}

/// The chat list as the UI shows it, from one reading of the cache.
///
/// `version` orders the readings: the engine numbers each one, across
/// logins. The UI gets lists two ways, as events and as answers to its own
/// requests, which travel separately and may overtake each other; a list
/// whose version is lower than one already shown was read before it, and
/// is older (`ChatListVersions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatList {
    pub chats: Vec<ChatSummary>,
    pub unread_total: u32,
    pub version: u64,
}

impl ChatList {
    /// No chats: logged out.
    pub fn empty(version: u64) -> Self {
        ChatList {
            chats: Vec::new(),
            unread_total: 0,
            version,
        }
    }
}

/// Numbers the chat list's readings (`ChatList::version`); one per engine,
/// shared by its sessions, so a new login's lists are newer than the last
/// one's.
///
/// Why a number taken before reading is enough: every change to the list
/// is followed by a reading (an event, or the UI asking), taken after the
/// change was written; any reading numbered higher began later still, so
/// it sees that change too. The list with the highest number is never
/// older than a change the UI has been told of. So code that changes what
/// the list shows reads it afterwards (`Context::emit_chats`).
#[derive(Debug, Clone, Default)]
pub(crate) struct ChatListVersions(Arc<AtomicU64>);

impl ChatListVersions {
    /// The next reading's version (the first is 1).
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::AcqRel) + 1
    }
}

/// Something changed. Sent to every `Engine::subscribe`r.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Event {
    Connection {
        state: ConnectionState,
    },
    /// The chat list changed (order, names, members, last message, unread).
    Chats(ChatList),
    /// A message appeared or changed state (pending to sent or failed).
    Message {
        message: MessageView,
    },
    /// Who is typing in a chat now (names, for "Ann is typing…").
    Typing {
        chat_id: String,
        names: Vec<String>,
    },
    /// Show this notification.
    Notify {
        notification: Notification,
    },
    /// The user read this chat (opened it, or focused the window on it):
    /// its notification is no news any more.
    ChatRead {
        chat_id: String,
    },
    /// The server no longer accepts the session (expired, revoked): log in again.
    SessionEnded {
        reason: String,
    },
    /// The session is over here (logout, or the server ended it): what it
    /// showed outside the window (notifications) goes.
    SignedOut,
}

/// What the user is looking at: decides unread counts and notifications.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub active_chat: Option<String>,
    pub focused: bool,
}

impl View {
    /// A message from someone else that the user is not looking at right now.
    pub fn is_unseen(&self, message: &Message, me: &str) -> bool {
        message.sender.id != me && !self.is_looking_at(&message.chat_id)
    }

    /// The chat is open in a focused window.
    pub fn is_looking_at(&self, chat_id: &str) -> bool {
        self.focused && self.active_chat.as_deref() == Some(chat_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> User {
        User {
            id: id.into(),
            name: id.to_uppercase(),
            email: format!("{id}@example.org"),
            pic: None,
        }
    }

    fn message(chat: &str, from: &str) -> Message {
        Message {
            id: "m1".into(),
            chat_id: chat.into(),
            seq: 1,
            sender: user(from),
            content: "hello".into(),
            client_id: None,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn unseen_is_someone_elses_message_outside_the_chat_in_view() {
        let looking = View {
            active_chat: Some("c1".into()),
            focused: true,
        };
        assert!(!looking.is_unseen(&message("c1", "bob"), "ann"));
        assert!(looking.is_unseen(&message("c2", "bob"), "ann"));
        assert!(
            !looking.is_unseen(&message("c2", "ann"), "ann"),
            "never one's own"
        );
        let away = View {
            focused: false,
            ..looking
        };
        assert!(
            away.is_unseen(&message("c1", "bob"), "ann"),
            "window in the background"
        );
    }

    #[test]
    fn notifications_name_the_group_and_the_sender() {
        let chat = Chat {
            id: "c1".into(),
            chat_name: "Team".into(),
            is_group_chat: true,
            users: vec![user("ann"), user("bob")],
            group_admin: Some(user("ann")),
            latest_message: None,
            updated_at: Utc::now(),
        };
        let group = Notification::for_message(&message("c1", "bob"), Some(&chat), 1);
        assert_eq!(
            (group.title.as_str(), group.body.as_str()),
            ("Team", "BOB: hello")
        );
        let direct = Notification::for_message(&message("c1", "bob"), None, 1);
        assert_eq!(
            (direct.title.as_str(), direct.body.as_str()),
            ("BOB", "hello")
        );
        let more = Notification::for_message(&message("c1", "bob"), Some(&chat), 3);
        assert_eq!(
            (more.title.as_str(), more.body.as_str()),
            ("Team (3 new messages)", "BOB: hello")
        );
    }

    #[test]
    fn a_direct_chat_is_named_after_the_other_person() {
        let chat = Chat {
            id: "c1".into(),
            chat_name: "sender".into(),
            is_group_chat: false,
            users: vec![user("ann"), user("bob")],
            group_admin: None,
            latest_message: None,
            updated_at: Utc::now(),
        };
        assert_eq!(ChatSummary::new(&chat, 0, "ann").name, "BOB");
        assert_eq!(ChatSummary::new(&chat, 0, "bob").name, "ANN");
    }
}
