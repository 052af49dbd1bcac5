//! Events between server nodes, through RabbitMQ.
//!
//! Every node has a private queue bound to one fanout exchange, so every
//! node receives every event batch once and delivers each event to its own
//! sockets of the event's recipients (the hub skips users with none here).
//! A node skips copies of its own batches: it delivered those to its
//! sockets before publishing.
//!
//! Why not route by recipient (a direct exchange, a binding per online user,
//! the recipients in the `CC` header): RabbitMQ matches a message with
//! several routing keys against every binding of the exchange, so each event
//! cost time in proportion to the users online, and a node's events queued
//! up behind that at a few hundred messages a second. A deployment has a
//! handful of nodes; each reading the others' batches costs less.
//!
//! The link to RabbitMQ is kept by a supervisor task that reconnects with
//! backoff.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::{Deserialize, Serialize};

use super::events::Event;
use super::hub::Hub;

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error("the message broker is unreachable")]
    Down,
    #[error("an event could not be encoded")]
    Unencodable,
    #[error("message broker: {0}")]
    Amqp(#[from] lapin::Error),
}

/// What travels between nodes: a batch of events (a sequencer's batch of
/// messages travels as one). The publishing node's id travels as the
/// message's `app_id`, so a node skips its own batches without parsing them.
#[derive(Serialize, Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    events: Vec<Routed<'a>>,
}

#[derive(Serialize, Deserialize)]
struct Routed<'a> {
    /// Who should receive it.
    #[serde(borrow)]
    to: Vec<Cow<'a, str>>,
    /// The frame, as sent on sockets.
    #[serde(borrow)]
    frame: Cow<'a, str>,
}

/// The fanout exchange of a deployment whose names start with `prefix`.
/// (Not `prefix` itself: that was a direct exchange before, and RabbitMQ
/// refuses to declare an exchange again with another type.)
pub fn events_exchange(prefix: &str) -> String {
    format!("{prefix}.nodes")
}

#[derive(Clone)]
struct Link {
    /// Publishes with confirms.
    channel: Channel,
    /// This node's queue.
    queue: String,
}

pub struct AmqpFanout {
    url: String,
    exchange: String,
    node_id: String,
    hub: Arc<Hub>,
    link: Mutex<Option<Link>>,
    /// The first wait before reconnecting; it doubles up to 5 s.
    first_retry: Duration,
}

impl AmqpFanout {
    /// Connects (waiting at most `patience`) and starts the supervisor,
    /// which reconnects after `first_retry`, doubling up to 5 s.
    pub async fn start(
        url: &str,
        exchange: &str,
        node_id: &str,
        hub: Arc<Hub>,
        patience: Duration,
        first_retry: Duration,
    ) -> anyhow::Result<Arc<Self>> {
        let fanout = Arc::new(AmqpFanout {
            url: url.to_owned(),
            exchange: events_exchange(exchange),
            node_id: node_id.to_owned(),
            hub,
            link: Mutex::new(None),
            first_retry,
        });
        let (connection, link) = tokio::time::timeout(patience, fanout.connect())
            .await
            .map_err(|_| anyhow::anyhow!("RabbitMQ did not answer within {patience:?}"))??;
        tokio::spawn(fanout.clone().supervise(connection, link));
        Ok(fanout)
    }

    fn current(&self) -> Option<Link> {
        self.link
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set_current(&self, link: Option<Link>) {
        *self
            .link
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = link;
    }

    async fn connect(&self) -> Result<(Connection, Link), lapin::Error> {
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("natter-server {}", self.node_id).into());
        let connection = Connection::connect(&self.url, properties).await?;
        let channel = connection.create_channel().await?;
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                queue.name().as_str().into(),
                self.exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let link = Link {
            channel,
            queue: queue.name().as_str().to_owned(),
        };
        Ok((connection, link))
    }

    /// Consumes this node's queue; when the link breaks, reconnects with
    /// backoff (up to 5 s between tries).
    async fn supervise(self: Arc<Self>, mut connection: Connection, mut link: Link) {
        loop {
            match self.consume(&connection, link.clone()).await {
                Ok(()) => tracing::warn!("the link to RabbitMQ closed"),
                Err(err) => tracing::warn!(error = %err, "the link to RabbitMQ broke"),
            }
            self.set_current(None);
            // Sockets here may miss events until the link is back: close
            // them, so that apps reconnect (refused until then) and catch up.
            self.hub.kick_all();
            (connection, link) =
                crate::broker::reconnect("events", self.first_retry, || self.connect()).await;
        }
    }

    /// Delivers what arrives until the link breaks.
    async fn consume(&self, connection: &Connection, link: Link) -> Result<(), lapin::Error> {
        let consumer_channel = connection.create_channel().await?;
        let mut deliveries = consumer_channel
            .basic_consume(
                link.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        self.set_current(Some(link));
        tracing::info!(node = %self.node_id, "receiving events from other nodes");
        while let Some(delivery) = deliveries.next().await {
            let delivery = delivery?;
            let origin = delivery.properties.app_id().as_ref().map(|id| id.as_str());
            if origin == Some(self.node_id.as_str()) {
                continue;
            }
            match serde_json::from_slice::<Envelope>(&delivery.data) {
                Ok(envelope) => {
                    for event in envelope.events {
                        let text = event.frame.into_owned().into();
                        self.hub
                            .deliver_text(event.to.iter().map(|user| user.as_ref()), &text);
                    }
                }
                Err(err) => tracing::warn!(error = %err, "an unreadable event from another node"),
            }
        }
        Ok(())
    }

    /// Whether events from the other nodes reach this one right now.
    pub fn is_up(&self) -> bool {
        self.current().is_some()
    }

    /// Publishes a batch of events to every node. Returns once the batch is
    /// handed to the channel, without waiting for RabbitMQ's confirm (a
    /// refusal is logged): batches leave in the order they were published,
    /// and a link that breaks closes this node's sockets, whose apps then
    /// catch up. Waiting would hold a chat's sequencer for a round trip per
    /// batch.
    pub async fn publish(&self, events: &[Event]) -> Result<(), FanoutError> {
        if events.is_empty() {
            return Ok(());
        }
        let link = self.current().ok_or(FanoutError::Down)?;
        let envelope = Envelope {
            events: events
                .iter()
                .map(|event| Routed {
                    to: event
                        .to
                        .iter()
                        .map(|user| Cow::Borrowed(user.as_str()))
                        .collect(),
                    frame: Cow::Borrowed(event.text.as_str()),
                })
                .collect(),
        };
        let payload = serde_json::to_vec(&envelope).map_err(|_| FanoutError::Unencodable)?;
        let confirm = link
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                &payload,
                BasicProperties::default().with_app_id(self.node_id.as_str().into()),
            )
            .await?;
        tokio::spawn(async move {
            match confirm.await {
                Ok(confirmation) if confirmation.is_nack() => {
                    tracing::warn!("RabbitMQ refused an event for other nodes");
                }
                Ok(_) => {}
                Err(err) => tracing::debug!(error = %err, "an event's confirm never came"),
            }
        });
        Ok(())
    }
}
