//! The pipeline inside one process (the embedded default): one partition
//! for all chats, whose task sequences and delivers each message as it arrives, and stores
//! what it sequenced in one transaction at a time, answering the senders
//! of a batch once it is stored. Messages that arrive during a commit are
//! delivered at once and form the next batch. One partition, because
//! sequencing is cheap next to storing and the embedded database takes one
//! writer at a time: one partition makes the biggest batches, so the fewest
//! transactions.
//!
//! A clean shutdown (`stop`) stops taking commands and stores everything
//! sequenced before it: those messages were delivered already, and a
//! process that ended without storing them would give their seqs to other
//! messages after the restart (their senders resend them, unacked).
//!
//! A process that dies (a crash, `kill -9`) cannot do that: what it
//! delivered and did not store is gone, and apps hold it under seqs the
//! database never heard of. So the pipeline marks the database while it
//! runs, and a start that finds the mark of a run that never stopped moves
//! every chat's seqs `SEQS_SKIPPED_AFTER_A_CRASH` ahead: more than were
//! ever delivered and unstored at once (`MOST_UNSTORED`), so no seq an app
//! may hold names another message. (The lost messages come back as their
//! senders resend them, under new seqs; apps drop the copy they held.)

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::batches::{Batches, Committed};
use super::sequencer::{Sequenced, Sequencer};
use super::{Command, Outcome, PipelineError, Reply, SEND_PATIENCE, not_confirmed};
use crate::realtime::Events;
use crate::store::{Store, StoreError};

/// Commands waiting before senders wait to hand theirs over.
const INBOX: usize = 4096;
/// Most commands per batch.
const BATCH: usize = 1000;
/// Most messages delivered and not yet stored: past this, sends are refused
/// until the database catches up (memory stays bounded, and so do the seqs
/// a crash can leave unstored). `NATTER_UNSTORED_LIMIT` may set fewer.
const MOST_UNSTORED: usize = super::MOST_UNSTORED as usize;
/// How far each chat's seqs move after a run that did not stop cleanly.
pub const SEQS_SKIPPED_AFTER_A_CRASH: i64 = super::MOST_UNSTORED as i64;

struct Job {
    command: Command,
    reply: oneshot::Sender<Reply>,
}

pub struct LocalPipeline {
    inbox: mpsc::Sender<Job>,
    /// Set by `stop`: take no more commands, store what was sequenced.
    stopping: watch::Sender<bool>,
    /// Set by the task once it has stored everything and ended.
    finished: watch::Receiver<bool>,
}

impl LocalPipeline {
    /// Marks the database as sequenced by this run (moving every chat's
    /// seqs ahead when the last run died) and starts the partition's task,
    /// which holds at most `unstored_limit` messages delivered and not yet
    /// stored (never more than `MOST_UNSTORED`).
    pub async fn start(
        store: Arc<dyn Store>,
        events: Arc<Events>,
        unstored_limit: usize,
    ) -> Result<Self, StoreError> {
        if unstored_limit > MOST_UNSTORED {
            tracing::warn!(
                unstored_limit,
                most = MOST_UNSTORED,
                "NATTER_UNSTORED_LIMIT is past what the embedded pipeline holds; holding at most its most"
            );
        } else if unstored_limit < BATCH {
            tracing::warn!(
                unstored_limit,
                batch = BATCH,
                "NATTER_UNSTORED_LIMIT is below a batch: sends are refused while an ordinary commit runs"
            );
        }
        let unstored_limit = unstored_limit.min(MOST_UNSTORED);
        if store.begin_local_run(SEQS_SKIPPED_AFTER_A_CRASH).await? {
            tracing::warn!(
                skipped = SEQS_SKIPPED_AFTER_A_CRASH,
                "the last run did not stop cleanly: every chat's seqs moved ahead"
            );
        }
        let (inbox, receiver) = mpsc::channel(INBOX);
        let (stopping, stop) = watch::channel(false);
        let (finish, finished) = watch::channel(false);
        tokio::spawn(async move {
            let sequencer = Sequencer::new(store.clone(), events);
            run(sequencer, receiver, stop, unstored_limit).await;
            // Left marked, the next start skips seqs it need not.
            if let Err(err) = store.end_local_run().await {
                tracing::warn!(error = %err, "could not record the clean stop");
            }
            finish.send_replace(true);
        });
        Ok(LocalPipeline {
            inbox,
            stopping,
            finished,
        })
    }

