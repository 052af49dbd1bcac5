//! Where events go: always to this node's own sockets (the hub), and, when
//! several nodes serve one user base, to the other nodes through RabbitMQ
//! (`fanout`). Callers say who should hear of what; they never know how many
//! nodes there are.

use std::sync::Arc;
use std::time::Duration;

use natter_shared::ServerFrame;

use super::fanout::{AmqpFanout, FanoutError};
use super::hub::{Hub, encode};

/// How long an event that must reach the other nodes waits for the link to
/// them to come back (its reconnection backs off up to 5 s; well within a
/// sender's `SEND_PATIENCE`).
const LINK_PATIENCE: Duration = Duration::from_secs(5);

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
    pub async fn publish(&self, users: &[String], frame: &ServerFrame) -> Result<(), FanoutError> {
        let text = encode(frame);
        self.hub
            .deliver_text(users.iter().map(String::as_str), &text);
        match &self.fanout {
            Some(fanout) => fanout.publish(users, text.as_str()).await,
            None => Ok(()),
        }
    }

    /// Like `publish`, for events that may be lost without harm (typing): a
    /// failure is logged.
    pub async fn publish_lossy(&self, users: &[String], frame: &ServerFrame) {
        if let Err(err) = self.publish(users, frame).await {
            tracing::warn!(error = %err, "an event did not reach the other nodes");
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
        if !self.other_nodes_reachable().await {
            tracing::warn!("the other nodes stayed unreachable: delivering here only");
        }
        self.publish_lossy(users, frame).await;
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

    /// A socket of `user_id` opened (`first`: their first on this node).
    /// True when it will receive every event from now on; false while the
    /// other nodes cannot be heard (the broker is down), when the socket
    /// should be closed so that the app retries and catches up.
    pub async fn user_online(&self, user_id: &str, first: bool) -> bool {
        match &self.fanout {
            None => true,
            Some(fanout) if first => fanout.subscribe(user_id).await,
            Some(fanout) => fanout.is_up(),
        }
    }

    /// A user's last socket on this node closed.
    pub async fn user_offline(&self, user_id: &str) {
        if let Some(fanout) = &self.fanout {
            fanout.unsubscribe(user_id).await;
        }
    }
}
