//! The pipeline inside one process (the embedded default): one partition
//! for all chats, whose task sequences and delivers each message as it arrives, and stores
//! what it sequenced in one transaction at a time, answering the senders
//! of a batch once it is stored. Messages that arrive during a commit are
//! delivered at once and form the next batch. One partition, because
//! sequencing is cheap next to storing and the embedded database takes one
//! writer at a time: one partition makes the biggest batches, so the fewest
//! transactions.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::batches::{Batches, Committed};
use super::sequencer::Sequencer;
use super::{Command, Outcome, PipelineError, Reply, SEND_PATIENCE, not_confirmed};
use crate::realtime::Events;
use crate::store::{Store, Stored};

/// Commands waiting before senders wait to hand theirs over.
const INBOX: usize = 4096;
/// Most commands per batch.
const BATCH: usize = 1000;

struct Job {
    command: Command,
    reply: oneshot::Sender<Reply>,
}

pub struct LocalPipeline {
    inbox: mpsc::Sender<Job>,
}

impl LocalPipeline {
    pub fn start(store: Arc<dyn Store>, events: Arc<Events>) -> Self {
        let (inbox, receiver) = mpsc::channel(INBOX);
        tokio::spawn(run(Sequencer::new(store, events), receiver));
        LocalPipeline { inbox }
    }

    pub async fn ask(&self, command: Command) -> Result<Reply, PipelineError> {
        self.hand_over(command).await?.await
    }

    /// Queues `command` (in order with everything queued before it) and
    /// returns what waits for its reply.
    pub async fn hand_over(&self, command: Command) -> Result<Outcome<Reply>, PipelineError> {
        let (reply, answer) = oneshot::channel();
        self.inbox
            .send(Job { command, reply })
            .await
            .map_err(|_| PipelineError::Unavailable("the server is shutting down".into()))?;
        Ok(Box::pin(async move {
            match tokio::time::timeout(SEND_PATIENCE, answer).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(_)) | Err(_) => Err(not_confirmed()),
            }
        }))
    }
}

/// Sequences and delivers every command as it arrives, while the previous
/// batch is being stored; answers a batch's senders once it is stored.
async fn run(mut sequencer: Sequencer, mut inbox: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(BATCH);
    // Answers waiting for the next commit; those of the commit in flight
    // travel with it.
    let mut waiting: Vec<Answer> = Vec::new();
    let mut batches: Batches<Vec<Answer>> = Batches::new();
    let mut open = true;
    while open || batches.busy() || !waiting.is_empty() {
        if batches.ready() && !waiting.is_empty() {
            batches.start(&mut sequencer, std::mem::take(&mut waiting));
        }
        tokio::select! {
            biased;
            committed = batches.next() => match committed {
                Some(Committed::Stored(answers)) => {
                    sequencer.stored();
                    for (sender, reply) in answers {
                        // A sender that gave up waiting is gone; its message is stored.
                        let _ = sender.send(reply);
                    }
                }
                Some(Committed::Failed(batch, answers)) => {
                    sequencer.restore_batch(batch);
                    waiting.splice(0..0, answers);
                }
                // The batch went with the task; its senders hear nothing and retry.
                Some(Committed::Lost(_)) | None => {}
            },
            received = inbox.recv_many(&mut jobs, BATCH), if open => {
                if received == 0 {
                    open = false;
                }
                let drafts: Vec<_> = jobs.iter().filter_map(|job| job.command.draft()).collect();
                sequencer.prepare(&drafts, false).await;
                for job in jobs.drain(..) {
                    let reply = handle(&mut sequencer, job.command).await;
                    waiting.push((job.reply, reply));
                }
                sequencer.flush();
            }
        }
    }
}

async fn handle(sequencer: &mut Sequencer, command: Command) -> Reply {
    match command {
        Command::Send { draft } => match sequencer.sequence(&draft, false).await {
            Ok(Ok(Stored::New(message))) => Reply::Sent {
                message,
                duplicate: false,
            },
            Ok(Ok(Stored::Duplicate(message))) => Reply::Sent {
                message,
                duplicate: true,
            },
            Ok(Err(refusal)) => Reply::Refused { refusal },
            Err(err) => {
                tracing::warn!(error = %err, "a message could not be sequenced");
                Reply::Failed {
                    error: "the database is not answering: try again".into(),
                }
            }
        },
        Command::Settle => Reply::Done,
        Command::Changed { chat_id } => {
            sequencer.changed(&chat_id);
            Reply::Done
        }
    }
}

type Answer = (oneshot::Sender<Reply>, Reply);
