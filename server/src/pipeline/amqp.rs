//! The pipeline through RabbitMQ, for deployments of several nodes.
//!
//! Each partition is a durable quorum queue with a single active consumer.
//! A node that takes a message queues a `Command::Send` for the chat's
//! partition; one publisher per partition sends everything queued as one
//! AMQP message with publisher confirms, and while it waits for the
//! confirm the next batch gathers (so a quiet node publishes each command
//! at once, and a busy one publishes many per round trip). The sender then
//! waits for the sequencer's reply on the node's reply queue (correlated by
//! id); a sequencer answers a whole AMQP message's commands in one reply.
//! Every node (unless told not to) and every `natter-server persist`
//! consumes every partition queue; RabbitMQ lets one consumer per queue at a
//! time receive, and hands the queue to another when that one goes. The
//! sequencer acks a range of deliveries only once the messages among them
//! are committed, so a crash between sequencing and commit makes RabbitMQ
//! deliver them again, in order, to the next sequencer, which gives them
//! the same seqs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinSet;

use super::batches::{Batches, Committed};
use super::sequencer::{Sequenced, Sequencer};
use super::{Command, Outcome, PipelineError, Reply, SEND_PATIENCE, not_confirmed, partition_of};
use crate::id_map::IdMap;
use crate::realtime::Events;
use crate::store::Store;

/// Deliveries a sequencer may hold unacked: what it can sequence and
/// deliver while the database is away, before senders have to wait.
const PREFETCH: u16 = 5000;

/// Most commands in one AMQP message.
const MOST_PER_MESSAGE: usize = 500;

/// Most deliveries a sequencer handles before it tells the other nodes and
/// the senders.
const MOST_PER_ROUND: usize = 64;

/// One command in a partition queue's message, with the id its answer
/// comes back under (none when nobody waits for it).
/// A partition queue's message is a JSON array of these.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub command: Command,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<String>,
}

/// One answer in a reply message.
#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    correlation: String,
    reply: Reply,
}

/// A sender's place among those waiting for replies; it is given up when
/// the sender stops waiting, answered or not.
struct Waiter {
    pipeline: Arc<AmqpPipeline>,
    correlation: String,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.pipeline.waiting().remove(&self.correlation);
    }
}

/// Where a queued command's sender hears whether RabbitMQ confirmed it.
type Confirmed = oneshot::Sender<Result<(), PipelineError>>;

/// Commands queued for one partition, published together.
#[derive(Default)]
struct Lane {
    queued: Mutex<Vec<(Request, Confirmed)>>,
    wake: Notify,
}

/// The partition queue of a deployment whose names start with `prefix`.
pub fn inbox_queue(prefix: &str, partition: u16) -> String {
    format!("{prefix}.messages.{partition}")
}

#[derive(Debug, Clone)]
pub struct AmqpSettings {
    pub url: String,
    /// Names of this deployment's queues start with it.
    pub prefix: String,
    pub node_id: String,
    /// How many partition queues the deployment has (`agree_partitions`).
    pub partitions: u16,
    /// Whether this process sequences and stores messages.
    pub persist: bool,
    /// Most commands a partition's publisher holds while RabbitMQ is slow to
    /// confirm (a memory alarm blocks publishers): past it, senders are told
    /// to try again, rather than the node's memory growing without end.
    pub backlog: usize,
    /// Most messages a partition's sequencer holds delivered and unstored:
    /// past it, it takes nothing more from its queue until a commit goes
    /// through (the database is away or behind; memory stays bounded).
    pub unstored_limit: usize,
    /// Queues unused for this long are deleted by RabbitMQ (for tests).
    pub queue_expiry: Option<Duration>,
}

#[derive(Clone)]
struct Link {
    /// Publishes commands, with confirms.
    channel: Channel,
    /// Where this node's replies arrive.
    replies: String,
}

type Waiting = Mutex<ByCorrelation>;

/// Senders waiting for their reply, by the correlation id this node gave
/// their command.
type ByCorrelation = IdMap<String, oneshot::Sender<Reply>>;

