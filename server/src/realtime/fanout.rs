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
//! backoff. Batches for the other nodes are kept until RabbitMQ confirms
//! them and published again on the next link when it broke first (at least
//! once: apps drop a message they already have), so a batch in flight when
//! the link breaks, or queued while it is away, still reaches the other
//! nodes. If the link stays away until `buffer` bytes wait, they are
//! dropped for one `lost` marker, which makes every other node close its
//! sockets: their apps reconnect and catch up from history.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::events::Event;
use super::hub::Hub;

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error("the message broker is unreachable")]
    Down,
    #[error("an event could not be encoded")]
    Unencodable,
}

/// What travels between nodes: a batch of events (a sequencer's batch of
/// messages travels as one). The publishing node's id travels as the
/// message's `app_id`, so a node skips its own batches without parsing them.
#[derive(Serialize, Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    events: Vec<Routed<'a>>,
    /// The sender dropped events for the other nodes (its link stayed away
    /// too long): every receiving node closes its sockets.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    lost: bool,
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
    /// Batches for the other nodes not confirmed by RabbitMQ yet.
    unconfirmed: Mutex<Unconfirmed>,
    /// Wakes the publisher when a batch is added.
    added: Notify,
    /// Told when RabbitMQ has confirmed every batch (`settle`).
    emptied: Notify,
}

impl AmqpFanout {
    /// Connects (waiting at most `options.patience`) and starts the
    /// supervisor, which reconnects after `options.first_retry`, doubling up
    /// to 5 s.
    pub async fn start(
        url: &str,
        exchange: &str,
        node_id: &str,
        hub: Arc<Hub>,
        options: FanoutOptions,
    ) -> anyhow::Result<Arc<Self>> {
        let FanoutOptions {
            patience,
            first_retry,
            buffer,
        } = options;
        let fanout = Arc::new(AmqpFanout {
            url: url.to_owned(),
            exchange: events_exchange(exchange),
            node_id: node_id.to_owned(),
            hub,
            link: Mutex::new(None),
            first_retry,
            unconfirmed: Mutex::new(Unconfirmed::new(buffer)),
            added: Notify::new(),
            emptied: Notify::new(),
        });
        let (connection, link) = tokio::time::timeout(patience, fanout.connect())
            .await
            .map_err(|_| anyhow::anyhow!("RabbitMQ did not answer within {patience:?}"))??;
        tokio::spawn(fanout.clone().supervise(connection, link));
        Ok(fanout)
    }

