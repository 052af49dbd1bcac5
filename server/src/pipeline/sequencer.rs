//! One partition's sequencer: what it knows of its chats, how it gives a
//! message its seq, and how it stores what it sequenced.
//!
//! It reads the database to learn the chats and senders it has not seen yet
//! and, a batch of drafts at a time, to recognise a retry it does not
//! remember (`prepare`); those lookups are skipped while the database is
//! away, so sending goes on from memory, and the batch is stored once it is
//! back.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use chrono::{DateTime, Utc};
use natter_shared::{Message, User};

use super::memory::{Memory, same_chat};
use super::{Draft, Refusal};
use crate::id_map::{IdMap, IdSet};
use crate::realtime::{Event, Events, encode_message};
use crate::store::{Store, StoreError};

/// Chats remembered before memory is cleared (only between batches: a chat
/// with uncommitted messages must keep its seq).
const CHATS_REMEMBERED: usize = 100_000;

/// Messages remembered by id (and clientId), newest first out last: a
/// repeat within this many messages is recognised without the database.
const MESSAGES_REMEMBERED: usize = 50_000;

/// A message that may have been sequenced before this sequencer learned its
/// chat (by the one before it, which died or lost the queue) is looked up in
/// the database first. Drafts are stamped by the node that took them, so
/// this allows for clocks that are a little apart.
fn clock_slack() -> chrono::TimeDelta {
    chrono::TimeDelta::seconds(5)
}

/// How long sending waits for a lookup it can do without.
const OPTIONAL_PATIENCE: Duration = Duration::from_millis(250);
/// How long a lookup sending needs may take (a chat's seq, its members, a
/// sender, a redelivered draft's earlier copy), waiting for a connection
/// included: the partition waits on it, and a database machine gone
/// without closing its connections would hold it, and every chat of the
/// partition, for as long as TCP takes to give up. Within a sender's
/// patience (10 s), so the sends behind one such lookup still go. The
/// price: a database so busy that a lookup waits longer is taken for gone
/// for `AWAY_PAUSE`, and sends that need it are refused for now (senders
/// try again; redelivered ones wait).
const REQUIRED_PATIENCE: Duration = Duration::from_secs(4);
/// How long such lookups are skipped after the database failed one.
const AWAY_PAUSE: Duration = Duration::from_secs(2);

struct ChatState {
    last_seq: i64,
    /// None after a membership change, until the next message reloads them.
    /// Shared with the events that go to them, so a message does not copy
    /// the list.
    members: Option<Arc<[String]>>,
    /// When this sequencer learned the chat.
    known_since: DateTime<Utc>,
}

/// What `sequence` made of a draft. One message, shared: remembered, waiting
/// to be stored and answering its sender, without a copy for each.
#[derive(Debug, Clone)]
pub enum Sequenced {
    /// It is new and now has its seq.
    New(Arc<Message>),
    /// It was sequenced before: the message it became then.
    Duplicate(Arc<Message>),
}

pub struct Sequencer {
    store: Arc<dyn Store>,
    events: Arc<Events>,
    chats: IdMap<String, ChatState>,
    /// `CHATS_REMEMBERED`, but for tests.
    chats_remembered: usize,
    senders: IdMap<String, User>,
    /// Messages sequenced by this sequencer, to recognise one seen twice.
    memory: Memory,
    /// Sequenced, delivered, not yet stored; in seq order per chat.
    pending: Vec<Arc<Message>>,
    /// How many messages the batch being stored holds (`take_batch`).
    storing: usize,
    /// Optional lookups are skipped until then: the database failed one.
    database_away_until: Option<Instant>,
    /// Required lookups fail at once until then: one got no answer in time
    /// (the next would wait as long, and hold up the partition again).
    database_gone_until: Option<Instant>,
    /// Drafts whose earlier selves `prepare` looked up already.
    looked_up: IdSet<String>,
    /// Delivered here, not yet told to the other nodes (`flush`).
    for_other_nodes: Vec<Event>,
}

