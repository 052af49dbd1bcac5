//! The pipeline inside one process (the embedded default): a task per
//! partition takes every command that has arrived, sequences the messages,
//! stores them in one transaction, and only then answers their senders.
//! Commands that arrive during a commit form the next batch.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::sequencer::Sequencer;
use super::{
    Command, PARTITIONS, PipelineError, Reply, SEND_PATIENCE, not_confirmed, partition_of,
};
use crate::realtime::Events;
use crate::store::{Store, Stored};

/// Commands waiting per partition before senders wait to hand theirs over.
const INBOX: usize = 4096;
/// Most commands per batch.
const BATCH: usize = 1000;

struct Job {
    command: Command,
    reply: oneshot::Sender<Reply>,
}

pub struct LocalPipeline {
    inboxes: Vec<mpsc::Sender<Job>>,
}

impl LocalPipeline {
    pub fn start(store: Arc<dyn Store>, events: Arc<Events>) -> Self {
        let inboxes = (0..PARTITIONS)
            .map(|_| {
                let (sender, receiver) = mpsc::channel(INBOX);
                let sequencer = Sequencer::new(store.clone(), events.clone());
                tokio::spawn(run(sequencer, receiver));
                sender
            })
            .collect();
        LocalPipeline { inboxes }
    }

    pub async fn ask(&self, chat_id: &str, command: Command) -> Result<Reply, PipelineError> {
        let inbox = &self.inboxes[usize::from(partition_of(chat_id))];
        let (reply, answer) = oneshot::channel();
        inbox
            .send(Job { command, reply })
            .await
            .map_err(|_| PipelineError::Unavailable("the server is shutting down".into()))?;
        match tokio::time::timeout(SEND_PATIENCE, answer).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) | Err(_) => Err(not_confirmed()),
        }
    }
}

async fn run(mut sequencer: Sequencer, mut inbox: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(BATCH);
    while inbox.recv_many(&mut batch, BATCH).await > 0 {
        let mut answers = Vec::with_capacity(batch.len());
        for job in batch.drain(..) {
            let reply = match job.command {
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
            };
            answers.push((job.reply, reply));
        }
        commit(&mut sequencer).await;
        for (sender, reply) in answers {
            // A sender that gave up waiting is gone; its message is stored.
            let _ = sender.send(reply);
        }
    }
}

/// Stores the batch, trying again (with growing pauses) until it is stored:
/// its senders have not been answered yet, and its messages were delivered.
async fn commit(sequencer: &mut Sequencer) {
    let mut pause = Duration::from_millis(50);
    while let Err(err) = sequencer.commit().await {
        tracing::error!(error = %err, pending = sequencer.pending(), "storing messages failed; trying again");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
