//! Where events go: always to this node's own sockets (the hub), and, when
//! several nodes serve one user base, to the other nodes through RabbitMQ
//! (`fanout`). Callers say who should hear of what; they never know how many
//! nodes there are.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use natter_shared::ServerFrame;

use super::fanout::{AmqpFanout, FanoutError};
use super::hub::{Hub, encode};

/// How long an event that must reach the other nodes waits for the link to
/// them to come back (its reconnection backs off up to 5 s; well within a
/// sender's `SEND_PATIENCE`).
const LINK_PATIENCE: Duration = Duration::from_secs(5);

/// An event delivered on this node that the other nodes still need.
pub struct Event {
    pub(super) to: Vec<String>,
    pub(super) text: Utf8Bytes,
}

pub struct Events {
    hub: Arc<Hub>,
    fanout: Option<Arc<AmqpFanout>>,
}

impl Events {
    /// Events for this node alone (the embedded default).
    pub fn local(hub: Arc<Hub>) -> Self {
        Events { hub, fanout: None }
    }

    /// Events shared with other nodes through RabbitMQ.
    pub fn clustered(hub: Arc<Hub>, fanout: Arc<AmqpFanout>) -> Self {
        Events {
            hub,
            fanout: Some(fanout),
        }
    }

    /// Sends `frame` to every open socket of `users`, on every node. Fails
    /// only when the other nodes could not be told (the broker is down);
    /// this node's sockets have the frame by then.
    async fn publish(&self, users: &[String], frame: &ServerFrame) -> Result<(), FanoutError> {
        let mut for_others = Vec::new();
        self.deliver_here(users, frame, &mut for_others);
        self.tell_others(&for_others).await
    }

    /// Like `publish`, for events that may be lost without harm (typing): a
    /// failure is logged.
    pub async fn publish_lossy(&self, users: &[String], frame: &ServerFrame) {
        if let Err(err) = self.publish(users, frame).await {
            tracing::warn!(error = %err, "an event did not reach the other nodes");
        }
    }

    /// The first half of `publish`, for a batch of events: delivers `frame`
    /// to this node's sockets at once, and adds what the other nodes still
    /// need to `for_others` (nothing on a single node), so that a batch of
    /// events travels to them as one message (`tell_others_waiting`).
    pub fn deliver_here(&self, users: &[String], frame: &ServerFrame, for_others: &mut Vec<Event>) {
        let text = encode(frame);
        self.hub
            .deliver_text(users.iter().map(String::as_str), &text);
        if self.fanout.is_some() && !users.is_empty() {
            for_others.push(Event {
                to: users.to_vec(),
                text,
            });
        }
    }

    async fn tell_others(&self, events: &[Event]) -> Result<(), FanoutError> {
        match &self.fanout {
            Some(fanout) if !events.is_empty() => fanout.publish(events).await,
            _ => Ok(()),
        }
    }

    /// Whether events reach the other nodes right now; `None` on a single
    /// node (there are none).
    pub fn other_nodes_up(&self) -> Option<bool> {
        self.fanout.as_ref().map(|fanout| fanout.is_up())
    }

    /// Like `publish`, for what must reach the other nodes (messages, chat
    /// changes): while this node's link to them is reconnecting, it waits
    /// for it, up to `LINK_PATIENCE`. After a broker restart the link may
    /// come back later than the message pipeline's; an event published in
    /// between would reach this node's sockets only, while the other nodes'
    /// sockets, whose link is fine, would never hear of it. If the link
    /// stays away, the failure is logged: this node closed its own sockets
    /// when its link broke, so their apps catch up.
    pub async fn publish_waiting(&self, users: &[String], frame: &ServerFrame) {
        let mut for_others = Vec::new();
        self.deliver_here(users, frame, &mut for_others);
        self.tell_others_waiting(&for_others).await;
    }

    /// The second half of `publish_waiting`: tells the other nodes of a
    /// batch of events already delivered here, in one message.
    pub async fn tell_others_waiting(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        if !self.other_nodes_reachable().await {
            tracing::warn!("the other nodes stayed unreachable: delivering here only");
        }
        if let Err(err) = self.tell_others(events).await {
            tracing::warn!(error = %err, "events did not reach the other nodes");
        }
    }

    /// Waits, up to `LINK_PATIENCE`, until events reach the other nodes;
    /// true when they do (always on a single node).
    async fn other_nodes_reachable(&self) -> bool {
        let Some(fanout) = &self.fanout else {
            return true;
        };
        let deadline = tokio::time::Instant::now() + LINK_PATIENCE;
        while !fanout.is_up() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Whether a socket that opens now will receive every event: false
    /// while the other nodes cannot be heard (the broker is down), when the
    /// socket should be closed so that the app retries and catches up.
    pub fn ready_for_sockets(&self) -> bool {
        self.other_nodes_up().unwrap_or(true)
    }
}