pub struct AmqpPipeline {
    settings: AmqpSettings,
    store: Arc<dyn Store>,
    events: Arc<Events>,
    link: Mutex<Option<Link>>,
    waiting: Waiting,
    lanes: Vec<Lane>,
    /// Set once by `stop`: the sequencers finish and hand their partitions over.
    stopping: watch::Sender<bool>,
    /// How many partitions this process sequences right now.
    sequencing: watch::Sender<usize>,
}

/// Counts a running sequencer for as long as it lives.
struct Sequencing(watch::Sender<usize>);

impl Sequencing {
    fn new(count: &watch::Sender<usize>) -> Self {
        count.send_modify(|running| *running += 1);
        Sequencing(count.clone())
    }
}

impl Drop for Sequencing {
    fn drop(&mut self) {
        self.0.send_modify(|running| *running -= 1);
    }
}

impl AmqpPipeline {
    /// Connects (waiting at most `patience`), declares the partition queues
    /// and starts consuming them when `settings.persist`.
    pub async fn start(
        settings: AmqpSettings,
        store: Arc<dyn Store>,
        events: Arc<Events>,
        patience: Duration,
    ) -> anyhow::Result<Arc<Self>> {
        let partitions = settings.partitions;
        let pipeline = Arc::new(AmqpPipeline {
            settings,
            store,
            events,
            link: Mutex::new(None),
            waiting: Mutex::new(ByCorrelation::default()),
            lanes: (0..partitions).map(|_| Lane::default()).collect(),
            stopping: watch::Sender::new(false),
            sequencing: watch::Sender::new(0),
        });
        for partition in 0..partitions {
            tokio::spawn(pipeline.clone().publish_lane(partition));
        }
        let (connection, link) = tokio::time::timeout(patience, pipeline.connect())
            .await
            .map_err(|_| anyhow::anyhow!("RabbitMQ did not answer within {patience:?}"))??;
        tokio::spawn(pipeline.clone().supervise(connection, link));
        Ok(pipeline)
    }

    /// Queues `command` for the chat's partition (in order with what was
    /// queued before it) and returns what waits for RabbitMQ's confirm and
    /// then the sequencer's reply.
    pub fn hand_over(
        self: &Arc<Self>,
        chat_id: &str,
        command: Command,
    ) -> Result<Outcome<Reply>, PipelineError> {
        self.hand_over_to(partition_of(chat_id, self.settings.partitions), command)
    }

    /// How many partitions the deployment has.
    pub fn partitions(&self) -> u16 {
        self.settings.partitions
    }

    /// `hand_over` to a partition named by its number.
    pub fn hand_over_to(
        self: &Arc<Self>,
        partition: u16,
        command: Command,
    ) -> Result<Outcome<Reply>, PipelineError> {
        let correlation = uuid::Uuid::new_v4().simple().to_string();
        let (reply, answer) = oneshot::channel();
        self.waiting().insert(correlation.clone(), reply);
        let waiter = Waiter {
            pipeline: self.clone(),
            correlation: correlation.clone(),
        };
        let request = Request {
            command,
            correlation: Some(correlation),
        };
        let confirmed = self.enqueue(partition, request)?;
        Ok(Box::pin(async move {
            let _forgotten_when_done = waiter;
            let confirmed_and_answered = async {
                confirmed.await?;
                answer.await.map_err(|_| not_confirmed())
            };
            tokio::time::timeout(SEND_PATIENCE, confirmed_and_answered)
                .await
                .unwrap_or_else(|_| Err(not_confirmed()))
        }))
    }

