//! How a sent message reaches its chat's members and the database (the
//! seed's "Storing High Throughput Messages").
//!
//! Chats are split into partitions by a hash of their id. Each partition
//! has one sequencer at a time, which gives a chat's messages their seqs in
//! the order it receives them, delivers each at once, and stores them in the
//! database in batches afterwards (`sequencer`). The way to a partition is:
//!
//! - `local`: an in-process queue (one partition), for the embedded default.
//!   The sender's ack waits for the batch's commit: nothing else would keep
//!   the message if the process died.
//! - `amqp`: a durable RabbitMQ quorum queue per partition, with publisher
//!   confirms and a single active consumer, so every node (and every
//!   `natter-server persist`) may consume it, and exactly one sequences.
//!   The sender's ack waits for RabbitMQ's confirm and the sequencer's seq,
//!   never for the database; the queue keeps the message until the commit,
//!   and a sequencer that takes over after a crash receives the uncommitted
//!   messages again, in their order, and gives them the same seqs.
//!
//! Reads see every acked message (`settle`): a history read first passes a
//! marker through the chat's partition and waits for its sequencer to have
//! committed everything before it (at once when nothing is left to commit).

mod amqp;
mod batches;
mod local;
mod memory;
mod sequencer;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use natter_shared::Message;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::realtime::Events;
use crate::store::{Store, StoreError, Stored};

pub use amqp::{AmqpPipeline, AmqpSettings, Request, inbox_queue};
pub use local::SEQS_SKIPPED_AFTER_A_CRASH;

/// How many partitions a deployment spreads its chats over unless told
/// otherwise at its first start (`agree_partitions`).
pub const DEFAULT_PARTITIONS: u16 = 8;

/// The most partitions a deployment may have: each is a quorum queue and,
/// on the node that sequences it, a task and a channel.
pub const MOST_PARTITIONS: u16 = 64;

/// The most messages a partition's sequencer holds delivered and not yet
/// stored: fixed on the embedded default (a crash skips this many seqs),
/// `NATTER_UNSTORED_LIMIT`'s default with RabbitMQ.
pub const MOST_UNSTORED: u32 = 100_000;

/// How long a sender waits for its message to be sequenced (and, on the
/// embedded default, stored) before it is told to try again.
pub const SEND_PATIENCE: Duration = Duration::from_secs(10);

/// The partition of `partitions` a chat's messages go through: FNV-1a of
/// its id, the same on every node and every build.
pub fn partition_of(chat_id: &str, partitions: u16) -> u16 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in chat_id.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash % u32::from(partitions.max(1))) as u16
}

/// The deployment's partition count. Every node must route a chat to the
/// same queue, so the count is recorded in the database by the first node
/// to start (`configured`, or `DEFAULT_PARTITIONS`) and every later node
/// uses the recorded one; a node configured with another count refuses to
/// start rather than send chats to queues nobody sequences in order.
pub async fn agree_partitions(store: &dyn Store, configured: Option<u16>) -> anyhow::Result<u16> {
    let proposed = configured.unwrap_or(DEFAULT_PARTITIONS);
    let recorded = store
        .agree_setting("partitions", &proposed.to_string())
        .await?;
    let recorded: u16 = recorded
        .parse()
        .ok()
        .filter(|count| (1..=MOST_PARTITIONS).contains(count))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the database records {recorded:?} partitions (settings table): expected 1 to {MOST_PARTITIONS}"
            )
        })?;
    match configured {
        Some(wanted) if wanted != recorded => anyhow::bail!(
            "NATTER_PARTITIONS is {wanted}, but this deployment spreads its chats over \
             {recorded} partitions (recorded at its first start) and every node must use the \
             same: unset NATTER_PARTITIONS or set it to {recorded}. To change the count, stop \
             every node, wait until its partition queues are empty, and run \
             UPDATE settings SET value = '{wanted}' WHERE name = 'partitions'"
        ),
        _ => Ok(recorded),
    }
}

/// A message as its sender wrote it, validated, before it has a seq.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Draft {
    pub id: String,
    pub chat_id: String,
    pub sender_id: String,
    pub content: String,
    pub client_id: Option<String>,
    /// The sender says `client_id` never left it before, so no earlier copy
    /// is looked up (`ClientTag`).
    #[serde(default)]
    pub first_try: bool,
    pub created_at: DateTime<Utc>,
}

/// What a partition's sequencer is asked to do. Read tag first (`wire`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Command {
    /// Sequence, deliver and store a message.
    Send { draft: Draft },
    /// Answer once everything before this is in the database.
    Settle,
    /// A chat's members changed: forget what is known of them.
    Changed {
        #[serde(rename = "chatId")]
        chat_id: String,
    },
}

impl Command {
    /// The message to send, for a `Send`.
    pub fn draft(&self) -> Option<&Draft> {
        match self {
            Command::Send { draft } => Some(draft),
            _ => None,
        }
    }
}