impl Sequencer {
    pub fn new(store: Arc<dyn Store>, events: Arc<Events>) -> Self {
        Sequencer {
            store,
            events,
            chats: IdMap::default(),
            chats_remembered: CHATS_REMEMBERED,
            senders: IdMap::default(),
            memory: Memory::new(MESSAGES_REMEMBERED),
            pending: Vec::new(),
            storing: 0,
            database_away_until: None,
            database_gone_until: None,
            looked_up: IdSet::default(),
            for_other_nodes: Vec::new(),
        }
    }

    /// Gives `draft` its chat's next seq and delivers it to the members, or
    /// recognises it as one already sequenced (then delivers it again: the
    /// first delivery may not have happened). `Err` only when the database
    /// was needed and could not answer; nothing changed then.
    pub async fn sequence(
        &mut self,
        draft: &Draft,
        redelivered: bool,
    ) -> Result<Result<Sequenced, Refusal>, StoreError> {
        // The chat's last seq is read before looking for earlier copies
        // (`prepare` does the same): a commit of the sequencer before this
        // one that lands in between is then seen in the copies, and moves
        // the seq on (below), rather than in the seq alone.
        if !self.chats.contains_key(&draft.chat_id)
            && let Err(refusal) = self.members_of(&draft.chat_id).await?
        {
            return Ok(Err(refusal));
        }
        if let Some(known) = self.known(draft, redelivered).await? {
            let message = match known {
                Ok(message) => message,
                Err(refusal) => return Ok(Err(refusal)),
            };
            // Stored by the sequencer before this one, maybe after this
            // one read the chat's last seq: the next seq is past it.
            if let Some(chat) = self.chats.get_mut(&message.chat_id) {
                chat.last_seq = chat.last_seq.max(message.seq);
            }
            match self.members_of(&message.chat_id).await {
                // Removed since: the sender hears no more of the chat, and
                // its members hear no more of the sender (a replayed
                // clientId would deliver the message again every time).
                Ok(Ok(members)) if !members.contains(&draft.sender_id) => {
                    return Ok(Err(Refusal::NotMember));
                }
                Ok(Ok(members)) => self.deliver(&message, &members),
                _ => {}
            }
            return Ok(Ok(Sequenced::Duplicate(message)));
        }
        let members = match self.members_of(&draft.chat_id).await? {
            Ok(members) => members,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if !members.contains(&draft.sender_id) {
            return Ok(Err(Refusal::NotMember));
        }
        let Some(sender) = self.sender(&draft.sender_id).await? else {
            return Ok(Err(Refusal::NotMember));
        };
        let Some(chat) = self.chats.get_mut(&draft.chat_id) else {
            return Ok(Err(Refusal::NoSuchChat));
        };
        chat.last_seq += 1;
        let message = Arc::new(Message {
            id: draft.id.clone(),
            chat_id: draft.chat_id.clone(),
            seq: chat.last_seq,
            sender,
            content: draft.content.clone(),
            client_id: draft.client_id.clone(),
            created_at: draft.created_at,
        });
        self.pending.push(message.clone());
        self.memory.remember(message.clone(), self.unstored());
        self.deliver(&message, &members);
        Ok(Ok(Sequenced::New(message)))
    }

    /// The members' cached list is stale: reload it for the next message.
    pub fn changed(&mut self, chat_id: &str) {
        if let Some(chat) = self.chats.get_mut(chat_id) {
            chat.members = None;
        }
    }

    /// Hands over what is to be stored next, oldest first.
    pub fn take_batch(&mut self) -> Vec<Arc<Message>> {
        let batch = std::mem::take(&mut self.pending);
        self.storing = batch.len();
        batch
    }

    /// Takes back a batch that could not be stored, ahead of anything
    /// sequenced since.
    pub fn restore_batch(&mut self, mut batch: Vec<Arc<Message>>) {
        self.storing = 0;
        batch.append(&mut self.pending);
        self.pending = batch;
    }

    /// Messages delivered and not stored yet: waiting, and being stored.
    pub fn unstored(&self) -> usize {
        self.pending.len() + self.storing
    }

    /// After a batch is stored: memory is bounded between batches.
    pub fn stored(&mut self) {
        self.storing = 0;
        if self.chats.len() > self.chats_remembered {
            self.forget_all();
        }
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Forgets every chat, sender and message, but what waits to be
    /// stored: a chat with messages not stored keeps its seq (the database
    /// does not have it yet), and those messages stay remembered (a retry
    /// of one would otherwise be looked for in the database, not found, and
    /// sequenced twice). Under steady load something always waits, so this
    /// cannot wait for nothing to.
    fn forget_all(&mut self) {
        let waiting: IdSet<&str> = self
            .pending
            .iter()
            .map(|message| message.chat_id.as_str())
            .collect();
        self.chats.retain(|id, _| waiting.contains(id.as_str()));
        self.senders.clear();
        self.memory.clear();
        for message in &self.pending {
            self.memory.remember(message.clone(), self.pending.len());
        }
    }

    /// Before sequencing a batch of drafts: asks the database, a round trip
    /// for the whole batch rather than one per draft, for what the drafts'
    /// own checks would ask it: their chats and senders not known yet, and
    /// what any of them may have become before.
    ///
    /// Chats are learned first: a commit of the sequencer before this one
    /// (it died, or lost the queue, with a commit on its way) may land at
    /// any moment. Landing after the last seqs were read, its messages are
    /// found as earlier copies, which move the seqs on; read the other way
    /// round, its messages would be taken as new, under seqs past its own.
    pub async fn prepare(&mut self, drafts: &[&Draft], redelivered: bool) {
        self.learn_chats_and_senders(drafts).await;
        self.look_up_earlier_copies(drafts, redelivered).await;
    }

    /// Loads, in one round trip each, the chats and senders among `drafts`
    /// this sequencer does not know yet (the first traffic after a start
    /// would otherwise wait for a query per chat). When the database cannot
    /// answer, each draft loads its own, as it would have without this.
    async fn learn_chats_and_senders(&mut self, drafts: &[&Draft]) {
        if self.database_seems_away() {
            return;
        }
        let mut chats: Vec<&str> = drafts
            .iter()
            .map(|draft| draft.chat_id.as_str())
            // An id no chat can have would fail the whole query on
            // PostgreSQL (NUL); its draft is refused on its own.
            .filter(|id| !id.contains('\0'))
            .filter(|id| {
                self.chats
                    .get(*id)
                    .is_none_or(|chat| chat.members.is_none())
            })
            .collect();
        chats.sort_unstable();
        chats.dedup();
        let store = self.store.clone();
        if !chats.is_empty()
            && let Ok(found) = self.required(store.chats_to_sequence(&chats)).await
        {
            let now = Utc::now();
            for chat in found {
                let state = self.chats.entry(chat.id).or_insert(ChatState {
                    last_seq: chat.last_seq,
                    members: None,
                    known_since: now,
                });
                // A chat known already keeps its seq: its newest messages
                // may not be stored yet.
                state.members = Some(chat.members.into());
            }
        }
        let mut senders: Vec<&str> = drafts
            .iter()
            .map(|draft| draft.sender_id.as_str())
            .filter(|id| !self.senders.contains_key(*id))
            .collect();
        senders.sort_unstable();
        senders.dedup();
        if !senders.is_empty()
            && let Ok(found) = self.required(store.users(&senders)).await
        {
            for user in found {
                self.senders.insert(user.id.clone(), user);
            }
        }
    }

    /// Looks up what any of `drafts` may have become before (what `known`
    /// would look up for each) and remembers it, so that each draft's check
    /// is answered from memory. An optional lookup that fails is skipped,
    /// as each draft's own would be; the lookup of a redelivered batch is
    /// required, and when it fails each draft looks for itself (and waits
    /// for the database).
    async fn look_up_earlier_copies(&mut self, drafts: &[&Draft], redelivered: bool) {
        self.looked_up.clear();
        let mut ids = Vec::new();
        let mut clients = Vec::new();
        let mut covered = Vec::new();
        for draft in drafts {
            // A chat not learned (the database away, or no such chat):
            // its draft looks for itself in `sequence`, after its chat's
            // seq is read, not before.
            if self.memory.recall(draft).is_some() || !self.chats.contains_key(&draft.chat_id) {
                continue;
            }
            if redelivered || self.maybe_earlier(draft) {
                ids.push(draft.id.as_str());
            }
            if let Some(client_id) = resent_client_id(draft) {
                clients.push((draft.sender_id.as_str(), client_id));
            }
            covered.push(draft.id.clone());
        }
        if ids.is_empty() && clients.is_empty() {
            self.looked_up.extend(covered);
            return;
        }
        let store = self.store.clone();
        let lookup = store.messages_sent_before(&ids, &clients);
        let found = if redelivered {
            self.required(lookup).await.ok()
        } else {
            self.optional(lookup).await
        };
        match found {
            Some(messages) => {
                // Found by id and by clientId alike, a message comes twice.
                for message in messages {
                    if !self.memory.knows(&message.id) {
                        self.memory.remember(Arc::new(message), self.unstored());
                    }
                }
                self.looked_up.extend(covered);
            }
            None if redelivered => {}
            None => self.looked_up.extend(covered),
        }
    }

    /// The message this draft already became, if it was sequenced before:
    /// by this sequencer (remembered), or by an earlier one (stored), or
    /// the same clientId again. `Ok(Some(Err))` for a clientId used in
    /// another chat.
    async fn known(
        &mut self,
        draft: &Draft,
        redelivered: bool,
    ) -> Result<Option<Result<Arc<Message>, Refusal>>, StoreError> {
        if let Some(found) = self.memory.recall(draft) {
            return Ok(Some(found));
        }
        // `prepare` looked already, and remembered what it found.
        if self.looked_up.remove(&draft.id) {
            return Ok(None);
        }
        if redelivered {
            let store = self.store.clone();
            if let Some(message) = self.required(store.message(&draft.id)).await? {
                return Ok(Some(Ok(Arc::new(message))));
            }
        } else if self.maybe_earlier(draft) {
            let store = self.store.clone();
            if let Some(Some(message)) = self.optional(store.message(&draft.id)).await {
                return Ok(Some(Ok(Arc::new(message))));
            }
        }
        if let Some(client_id) = resent_client_id(draft) {
            // A retry may come long after the first try (an app's outbox
            // across restarts). When the database cannot say, the message
            // is taken as new: a rare double beats a refused send.
            let store = self.store.clone();
            let pair = [(draft.sender_id.as_str(), client_id)];
            let earlier = store.messages_sent_before(&[], &pair);
            if let Some(Some(message)) = self
                .optional(earlier)
                .await
                .map(|found| found.into_iter().next())
            {
                return Ok(Some(same_chat(Arc::new(message), draft)));
            }
        }
        Ok(None)
    }

    /// Whether an earlier sequencer may have stored this draft already: one
    /// that held this chat before this sequencer learned it. (One that died
    /// before the queue heard of the commit makes the draft come
    /// redelivered.)
    fn maybe_earlier(&self, draft: &Draft) -> bool {
        self.chats
            .get(&draft.chat_id)
            .is_none_or(|chat| draft.created_at < chat.known_since + clock_slack())
    }

    /// A lookup that sending can do without: answered quickly or skipped,
    /// and skipped altogether for a while after the database failed one.
    async fn optional<T>(
        &mut self,
        lookup: impl Future<Output = Result<T, StoreError>>,
    ) -> Option<T> {
        if self.database_seems_away() {
            return None;
        }
        match tokio::time::timeout(OPTIONAL_PATIENCE, lookup).await {
            Ok(Ok(found)) => Some(found),
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "lookup skipped: the database is away");
                self.database_away_until = Some(Instant::now() + AWAY_PAUSE);
                None
            }
            Err(_) => {
                tracing::debug!("lookup skipped: the database is slow to answer");
                self.database_away_until = Some(Instant::now() + AWAY_PAUSE);
                None
            }
        }
    }