    /// Publishes a command nobody waits for an answer to. Once RabbitMQ
    /// confirmed it, every later command to the partition comes after it.
    /// While that fails, it is tried again in the background, for as long
    /// as this node runs: a member removed from a group must stop getting
    /// its messages however long the link is away (it gave up after about
    /// five minutes, and the sequencer kept the old members).
    pub async fn tell_until_heard(self: Arc<Self>, chat_id: &str, command: Command) {
        if self.tell(chat_id, &command).await.is_ok() {
            return;
        }
        let chat_id = chat_id.to_owned();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(200);
            for tries in 1u64.. {
                tokio::time::sleep(pause).await;
                if self.tell(&chat_id, &command).await.is_ok() {
                    return;
                }
                pause = (pause * 2).min(Duration::from_secs(5));
                if tries % 60 == 0 {
                    tracing::warn!(chat = %chat_id, tries, "a chat change has not reached its sequencer yet");
                }
            }
        });
    }

    pub(super) async fn tell(&self, chat_id: &str, command: &Command) -> Result<(), PipelineError> {
        let request = Request {
            command: command.clone(),
            correlation: None,
        };
        let confirmed = self.enqueue(partition_of(chat_id, self.settings.partitions), request)?;
        tokio::time::timeout(SEND_PATIENCE, confirmed)
            .await
            .unwrap_or_else(|_| Err(not_confirmed()))
    }

    /// Queues `request` for its partition's publisher (refused at once while
    /// there is no link to RabbitMQ, or `backlog` wait); what it
    /// returns completes once RabbitMQ confirmed the message that carried
    /// it. A sender that stops waiting leaves it queued: it may still be
    /// published, and its retry (same clientId) is recognised.
    fn enqueue(
        &self,
        partition: u16,
        request: Request,
    ) -> Result<impl Future<Output = Result<(), PipelineError>> + Send + 'static, PipelineError>
    {
        if !self.is_linked() {
            return Err(broker_down());
        }
        let lane = &self.lanes[usize::from(partition)];
        let (published, confirmed) = oneshot::channel();
        {
            let mut queued = crate::sync::lock(&lane.queued);
            if queued.len() >= self.settings.backlog {
                return Err(PipelineError::Unavailable(
                    "the message broker is not keeping up: try again".into(),
                ));
            }
            queued.push((request, published));
        }
        lane.wake.notify_one();
        Ok(async move { confirmed.await.unwrap_or_else(|_| Err(broker_down())) })
    }

    /// One partition's publisher: sends what is queued as one message, waits
    /// for RabbitMQ's confirm, tells the senders, and starts over with what
    /// gathered meanwhile. One message in flight per partition keeps the
    /// partition's commands in the order they were queued.
    async fn publish_lane(self: Arc<Self>, partition: u16) {
        let lane = &self.lanes[usize::from(partition)];
        loop {
            lane.wake.notified().await;
            loop {
                let batch: Vec<_> = {
                    let mut queued = crate::sync::lock(&lane.queued);
                    let take = queued.len().min(MOST_PER_MESSAGE);
                    queued.drain(..take).collect()
                };
                if batch.is_empty() {
                    break;
                }
                let (requests, senders): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                let outcome = self.publish_now(partition, &requests).await;
                for sender in senders {
                    let _ = sender.send(outcome.clone());
                }
            }
        }
    }

    async fn publish_now(&self, partition: u16, requests: &[Request]) -> Result<(), PipelineError> {
        let link = self.current().ok_or_else(broker_down)?;
        let payload = serde_json::to_vec(requests)
            .map_err(|err| PipelineError::Unavailable(format!("unsendable command: {err}")))?;
        let queue = inbox_queue(&self.settings.prefix, partition);
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_app_id(self.settings.node_id.as_str().into())
            .with_reply_to(link.replies.as_str().into());
        let confirm = link
            .channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &payload,
                properties,
            )
            .await
            .map_err(|_| broker_down())?
            .await
            .map_err(|_| broker_down())?;
        if confirm.is_nack() {
            return Err(PipelineError::Unavailable(
                "the message broker refused the message: try again".into(),
            ));
        }
        Ok(())
    }

    /// Stops sequencing, for a clean shutdown: each of this process's
    /// sequencers stops taking deliveries, stores and acks what it has
    /// sequenced (its events go out with it) and closes its channel, which
    /// gives the deliveries it had not handled back to RabbitMQ, in order,
    /// for the next sequencer. Waits at most `patience`; what is left then
    /// goes to the next sequencer when the process exits, as after a crash.
    pub async fn stop(&self, patience: Duration) {
        self.stopping.send_replace(true);
        let mut running = self.sequencing.subscribe();
        let all_done = running.wait_for(|running| *running == 0);
        if tokio::time::timeout(patience, all_done).await.is_err() {
            tracing::warn!(
                "sequencers still storing at shutdown: RabbitMQ gives their messages to the next one"
            );
        }
    }

    fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    pub fn is_linked(&self) -> bool {
        crate::sync::lock(&self.link).is_some()
    }

    fn current(&self) -> Option<Link> {
        crate::sync::lock(&self.link).clone()
    }

    fn set_current(&self, link: Option<Link>) {
        *crate::sync::lock(&self.link) = link;
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, ByCorrelation> {
        crate::sync::lock(&self.waiting)
    }

    /// A partition queue: replicated (quorum), one consumer at a time.
    fn partition_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        if let Some(expiry) = self.settings.queue_expiry {
            let millis = i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX);
            arguments.insert("x-expires".into(), AMQPValue::LongLongInt(millis));
        }
        arguments
    }

    async fn connect(&self) -> Result<(Connection, Link), lapin::Error> {
        let properties = ConnectionProperties::default().with_connection_name(
            format!("natter-server {} pipeline", self.settings.node_id).into(),
        );
        let connection = Connection::connect(&self.settings.url, properties).await?;
        let channel = connection.create_channel().await?;
        for partition in 0..self.settings.partitions {
            channel
                .queue_declare(
                    inbox_queue(&self.settings.prefix, partition)
                        .as_str()
                        .into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    self.partition_arguments(),
                )
                .await?;
        }
        let replies = channel
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
            replies: replies.name().as_str().to_owned(),
        };
        Ok((connection, link))
    }

    /// Runs the link; when it breaks, fails whoever waits and reconnects
    /// with backoff (up to 5 s between tries), unless the process is
    /// stopping.
    async fn supervise(self: Arc<Self>, mut connection: Connection, mut link: Link) {
        loop {
            match self.clone().run(&connection, link).await {
                Ok(()) => tracing::warn!("the pipeline's link to RabbitMQ closed"),
                Err(err) => tracing::warn!(error = %err, "the pipeline's link to RabbitMQ broke"),
            }
            self.set_current(None);
            self.waiting().clear();
            if self.is_stopping() {
                crate::broker::close("pipeline", &connection, "stopping").await;
                return;
            }
            crate::broker::close("pipeline", &connection, "reconnecting").await;
            (connection, link) =
                crate::broker::reconnect("pipeline", Duration::from_millis(100), || self.connect())
                    .await;
        }
    }

    /// Receives replies and, when persisting, runs a sequencer per
    /// partition, until any of them stops (while stopping, until all have:
    /// one that ends must not cut the others' last commits short).
    async fn run(self: Arc<Self>, connection: &Connection, link: Link) -> Result<(), lapin::Error> {
        let mut tasks = JoinSet::new();
        let reply_channel = connection.create_channel().await?;
        let replies = reply_channel
            .basic_consume(
                link.replies.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        tasks.spawn(self.clone().receive_replies(replies));
        if self.settings.persist {
            for partition in 0..self.settings.partitions {
                let channel = connection.create_channel().await?;
                tasks.spawn(self.clone().sequence(channel, partition));
            }
        }
        self.set_current(Some(link));
        let outcome = loop {
            match tasks.join_next().await {
                // A sequencer that finished stopping: the others may not have.
                Some(Ok(Ok(()))) if self.is_stopping() => continue,
                Some(Ok(Err(err))) if self.is_stopping() => {
                    tracing::warn!(error = %err, "a sequencer did not stop cleanly: RabbitMQ gives its partition to the next one");
                    continue;
                }
                Some(Ok(outcome)) => break outcome,
                Some(Err(err)) => {
                    tracing::error!(error = %err, "a pipeline task failed");
                    break Ok(());
                }
                None => break Ok(()),
            }
        };
        tasks.shutdown().await;
        outcome
    }

    async fn receive_replies(
        self: Arc<Self>,
        mut replies: lapin::Consumer,
    ) -> Result<(), lapin::Error> {
        while let Some(delivery) = replies.next().await {
            let delivery = delivery?;
            let answers = match serde_json::from_slice::<Vec<Answer>>(&delivery.data) {
                Ok(answers) => answers,
                Err(err) => {
                    tracing::warn!(error = %err, "an unreadable reply from a sequencer");
                    continue;
                }
            };
            for answer in answers {
                // None: its sender gave up waiting.
                if let Some(waiter) = self.waiting().remove(&answer.correlation) {
                    let _ = waiter.send(answer.reply);
                }
            }
        }
        Ok(())
    }

    /// One partition's sequencer: receives while RabbitMQ lets it, and
    /// stores in batches, one commit at a time, while it goes on sequencing.
    async fn sequence(
        self: Arc<Self>,
        channel: Channel,
        partition: u16,
    ) -> Result<(), lapin::Error> {
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await?;
        let queue = inbox_queue(&self.settings.prefix, partition);
        let tag = format!("{}/{partition}", self.settings.node_id);
        let mut deliveries = channel
            .basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let _counted = Sequencing::new(&self.sequencing);
        let mut stopping = self.stopping.subscribe();
        let mut state = Partition::new(Sequencer::new(self.store.clone(), self.events.clone()));
        // A commit carries the newest delivery it covers.
        let mut batches: Batches<u64> = Batches::new();
        loop {
            if batches.ready() && state.handled != state.acked {
                batches.start(&mut state.sequencer, state.handled);
            }
            let stop = *stopping.borrow_and_update();
            if stop && batches.ready() && state.handled == state.acked {
                // Everything handled is stored and acked. Closing the
                // channel gives the rest back to the queue, ahead of what
                // came after, for the next sequencer.
                channel.close(200, "stopping".into()).await?;
                return Ok(());
            }
            tokio::select! {
                biased;
                committed = batches.next() => match committed {
                    Some(Committed::Stored(covered)) => {
                        let Ok(replies) = state.stored(covered, &channel).await else {
                            return start_over(&channel, stop).await;
                        };
                        for (queue, answers) in replies {
                            send_replies(&channel, queue, &answers).await?;
                        }
                    }
                    Some(Committed::Failed(batch, _)) => state.sequencer.restore_batch(batch),
                    None => {}
                },
                // Only wakes the loop, which sees the flag.
                _ = stopping.changed(), if !stop => {}
                // Past the limit, deliveries wait (in RabbitMQ, and up to
                // PREFETCH of them in this process) until a commit goes
                // through; the branch above still runs, so it does.
                delivery = deliveries.next(), if !stop && state.sequencer.unstored() < self.settings.unstored_limit => {
                    let Some(delivery) = delivery else { return Ok(()) };
                    // What already arrived behind it joins this round, so
                    // that the other nodes hear of all of it in one event
                    // message and each asking node gets one reply.
                    let mut round = vec![delivery?];
                    while round.len() < MOST_PER_ROUND {
                        match deliveries.next().now_or_never() {
                            Some(Some(delivery)) => round.push(delivery?),
                            Some(None) | None => break,
                        }
                    }
                    let mut replies: HashMap<ShortString, Vec<Answer>> = HashMap::new();
                    for delivery in &round {
                        let answers = state.handle(delivery).await;
                        if let (Some(queue), false) = (delivery.properties.reply_to(), answers.is_empty()) {
                            replies.entry(queue.clone()).or_default().extend(answers);
                        }
                    }
                    state.sequencer.flush();
                    for (queue, answers) in replies {
                        send_replies(&channel, queue, &answers).await?;
                    }
                }
            }
        }
    }
}

