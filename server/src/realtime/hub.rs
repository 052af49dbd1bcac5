use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::ws::Utf8Bytes;
use natter_shared::{Message, ServerFrame};
use serde::Serialize;
use tokio::sync::{Notify, mpsc};

use crate::id_map::IdMap;

/// Frames waiting for one socket. A socket whose queue is full is too slow to
/// keep up; it is dropped (the app reconnects and catches up by seq) rather
/// than letting its queue grow without end.
pub const SOCKET_QUEUE: usize = 1024;

/// Sockets by user id: a message to a group of 10 is 10 lookups.
type ByUser = IdMap<String, Vec<Socket>>;

/// The open sockets of this node, by user. Locks are never held across an
/// await: delivery only pushes onto bounded queues.
#[derive(Default)]
pub struct Hub {
    sockets: RwLock<ByUser>,
    next_id: AtomicU64,
    closing: AtomicBool,
}

#[derive(Clone)]
struct Socket {
    id: u64,
    queue: mpsc::Sender<Utf8Bytes>,
    kick: Arc<Notify>,
}

/// One registered socket: what its connection task reads and listens to.
pub struct Registration {
    pub id: u64,
    /// Frames to write to this socket, already encoded.
    pub frames: mpsc::Receiver<Utf8Bytes>,
    /// For answering on this socket only (acks, errors).
    pub reply: mpsc::Sender<Utf8Bytes>,
    /// Notified when the socket must close (too slow, or server shutting down).
    pub kick: Arc<Notify>,
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a socket of `user_id`; from here on it gets every frame sent
    /// to the user. `first` is queued before that (`ready`: a client waits
    /// for it before anything else). `None` when the user has `most` open
    /// here already (`NATTER_SOCKETS_PER_USER`): counted and added under
    /// one lock, so that upgrades at once cannot all slip past the count.
    pub fn register(
        &self,
        user_id: &str,
        first: Option<Utf8Bytes>,
        most: usize,
    ) -> Option<Registration> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (queue, frames) = mpsc::channel(SOCKET_QUEUE);
        if let Some(first) = first {
            // The queue is new and empty: this cannot fail.
            let _ = queue.try_send(first);
        }
        let kick = Arc::new(Notify::new());
        let socket = Socket {
            id,
            queue: queue.clone(),
            kick: kick.clone(),
        };
        {
            let mut sockets = self.write();
            if sockets.get(user_id).map_or(0, Vec::len) >= most {
                return None;
            }
            sockets.entry(user_id.to_owned()).or_default().push(socket);
        }
        if self.is_closing() {
            kick.notify_one();
        }
        Some(Registration {
            id,
            frames,
            reply: queue,
            kick,
        })
    }

    /// How many sockets `user_id` has open on this node.
    pub fn sockets_of(&self, user_id: &str) -> usize {
        self.read().get(user_id).map_or(0, Vec::len)
    }

    /// Forgets a socket.
    pub fn unregister(&self, user_id: &str, id: u64) {
        let mut sockets = self.write();
        let Some(list) = sockets.get_mut(user_id) else {
            return;
        };
        list.retain(|socket| socket.id != id);
        if list.is_empty() {
            sockets.remove(user_id);
        }
    }

    /// Sends an encoded frame to every open socket of every user in `users`
    /// on this node; encode once with `encode`, whatever the number of recipients.
    pub fn deliver_text<'a>(&self, users: impl IntoIterator<Item = &'a str>, text: &Utf8Bytes) {
        let mut too_slow = Vec::new();
        {
            let sockets = self.read();
            for user in users {
                for socket in sockets.get(user).into_iter().flatten() {
                    if let Err(mpsc::error::TrySendError::Full(_)) =
                        socket.queue.try_send(text.clone())
                    {
                        too_slow.push((user.to_owned(), socket.id));
                        socket.kick.notify_one();
                    }
                }
            }
        }
        for (user, id) in too_slow {
            tracing::warn!(user = %user, socket = id, "dropping a socket that cannot keep up");
            self.unregister(&user, id);
        }
    }

    /// Open sockets on this node.
    pub fn connections(&self) -> usize {
        self.read().values().map(Vec::len).sum()
    }

    /// Asks every socket to close, for a clean shutdown.
    pub fn close_all(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.kick_all();
    }

    /// Asks every socket to close, so that its app reconnects and catches up.
    pub fn kick_all(&self) {
        for socket in self.read().values().flatten() {
            socket.kick.notify_one();
        }
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, ByUser> {
        crate::sync::read(&self.sockets)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ByUser> {
        crate::sync::write(&self.sockets)
    }
}

/// A frame as the text sent on the wire.
pub fn encode(frame: &ServerFrame) -> Utf8Bytes {
    to_text(frame)
}

/// `encode(&ServerFrame::Message { message })` without cloning the message
/// into a frame first: the sequencer encodes every message it delivers, and
/// a clone is a dozen allocations.
pub fn encode_message(message: &Message) -> Utf8Bytes {
    /// The `message` variant of `ServerFrame`, borrowing its message.
    #[derive(Serialize)]
    #[serde(tag = "type", rename_all = "camelCase")]
    enum Frame<'a> {
        Message { message: &'a Message },
    }
    to_text(&Frame::Message { message })
}

fn to_text(frame: &impl Serialize) -> Utf8Bytes {
    // Serializing these plain structs cannot fail: no maps with non-string keys,
    // no custom serializers.
    serde_json::to_string(frame)
        .unwrap_or_else(|err| format!(r#"{{"type":"error","error":"{err}"}}"#))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typing(user: &str) -> ServerFrame {
        ServerFrame::Typing {
            chat_id: "c".into(),
            user_id: user.into(),
            is_typing: true,
        }
    }

    #[tokio::test]
    async fn delivers_to_every_socket_of_the_named_users_only() {
        let hub = Hub::new();
        let mut ann_laptop = hub.register("ann", None, usize::MAX).expect("room");
        let mut ann_phone = hub.register("ann", None, usize::MAX).expect("room");
        let mut bob = hub.register("bob", None, usize::MAX).expect("room");
        hub.deliver_text(["ann"], &encode(&typing("bob")));
        assert!(ann_laptop.frames.recv().await.is_some());
        assert!(ann_phone.frames.recv().await.is_some());
        assert!(bob.frames.try_recv().is_err());
        assert_eq!(hub.connections(), 3);
        hub.unregister("ann", ann_phone.id);
        assert_eq!(hub.connections(), 2, "ann still has her laptop");
        hub.unregister("ann", ann_laptop.id);
        hub.deliver_text(["ann", "bob"], &encode(&typing("carol")));
        assert!(bob.frames.recv().await.is_some(), "bob is still here");
        assert!(
            ann_laptop.frames.try_recv().is_err(),
            "ann's sockets are gone"
        );
        assert_eq!(hub.connections(), 1);
    }

    #[test]
    fn a_user_has_at_most_so_many_sockets_and_a_place_comes_back_when_one_goes() {
        let hub = Hub::new();
        let first = hub.register("ann", None, 2).expect("room");
        let _second = hub.register("ann", None, 2).expect("room");
        assert!(hub.register("ann", None, 2).is_none(), "a third");
        assert_eq!(hub.sockets_of("ann"), 2);
        assert!(
            hub.register("bob", None, 2).is_some(),
            "each user counts alone"
        );
        hub.unregister("ann", first.id);
        assert!(hub.register("ann", None, 2).is_some(), "its place again");
        assert_eq!(hub.connections(), 3);
    }

    /// Registrations at once, as upgrades that all passed the count before
    /// any was added: one place, one of them.
    #[test]
    fn registrations_at_once_take_one_place_once() {
        let hub = Hub::new();
        let start = std::sync::Barrier::new(8);
        let added = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        hub.register("ann", None, 1)
                            .map(|registration| registration.id)
                    })
                })
                .collect();
            threads
                .into_iter()
                .filter_map(|thread| thread.join().expect("no panic"))
                .count()
        });
        assert_eq!(added, 1);
        assert_eq!(hub.sockets_of("ann"), 1);
    }

    #[tokio::test]
    async fn a_sockets_first_frame_comes_before_any_delivery() {
        let hub = Hub::new();
        let ready = encode(&ServerFrame::Ready {
            user_id: "ann".into(),
        });
        let mut ann = hub
            .register("ann", Some(ready.clone()), usize::MAX)
            .expect("room");
        let typing = encode(&typing("bob"));
        hub.deliver_text(["ann"], &typing);
        assert_eq!(ann.frames.recv().await, Some(ready));
        assert_eq!(ann.frames.recv().await, Some(typing));
    }

    #[tokio::test]
    async fn a_socket_that_falls_behind_is_dropped() {
        let hub = Hub::new();
        let slow = hub.register("ann", None, usize::MAX).expect("room");
        let text = encode(&typing("bob"));
        for _ in 0..=SOCKET_QUEUE {
            hub.deliver_text(["ann"], &text);
        }
        assert_eq!(hub.connections(), 0);
        // The kick was stored as a permit: the connection task sees it at once.
        slow.kick.notified().await;
    }

    #[test]
    fn a_message_encodes_as_its_frame_does() {
        let message: Message = serde_json::from_value(serde_json::json!({
            "id": "m1", "chatId": "c1", "seq": 7,
            "sender": {"id": "u1", "name": "Ann \"A\"", "email": "ann@example.com", "pic": null},
            "content": "hi \u{1F600} \"there\"\n", "clientId": "k1",
            "createdAt": "2026-11-26T10:00:00Z"
        }))
        .expect("a message");
        let frame = ServerFrame::Message {
            message: message.clone(),
        };
        assert_eq!(encode_message(&message), encode(&frame));
    }
}
