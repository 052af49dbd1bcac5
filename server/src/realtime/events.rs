//! Where events go: always to this node's own sockets (the hub), and, when
//! several nodes serve one user base, to the other nodes through RabbitMQ
//! (`fanout`). Callers say who should hear of what; they never know how many
//! nodes there are.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use natter_shared::ServerFrame;

use super::fanout::AmqpFanout;
use super::hub::{Hub, encode};

/// An event delivered on this node that the other nodes still need.
pub struct Event {
    /// For a message, shared with the sequencer's list of its chat's members.
    pub(super) to: Arc<[String]>,
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

    /// Sends `frame` to every open socket of `users`, on every node: here at
    /// once, to the other nodes through RabbitMQ, kept until it has them
    /// (while the link is away, the event waits for it, in order).
    pub fn publish(&self, users: &[String], frame: &ServerFrame) {
        self.publish_here_and_there(users, frame, false);
    }

    /// Like `publish`, for events that are worth nothing late (typing): the
    /// other nodes miss them while the link to them is away.
    pub fn publish_lossy(&self, users: &[String], frame: &ServerFrame) {
        self.publish_here_and_there(users, frame, true);
    }

    fn publish_here_and_there(&self, users: &[String], frame: &ServerFrame, lossy: bool) {
        let mut for_others = Vec::new();
        self.deliver_here(&users.into(), encode(frame), &mut for_others);
        self.send_to_others(&for_others, lossy);
    }

    /// The first half of `publish`, for a batch of events: delivers the
    /// encoded frame `text` to this node's sockets at once, and adds what
    /// the other nodes still need to `for_others` (nothing on a single
    /// node), so that a batch of events travels to them as one message
    /// (`tell_others`).
    pub fn deliver_here(
        &self,
        users: &Arc<[String]>,
        text: Utf8Bytes,
        for_others: &mut Vec<Event>,
    ) {
        self.hub
            .deliver_text(users.iter().map(String::as_str), &text);
        if self.fanout.is_some() && !users.is_empty() {
            for_others.push(Event {
                to: users.clone(),
                text,
            });
        }
    }

    /// The second half of `publish`: tells the other nodes of a batch of
    /// events already delivered here, in one message.
    pub fn tell_others(&self, events: &[Event]) {
        self.send_to_others(events, false);
    }

    /// Hands `events` to the other nodes (see `AmqpFanout::publish`).
    fn send_to_others(&self, events: &[Event], lossy: bool) {
        let Some(fanout) = &self.fanout else { return };
        match fanout.publish(events, lossy) {
            Ok(()) => {}
            // Typing while the link is away: expected, and worth nothing late.
            Err(err) if lossy => {
                tracing::debug!(error = %err, "an event did not reach the other nodes")
            }
            Err(err) => tracing::error!(error = %err, "events did not reach the other nodes"),
        }
    }

    /// Waits, up to `patience`, until the other nodes have every event this
    /// one published (see `AmqpFanout::settle`); for a clean stop.
    pub async fn settle(&self, patience: std::time::Duration) {
        if let Some(fanout) = &self.fanout
            && !fanout.settle(patience).await
        {
            tracing::warn!("stopping with events the other nodes did not get: their apps catch up");
        }
    }

    /// Whether events reach the other nodes right now; `None` on a single
    /// node (there are none).
    pub fn other_nodes_up(&self) -> Option<bool> {
        self.fanout.as_ref().map(|fanout| fanout.is_up())
    }

    /// Whether a socket that opens now will receive every event: false
    /// while the other nodes cannot be heard (the broker is down), when the
    /// socket should be closed so that the app retries and catches up.
    pub fn ready_for_sockets(&self) -> bool {
        self.other_nodes_up().unwrap_or(true)
    }
}