    /// Stops taking commands and waits (at most `patience`) until what was
    /// sequenced is stored and its senders answered.
    pub async fn stop(&self, patience: Duration) {
        self.stopping.send_replace(true);
        let mut finished = self.finished.clone();
        // An error means the task is gone: nothing left to wait for.
        let done = finished.wait_for(|finished| *finished);
        if tokio::time::timeout(patience, done).await.is_err() {
            tracing::warn!("the pipeline was still storing at shutdown");
        }
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
/// Once `stop` is set, takes what is queued already (later senders hear
/// that the server is shutting down), stores it all, and returns then:
/// everything it delivered is stored.
async fn run(
    mut sequencer: Sequencer,
    mut inbox: mpsc::Receiver<Job>,
    mut stop: watch::Receiver<bool>,
    unstored_limit: usize,
) {
    let mut jobs = Vec::with_capacity(BATCH);
    // Answers waiting for the next commit; those of the commit in flight
    // travel with it.
    let mut waiting: Vec<Answer> = Vec::new();
    let mut batches: Batches<Vec<Answer>> = Batches::new();
    let mut open = true;
    let mut closing = false;
    while open || batches.busy() || !waiting.is_empty() {
        if batches.ready() && !waiting.is_empty() {
            batches.start(&mut sequencer, std::mem::take(&mut waiting));
        }
        tokio::select! {
            biased;
            // A closed inbox still gives what it holds, then 0 (`open` false).
            changed = stop.changed(), if open && !closing => {
                if changed.is_err() || *stop.borrow_and_update() {
                    closing = true;
                    inbox.close();
                }
            }
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
                None => {}
            },
            received = inbox.recv_many(&mut jobs, BATCH), if open => {
                if received == 0 {
                    open = false;
                }
                let drafts: Vec<_> = jobs.iter().filter_map(|job| job.command.draft()).collect();
                sequencer.prepare(&drafts, false).await;
                for job in jobs.drain(..) {
                    let reply = handle(&mut sequencer, job.command, unstored_limit).await;
                    // A refusal or a failure leaves nothing to store: it is
                    // answered now, not after the next commit (which may
                    // be long in coming while the database fails).
                    if matches!(reply, Reply::Refused { .. } | Reply::Failed { .. }) {
                        let _ = job.reply.send(reply);
                    } else {
                        waiting.push((job.reply, reply));
                    }
                }
                sequencer.flush();
            }
        }
    }
}

async fn handle(sequencer: &mut Sequencer, command: Command, unstored_limit: usize) -> Reply {
    match command {
        Command::Send { .. } if sequencer.unstored() >= unstored_limit => Reply::Failed {
            error: "the database is not keeping up: try again".into(),
        },
        Command::Send { draft } => match sequencer.sequence(&draft, false).await {
            Ok(Ok(Sequenced::New(message))) => Reply::Sent {
                message,
                duplicate: false,
            },
            Ok(Ok(Sequenced::Duplicate(message))) => Reply::Sent {
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

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::pipeline::Draft;
    use crate::realtime::Hub;
    use crate::store::{NewUser, SqliteStore};

    const SENT: i64 = 2000;

    async fn chat_of_two(store: &dyn Store) -> (String, String) {
        let mut ids = Vec::new();
        for name in ["ann", "bob"] {
            let user = store
                .create_user(NewUser {
                    id: name.into(),
                    name: name.into(),
                    email: format!("{name}@example.org"),
                    password_hash: "not used".into(),
                    pic: None,
                })
                .await
                .expect("a user");
            ids.push(user.id);
        }
        let chat = store
            .create_group("chat", "Test", &ids[0], &ids[1..])
            .await
            .expect("a group");
        (chat.id, ids[0].clone())
    }

    fn draft(i: i64, chat_id: &str, sender_id: &str) -> Draft {
        Draft {
            id: format!("m{i}"),
            chat_id: chat_id.to_owned(),
            sender_id: sender_id.to_owned(),
            content: format!("message {i}"),
            client_id: None,
            first_try: false,
            created_at: Utc::now(),
        }
    }

    async fn start(dir: &std::path::Path) -> (Arc<dyn Store>, LocalPipeline) {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir).await.expect("SQLite"));
        let events = Arc::new(Events::local(Arc::new(Hub::new())));
        let pipeline = LocalPipeline::start(store.clone(), events, MOST_UNSTORED)
            .await
            .expect("started");
        (store, pipeline)
    }

    /// Hands messages 0..SENT over, all queued before any is answered.
    async fn hand_over_all(
        pipeline: &LocalPipeline,
        chat_id: &str,
        sender_id: &str,
    ) -> Vec<Outcome<Reply>> {
        let mut outcomes = Vec::new();
        for i in 0..SENT {
            let draft = draft(i, chat_id, sender_id);
            let outcome = pipeline.hand_over(Command::Send { draft }).await;
            outcomes.push(outcome.expect("queued"));
        }
        outcomes
    }

    /// Starts a pipeline on `dir`, sends message `i` and stops cleanly;
    /// returns the message's seq and the chat's latest seq as the pipeline
    /// found it.
    fn send_after_a_start(
        dir: &std::path::Path,
        chat_id: &str,
        sender_id: &str,
        i: i64,
    ) -> (i64, i64) {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        runtime.block_on(async {
            let (store, pipeline) = start(dir).await;
            let chat = store.chat(chat_id).await.expect("read").expect("the chat");
            let latest = chat.latest_message.expect("a latest message").seq;
            let reply = pipeline
                .ask(Command::Send {
                    draft: draft(i, chat_id, sender_id),
                })
                .await
                .expect("answered");
            pipeline.stop(Duration::from_secs(60)).await;
            match reply {
                Reply::Sent { message, .. } => (message.seq, latest),
                other => panic!("not sent: {other:?}"),
            }
        })
    }

    /// A refusal is answered at once, also while a commit is held back (the
    /// database locked by another writer): it has nothing to store.
    #[tokio::test]
    async fn a_refusal_is_answered_at_once_while_commits_wait() {
        use sqlx::{Connection, Executor};
        let dir = tempfile::tempdir().expect("a temp dir");
        let (store, pipeline) = start(dir.path()).await;
        let (chat_id, sender_id) = chat_of_two(store.as_ref()).await;
        let database = format!("sqlite:{}", dir.path().join("natter.db").display());
        let mut writer = sqlx::SqliteConnection::connect(&database)
            .await
            .expect("another connection");
        writer.execute("BEGIN IMMEDIATE").await.expect("locked");
        let held = pipeline
            .hand_over(Command::Send {
                draft: draft(0, &chat_id, &sender_id),
            })
            .await
            .expect("queued");
        let refused = pipeline
            .ask(Command::Send {
                draft: draft(1, &chat_id, "stranger"),
            })
            .await;
        assert!(matches!(refused, Ok(Reply::Refused { .. })), "{refused:?}");
        writer.execute("ROLLBACK").await.expect("unlocked");
        let sent = held.await;
        assert!(matches!(sent, Ok(Reply::Sent { .. })), "{sent:?}");
    }

    /// Messages handed over before `stop` are stored and answered by the
    /// time it returns: the runtime (and with it the pipeline's task) is
    /// dropped right after, as when the process ends. The next start goes
    /// on from the last seq: the stop was clean.
    #[test]
    fn a_clean_stop_stores_and_answers_what_was_handed_over() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (chat_id, sender_id, outcomes) = {
            let runtime = tokio::runtime::Runtime::new().expect("a runtime");
            runtime.block_on(async {
                let (store, pipeline) = start(dir.path()).await;
                let (chat_id, sender_id) = chat_of_two(store.as_ref()).await;
                let outcomes = hand_over_all(&pipeline, &chat_id, &sender_id).await;
                pipeline.stop(Duration::from_secs(60)).await;
                (chat_id, sender_id, outcomes)
            })
        };
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        runtime.block_on(async {
            for outcome in outcomes {
                let reply = outcome.await.expect("answered before the stop returned");
                assert!(
                    matches!(
                        reply,
                        Reply::Sent {
                            duplicate: false,
                            ..
                        }
                    ),
                    "{reply:?}"
                );
            }
            let store = SqliteStore::open(dir.path()).await.expect("SQLite again");
            assert_eq!(store.last_seq(&chat_id).await.expect("read"), Some(SENT));
        });
        drop(runtime);
        assert_eq!(
            send_after_a_start(dir.path(), &chat_id, &sender_id, SENT),
            (SENT + 1, SENT)
        );
    }

    /// A run that ends without `stop` (the process died) may have delivered
    /// messages it never stored: the next start gives no chat a seq that
    /// run could have handed out, and the chat's latest message is still
    /// the last one stored.
    #[test]
    fn after_a_run_that_did_not_stop_seqs_go_on_past_what_it_may_have_delivered() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (chat_id, sender_id, pipeline) = {
            let runtime = tokio::runtime::Runtime::new().expect("a runtime");
            runtime.block_on(async {
                let (store, pipeline) = start(dir.path()).await;
                let (chat_id, sender_id) = chat_of_two(store.as_ref()).await;
                for outcome in hand_over_all(&pipeline, &chat_id, &sender_id).await {
                    outcome.await.expect("stored and answered");
                }
                // No stop: the runtime goes, and the task with it. The
                // pipeline outlives the runtime: dropped inside it, it
                // would tell its task to finish, which could then record
                // a clean stop before the runtime ends (a dying process
                // runs no such code).
                (chat_id, sender_id, pipeline)
            })
        };
        drop(pipeline);
        // The latest message is the last one stored, whatever the seqs.
        let skipped = SENT + SEQS_SKIPPED_AFTER_A_CRASH;
        assert_eq!(
            send_after_a_start(dir.path(), &chat_id, &sender_id, SENT),
            (skipped + 1, SENT)
        );
        // That start stopped cleanly: the one after it skips nothing.
        assert_eq!(
            send_after_a_start(dir.path(), &chat_id, &sender_id, SENT + 1),
            (skipped + 2, skipped + 1)
        );
    }
}