/// The commands a partition queue's message carries. A message from a node
/// of the release before batching held one command, its correlation in the
/// AMQP properties: it is still read, so that what such nodes left queued
/// is not lost in an upgrade (their senders, which cannot read the new
/// replies, time out and retry with their clientId).
fn requests_in(delivery: &lapin::message::Delivery) -> Option<Vec<Request>> {
    let batch_error = match serde_json::from_slice::<Vec<Request>>(&delivery.data) {
        Ok(requests) => return Some(requests),
        Err(err) => err,
    };
    if let Ok(command) = serde_json::from_slice::<Command>(&delivery.data) {
        let correlation = delivery.properties.correlation_id().as_ref();
        return Some(vec![Request {
            command,
            correlation: correlation.map(|id| id.as_str().to_owned()),
        }]);
    }
    tracing::warn!(error = %batch_error, "an unreadable message in a partition queue");
    None
}

/// Ends a sequencer whose partition must start over from what the queue
/// still holds. While the process stops, its channel is closed at once, so
/// that the next sequencer gets those messages now rather than when the
/// process exits; otherwise the link is redone (`run` returns).
async fn start_over(channel: &Channel, stopping: bool) -> Result<(), lapin::Error> {
    if stopping {
        let _ = channel.close(200, "stopping".into()).await;
    }
    Ok(())
}

