//! What one logged-in session shares between the engine's methods and its
//! connection task.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use natter_shared::{Chat, Message, User};
use tokio::sync::broadcast;

use crate::api::ServerApi;
use crate::backoff::Backoff;
use crate::behind::Behind;
use crate::cache::{Cache, Left, Outgoing, Source, Stored};
use crate::error::CoreResult;
use crate::notices::Notices;
use crate::typing::Typing;
use crate::views::{
    ChatList, ChatListVersions, ChatSummary, ConnectionState, Event, MessageView, Notification,
    View,
};

pub(crate) struct Context {
    pub me: User,
    pub cache: Cache,
    pub api: ServerApi,
    pub events: broadcast::Sender<Event>,
    /// Shared with the engine: survives logins.
    pub view: Arc<Mutex<View>>,
    /// Shared with the engine: numbers the chat list's readings.
    pub list_versions: ChatListVersions,
    pub typing: Mutex<Typing>,
    pub notices: Mutex<Notices>,
    pub state: Mutex<ConnectionState>,
    /// The chats left behind on the link, as the chat list's data flags them.
    pub behind: Mutex<HashSet<String>>,
    pub backoff: Backoff,
    /// How long opening the socket may take (`EngineOptions`).
    pub connect_timeout: std::time::Duration,
}

/// A poisoned lock only means another task panicked while holding it; the
/// plain data inside is still usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What `Context::receive` did with a message.
pub(crate) struct Received {
    pub stored: Stored,
    /// Caught up and not seen: its notification.
    pub missed: Option<Notification>,
    /// One's own from another device, new here: its chat was read up to it
    /// (`Context::read_up_to`), and what was missed in it before is no news.
    pub read_up_to: bool,
}

/// Where a message came from, which decides whether it may notify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// Pushed by the server as it happened, maybe before it was stored.
    Live,
    /// The server's answer to our own send: stored.
    Ack,
    /// Fetched while catching up after being away.
    CatchUp,
    /// An older page the user scrolled to, or the first page of a chat.
    Backfill,
}

impl Context {
    pub fn emit(&self, event: Event) {
        // No subscriber is fine: nobody is looking.
        let _ = self.events.send(event);
    }

    pub fn set_state(&self, state: ConnectionState) {
        let changed = {
            let mut current = lock(&self.state);
            std::mem::replace(&mut *current, state) != state
        };
        if changed {
            self.emit(Event::Connection { state });
        }
    }

    /// Takes the chats now behind on the link; returns whether that
    /// changed what the chat list shows.
    pub fn set_behind(&self, behind: &Behind) -> bool {
        let mut shown = lock(&self.behind);
        let same = shown.len() == behind.chat_ids().count()
            && behind.chat_ids().all(|chat_id| shown.contains(chat_id));
        if !same {
            *shown = behind.chat_ids().map(str::to_owned).collect();
        }
        !same
    }

    /// No chat is shown behind any more (the link is gone); returns
    /// whether one was.
    pub fn clear_behind(&self) -> bool {
        let mut shown = lock(&self.behind);
        let had = !shown.is_empty();
        shown.clear();
        had
    }

    pub fn state(&self) -> ConnectionState {
        *lock(&self.state)
    }

    pub fn view(&self) -> View {
        lock(&self.view).clone()
    }