    fn unconfirmed(&self) -> MutexGuard<'_, Unconfirmed> {
        crate::sync::lock(&self.unconfirmed)
    }

    fn set_current(&self, link: Option<Link>) {
        *crate::sync::lock(&self.link) = link;
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

    /// Consumes this node's queue and publishes its batches; when the link
    /// breaks, reconnects with backoff (up to 5 s between tries) and
    /// publishes again what was not confirmed.
    async fn supervise(self: Arc<Self>, mut connection: Connection, mut link: Link) {
        loop {
            let outcome = tokio::select! {
                outcome = self.consume(&connection, link.clone()) => outcome,
                outcome = self.publish_unconfirmed(&link) => outcome,
            };
            match outcome {
                Ok(()) => tracing::warn!("the link to RabbitMQ closed"),
                Err(err) => tracing::warn!(error = %err, "the link to RabbitMQ broke"),
            }
            self.set_current(None);
            let nothing_left = {
                let mut unconfirmed = self.unconfirmed();
                unconfirmed.rewind();
                unconfirmed.batches.is_empty()
            };
            // Only typing was waiting: nothing is left for `settle` to wait for.
            if nothing_left {
                self.emptied.notify_waiters();
            }
            // Sockets here may miss events until the link is back: close
            // them, so that apps reconnect (refused until then) and catch up.
            self.hub.kick_all();
            // The publishing side may have broken alone: the old connection
            // (and this node's queue on it) must not live on beside the new.
            crate::broker::close("events", &connection, "reconnecting").await;
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
                Ok(envelope) if envelope.lost => {
                    tracing::warn!(
                        from = ?origin,
                        "another node lost events for this one: closing the sockets here, whose apps catch up"
                    );
                    self.hub.kick_all();
                }
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

    /// Publishes the batches waiting for the other nodes, in order, and
    /// takes each off the list when RabbitMQ confirms it; returns when the
    /// link breaks (the supervisor then rewinds the list).
    async fn publish_unconfirmed(&self, link: &Link) -> Result<(), lapin::Error> {
        let mut confirms = FuturesOrdered::new();
        loop {
            let (generation, batches) = self.unconfirmed().unpublished();
            for batch in batches {
                let confirm = link
                    .channel
                    .basic_publish(
                        self.exchange.as_str().into(),
                        "".into(),
                        BasicPublishOptions::default(),
                        &batch,
                        BasicProperties::default().with_app_id(self.node_id.as_str().into()),
                    )
                    .await?;
                confirms.push_back(async move { (generation, confirm.await) });
            }
            tokio::select! {
                () = self.added.notified() => {}
                Some((generation, confirmed)) = confirms.next() => {
                    if confirmed?.is_nack() {
                        // Kept, not confirmed: the link is redone and the
                        // batch sent again, like one lost with a link.
                        return Err(lapin::ErrorKind::IOError(Arc::new(std::io::Error::other(
                            "RabbitMQ refused a batch of events for the other nodes",
                        )))
                        .into());
                    }
                    let empty = {
                        let mut unconfirmed = self.unconfirmed();
                        unconfirmed.confirmed(generation);
                        unconfirmed.batches.is_empty()
                    };
                    if empty {
                        self.emptied.notify_waiters();
                    }
                }
            }
        }
    }

    /// Whether events from the other nodes reach this one right now.
    pub fn is_up(&self) -> bool {
        crate::sync::lock(&self.link).is_some()
    }

    /// Waits, up to `patience`, until RabbitMQ has confirmed every batch
    /// for the other nodes (also while the link reconnects); true when it
    /// has. A node that stops calls it last, so that what it delivered to
    /// its own sockets also reaches the others'.
    pub async fn settle(&self, patience: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            emptied.as_mut().enable();
            if self.unconfirmed().batches.is_empty() {
                return true;
            }
            if tokio::time::timeout_at(deadline, emptied).await.is_err() {
                return false;
            }
        }
    }

    /// Queues a batch of events for every other node and returns at once:
    /// batches leave in order, and are kept until RabbitMQ confirms them
    /// (published again after a broken link). `lossy` events (typing) are
    /// dropped instead while the link is away ([`FanoutError::Down`]): late,
    /// they would be wrong.
    pub fn publish(&self, events: &[Event], lossy: bool) -> Result<(), FanoutError> {
        if events.is_empty() {
            return Ok(());
        }
        if lossy && !self.is_up() {
            return Err(FanoutError::Down);
        }
        let payloads =
            envelopes(events, ENVELOPE_MAX_BYTES).map_err(|_| FanoutError::Unencodable)?;
        // Every envelope is pushed, whatever came of the one before.
        let mut kept = true;
        {
            let mut unconfirmed = self.unconfirmed();
            for payload in payloads {
                kept &= unconfirmed.push(payload, lossy);
            }
        }
        if !kept {
            tracing::warn!(
                "events for the other nodes waited too long for RabbitMQ and were dropped: the other nodes will close their sockets, whose apps catch up"
            );
        }
        self.added.notify_one();
        Ok(())
    }
}

/// The most bytes one message to the other nodes carries. RabbitMQ refuses
/// a message over its `max_message_size` (16 MiB by default since 4.0) by
/// closing the channel, so one that big would break the link again on
/// every try; a sequencer's batch of long messages to large groups can pass
/// that, and goes out as several envelopes instead.
const ENVELOPE_MAX_BYTES: usize = 4 * 1024 * 1024;

/// `events` encoded as envelopes of at most about `limit` bytes each, in
/// order (an event bigger than `limit` alone goes in one of its own; the
/// protocol's limits keep one event far below `ENVELOPE_MAX_BYTES`).
fn envelopes(events: &[Event], limit: usize) -> Result<Vec<Vec<u8>>, serde_json::Error> {
    let mut payloads = Vec::with_capacity(1);
    let mut start = 0;
    let mut size = 0;
    for (i, event) in events.iter().enumerate() {
        let event_size = most_encoded_bytes(event);
        if i > start && size + event_size > limit {
            payloads.push(envelope(&events[start..i])?);
            start = i;
            size = 0;
        }
        size += event_size;
    }
    if start < events.len() {
        payloads.push(envelope(&events[start..])?);
    }
    Ok(payloads)
}

/// At most how many bytes `event` takes in an envelope: JSON escapes a
/// string's byte into at most two (the frame is JSON already, so its control
/// characters are escaped in it; its quotes and backslashes get one more).
fn most_encoded_bytes(event: &Event) -> usize {
    const PUNCTUATION: usize = r#"{"to":[],"frame":""},"#.len();
    let names: usize = event.to.iter().map(|user| 2 * user.len() + 3).sum();
    PUNCTUATION + names + 2 * event.text.len()
}

fn envelope(events: &[Event]) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Envelope {
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
        lost: false,
    })
}