/// Most bytes of one reply message. A round's answers to one node (up to
/// 64 deliveries of 500 commands, each answer carrying its whole message)
/// can pass RabbitMQ's `max_message_size` (16 MiB by default) after a
/// backlog, and RabbitMQ answers that by closing the channel: the round
/// would come back, and be refused again, for ever.
const REPLY_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Sends a node its answers, in as few messages as fit `REPLY_MAX_BYTES`.
async fn send_replies(
    channel: &Channel,
    queue: ShortString,
    answers: &[Answer],
) -> Result<(), lapin::Error> {
    for payload in reply_payloads(answers, REPLY_MAX_BYTES) {
        // No confirm: a lost reply makes its senders time out and try
        // again, which the sequencer recognises.
        let _unconfirmed = channel
            .basic_publish(
                "".into(),
                queue.clone(),
                BasicPublishOptions::default(),
                &payload,
                BasicProperties::default(),
            )
            .await?;
    }
    Ok(())
}

/// `answers` encoded as messages of at most `limit` bytes each, halved
/// until they fit (one answer goes alone however big: the protocol's limits
/// keep it far below). Nearly always the first encoding fits.
fn reply_payloads(answers: &[Answer], limit: usize) -> Vec<Vec<u8>> {
    let payload = match serde_json::to_vec(answers) {
        Ok(payload) => payload,
        Err(err) => {
            // Its senders time out and try again.
            tracing::warn!(error = %err, "a reply could not be encoded");
            return Vec::new();
        }
    };
    if payload.len() <= limit || answers.len() < 2 {
        return vec![payload];
    }
    let (first, second) = answers.split_at(answers.len() / 2);
    let mut payloads = reply_payloads(first, limit);
    payloads.extend(reply_payloads(second, limit));
    payloads
}