    /// Stores a message from the server and tells the UI what changed. A
    /// live message not seen notifies (`notify`); one caught up comes back
    /// as `missed`, for `catch_up` to tell once per chat.
    pub async fn receive(&self, message: &Message, arrival: Arrival) -> CoreResult<Received> {
        let source = match arrival {
            Arrival::Live => Source::Delivered,
            Arrival::Ack | Arrival::CatchUp | Arrival::Backfill => Source::Stored,
        };
        // Counted unread in the same write as the message is stored, as
        // the user sees things once it is written (a write may wait behind
        // another, while the user switches chats).
        let elsewhere = self.written_elsewhere(message, arrival).await?;
        let unseen = || arrival != Arrival::Backfill && self.view().is_unseen(message, &self.me.id);
        let (stored, counted) = self
            .cache
            .put_message_counting(message, &self.me.id, source, unseen)
            .await?;
        // A message just sent ends its sender's "typing…", also when it is
        // here already (a gap read moments before brought it); an old one,
        // on an older page or caught up, says nothing of now.
        if arrival == Arrival::Live
            && self.typing_changed(&message.chat_id, &message.sender.id, false)
        {
            self.emit_typing(&message.chat_id).await;
        }
        if stored != Stored::New {
            // A replaced copy was shown (and counted) already, under the
            // copy's id and seq: the UI hears of the change only.
            if stored == Stored::Replaced {
                self.emit(Event::Message {
                    message: MessageView::sent(message, &self.me.id),
                });
            }
            return Ok(Received {
                stored,
                missed: None,
                read_up_to: false,
            });
        }
        // Whoever wrote one's own message on another device had read the
        // chat up to it, as WhatsApp and Signal take it: read here too.
        // (One written here was written with the chat open, read then,
        // though a gap in it may not have been shown yet.)
        let read_up_to = elsewhere;
        if read_up_to {
            self.mark_read(&message.chat_id).await?;
        }
        let mut unseen = counted.is_some();
        let unread = counted.unwrap_or(0);
        if unseen {
            // The user may have opened the chat while it was counted:
            // opening changes the view, then marks the chat read, and that
            // marking may have run before this count. Looking again after
            // counting leaves no gap: an opening not seen here marks the
            // chat read after it.
            // Marked read as opening marks it, telling `ChatRead`: the
            // opening's own marking may have found nothing left to clear
            // (this count not yet committed), and a notification shown for
            // an earlier message would stay on screen.
            if self.view().is_looking_at(&message.chat_id) {
                self.mark_read(&message.chat_id).await?;
                unseen = false;
            }
        }
        self.emit(Event::Message {
            message: MessageView::sent(message, &self.me.id),
        });
        let mut missed = None;
        if unseen {
            let chat = self
                .cache
                .chat(&message.chat_id)
                .await?
                .map(|(chat, _)| chat);
            let notification = Notification::for_message(message, chat.as_ref(), unread);
            match arrival {
                Arrival::Live => self.notify(notification),
                _ => missed = Some(notification),
            }
        }
        Ok(Received {
            stored,
            missed,
            read_up_to,
        })
    }

    /// Whether `message` is one's own, written on another device: not in
    /// this one's outbox (asked before it is stored, which takes it out).
    /// An older page's (`Backfill`) says nothing of now.
    async fn written_elsewhere(&self, message: &Message, arrival: Arrival) -> CoreResult<bool> {
        if message.sender.id != self.me.id || arrival == Arrival::Backfill {
            return Ok(false);
        }
        match &message.client_id {
            Some(client_id) => Ok(!self.cache.in_outbox(client_id).await?),
            None => Ok(true),
        }
    }

    /// Marks a chat read: its held notifications go, and, when it had
    /// unread messages, the shell hears it was read (its shown ones close).
    /// True when it had.
    pub async fn mark_read(&self, chat_id: &str) -> CoreResult<bool> {
        lock(&self.notices).forget(chat_id);
        let had_unread = self.cache.mark_read(chat_id).await?;
        if had_unread {
            self.emit(Event::ChatRead {
                chat_id: chat_id.to_owned(),
            });
        }
        Ok(had_unread)
    }

    /// A message's notification, shown now or held back (`Notices`).
    ///
    /// Told with the notices locked, as `notify_waiting` tells them: a
    /// chat marked read (`mark_read`) clears its notices under that lock
    /// before it tells `ChatRead`, so a notification told after the lock
    /// went could reach the shell after the `ChatRead` that should have
    /// closed it, and stay on screen for a chat already read.
    pub fn notify(&self, notification: Notification) {
        let mut notices = lock(&self.notices);
        // The user may have opened the chat since the message was judged
        // unseen: opening changes the view before it clears the chat's
        // notices, so with the notices locked either the view says so here
        // or the clearing comes after this offer.
        if self.view().is_looking_at(&notification.chat_id) {
            return;
        }
        if let Some(notification) = notices.offer(notification, std::time::Instant::now()) {
            self.emit(Event::Notify { notification });
        }
    }

    /// What a read of history found unseen, one notification per chat,
    /// told unless the chat was read meanwhile: the user may open a chat,
    /// then another, while a catch-up goes on to the chats after it.
    pub async fn notify_missed(&self, missed: HashMap<String, Notification>) {
        for (chat_id, notification) in missed {
            match self.cache.chat(&chat_id).await {
                // Read meanwhile, or deleted here.
                Ok(Some((_, 0)) | None) => continue,
                Ok(Some(_)) => {}
                // Told rather than lost.
                Err(err) => {
                    tracing::warn!(chat_id, error = %err, "reading a chat's unread count");
                }
            }
            self.notify(notification);
        }
    }

    /// Shows the held-back notifications whose time has come (or all of
    /// them, when the link is going down).
    pub fn notify_waiting(&self, all: bool) {
        let mut notices = lock(&self.notices);
        let due = if all {
            notices.take_all()
        } else {
            notices.take_due(std::time::Instant::now())
        };
        // Under the lock, for the reason `notify` gives.
        for notification in due {
            self.emit(Event::Notify { notification });
        }
    }