    /// A lookup sending needs: its answer, or `TimedOut` after
    /// `REQUIRED_PATIENCE` (then, for a while, optional lookups are skipped
    /// and required ones fail at once).
    async fn required<T>(
        &mut self,
        lookup: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if self
            .database_gone_until
            .is_some_and(|until| Instant::now() < until)
        {
            return Err(StoreError::TimedOut);
        }
        match tokio::time::timeout(REQUIRED_PATIENCE, lookup).await {
            Ok(answer) => answer,
            Err(_) => {
                tracing::warn!("the database did not answer a lookup in time");
                let until = Instant::now() + AWAY_PAUSE;
                self.database_away_until = Some(until);
                self.database_gone_until = Some(until);
                Err(StoreError::TimedOut)
            }
        }
    }

    /// As after a lookup the database did not answer in time: for
    /// `AWAY_PAUSE`, lookups fail at once or are skipped.
    #[cfg(test)]
    pub(super) fn database_gone_for_a_while(&mut self) {
        let until = Instant::now() + AWAY_PAUSE;
        self.database_away_until = Some(until);
        self.database_gone_until = Some(until);
    }

    /// Whether a lookup failed lately (optional ones are skipped then).
    fn database_seems_away(&self) -> bool {
        self.database_away_until
            .is_some_and(|until| Instant::now() < until)
    }