/// The partition must start over from what the queue still holds.
struct Restart;

/// A partition sequencer's bookkeeping of deliveries and acks.
struct Partition {
    sequencer: Sequencer,
    /// The newest delivery handled, and the newest acked.
    handled: u64,
    acked: u64,
    /// `Settle` requests (delivery, reply queue, correlation) that came
    /// while messages before them were still to be stored, answered once
    /// their delivery is acked.
    settles: Vec<(u64, ShortString, String)>,
    /// Chats in which a send failed (the database could not answer), each
    /// with the delivery that carried it. Until a commit acks that
    /// delivery, the chat's later sends fail too: were this node to die
    /// first, RabbitMQ would deliver the failed one again, and the next
    /// sequencer (the database back, and a redelivery waits for it) would
    /// give it the seq a later one was sequenced and answered with here.
    failed_unacked: IdMap<String, u64>,
}

impl Partition {
    fn new(sequencer: Sequencer) -> Self {
        Partition {
            sequencer,
            handled: 0,
            acked: 0,
            settles: Vec::new(),
            failed_unacked: IdMap::default(),
        }
    }

    /// After a commit covering deliveries up to `covered`: acks them and
    /// returns the answers that waited for it, by reply queue.
    async fn stored(
        &mut self,
        covered: u64,
        channel: &Channel,
    ) -> Result<HashMap<ShortString, Vec<Answer>>, Restart> {
        if let Err(err) = channel
            .basic_ack(covered, BasicAckOptions { multiple: true })
            .await
        {
            tracing::warn!(error = %err, "a batch was stored but not acked: it comes again");
            return Err(Restart);
        }
        self.acked_through(covered);
        let (answered, later): (Vec<_>, Vec<_>) = self
            .settles
            .drain(..)
            .partition(|(tag, _, _)| *tag <= covered);
        self.settles = later;
        let mut replies: HashMap<ShortString, Vec<Answer>> = HashMap::new();
        for (_, queue, correlation) in answered {
            replies.entry(queue).or_default().push(Answer {
                correlation,
                reply: Reply::Done,
            });
        }
        Ok(replies)
    }