/// Settings of [`AmqpFanout::start`].
pub struct FanoutOptions {
    /// How long the first connection may take.
    pub patience: Duration,
    /// The first wait before reconnecting; it doubles up to 5 s.
    pub first_retry: Duration,
    /// How many bytes of events may wait for RabbitMQ before they are
    /// dropped for a `lost` marker.
    pub buffer: usize,
}

/// An encoded batch for the other nodes.
struct Batch {
    /// Shared by every link it goes out on, without copying.
    payload: Bytes,
    /// Worth nothing late (typing): not sent again on the next link.
    lossy: bool,
}

/// Encoded batches for the other nodes, oldest first, until RabbitMQ
/// confirms them. Plain data; `AmqpFanout` does the publishing.
struct Unconfirmed {
    batches: VecDeque<Batch>,
    /// How many of the oldest batches went out on the current link.
    published: usize,
    bytes: usize,
    limit: usize,
    /// Changes when the batches are dropped for the `lost` marker, so that
    /// confirms of dropped batches take nothing off.
    generation: u64,
}

impl Unconfirmed {
    fn new(limit: usize) -> Self {
        Unconfirmed {
            batches: VecDeque::new(),
            published: 0,
            bytes: 0,
            limit,
            generation: 0,
        }
    }

    /// Adds a batch; false when the limit was passed and everything waiting
    /// was replaced by the `lost` marker (with this batch after it). A
    /// `lossy` batch (typing) that would pass it is dropped alone: worth
    /// nothing late, it must not cost the other nodes' sockets (the marker
    /// closes them) what waits before it.
    fn push(&mut self, batch: Vec<u8>, lossy: bool) -> bool {
        let kept = self.bytes + batch.len() <= self.limit;
        if !kept && lossy {
            return true;
        }
        if !kept {
            self.batches.clear();
            self.bytes = LOST_MARKER.len();
            self.batches.push_back(Batch {
                payload: Bytes::from_static(LOST_MARKER),
                lossy: false,
            });
            self.published = 0;
            self.generation += 1;
        }
        self.bytes += batch.len();
        self.batches.push_back(Batch {
            payload: Bytes::from(batch),
            lossy,
        });
        kept
    }

    /// The batches not published on the current link yet, now counted as
    /// published, with the generation their confirms belong to.
    fn unpublished(&mut self) -> (u64, Vec<Bytes>) {
        let batches = self
            .batches
            .iter()
            .skip(self.published)
            .map(|batch| batch.payload.clone())
            .collect();
        self.published = self.batches.len();
        (self.generation, batches)
    }

    /// RabbitMQ confirmed the oldest batch published in `generation`.
    fn confirmed(&mut self, generation: u64) {
        if generation != self.generation || self.published == 0 {
            return;
        }
        if let Some(batch) = self.batches.pop_front() {
            self.bytes -= batch.payload.len();
            self.published -= 1;
        }
    }

    /// The link broke: what was published and not confirmed goes out again,
    /// except lossy batches, which would arrive too late to mean anything.
    fn rewind(&mut self) {
        self.batches.retain(|batch| !batch.lossy);
        self.bytes = self.batches.iter().map(|batch| batch.payload.len()).sum();
        self.published = 0;
        self.generation += 1;
    }
}