/// A sequencer's answer to a command. Read tag first (`wire`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Reply {
    /// Shared with the sequencer's memory and the batch being stored; the
    /// sender's side makes its own copy (`into_stored`), off the sequencer.
    Sent {
        message: Arc<Message>,
        duplicate: bool,
    },
    Refused {
        refusal: Refusal,
    },
    Done,
    Failed {
        error: String,
    },
}

/// Why a sequencer would not take a message: the sender's mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("no chat with that id")]
    NoSuchChat,
    #[error("you are not a member of this chat")]
    NotMember,
    #[error("this clientId was already used for a message in another chat")]
    ClientIdReused,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Nothing was acked: the sender may try again (with the same clientId).
    #[error("{0}")]
    Unavailable(String),
    /// The pipeline broke its own rules (a reply that does not answer the
    /// command): a bug, which sending again would only repeat.
    #[error("{0}")]
    Broken(&'static str),
}

impl From<PipelineError> for ApiError {
    fn from(err: PipelineError) -> Self {
        match err {
            PipelineError::Refused(refusal @ Refusal::NoSuchChat) => {
                ApiError::not_found(refusal.to_string())
            }
            PipelineError::Refused(refusal @ Refusal::NotMember) => {
                ApiError::forbidden(refusal.to_string())
            }
            PipelineError::Refused(refusal @ Refusal::ClientIdReused) => {
                ApiError::Conflict(refusal.to_string())
            }
            PipelineError::Unavailable(reason) => ApiError::Unavailable(reason),
            PipelineError::Broken(what) => ApiError::Internal(anyhow::anyhow!(what)),
        }
    }
}

impl Reply {
    fn into_stored(self) -> Result<Stored, PipelineError> {
        match self {
            Reply::Sent {
                message,
                duplicate: false,
            } => Ok(Stored::New(Arc::unwrap_or_clone(message))),
            Reply::Sent {
                message,
                duplicate: true,
            } => Ok(Stored::Duplicate(Arc::unwrap_or_clone(message))),
            Reply::Refused { refusal } => Err(refusal.into()),
            Reply::Done => Err(unexpected()),
            Reply::Failed { error } => Err(PipelineError::Unavailable(error)),
        }
    }

    fn into_done(self) -> Result<(), PipelineError> {
        match self {
            Reply::Done => Ok(()),
            Reply::Failed { error } => Err(PipelineError::Unavailable(error)),
            _ => Err(unexpected()),
        }
    }
}

fn unexpected() -> PipelineError {
    PipelineError::Broken("the message pipeline answered out of turn")
}

pub(crate) fn not_confirmed() -> PipelineError {
    PipelineError::Unavailable(
        "the message was not confirmed in time: send it again with the same clientId".into(),
    )
}

/// What a command handed to a partition comes to, once it has.
pub type Outcome<T> = BoxFuture<'static, Result<T, PipelineError>>;

/// The way into the partitions, whichever it is.
pub enum Pipeline {
    Local(local::LocalPipeline),
    Amqp(Arc<AmqpPipeline>),
}

impl Pipeline {
    /// The embedded default: partitions as tasks in this process.
    /// The embedded pipeline, holding at most `unstored_limit` messages
    /// delivered and not yet stored (`local::MOST_UNSTORED` at most).
    pub async fn local(
        store: Arc<dyn Store>,
        events: Arc<Events>,
        unstored_limit: usize,
    ) -> Result<Self, StoreError> {
        Ok(Pipeline::Local(
            local::LocalPipeline::start(store, events, unstored_limit).await?,
        ))
    }

    /// Before a membership change: refuses it while the chat's sequencer
    /// cannot hear of it now (RabbitMQ away or not confirming). Made
    /// anyway, the sequencer, which may run on another node, would go on
    /// with the members it knew, and a member removed could still send
    /// and receive there until the link came back. Through RabbitMQ this
    /// tells the sequencer once (confirmed) before the change, and
    /// `chat_changed` tells it again after.
    pub async fn ready_for_member_changes(&self, chat_id: &str) -> Result<(), PipelineError> {
        match self {
            Pipeline::Local(_) => Ok(()),
            Pipeline::Amqp(amqp) => {
                let command = Command::Changed {
                    chat_id: chat_id.to_owned(),
                };
                amqp.tell(chat_id, &command).await
            }
        }
    }

    /// Whether messages can be sent while the database is away: through
    /// RabbitMQ, while linked to it.
    pub fn works_without_database(&self) -> bool {
        match self {
            Pipeline::Local(_) => false,
            Pipeline::Amqp(amqp) => amqp.is_linked(),
        }
    }

    /// For a clean shutdown, once nothing hands messages over any more:
    /// this process's sequencers store what they sequenced (it was
    /// delivered already: left unstored, its seqs would go to other
    /// messages after the restart) and, through RabbitMQ, hand their
    /// partitions over (`AmqpPipeline::stop`, `LocalPipeline::stop`).
    pub async fn stop(&self, patience: Duration) {
        match self {
            Pipeline::Local(local) => local.stop(patience).await,
            Pipeline::Amqp(amqp) => amqp.stop(patience).await,
        }
    }