    /// What a commit's ack of the deliveries up to `covered` settles: the
    /// failed sends among them can no longer come again.
    fn acked_through(&mut self, covered: u64) {
        self.acked = covered;
        self.sequencer.stored();
        self.failed_unacked
            .retain(|_, delivery| *delivery > covered);
    }

    /// Handles one delivery (a batch of commands from one node); returns
    /// the answers to send once the round's events are flushed.
    async fn handle(&mut self, delivery: &lapin::message::Delivery) -> Vec<Answer> {
        self.handled = delivery.delivery_tag;
        let Some(requests) = requests_in(delivery) else {
            return Vec::new();
        };
        let drafts: Vec<_> = requests.iter().filter_map(|r| r.command.draft()).collect();
        self.sequencer.prepare(&drafts, delivery.redelivered).await;
        let mut answers = Vec::with_capacity(requests.len());
        for request in requests {
            let reply = match request.command {
                Command::Send { draft } => {
                    self.send(&draft, delivery.delivery_tag, delivery.redelivered)
                        .await
                }
                Command::Settle => {
                    let (Some(queue), Some(correlation)) =
                        (delivery.properties.reply_to(), request.correlation)
                    else {
                        continue;
                    };
                    // Everything queued before the marker has been
                    // sequenced; when none of it waits to be stored, it is
                    // in the database already and the read may go on now
                    // (the marker's own delivery is acked with the next commit).
                    if self.sequencer.unstored() > 0 {
                        self.settles
                            .push((delivery.delivery_tag, queue.clone(), correlation));
                    } else {
                        answers.push(Answer {
                            correlation,
                            reply: Reply::Done,
                        });
                    }
                    continue;
                }
                Command::Changed { chat_id } => {
                    self.sequencer.changed(&chat_id);
                    Reply::Done
                }
            };
            if let Some(correlation) = request.correlation {
                answers.push(Answer { correlation, reply });
            }
        }
        answers
    }

    /// Sequences a draft that came in delivery `tag`. A redelivered one
    /// waits for the database (its sender may have been answered before);
    /// a new one fails when it cannot be sequenced now, or when one before
    /// it in its chat failed and may still come again (`failed_unacked`).
    async fn send(&mut self, draft: &super::Draft, tag: u64, redelivered: bool) -> Reply {
        if !redelivered && self.failed_unacked.contains_key(&draft.chat_id) {
            return database_not_answering();
        }
        let mut pause = Duration::from_millis(100);
        loop {
            match self.sequencer.sequence(draft, redelivered).await {
                Ok(Ok(Sequenced::New(message))) => {
                    return Reply::Sent {
                        message,
                        duplicate: false,
                    };
                }
                Ok(Ok(Sequenced::Duplicate(message))) => {
                    // A redelivery's sender may still be waiting for its first answer.
                    return Reply::Sent {
                        message,
                        duplicate: !redelivered,
                    };
                }
                Ok(Err(refusal)) => return Reply::Refused { refusal },
                // Its sender may have been acked by the sequencer before:
                // it must not be dropped, so wait for the database.
                Err(err) if redelivered => {
                    tracing::warn!(error = %err, "a redelivered message waits for the database");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "a message could not be sequenced");
                    self.failed_unacked.insert(draft.chat_id.clone(), tag);
                    return database_not_answering();
                }
            }
        }
    }
}