    /// The chat's members, loading the chat when it is new here.
    async fn members_of(
        &mut self,
        chat_id: &str,
    ) -> Result<Result<Arc<[String]>, Refusal>, StoreError> {
        if !self.chats.contains_key(chat_id) {
            let store = self.store.clone();
            let last_seq = match self.required(store.last_seq(chat_id)).await {
                Ok(Some(last_seq)) => last_seq,
                // An id no chat can have (PostgreSQL refuses to compare a
                // NUL): no such chat, for good, not a database to wait for.
                Ok(None) | Err(StoreError::Invalid(_)) => return Ok(Err(Refusal::NoSuchChat)),
                Err(err) => return Err(err),
            };
            self.chats.insert(
                chat_id.to_owned(),
                ChatState {
                    last_seq,
                    members: None,
                    known_since: Utc::now(),
                },
            );
        }
        let Some(chat) = self.chats.get_mut(chat_id) else {
            return Ok(Err(Refusal::NoSuchChat));
        };
        if chat.members.is_none() {
            let store = self.store.clone();
            let members: Arc<[String]> = self.required(store.members(chat_id)).await?.into();
            if let Some(chat) = self.chats.get_mut(chat_id) {
                chat.members = Some(members.clone());
            }
            return Ok(Ok(members));
        }
        Ok(Ok(chat.members.clone().unwrap_or_else(|| Arc::new([]))))
    }