    /// Gives a message its seq and delivers it; returns once it is safe.
    pub async fn send(&self, draft: Draft) -> Result<Stored, PipelineError> {
        self.submit(draft).await?.await
    }

    /// Hands a message to its chat's partition and returns once it is
    /// queued there, with what completes like `send`. Messages submitted
    /// one after another keep that order in their chat, while their
    /// outcomes may be awaited together: a socket goes on reading its
    /// client's next message while the last one is on its way.
    pub async fn submit(&self, draft: Draft) -> Result<Outcome<Stored>, PipelineError> {
        let chat_id = draft.chat_id.clone();
        let reply = self.hand_over(&chat_id, Command::Send { draft }).await?;
        Ok(Box::pin(async move { reply.await?.into_stored() }))
    }

    /// Returns once every message delivered so far in `chat_id` can be
    /// read from the database: a history read after it (an app catching
    /// up) sees every message its sockets may have been sent, acked or not.
    pub async fn settle(&self, chat_id: &str) -> Result<(), PipelineError> {
        self.ask(chat_id, Command::Settle).await?.into_done()
    }

    /// `settle` for every chat at once: returns once every message
    /// delivered so far, in any chat, can be read from the database. A chat
    /// list read after it shows each chat's latest message as far as its
    /// members' sockets may have been sent it, so that an app catching up,
    /// which skips the chats whose latest message it holds, does not skip
    /// one whose newest message it missed live.
    pub async fn settle_all(&self) -> Result<(), PipelineError> {
        match self {
            Pipeline::Local(local) => local.ask(Command::Settle).await?.into_done(),
            Pipeline::Amqp(amqp) => {
                let settles = (0..amqp.partitions()).map(|partition| async move {
                    amqp.hand_over_to(partition, Command::Settle)?
                        .await?
                        .into_done()
                });
                futures_util::future::try_join_all(settles).await.map(drop)
            }
        }
    }

    /// Tells the chat's sequencer that its members changed, so that the next
    /// message goes to the members as they are now. Retried in the
    /// background while the broker is down.
    pub async fn chat_changed(&self, chat_id: &str) {
        let command = Command::Changed {
            chat_id: chat_id.to_owned(),
        };
        match self {
            Pipeline::Local(local) => {
                if let Err(err) = local.ask(command).await {
                    tracing::warn!(error = %err, "a chat change did not reach its sequencer");
                }
            }
            Pipeline::Amqp(amqp) => amqp.clone().tell_until_heard(chat_id, command).await,
        }
    }

    async fn ask(&self, chat_id: &str, command: Command) -> Result<Reply, PipelineError> {
        self.hand_over(chat_id, command).await?.await
    }

    async fn hand_over(
        &self,
        chat_id: &str,
        command: Command,
    ) -> Result<Outcome<Reply>, PipelineError> {
        match self {
            Pipeline::Local(local) => local.hand_over(command).await,
            Pipeline::Amqp(amqp) => amqp.hand_over(chat_id, command),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        // Pinned: every node of a deployment must route a chat the same
        // way. FNV-1a("a") is 0xe40c292c, the algorithm's published vector.
        assert_eq!(partition_of("a", 8), (0xe40c_292c_u32 % 8) as u16);
        assert_eq!(partition_of("a", 3), (0xe40c_292c_u32 % 3) as u16);
        assert_eq!(partition_of("0194f0c2-7d1e-7c3a-9a55-4e2b1f0a9d10", 8), 2);
        for partitions in [1, 2, 8, MOST_PARTITIONS] {
            let mut used = vec![false; usize::from(partitions)];
            for n in 0..2000 {
                used[usize::from(partition_of(&format!("chat-{n}"), partitions))] = true;
            }
            assert!(
                used.iter().all(|&hit| hit),
                "2000 chats use all {partitions} partitions"
            );
        }
    }

    #[test]
    fn commands_travel_as_tagged_json() {
        let text = serde_json::to_string(&Command::Changed {
            chat_id: "c1".into(),
        })
        .unwrap_or_default();
        assert_eq!(text, r#"{"type":"changed","chatId":"c1"}"#);
    }

    #[test]
    fn a_reply_out_of_turn_is_a_failure_for_good_and_a_lost_one_is_for_now() {
        // Out of turn is a bug: a client told to retry would loop on it.
        let out_of_turn = ApiError::from(Reply::Done.into_stored().expect_err("refused"));
        assert!(!out_of_turn.is_temporary(), "{out_of_turn:?}");
        assert_eq!(out_of_turn.to_string(), "internal error");
        let out_of_turn = ApiError::from(
            Reply::Refused {
                refusal: Refusal::NotMember,
            }
            .into_done()
            .expect_err("refused"),
        );
        assert!(!out_of_turn.is_temporary(), "{out_of_turn:?}");
        let failed = Reply::Failed {
            error: "the database is down".into(),
        };
        let failed = ApiError::from(failed.into_stored().expect_err("refused"));
        assert!(failed.is_temporary(), "{failed:?}");
    }
}