fn database_not_answering() -> Reply {
    Reply::Failed {
        error: "the database is not answering: try again".into(),
    }
}

fn broker_down() -> PipelineError {
    PipelineError::Unavailable("the message broker is unreachable: try again".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::sequencer::tests::{draft, store_with_chats};
    use crate::realtime::Hub;

    fn seq_sent(reply: &Reply) -> Option<i64> {
        match reply {
            Reply::Sent { message, .. } => Some(message.seq),
            _ => None,
        }
    }

    /// A send fails (its sender is not known yet, and the database does
    /// not answer); the chat's next send, whose sender is known, fails too
    /// until a commit acks the failed one's delivery (the failed one would
    /// otherwise come again, after a takeover, and take its seq). Other
    /// chats go on.
    #[tokio::test]
    async fn after_a_send_fails_its_chat_takes_no_send_until_that_delivery_is_acked() {
        let (_dir, store, chats) = store_with_chats(2).await;
        let (chat, other) = (&chats[0], &chats[1]);
        let events = Arc::new(Events::local(Arc::new(Hub::new())));
        let mut partition = Partition::new(Sequencer::new(store, events));
        let first = partition.send(&draft("m1", chat, "ann"), 1, false).await;
        assert_eq!(seq_sent(&first), Some(1), "{first:?}");
        let elsewhere = partition.send(&draft("o1", other, "ann"), 1, false).await;
        assert_eq!(seq_sent(&elsewhere), Some(1), "{elsewhere:?}");

        partition.sequencer.database_gone_for_a_while();
        let unknown_sender = partition.send(&draft("m2", chat, "u1"), 2, false).await;
        assert!(
            matches!(unknown_sender, Reply::Failed { .. }),
            "{unknown_sender:?}"
        );
        let known_sender = partition.send(&draft("m3", chat, "ann"), 3, false).await;
        assert!(
            matches!(known_sender, Reply::Failed { .. }),
            "{known_sender:?}"
        );
        let elsewhere = partition.send(&draft("o2", other, "ann"), 3, false).await;
        assert_eq!(seq_sent(&elsewhere), Some(2), "{elsewhere:?}");

        partition.acked_through(1);
        let before_the_ack = partition.send(&draft("m4", chat, "ann"), 4, false).await;
        assert!(
            matches!(before_the_ack, Reply::Failed { .. }),
            "{before_the_ack:?}"
        );
        partition.acked_through(2);
        let after_the_ack = partition.send(&draft("m5", chat, "ann"), 5, false).await;
        assert_eq!(seq_sent(&after_the_ack), Some(2), "{after_the_ack:?}");
    }

    /// Answers past the limit go in several messages, each within it, all
    /// of them once and in order.
    #[test]
    fn replies_past_the_limit_are_split_into_messages_that_fit() {
        let answers: Vec<Answer> = (0..100)
            .map(|i| Answer {
                correlation: format!("c{i}"),
                reply: Reply::Failed {
                    error: "x".repeat(1_000),
                },
            })
            .collect();
        let whole = reply_payloads(&answers, usize::MAX);
        assert_eq!(whole.len(), 1, "within the limit: one message");

        let limit = 10_000;
        let payloads = reply_payloads(&answers, limit);
        assert!(payloads.len() > 10, "{} messages", payloads.len());
        let mut read = Vec::new();
        for payload in &payloads {
            assert!(payload.len() <= limit, "{} bytes", payload.len());
            let answers: Vec<Answer> = serde_json::from_slice(payload).expect("answers");
            read.extend(answers.into_iter().map(|answer| answer.correlation));
        }
        let sent: Vec<String> = answers
            .into_iter()
            .map(|answer| answer.correlation)
            .collect();
        assert_eq!(read, sent);
    }
}