    async fn sender(&mut self, user_id: &str) -> Result<Option<User>, StoreError> {
        if let Some(user) = self.senders.get(user_id) {
            return Ok(Some(user.clone()));
        }
        let store = self.store.clone();
        let user = self.required(store.user(user_id)).await?;
        if let Some(user) = &user {
            self.senders.insert(user_id.to_owned(), user.clone());
        }
        Ok(user)
    }

    /// Hands the message to this node's sockets now, and keeps it for the
    /// other nodes until `flush`.
    fn deliver(&mut self, message: &Message, members: &Arc<[String]>) {
        self.events
            .deliver_here(members, encode_message(message), &mut self.for_other_nodes);
    }

    /// Tells the other nodes of what was delivered since the last flush, in
    /// one message; call it after each batch of drafts. Batches reach them
    /// in order, also across a reconnecting link (`AmqpFanout`).
    pub fn flush(&mut self) {
        let events = std::mem::take(&mut self.for_other_nodes);
        self.events.tell_others(&events);
    }
}

/// Stores a batch in one transaction.
pub async fn store_batch(store: &dyn Store, batch: &[Arc<Message>]) -> Result<(), StoreError> {
    let stored = store.store_messages(batch).await?;
    if !stored.seq_taken.is_empty() {
        tracing::error!(
            ids = ?stored.seq_taken,
            "messages delivered under a seq their chat had given to another message were not stored: a bug in giving out seqs"
        );
    }
    if stored.new + (stored.seq_taken.len() as u64) < batch.len() as u64 {
        tracing::debug!(
            batch = batch.len(),
            new = stored.new,
            "part of the batch was stored before (a redelivery)"
        );
    }
    Ok(())
}

