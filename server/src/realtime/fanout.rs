//! Events between server nodes, through RabbitMQ.
//!
//! Every node has a private queue bound to one direct exchange with the ids of
//! the users who have a socket open on it. An event is published once, routed
//! by its recipients (the first as routing key, the rest in the `CC` header,
//! RabbitMQ's sender-selected distribution), so each node gets one copy of
//! exactly the events its own sockets need. A node skips copies of its own
//! events: it delivered those to its sockets before publishing.
//!
//! The link to RabbitMQ is kept by a supervisor task that reconnects with
//! backoff and then binds the users currently online again.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::{Deserialize, Serialize};

use super::events::Event;
use super::hub::Hub;

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error("the message broker is unreachable")]
    Down,
    #[error("the message broker refused the event")]
    Refused,
    #[error("message broker: {0}")]
    Amqp(#[from] lapin::Error),
}

/// What travels between nodes: a batch of events (a sequencer's batch of
/// messages travels as one). The publishing node's id travels as the
/// message's `app_id`, so a node skips its own events without parsing them.
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
    /// Serialises binding and unbinding so a user who reconnects while their
    /// last socket closes ends up bound.
    bindings: tokio::sync::Mutex<()>,
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
            exchange: exchange.to_owned(),
            node_id: node_id.to_owned(),
            hub,
            link: Mutex::new(None),
            first_retry,
            bindings: tokio::sync::Mutex::new(()),
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
                ExchangeKind::Direct,
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
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let link = Link {
            channel,
            queue: queue.name().as_str().to_owned(),
        };
        Ok((connection, link))
    }

    /// Consumes this node's queue; when the link breaks, reconnects with
    /// backoff (up to 5 s between tries) and binds the online users again.
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

    /// Binds the users online here, then delivers what arrives until the
    /// link breaks.
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
        {
            let _serial = self.bindings.lock().await;
            for user in self.hub.users() {
                self.bind(&link, &user).await?;
            }
            self.set_current(Some(link));
        }
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

    async fn bind(&self, link: &Link, user: &str) -> Result<(), lapin::Error> {
        link.channel
            .queue_bind(
                link.queue.as_str().into(),
                self.exchange.as_str().into(),
                user.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
    }

    /// Whether events from the other nodes reach this one right now.
    pub fn is_up(&self) -> bool {
        self.current().is_some()
    }

    /// Starts routing `user`'s events to this node; false when the broker
    /// is unreachable (the supervisor binds everyone again once it is back).
    pub async fn subscribe(&self, user: &str) -> bool {
        let _serial = self.bindings.lock().await;
        let Some(link) = self.current() else {
            return false;
        };
        match self.bind(&link, user).await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(error = %err, "could not subscribe to a user's events");
                false
            }
        }
    }

    /// Stops routing `user`'s events here, unless a socket of theirs opened
    /// again in the meantime.
    pub async fn unsubscribe(&self, user: &str) {
        let _serial = self.bindings.lock().await;
        if self.hub.is_online(user) {
            return;
        }
        if let Some(link) = self.current()
            && let Err(err) = link
                .channel
                .queue_unbind(
                    link.queue.as_str().into(),
                    self.exchange.as_str().into(),
                    user.into(),
                    FieldTable::default(),
                )
                .await
        {
            tracing::warn!(error = %err, "could not unsubscribe from a user's events");
        }
    }

    /// Publishes one copy of a batch of events, routed to every node with
    /// a socket of any of their recipients; each node delivers each event
    /// to its own recipients' sockets. Returns once the batch is handed to
    /// the channel, without waiting for RabbitMQ's confirm (a refusal is
    /// logged): batches leave in the order they were published, and a link
    /// that breaks closes this node's sockets, whose apps then catch up.
    /// Waiting would hold a chat's sequencer for a round trip per batch.
    pub async fn publish(&self, events: &[Event]) -> Result<(), FanoutError> {
        let mut recipients: Vec<&str> = events
            .iter()
            .flat_map(|event| event.to.iter().map(String::as_str))
            .collect();
        recipients.sort_unstable();
        recipients.dedup();
        let Some((first, rest)) = recipients.split_first() else {
            return Ok(());
        };
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
        let payload = serde_json::to_vec(&envelope).map_err(|_| FanoutError::Refused)?;
        let mut headers = FieldTable::default();
        if !rest.is_empty() {
            let cc: Vec<AMQPValue> = rest
                .iter()
                .map(|user| AMQPValue::LongString(LongString::from(*user)))
                .collect();
            headers.insert("CC".into(), AMQPValue::FieldArray(FieldArray::from(cc)));
        }
        let confirm = link
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                (*first).into(),
                BasicPublishOptions::default(),
                &payload,
                BasicProperties::default()
                    .with_headers(headers)
                    .with_app_id(self.node_id.as_str().into()),
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
