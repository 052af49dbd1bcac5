//! The pipeline inside one process (the embedded default): one partition
//! for all chats, whose task sequences and delivers each message as it arrives, and stores
//! what it sequenced in one transaction at a time, answering the senders
//! of a batch once it is stored. Messages that arrive during a commit are
//! delivered at once and form the next batch. One partition, because
//! sequencing is cheap next to storing and the embedded database takes one
//! writer at a time: one partition makes the biggest batches, so the fewest
//! transactions.

use std::sync::Arc;
use std::time::Duration;

use natter_shared::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::sequencer::{Sequencer, store_batch};
use super::{Command, PipelineError, Reply, SEND_PATIENCE, not_confirmed};
use crate::realtime::Events;
use crate::store::{Store, StoreError, Stored};

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
        let (reply, answer) = oneshot::channel();
        self.inbox
            .send(Job { command, reply })
            .await
            .map_err(|_| PipelineError::Unavailable("the server is shutting down".into()))?;
        match tokio::time::timeout(SEND_PATIENCE, answer).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) | Err(_) => Err(not_confirmed()),
        }
    }
}

/// Sequences and delivers every command as it arrives, while the previous
/// batch is being stored; answers a batch's senders once it is stored.
async fn run(mut sequencer: Sequencer, mut inbox: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(BATCH);
    // Answers waiting for the next commit, and the commit in flight with its answers.
    let mut waiting: Vec<Answer> = Vec::new();
    let mut commit: Option<(Commit, Vec<Answer>)> = None;
    let mut retry_at: Option<Instant> = None;
    let mut pause = Duration::from_millis(50);
    let mut open = true;
    while open || commit.is_some() || !waiting.is_empty() {
        let due = retry_at.is_none_or(|at| Instant::now() >= at);
        if commit.is_none() && !waiting.is_empty() && due {
            retry_at = None;
            let batch = sequencer.take_batch();
            let store = sequencer.store();
            let task = tokio::spawn(async move {
                let outcome = if batch.is_empty() {
                    Ok(())
                } else {
                    store_batch(store.as_ref(), &batch).await
                };
                (batch, outcome)
            });
            commit = Some((task, std::mem::take(&mut waiting)));
        }
        let retry = retry_at.filter(|_| commit.is_none());
        tokio::select! {
            biased;
            done = wait_for(&mut commit) => {
                let Some((_, answers)) = commit.take() else { continue };
                match done {
                    Ok((_, Ok(()))) => {
                        sequencer.stored();
                        pause = Duration::from_millis(50);
                        for (sender, reply) in answers {
                            // A sender that gave up waiting is gone; its message is stored.
                            let _ = sender.send(reply);
                        }
                    }
                    Ok((batch, Err(err))) => {
                        tracing::error!(error = %err, messages = batch.len(), "storing messages failed; trying again");
                        sequencer.restore_batch(batch);
                        waiting.splice(0..0, answers);
                        retry_at = Some(Instant::now() + pause);
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                    Err(err) => {
                        // The batch went with the task; its senders hear nothing and retry.
                        tracing::error!(error = %err, "a commit task failed");
                    }
                }
            }
            received = inbox.recv_many(&mut jobs, BATCH), if open => {
                if received == 0 {
                    open = false;
                }
                for job in jobs.drain(..) {
                    let reply = handle(&mut sequencer, job.command).await;
                    waiting.push((job.reply, reply));
                }
            }
            () = sleep_until(retry) => {}
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
type Commit = JoinHandle<(Vec<Message>, Result<(), StoreError>)>;

/// Completes when the commit in flight does (never, when there is none).
async fn wait_for(
    commit: &mut Option<(Commit, Vec<Answer>)>,
) -> Result<(Vec<Message>, Result<(), StoreError>), tokio::task::JoinError> {
    match commit {
        Some((task, _)) => task.await,
        None => std::future::pending().await,
    }
}

/// Completes at `at` (never, when there is none).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