    /// Stores a chat the user is in, or keeps one they left (or were
    /// removed from) readable as it was, what was unsent in it marked
    /// failed.
    pub async fn chat_changed(&self, chat: &Chat) -> CoreResult<()> {
        if chat.has_member(&self.me.id) {
            self.cache.put_chat(chat).await?;
        } else if let Some(left) = self.cache.leave_chat(chat).await? {
            self.tell_unsent(&left);
        }
        self.emit_chats().await
    }

    /// What was not sent yet in a chat the user is no longer in, marked
    /// failed (`Cache::leave_chat`), shows so, and a notification says it.
    pub fn tell_unsent(&self, left: &Left) {
        let Some(first) = left.unsent.first() else {
            return;
        };
        for outgoing in &left.unsent {
            self.emit(Event::Message {
                message: MessageView::outgoing(outgoing, &self.me),
            });
        }
        let body = match left.unsent.len() {
            1 => format!(
                "Not sent, you are no longer in this group: \u{201c}{}\u{201d}",
                first.content
            ),
            n => format!("{n} messages not sent: you are no longer in this group"),
        };
        self.emit(Event::Notify {
            notification: Notification {
                chat_id: left.chat.id.clone(),
                message_id: first.client_id.clone(),
                title: left.chat.chat_name.clone(),
                body,
            },
        });
    }

    /// The chat list, read now; numbered before reading (`ChatListVersions`).
    /// Each chat comes with its last message: one's own stored and set
    /// aside (its chat behind) when it is past the last cached one; then
    /// the newest of one's own still unsent (pending, or refused; not one
    /// delivered whose ack is on its way) when it is newer than that, as
    /// other messengers show a message waiting to go out.
    pub async fn chat_list(&self) -> CoreResult<ChatList> {
        let version = self.list_versions.next();
        let chats = self.cache.chats().await?;
        // In the order written: the last one per chat is its newest.
        let unsent: HashMap<String, Outgoing> = self
            .cache
            .all_unsent(&self.me.id)
            .await?
            .into_iter()
            .map(|outgoing| (outgoing.chat_id.clone(), outgoing))
            .collect();
        // By seq: the last one per chat is its newest.
        let aside: HashMap<String, Message> = self
            .cache
            .all_stored_aside(&self.me.id)
            .await?
            .into_iter()
            .map(|message| (message.chat_id.clone(), message))
            .collect();
        let unread_total = chats.iter().map(|(_, unread)| *unread).sum();
        let behind = lock(&self.behind).clone();
        let chats = chats
            .iter()
            .map(|(chat, unread)| {
                let mut summary = ChatSummary::new(chat, *unread, &self.me.id);
                summary.behind = behind.contains(&chat.id);
                let mut latest = chat.latest_message.as_ref();
                if let Some(stored) = aside.get(&chat.id)
                    && latest.is_none_or(|latest| latest.seq < stored.seq)
                {
                    summary.last_message = Some(MessageView::sent(stored, &self.me.id));
                    summary.updated_at = summary.updated_at.max(stored.created_at);
                    latest = Some(stored);
                }
                if let Some(outgoing) = unsent.get(&chat.id)
                    && waits_after(outgoing, latest)
                {
                    summary.last_message = Some(MessageView::outgoing(outgoing, &self.me));
                }
                summary
            })
            .collect();
        Ok(ChatList {
            chats,
            unread_total,
            version,
        })
    }

    pub async fn emit_chats(&self) -> CoreResult<()> {
        let list = self.chat_list().await?;
        self.emit(Event::Chats(list));
        Ok(())
    }

    pub fn typing_changed(&self, chat_id: &str, user_id: &str, is_typing: bool) -> bool {
        lock(&self.typing).set(chat_id, user_id, is_typing, std::time::Instant::now())
    }

    /// Who is typing in a chat, by name ("Someone" for a user not cached).
    pub async fn typist_names(&self, chat_id: &str) -> Vec<String> {
        let ids = lock(&self.typing).typists(chat_id);
        let mut names = Vec::with_capacity(ids.len());
        for id in ids {
            let name = match self.cache.user(&id).await {
                Ok(Some(user)) => user.name,
                _ => "Someone".to_owned(),
            };
            names.push(name);
        }
        names
    }

    /// Tells the UI who is typing in a chat.
    pub async fn emit_typing(&self, chat_id: &str) {
        let names = self.typist_names(chat_id).await;
        self.emit(Event::Typing {
            chat_id: chat_id.to_owned(),
            names,
        });
    }
}

/// Whether `outgoing` (unsent) is a chat's newest message rather than
/// `latest`, the newest stored: not when the stored one is newer.
fn waits_after(outgoing: &Outgoing, latest: Option<&Message>) -> bool {
    latest.is_none_or(|latest| latest.created_at <= outgoing.created_at)
}