/// The client id to look for in the database: none for a first try (its
/// sender says it never sent that id before; a copy sent moments ago is
/// still recognised from memory).
fn resent_client_id(draft: &Draft) -> Option<&str> {
    draft.client_id.as_deref().filter(|_| !draft.first_try)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::realtime::Hub;
    use crate::store::{NewUser, SqliteStore};

    pub(in crate::pipeline) fn draft(id: &str, chat_id: &str, sender_id: &str) -> Draft {
        Draft {
            id: id.into(),
            chat_id: chat_id.into(),
            sender_id: sender_id.into(),
            content: id.into(),
            client_id: None,
            first_try: false,
            created_at: Utc::now(),
        }
    }

    fn seq_of(sequenced: Sequenced) -> i64 {
        match sequenced {
            Sequenced::New(message) | Sequenced::Duplicate(message) => message.seq,
        }
    }

    /// A lookup the database does not answer is given up after
    /// `REQUIRED_PATIENCE`. For `AWAY_PAUSE` after, a required lookup
    /// fails at once (the next would hold the partition as long) and an
    /// optional one is skipped, neither asked; then both are asked again.
    #[tokio::test]
    async fn after_a_lookup_times_out_lookups_are_not_asked_for_a_while() {
        let (_dir, store, _) = store_with_chats(0).await;
        let events = Arc::new(Events::local(Arc::new(Hub::new())));
        let mut sequencer = Sequencer::new(store, events);
        tokio::time::pause();
        let started = Instant::now();
        let unanswered = std::future::pending::<Result<i64, StoreError>>();
        let gave_up = sequencer.required(unanswered).await;
        assert!(matches!(gave_up, Err(StoreError::TimedOut)));
        // Paused time moves in whole milliseconds past a timer's deadline.
        let waited = started.elapsed();
        assert!(
            waited >= REQUIRED_PATIENCE && waited <= REQUIRED_PATIENCE + Duration::from_millis(1),
            "{waited:?}"
        );

        let asked = std::sync::atomic::AtomicUsize::new(0);
        let lookup = || async {
            asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok::<i64, StoreError>(7)
        };
        tokio::time::advance(AWAY_PAUSE - Duration::from_millis(1)).await;
        assert!(matches!(
            sequencer.required(lookup()).await,
            Err(StoreError::TimedOut)
        ));
        assert_eq!(sequencer.optional(lookup()).await, None);
        assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 0);

        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(sequencer.required(lookup()).await.ok(), Some(7));
        assert_eq!(sequencer.optional(lookup()).await, Some(7));
        assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 2);
    }

    /// Past its limit of chats, a sequencer under steady load (a message
    /// always waiting) still forgets: all but the chats of what waits, whose
    /// seqs the database does not have yet, and which go on from them.
    #[tokio::test]
    async fn memory_is_bounded_while_messages_keep_waiting() {
        let (_dir, store, chats) = store_with_chats(3).await;
        let events = Arc::new(Events::local(Arc::new(Hub::new())));
        let mut sequencer = Sequencer::new(store.clone(), events);
        sequencer.chats_remembered = 2;
        for chat in &chats {
            let first = draft(&format!("{chat}-1"), chat, "ann");
            let sent = sequencer.sequence(&first, false).await;
            assert_eq!(seq_of(sent.expect("db").expect("sequenced")), 1);
        }
        let batch = sequencer.take_batch();
        let waiting = draft("waits", &chats[0], "ann");
        let sent = sequencer.sequence(&waiting, false).await;
        assert_eq!(seq_of(sent.expect("db").expect("sequenced")), 2);
        store_batch(store.as_ref(), &batch).await.expect("stored");
        sequencer.stored();
        assert_eq!(sequencer.chats.len(), 1, "only the chat of what waits");
        assert!(
            sequencer.memory.recall(&waiting).is_some(),
            "what waits stays known"
        );
        for (chat, seq) in [(&chats[0], 3), (&chats[1], 2)] {
            let next = draft(&format!("{chat}-next"), chat, "ann");
            let sent = sequencer.sequence(&next, false).await;
            assert_eq!(seq_of(sent.expect("db").expect("sequenced")), seq);
        }
    }

    /// More messages wait to be stored than memory's limit (a database
    /// that takes no commits for a while): a retry of the oldest waiting is
    /// still recognised, not sequenced again (the database cannot answer
    /// for it yet, and both copies would be stored).
    #[tokio::test]
    async fn a_retry_of_a_message_still_waiting_is_recognised_past_the_memory_limit() {
        let (_dir, store, chats) = store_with_chats(1).await;
        let events = Arc::new(Events::local(Arc::new(Hub::new())));
        let mut sequencer = Sequencer::new(store, events);
        sequencer.memory = Memory::new(2);
        let first = Draft {
            client_id: Some("k".into()),
            ..draft("m1", &chats[0], "ann")
        };
        let sent = sequencer.sequence(&first, false).await;
        assert_eq!(seq_of(sent.expect("db").expect("sequenced")), 1);
        for id in ["m2", "m3", "m4"] {
            let sent = sequencer
                .sequence(&draft(id, &chats[0], "ann"), false)
                .await;
            assert!(matches!(sent, Ok(Ok(Sequenced::New(_)))));
        }
        let retry = Draft {
            client_id: Some("k".into()),
            ..draft("m1-again", &chats[0], "ann")
        };
        let again = sequencer.sequence(&retry, false).await;
        assert!(
            matches!(&again, Ok(Ok(Sequenced::Duplicate(message))) if message.id == "m1"),
            "{again:?}"
        );
        // Once they are stored, the limit holds again (with the one that
        // waits now).
        sequencer.take_batch();
        sequencer.stored();
        sequencer
            .sequence(&draft("m5", &chats[0], "ann"), false)
            .await
            .expect("db")
            .expect("sequenced");
        assert_eq!(sequencer.memory.len(), 2 + 1);
    }

    /// A store (in the folder returned) with user ann and `n` direct chats
    /// of hers.
    pub(in crate::pipeline) async fn store_with_chats(
        n: usize,
    ) -> (tempfile::TempDir, Arc<dyn Store>, Vec<String>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.expect("store"));
        let mut chats = Vec::new();
        for i in 0..=n {
            let name = if i == 0 {
                "ann".to_owned()
            } else {
                format!("u{i}")
            };
            store
                .create_user(NewUser {
                    id: name.clone(),
                    name: name.clone(),
                    email: format!("{name}@example.org"),
                    password_hash: "unused".into(),
                    pic: None,
                })
                .await
                .expect("user");
            if i > 0 {
                let (chat, _) = store
                    .open_direct_chat(&format!("c{i}"), "ann", &name)
                    .await
                    .expect("chat");
                chats.push(chat.id);
            }
        }
        (dir, store, chats)
    }

    /// The sequencer before this one (it lost the queue with a commit on
    /// its way) stores seqs 2 and 3 after this one learned the chat at 1.
    /// Their drafts, redelivered, are found stored; the next new message
    /// takes seq 4, not one of theirs (its insert would be skipped, and the
    /// message lost, under a seq apps hold for another).
    #[tokio::test]
    async fn a_late_commit_of_the_sequencer_before_moves_the_seqs_past_it() {
        let (_dir, store, chats) = store_with_chats(1).await;
        let chat = &chats[0];
        let ann = store.user("ann").await.expect("db").expect("ann");
        let events = Arc::new(Events::local(Arc::new(Hub::new())));
        let mut sequencer = Sequencer::new(store.clone(), events);

        let one = draft("m1", chat, "ann");
        let first = sequencer.sequence(&one, false).await.expect("db");
        assert_eq!(seq_of(first.expect("sequenced")), 1);
        let late: Vec<Arc<Message>> = [("m2", 2), ("m3", 3)]
            .into_iter()
            .map(|(id, seq)| {
                Arc::new(Message {
                    id: id.into(),
                    chat_id: chat.clone(),
                    seq,
                    sender: ann.clone(),
                    content: id.into(),
                    client_id: None,
                    created_at: Utc::now(),
                })
            })
            .collect();
        store.store_messages(&late).await.expect("stored late");

        for (id, seq) in [("m2", 2), ("m3", 3)] {
            let again = sequencer
                .sequence(&draft(id, chat, "ann"), true)
                .await
                .expect("db")
                .expect("sequenced");
            assert!(matches!(again, Sequenced::Duplicate(_)));
            assert_eq!(seq_of(again), seq);
        }
        let next = sequencer
            .sequence(&draft("m4", chat, "ann"), false)
            .await
            .expect("db")
            .expect("sequenced");
        assert_eq!(seq_of(next), 4);
    }
}