/// The `lost` marker: an envelope with no events.
const LOST_MARKER: &[u8] = br#"{"events":[],"lost":true}"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn names(unconfirmed: &Unconfirmed) -> Vec<String> {
        unconfirmed
            .batches
            .iter()
            .map(|batch| String::from_utf8_lossy(&batch.payload).into_owned())
            .collect()
    }

    #[test]
    fn batches_stay_until_confirmed_and_go_out_again_after_a_broken_link() {
        let mut unconfirmed = Unconfirmed::new(1_000);
        unconfirmed.push(b"one".to_vec(), false);
        unconfirmed.push(b"two".to_vec(), false);
        let (generation, out) = unconfirmed.unpublished();
        assert_eq!(out.len(), 2);
        unconfirmed.push(b"three".to_vec(), false);
        unconfirmed.confirmed(generation);
        assert_eq!(names(&unconfirmed), ["two", "three"]);
        // Only "three" is new on this link.
        let (_, out) = unconfirmed.unpublished();
        assert_eq!(&*out[0], b"three");
        assert_eq!(out.len(), 1);

        unconfirmed.rewind();
        // A confirm from the broken link takes nothing off.
        unconfirmed.confirmed(generation);
        let (generation, out) = unconfirmed.unpublished();
        assert_eq!(out.len(), 2, "two and three go out again");
        unconfirmed.confirmed(generation);
        unconfirmed.confirmed(generation);
        assert!(unconfirmed.batches.is_empty());
        assert_eq!(unconfirmed.bytes, 0);
    }

    #[test]
    fn typing_waiting_for_a_confirm_is_not_sent_again_after_a_broken_link() {
        let mut unconfirmed = Unconfirmed::new(1_000);
        unconfirmed.push(b"message".to_vec(), false);
        unconfirmed.push(b"typing".to_vec(), true);
        unconfirmed.push(b"later".to_vec(), false);
        let (_, out) = unconfirmed.unpublished();
        assert_eq!(out.len(), 3);
        unconfirmed.rewind();
        assert_eq!(names(&unconfirmed), ["message", "later"]);
        assert_eq!(unconfirmed.bytes, "messagelater".len());
        let (_, out) = unconfirmed.unpublished();
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn past_the_limit_the_waiting_batches_become_one_lost_marker() {
        let mut unconfirmed = Unconfirmed::new(40);
        assert!(unconfirmed.push(vec![b'a'; 20], false));
        let (old_generation, _) = unconfirmed.unpublished();
        assert!(unconfirmed.push(vec![b'b'; 20], false));
        assert!(!unconfirmed.push(vec![b'c'; 5], false));
        let marker: Envelope = serde_json::from_slice(&unconfirmed.batches[0].payload)
            .expect("the marker is an envelope");
        assert!(marker.lost && marker.events.is_empty());
        assert_eq!(&*unconfirmed.batches[1].payload, b"ccccc");
        assert_eq!(unconfirmed.batches.len(), 2);
        // The dropped batch's confirm takes nothing off.
        unconfirmed.confirmed(old_generation);
        let (_, out) = unconfirmed.unpublished();
        assert_eq!(out.len(), 2, "the marker goes out first");
    }

    #[test]
    fn typing_past_the_limit_is_dropped_alone() {
        let mut unconfirmed = Unconfirmed::new(40);
        assert!(unconfirmed.push(vec![b'a'; 30], false));
        assert!(unconfirmed.push(vec![b't'; 20], true));
        assert_eq!(names(&unconfirmed), ["a".repeat(30)]);
        assert_eq!(unconfirmed.bytes, 30);
        assert!(unconfirmed.push(vec![b't'; 10], true), "it fits");
        assert_eq!(unconfirmed.batches.len(), 2);
    }

    fn event(to: &[&str], frame: &str) -> Event {
        Event {
            to: to.iter().map(|user| user.to_string()).collect(),
            text: frame.to_owned().into(),
        }
    }

    #[test]
    fn a_large_batch_goes_out_as_several_envelopes_under_the_limit_in_order() {
        let frame = format!(
            r#"{{"type":"message","content":"{}\"\\"}}"#,
            "x".repeat(200)
        );
        let events: Vec<Event> = (0..50)
            .map(|i| event(&[&format!("user{i}"), "other"], &format!("{i}{frame}")))
            .collect();
        let limit = 2_000;
        let payloads = envelopes(&events, limit).expect("encodes");
        assert!(payloads.len() > 1, "split into several");
        let mut read = Vec::new();
        for payload in &payloads {
            assert!(payload.len() <= limit, "{} bytes", payload.len());
            let envelope: Envelope = serde_json::from_slice(payload).expect("decodes");
            assert!(!envelope.lost);
            read.extend(
                envelope
                    .events
                    .into_iter()
                    .map(|routed| (routed.to[0].clone().into_owned(), routed.frame.into_owned())),
            );
        }
        let sent: Vec<(String, String)> = events
            .iter()
            .map(|event| (event.to[0].clone(), event.text.as_str().to_owned()))
            .collect();
        assert_eq!(read, sent, "every event once, in order");
    }

    #[test]
    fn a_small_batch_is_one_envelope_and_a_huge_event_goes_alone() {
        let events = [event(&["a"], "{}"), event(&["b"], "{}")];
        assert_eq!(
            envelopes(&events, ENVELOPE_MAX_BYTES)
                .expect("encodes")
                .len(),
            1
        );
        let huge = "y".repeat(3_000);
        let events = [
            event(&["a"], "{}"),
            event(&["b"], &huge),
            event(&["c"], "{}"),
        ];
        let payloads = envelopes(&events, 1_000).expect("encodes");
        assert_eq!(payloads.len(), 3);
        assert!(envelopes(&[], 1_000).expect("encodes").is_empty());
    }

    #[test]
    fn an_envelope_without_the_lost_field_is_read_as_events() {
        let envelope: Envelope =
            serde_json::from_str(r#"{"events":[{"to":["u1"],"frame":"{}"}]}"#).expect("decodes");
        assert!(!envelope.lost);
        assert_eq!(envelope.events.len(), 1);
    }
}
