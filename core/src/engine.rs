//! The engine: everything the desktop app does but drawing. The shell calls
//! its methods for what the user does and forwards its events to the UI.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use natter_shared::api::AuthResponse;
use natter_shared::limits::{CONTENT_MAX_CHARS, PAGE_DEFAULT};
use natter_shared::{Chat, ClientFrame, User};
use tokio::sync::{RwLock, broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::api::{Page, ServerApi, SignUp};
use crate::backoff::Backoff;
use crate::cache::{Cache, NO_LONGER_A_MEMBER, Outgoing};
use crate::connection;
use crate::context::{Arrival, Context, lock};
use crate::error::{CoreError, CoreResult};
use crate::notices::Notices;
use crate::server_url::ServerUrl;
use crate::session::{Files, Session, Settings};
use crate::tls::Trust;
use crate::typing::{TYPING_REFRESH, Typing};
use crate::views::{
    ChatList, ChatListVersions, ChatSummary, ConnectionState, Event, MessageView, View,
};

/// How the engine behaves; the defaults suit the app, tests shorten waits.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub backoff: Backoff,
    /// Which `https` servers to trust (the system's roots by default).
    pub trust: Trust,
    /// How long opening the socket (TCP, TLS and the upgrade) may take
    /// before the attempt counts as failed and is made again (15 s).
    pub connect_timeout: std::time::Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            backoff: Backoff::default(),
            trust: Trust::default(),
            connect_timeout: std::time::Duration::from_secs(15),
        }
    }
}

/// How long a logout's word to the server may take.
const LOGOUT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Cheap to clone: all clones are the same engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    files: Files,
    /// Holds the data folder for this process (`Files::claim`).
    _claim: std::fs::File,
    options: EngineOptions,
    events: broadcast::Sender<Event>,
    settings: Mutex<Settings>,
    view: Arc<Mutex<View>>,
    list_versions: ChatListVersions,
    live: RwLock<Option<Live>>,
    /// Drafts asked for and not yet written, the newest per chat
    /// (`set_draft`).
    drafts_asked: Mutex<HashMap<String, String>>,
    /// One draft written at a time.
    draft_writes: tokio::sync::Mutex<()>,
    /// Why the server ended the last session, until the next one starts
    /// (`session_ended`).
    ended_because: Mutex<Option<String>>,
    /// One login's session begun at a time (`begin`).
    beginning: tokio::sync::Mutex<()>,
}

/// A logged-in session's moving parts; dropping it stops its connection.
struct Live {
    ctx: Arc<Context>,
    to_socket: mpsc::UnboundedSender<ClientFrame>,
    task: JoinHandle<()>,
    /// Renews the token while the session lasts (`renewal`).
    renewal: JoinHandle<()>,
    /// When we last told the server "typing" per chat, to send it every
    /// few seconds rather than on every key.
    typing_sent: Mutex<HashMap<String, Instant>>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.task.abort();
        self.renewal.abort();
    }
}

impl Engine {
    /// Opens the app's data folder and, when a session was saved, resumes it
    /// at once from the cache while the socket connects in the background.
    pub async fn open(dir: impl Into<PathBuf>, options: EngineOptions) -> CoreResult<Self> {
        let files = Files::new(dir);
        let claim = files.claim()?;
        Self::open_claimed(files, claim, options).await
    }

    /// Like `open`, on a folder the caller has claimed already
    /// (`Files::claim`, held from before anything else it does at start),
    /// so that no other start can take it in between.
    pub async fn open_claimed(
        files: Files,
        claim: std::fs::File,
        options: EngineOptions,
    ) -> CoreResult<Self> {
        let (events, _) = broadcast::channel(1024);
        let engine = Engine {
            inner: Arc::new(Inner {
                settings: Mutex::new(files.settings()),
                _claim: claim,
                files,
                options,
                events,
                view: Arc::new(Mutex::new(View {
                    active_chat: None,
                    focused: true,
                })),
                list_versions: ChatListVersions::default(),
                live: RwLock::new(None),
                drafts_asked: Mutex::new(HashMap::new()),
                draft_writes: tokio::sync::Mutex::new(()),
                ended_because: Mutex::new(None),
                beginning: tokio::sync::Mutex::new(()),
            }),
        };
        // A saved session that cannot be resumed (its cache cannot be
        // opened: a full disk, a file in the way) leaves the app at the login
        // screen, which says why, rather than keep it from starting at all.
        // The session stays saved: the next start tries it again.
        if let Some(session) = engine.inner.files.session()
            && let Err(err) = engine.start(session).await
        {
            tracing::error!(error = %err, "resuming the saved session");
            *lock(&engine.inner.ended_because) =
                Some(format!("the saved login could not be resumed: {err}"));
        }
        Ok(engine)
    }

    /// Every change from now on. A receiver that falls more than 1024 events
    /// behind is told it lagged, and should reload what it shows.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    // ---- settings and session ----

    pub fn server_url(&self) -> ServerUrl {
        lock(&self.inner.settings).server_url.clone()
    }

    /// Sets the server for the next sign-up or login.
    pub fn set_server_url(&self, input: &str) -> CoreResult<ServerUrl> {
        let url = ServerUrl::parse(input)?;
        let mut settings = lock(&self.inner.settings);
        settings.server_url = url.clone();
        self.inner.files.save_settings(&settings)?;
        Ok(url)
    }

    /// Why the last session ended (the server ended it, or a saved one
    /// could not be resumed at start), when nobody has logged in since: the
    /// `SessionEnded` event may have gone out before a UI was listening (a
    /// token refused as the app starts, before its page has loaded), and
    /// the login screen should still say why it is there.
    pub fn session_ended(&self) -> Option<String> {
        lock(&self.inner.ended_because).clone()
    }

    /// The logged-in user, if any.
    pub async fn me(&self) -> Option<User> {
        self.inner
            .live
            .read()
            .await
            .as_ref()
            .map(|live| live.ctx.me.clone())
    }

    pub async fn sign_up(&self, form: SignUp) -> CoreResult<User> {
        let api = ServerApi::new(self.server_url(), None, &self.inner.options.trust)?;
        let auth = api.sign_up(&form).await?;
        self.begin(auth).await
    }

    pub async fn login(&self, email: &str, password: &str) -> CoreResult<User> {
        let api = ServerApi::new(self.server_url(), None, &self.inner.options.trust)?;
        let auth = api.login(email, password).await?;
        self.begin(auth).await
    }

    /// Ends the session: stops the socket, forgets the token and the
    /// cache, then tells the server, which refuses the session's tokens
    /// from then on (a copy of the token elsewhere is worth nothing). The
    /// server is told in the background, after the session has ended here
    /// (no socket or renewal left to hear the server end it, and no wait
    /// for the user); offline, or with a server that does not answer in
    /// `LOGOUT_PATIENCE`, its token lasts on the server until it expires.
    pub async fn logout(&self) -> CoreResult<()> {
        let api = self.ctx().await.ok().map(|ctx| ctx.api.clone());
        let ended = self.end(None, None).await;
        if let Some(api) = api {
            tokio::spawn(async move {
                if let Err(err) = api.logout(LOGOUT_PATIENCE).await {
                    tracing::warn!(error = %err, "the server did not hear the logout: its token lasts until it expires");
                }
            });
        }
        ended
    }

    /// Ends the current session, or only `session` when given (a session
    /// that ended by itself must not take a newer login with it). With a
    /// `reason`, the server ended it: the UI hears why (`SessionEnded`),
    /// if it was still the current one.
    async fn end(
        &self,
        session: Option<&std::sync::Weak<Context>>,
        reason: Option<String>,
    ) -> CoreResult<()> {
        // Held to the end, so nobody sees the session gone but its files there.
        let mut live = self.inner.live.write().await;
        let current = live.as_ref().map(|live| Arc::downgrade(&live.ctx));
        match (session, current) {
            (Some(wanted), Some(current)) if !wanted.ptr_eq(&current) => return Ok(()),
            (Some(_), None) => return Ok(()),
            _ => {}
        }
        let ended_by_server = reason.is_some();
        if let Some(reason) = reason
            && live.is_some()
        {
            *lock(&self.inner.ended_because) = Some(reason.clone());
            self.emit(Event::SessionEnded { reason });
        }
        // Drafts asked for and not written yet belong to the session ending.
        lock(&self.inner.drafts_asked).clear();
        let mut keep_cache = false;
        let user_id = match live.take() {
            Some(ended) => {
                ended.task.abort();
                ended.renewal.abort();
                if ended_by_server {
                    keep_cache = !self.keep_unsent(&ended.ctx.cache, &ended.ctx.me.id).await;
                } else if let Err(err) = self.inner.files.forget_unsent(&ended.ctx.me.id) {
                    tracing::warn!(error = %err, "forgetting the messages a session ended unsent");
                }
                ended.ctx.cache.close().await;
                Some(ended.ctx.me.id.clone())
            }
            None => None,
        };
        // The session is over here whether or not its files go: the UI
        // hears so either way, and the error says what is left on disk.
        // A cache whose unsent messages could not be set aside stays, with
        // them in its outbox, for its user's next login here.
        let forgotten = self
            .inner
            .files
            .forget_session(user_id.as_deref().filter(|_| !keep_cache));
        drop(live);
        if user_id.is_some() {
            self.emit(Event::SignedOut);
        }
        self.emit(Event::Connection {
            state: ConnectionState::Offline,
        });
        self.emit(Event::Chats(ChatList::empty(
            self.inner.list_versions.next(),
        )));
        forgotten
    }

    /// Keeps what a session of `user_id` (its `cache`), ended by the server,
    /// had not sent, for its user's next login (`Files::keep_unsent`); what
    /// the server refused for good was reported already, and goes. False
    /// when they could not be set aside (a full disk): the cache must stay
    /// then.
    async fn keep_unsent(&self, cache: &Cache, user_id: &str) -> bool {
        let unsent: Vec<Outgoing> = match cache.to_send().await {
            Ok(unsent) => unsent,
            Err(err) => {
                tracing::warn!(error = %err, "reading the outbox of a session the server ended: the cache stays");
                return false;
            }
        };
        if unsent.is_empty() {
            return true;
        }
        match self.inner.files.keep_unsent(user_id, &unsent) {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(error = %err, "setting aside the messages a session ended unsent: the cache stays, with them");
                false
            }
        }
    }

    /// Deletes the caches other users' ended sessions left here (`end`:
    /// their unsent messages could not be set aside then), setting those
    /// messages aside now: nothing of theirs stays readable while someone
    /// else uses the app, and their messages still go at their next login
    /// here. One whose messages still cannot be set aside stays.
    async fn forget_others_caches(&self, user_id: &str) {
        for other in self.inner.files.others_with_a_cache(user_id) {
            let path = self.inner.files.cache(&other);
            // Side files alone, or a cache set aside as unreadable: nothing
            // to set aside from.
            if !path.exists() {
                if let Err(err) = self.inner.files.forget_cache(&other) {
                    tracing::warn!(error = %err, "deleting what is left of another user's cache");
                }
                continue;
            }
            let cache = match Cache::open(&path).await {
                Ok(cache) => cache,
                Err(err) => {
                    tracing::warn!(error = %err, "opening a cache another user's session left: it stays");
                    continue;
                }
            };
            let kept = self.keep_unsent(&cache, &other).await;
            cache.close().await;
            if kept && let Err(err) = self.inner.files.forget_cache(&other) {
                tracing::warn!(error = %err, "deleting a cache another user's session left");
            }
        }
    }

    /// Puts back in the outbox what an ended session of this user had not
    /// sent (`keep_unsent`): the link sends it as resends (it may have left
    /// before, and the server then finds the copy). A failure leaves them
    /// kept for the next start, and does not keep this one from starting.
    async fn restore_unsent(&self, cache: &Cache, user_id: &str) {
        let unsent = self.inner.files.unsent(user_id);
        if unsent.is_empty() {
            return;
        }
        for outgoing in &unsent {
            if let Err(err) = cache.restore_outgoing(outgoing).await {
                tracing::warn!(error = %err, "putting back a message an ended session had not sent");
                return;
            }
        }
        if let Err(err) = self.inner.files.forget_unsent(user_id) {
            tracing::warn!(error = %err, "forgetting the messages put back in the outbox");
        }
    }

    async fn begin(&self, auth: AuthResponse) -> CoreResult<User> {
        // One at a time: a second login meanwhile (a sign-up and a login
        // answered together) would start beside this one, and take this
        // one's cache for another user's left behind (`start`).
        let _beginning = self.inner.beginning.lock().await;
        let previous = self.me().await;
        if previous.is_some() {
            self.logout().await?;
        }
        // Those a session before kept, should its logout have failed to
        // delete them (or the app stopped before it could).
        self.inner.files.forget_pics();
        let session = Session {
            server_url: self.server_url(),
            token: auth.token,
            user: auth.user.clone(),
        };
        self.inner.files.save_session(&session)?;
        self.start(session).await?;
        Ok(auth.user)
    }

    async fn start(&self, session: Session) -> CoreResult<()> {
        let api = ServerApi::new(
            session.server_url.clone(),
            Some(session.token.clone()),
            &self.inner.options.trust,
        )?;
        let cache = Cache::open_or_start_over(&self.inner.files.cache(&session.user.id)).await?;
        // A start that fails from here leaves nothing open behind it.
        if let Err(err) = cache.put_users(std::slice::from_ref(&session.user)).await {
            cache.close().await;
            return Err(err);
        }
        self.restore_unsent(&cache, &session.user.id).await;
        self.forget_others_caches(&session.user.id).await;
        *lock(&self.inner.ended_because) = None;
        let ctx = Arc::new(Context {
            me: session.user.clone(),
            cache,
            api,
            events: self.inner.events.clone(),
            view: self.inner.view.clone(),
            list_versions: self.inner.list_versions.clone(),
            typing: Mutex::new(Typing::default()),
            notices: Mutex::new(Notices::default()),
            state: Mutex::new(ConnectionState::Offline),
            behind: Mutex::new(HashSet::new()),
            backoff: self.inner.options.backoff,
            connect_timeout: self.inner.options.connect_timeout,
        });
        let (to_socket, from_engine) = mpsc::unbounded_channel();
        let weak = Arc::downgrade(&self.inner);
        let this_session = Arc::downgrade(&ctx);
        let run = connection::run(ctx.clone(), from_engine);
        let renewing = keep_token_good(weak.clone(), this_session.clone());
        let task = tokio::spawn(async move {
            let reason = run.await;
            // It ends by itself only when the server refused the session: log
            // out, from a task of its own, since logging out stops this one.
            if let Some(inner) = weak.upgrade() {
                tokio::spawn(async move {
                    let engine = Engine { inner };
                    if let Err(err) = engine.end(Some(&this_session), reason).await {
                        tracing::warn!(error = %err, "logging out after the session ended");
                    }
                });
            }
        });
        // Spawned under the lock its saves take: it cannot find the
        // session not yet current (and end) before it is.
        let mut live = self.inner.live.write().await;
        let renewal = tokio::spawn(renewing);
        *live = Some(Live {
            ctx,
            to_socket,
            task,
            renewal,
            typing_sent: Mutex::new(Default::default()),
        });
        Ok(())
    }

    /// The session's shared parts, or `NotLoggedIn`.
    async fn ctx(&self) -> CoreResult<Arc<Context>> {
        self.inner
            .live
            .read()
            .await
            .as_ref()
            .map(|live| live.ctx.clone())
            .ok_or(CoreError::NotLoggedIn)
    }

    fn emit(&self, event: Event) {
        let _ = self.inner.events.send(event);
    }

    /// Passes a server answer to a request of the session `ctx` through,
    /// ending that session when the server says its token is no longer
    /// good: that one only, not a newer login (a late answer to a request
    /// of a session logged out since must not end the next).
    async fn checked<T>(&self, ctx: &Arc<Context>, result: CoreResult<T>) -> CoreResult<T> {
        if let Err(err) = &result
            && err.is_unauthorized()
        {
            // The server refuses the token already: nothing to tell it.
            self.end(Some(&Arc::downgrade(ctx)), Some(err.to_string()))
                .await?;
        }
        result
    }

    pub async fn connection_state(&self) -> ConnectionState {
        match self.ctx().await {
            Ok(ctx) => ctx.state(),
            Err(_) => ConnectionState::Offline,
        }
    }

    // ---- what the user looks at ----

    /// The chat on screen (or none): its messages do not count as unread
    /// or notify while the window has focus. Like `set_focused`, the view
    /// changes here, at the call, and the returned future marks the chat
    /// read: the UI's invokes may run as tasks in any order, and opening
    /// one chat then another must leave the second on screen.
    pub fn set_active_chat(
        &self,
        chat_id: Option<String>,
    ) -> impl Future<Output = CoreResult<()>> + Send + 'static {
        let focused = {
            let mut view = lock(&self.inner.view);
            view.active_chat = chat_id.clone();
            view.focused
        };
        let engine = self.clone();
        async move {
            if let (Some(chat_id), true) = (chat_id, focused) {
                engine.mark_read(&chat_id).await?;
            }
            Ok(())
        }
    }

    /// The window gained or lost focus. The view changes here, at the
    /// call, not when the returned future runs: the shell spawns one per
    /// window event, and spawned tasks may run out of order (a quick blur
    /// and focus must leave the window focused). The future reads the
    /// active chat when focus came back.
    pub fn set_focused(
        &self,
        focused: bool,
    ) -> impl Future<Output = CoreResult<()>> + Send + 'static {
        let active = {
            let mut view = lock(&self.inner.view);
            view.focused = focused;
            view.active_chat.clone()
        };
        let engine = self.clone();
        async move {
            if let (Some(chat_id), true) = (active, focused) {
                engine.mark_read(&chat_id).await?;
            }
            Ok(())
        }
    }

    async fn mark_read(&self, chat_id: &str) -> CoreResult<()> {
        let Ok(ctx) = self.ctx().await else {
            return Ok(());
        };
        if ctx.mark_read(chat_id).await? {
            ctx.emit_chats().await?;
        }
        Ok(())
    }

    // ---- chats ----

    /// The chat list from the cache, most recent first, with the unread total.
    pub async fn chats(&self) -> CoreResult<ChatList> {
        self.ctx().await?.chat_list().await
    }

    /// How many messages the user wrote that have not reached the server
    /// yet: a logout deletes them with the cache, so the app asks first.
    pub async fn unsent(&self) -> CoreResult<usize> {
        Ok(self.ctx().await?.cache.to_send().await?.len())
    }

    pub async fn chat(&self, chat_id: &str) -> CoreResult<ChatSummary> {
        let ctx = self.ctx().await?;
        let (chat, unread) = ctx
            .cache
            .chat(chat_id)
            .await?
            .ok_or_else(|| CoreError::Invalid("no such chat".into()))?;
        Ok(ChatSummary::new(&chat, unread, &ctx.me.id))
    }

    pub async fn unread_total(&self) -> CoreResult<u32> {
        self.ctx().await?.cache.unread_total().await
    }

    pub async fn search_users(&self, query: &str) -> CoreResult<Vec<User>> {
        let ctx = self.ctx().await?;
        self.checked(&ctx, ctx.api.search_users(query).await).await
    }

    pub async fn user(&self, user_id: &str) -> CoreResult<User> {
        let ctx = self.ctx().await?;
        if let Some(user) = ctx.cache.user(user_id).await? {
            return Ok(user);
        }
        self.checked(&ctx, ctx.api.user(user_id).await).await
    }

    /// Opens (creating once) the 1:1 chat with a user.
    pub async fn open_direct(&self, user_id: &str) -> CoreResult<ChatSummary> {
        let ctx = self.ctx().await?;
        let chat = self
            .checked(&ctx, ctx.api.open_direct(user_id).await)
            .await?;
        self.chat_result(&ctx, chat).await
    }

    pub async fn create_group(&self, name: &str, members: &[String]) -> CoreResult<ChatSummary> {
        let ctx = self.ctx().await?;
        let chat = self
            .checked(&ctx, ctx.api.create_group(name, members).await)
            .await?;
        self.chat_result(&ctx, chat).await
    }

    pub async fn rename_group(&self, chat_id: &str, name: &str) -> CoreResult<ChatSummary> {
        let ctx = self.ctx().await?;
        let chat = self
            .checked(&ctx, ctx.api.rename_group(chat_id, name).await)
            .await?;
        self.chat_result(&ctx, chat).await
    }

    pub async fn add_member(&self, chat_id: &str, user_id: &str) -> CoreResult<ChatSummary> {
        let ctx = self.ctx().await?;
        let chat = self
            .checked(&ctx, ctx.api.add_member(chat_id, user_id).await)
            .await?;
        self.chat_result(&ctx, chat).await
    }

    pub async fn remove_member(&self, chat_id: &str, user_id: &str) -> CoreResult<ChatSummary> {
        let ctx = self.ctx().await?;
        let chat = self
            .checked(&ctx, ctx.api.remove_member(chat_id, user_id).await)
            .await?;
        self.chat_result(&ctx, chat).await
    }

    /// Leaves a group: it stays, readable, until deleted (`delete_chat`).
    pub async fn leave_group(&self, chat_id: &str) -> CoreResult<()> {
        let ctx = self.ctx().await?;
        let chat = self
            .checked(&ctx, ctx.api.remove_member(chat_id, &ctx.me.id).await)
            .await?;
        ctx.chat_changed(&chat).await
    }

    /// Deletes a chat the user is no longer in, with its messages, from
    /// this device. One they are in would come back with the next
    /// catch-up: it is refused.
    pub async fn delete_chat(&self, chat_id: &str) -> CoreResult<()> {
        let ctx = self.ctx().await?;
        match ctx.cache.chat(chat_id).await? {
            None => return Err(CoreError::Invalid("no such chat".into())),
            Some((chat, _)) if chat.has_member(&ctx.me.id) => {
                return Err(CoreError::Invalid(
                    "only a chat you are no longer in can be deleted".into(),
                ));
            }
            Some(_) => {}
        }
        ctx.cache.forget_chat(chat_id).await?;
        ctx.emit_chats().await
    }

    async fn chat_result(&self, ctx: &Context, chat: Chat) -> CoreResult<ChatSummary> {
        ctx.chat_changed(&chat).await?;
        let unread = ctx
            .cache
            .chat(&chat.id)
            .await?
            .map_or(0, |(_, unread)| unread);
        Ok(ChatSummary::new(&chat, unread, &ctx.me.id))
    }

    // ---- messages ----

    /// A page of a chat's history, oldest first: the newest messages (and,
    /// after them, those still in the outbox) when `before` is `None`, else
    /// the ones before that seq. Served from the cache; older pages the
    /// cache lacks are fetched when the server answers.
    pub async fn history(
        &self,
        chat_id: &str,
        before: Option<i64>,
    ) -> CoreResult<Vec<MessageView>> {
        let ctx = self.ctx().await?;
        let limit = PAGE_DEFAULT;
        let mut messages = ctx.cache.messages(chat_id, before, limit).await?;
        let mut failed = None;
        if messages.len() < limit as usize
            && let Some(page) = self.missing_page(&ctx, chat_id).await?
        {
            let fetched = ctx.api.messages(chat_id, page, limit).await;
            match self.checked(&ctx, fetched).await {
                Ok(page) => {
                    for message in &page {
                        ctx.receive(message, Arrival::Backfill).await?;
                    }
                    messages = ctx.cache.messages(chat_id, before, limit).await?;
                }
                // Offline: what the cache has is what there is.
                Err(CoreError::Unreachable { .. }) => {}
                // The server failing for now (a proxy's 502 while it
                // restarts, a 503 while its database is away), or something
                // in front of it answering in its place (a captive portal's
                // page): a chat being opened shows what the cache has rather
                // than only the error; an older page says why it did not
                // come. A refusal (403, 404) is the server's word, and said.
                Err(err @ CoreError::Server { status, .. })
                    if status >= 500 && before.is_none() =>
                {
                    failed = Some(err);
                }
                Err(err @ CoreError::Protocol(_)) if before.is_none() => failed = Some(err),
                Err(err) => return Err(err),
            }
        }
        // The outbox shows under the newest page only, read after the
        // messages: one of ours stored while the page was on its way is
        // among them then, and not shown twice. So do ours stored but set
        // aside (their chat behind), above the rest.
        let (aside, unsent) = match before {
            None => (
                ctx.cache.stored_aside(chat_id, &ctx.me.id).await?,
                ctx.cache.unsent(chat_id, &ctx.me.id).await?,
            ),
            Some(_) => (Vec::new(), Vec::new()),
        };
        if let Some(err) = failed
            && messages.is_empty()
            && aside.is_empty()
            && unsent.is_empty()
        {
            return Err(err);
        }
        let mut views: Vec<MessageView> = messages
            .iter()
            .chain(&aside)
            .map(|message| MessageView::sent(message, &ctx.me.id))
            .collect();
        for outgoing in &unsent {
            views.push(MessageView::outgoing(outgoing, &ctx.me));
        }
        Ok(views)
    }

    /// Which page to ask the server for when the cache runs short, if any:
    /// the cache holds one contiguous run of seqs per chat, so it is the one
    /// just below the lowest cached seq, down to seq 1.
    /// A chat the user is no longer in has none: the server no longer
    /// gives its history, and what the cache holds is what there is.
    async fn missing_page(&self, ctx: &Context, chat_id: &str) -> CoreResult<Option<Page>> {
        let Some((chat, _)) = ctx.cache.chat(chat_id).await? else {
            return Ok(None);
        };
        if !chat.has_member(&ctx.me.id) {
            return Ok(None);
        }
        Ok(match ctx.cache.min_seq(chat_id).await? {
            Some(lowest) if lowest > 1 => Some(Page::Before(lowest)),
            Some(_) => None,
            None => chat.latest_message.is_some().then_some(Page::Newest),
        })
    }

    /// Sends a message: it goes to the outbox on disk first and shows as
    /// pending; the connection sends it now or as soon as it is back, and
    /// the server's ack turns it into a sent message, exactly once. Blank
    /// lines and spaces around the text are left out, as other messengers do.
    pub async fn send(&self, chat_id: &str, content: &str) -> CoreResult<MessageView> {
        let content = content.trim();
        if content.is_empty() {
            return Err(CoreError::Invalid("a message cannot be empty".into()));
        }
        let chars = content.chars().count();
        if chars > CONTENT_MAX_CHARS {
            return Err(CoreError::Invalid(format!(
                "a message can have at most {CONTENT_MAX_CHARS} characters (this one has {chars})"
            )));
        }
        let live = self.inner.live.read().await;
        let live = live.as_ref().ok_or(CoreError::NotLoggedIn)?;
        match live.ctx.cache.chat(chat_id).await? {
            None => return Err(CoreError::Invalid("no such chat".into())),
            Some((chat, _)) if !chat.has_member(&live.ctx.me.id) => {
                return Err(CoreError::Invalid(NO_LONGER_A_MEMBER.into()));
            }
            Some(_) => {}
        }
        let outgoing = Outgoing {
            client_id: uuid::Uuid::new_v4().to_string(),
            chat_id: chat_id.to_owned(),
            content: content.to_owned(),
            created_at: Utc::now(),
            error: None,
        };
        live.ctx.cache.push_outgoing(&outgoing).await?;
        let view = MessageView::outgoing(&outgoing, &live.ctx.me);
        live.ctx.emit(Event::Message {
            message: view.clone(),
        });
        lock(&live.typing_sent).remove(chat_id);
        // The list shows it as the chat's last message until it is stored.
        if let Err(err) = live.ctx.emit_chats().await {
            tracing::warn!(error = %err, "telling the chat list after a send");
        }
        // Offline, the connection drops this and sends the outbox when back
        // (as a resend). This frame is the only one that may carry a first
        // try: the client id was made above, and any other send of it goes
        // through the outbox, after which the connection drops this one.
        let _ = live.to_socket.send(ClientFrame::Send {
            chat_id: outgoing.chat_id,
            content: outgoing.content,
            client_id: outgoing.client_id,
            first_try: true,
        });
        Ok(view)
    }

    /// Keeps what the user is writing in a chat (call on every change; an
    /// empty text removes it), so that it is there after a restart. Like
    /// `set_active_chat`, the text is taken at the call and the returned
    /// future writes the newest text asked for the chat: the UI's invokes
    /// may run as tasks in any order, and what stays must be the last
    /// keystroke's text, not one before it. A chat the cache does not
    /// hold is refused.
    pub fn set_draft(
        &self,
        chat_id: String,
        text: String,
    ) -> impl Future<Output = CoreResult<()>> + Send + 'static {
        lock(&self.inner.drafts_asked).insert(chat_id.clone(), text);
        let engine = self.clone();
        async move { engine.write_draft(&chat_id).await }
    }

    async fn write_draft(&self, chat_id: &str) -> CoreResult<()> {
        let _one_at_a_time = self.inner.draft_writes.lock().await;
        let Some(text) = lock(&self.inner.drafts_asked).get(chat_id).cloned() else {
            // A later call's future wrote the newest already.
            return Ok(());
        };
        let kept = match self.ctx().await {
            Ok(ctx) => ctx.cache.set_draft(chat_id, &text).await,
            Err(err) => Err(err),
        };
        let mut asked = lock(&self.inner.drafts_asked);
        if asked.get(chat_id) == Some(&text) {
            asked.remove(chat_id);
        }
        match kept? {
            true => Ok(()),
            false => Err(CoreError::Invalid("no such chat".into())),
        }
    }

    /// Every chat's draft, by chat id.
    pub async fn drafts(&self) -> CoreResult<HashMap<String, String>> {
        self.ctx().await?.cache.drafts().await
    }

    /// Who is typing now, by chat (names, as `Event::Typing` tells them):
    /// for a UI that missed events to read again.
    pub async fn typists(&self) -> CoreResult<HashMap<String, Vec<String>>> {
        let ctx = self.ctx().await?;
        let chats = lock(&ctx.typing).chats();
        let mut typists = HashMap::with_capacity(chats.len());
        for chat_id in chats {
            let names = ctx.typist_names(&chat_id).await;
            // Stopped meanwhile.
            if !names.is_empty() {
                typists.insert(chat_id, names);
            }
        }
        Ok(typists)
    }

    /// Drops a message the server refused (or one still pending); the
    /// chat list no longer shows it.
    pub async fn discard(&self, client_id: &str) -> CoreResult<()> {
        let ctx = self.ctx().await?;
        ctx.cache.drop_outgoing(client_id).await?;
        // Gone already: a list that cannot be told now is told later.
        if let Err(err) = ctx.emit_chats().await {
            tracing::warn!(error = %err, "telling the chat list after a discard");
        }
        Ok(())
    }

    /// The user typed (`true`, call on every key) or stopped (`false`).
    /// The server hears "typing" at most every few seconds per chat.
    pub async fn typing(&self, chat_id: &str, is_typing: bool) -> CoreResult<()> {
        let live = self.inner.live.read().await;
        let live = live.as_ref().ok_or(CoreError::NotLoggedIn)?;
        let send = {
            let mut sent = lock(&live.typing_sent);
            if is_typing {
                let due = sent
                    .get(chat_id)
                    .is_none_or(|at| at.elapsed() >= TYPING_REFRESH);
                if due {
                    sent.insert(chat_id.to_owned(), Instant::now());
                }
                due
            } else {
                sent.remove(chat_id).is_some()
            }
        };
        if send {
            let _ = live.to_socket.send(ClientFrame::Typing {
                chat_id: chat_id.to_owned(),
                is_typing,
            });
        }
        Ok(())
    }

    /// A profile picture by its server path, with its content type; kept on
    /// disk so that avatars show offline too.
    pub async fn picture(&self, path: &str) -> CoreResult<(Vec<u8>, String)> {
        let ctx = self.ctx().await?;
        let key: String = path
            .trim_start_matches("/api/pic/")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let file = self.inner.files.pics().join(&key);
        if let Ok(bytes) = tokio::fs::read(&file).await
            && let Some(kind) = image_type(&bytes)
        {
            return Ok((bytes, kind.to_owned()));
        }
        let bytes = self.checked(&ctx, ctx.api.picture(path).await).await?;
        // What the server (or a portal or proxy on the way) answered is
        // kept and shown only as the image it is, whatever it was called.
        let kind = image_type(&bytes)
            .ok_or_else(|| CoreError::Protocol(format!("the picture {path} is not an image")))?;
        // Kept only while its session is the current one, which a logout
        // (taking `live` to write) waits for: written after it, the next
        // user here would find the last one's contacts' pictures.
        let live = self.inner.live.read().await;
        if !live
            .as_ref()
            .is_some_and(|live| Arc::ptr_eq(&live.ctx, &ctx))
        {
            return Ok((bytes, kind.to_owned()));
        }
        if let Some(dir) = file.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        // Written whole under a name of its own, then renamed: a crash, or
        // two requests for it at once, never leave a part of it to serve.
        let part = file.with_file_name(format!("{key}.{}.part", uuid::Uuid::new_v4()));
        let kept = match tokio::fs::write(&part, &bytes).await {
            Ok(()) => tokio::fs::rename(&part, &file).await,
            Err(err) => Err(err),
        };
        drop(live);
        if let Err(err) = kept {
            // A full disk, say: shown all the same, and fetched next time.
            tracing::warn!(error = %err, "keeping a picture");
            let _ = tokio::fs::remove_file(&part).await;
        }
        Ok((bytes, kind.to_owned()))
    }
}

/// The image types the server accepts, by their first bytes.
fn image_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG") {
        Some("image/png")
    } else if bytes.starts_with(b"\xFF\xD8\xFF") {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF8") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// Exchanges the session's token for a new one at half its life, for as
/// long as the session lasts (`renewal`); the session file takes each new
/// one under the engine's lock, so a logout never finds it written back.
/// A renewal the server refuses ends nothing here: the session ends when a
/// request or the socket is refused.
async fn keep_token_good(inner: std::sync::Weak<Inner>, session: std::sync::Weak<Context>) {
    let Some(first) = session.upgrade().and_then(|ctx| ctx.api.token()) else {
        return;
    };
    let Some(mut due) = crate::renewal::first_renewal(&first, Utc::now()) else {
        tracing::debug!("the session's token does not say when it expires: not renewed");
        return;
    };
    loop {
        // In naps checked against the wall clock: a suspended machine's
        // sleep does not count the time it was suspended.
        loop {
            let left = crate::renewal::wait_until(due, Utc::now());
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(left.min(crate::renewal::LONGEST_NAP)).await;
        }
        let Some(ctx) = session.upgrade() else { return };
        let token = ctx.api.token().unwrap_or_default();
        let auth = match ctx.api.renew_token().await {
            Ok(auth) => auth,
            Err(err) if err.is_unauthorized() => {
                tracing::info!(error = %err, "the server would not renew the session's token");
                return;
            }
            Err(err) => {
                let retry = match err {
                    CoreError::Server {
                        status: status @ (404 | 405),
                        ..
                    } => {
                        tracing::info!(
                            status,
                            "the server did not take the renewal (one without renewals ends the session with its token): trying again later"
                        );
                        crate::renewal::retry_not_taken_after(&token)
                    }
                    err => {
                        tracing::debug!(error = %err, "renewing the session's token: trying again later");
                        crate::renewal::retry_after(&token)
                    }
                };
                due = Utc::now()
                    + chrono::Duration::from_std(retry)
                        .unwrap_or_else(|_| chrono::Duration::hours(1));
                continue;
            }
        };
        let Some(inner) = inner.upgrade() else { return };
        let live = inner.live.read().await;
        let Some(live) = live.as_ref().filter(|live| Arc::ptr_eq(&live.ctx, &ctx)) else {
            return;
        };
        let renewed = Session {
            server_url: ctx.api.base().clone(),
            token: auth.token.clone(),
            user: ctx.me.clone(),
        };
        if let Err(err) = inner.files.save_session(&renewed) {
            // Kept in memory all the same: this run goes on with it.
            tracing::warn!(error = %err, "saving the renewed token");
        }
        let last = crate::renewal::at_session_end(&auth.token, &token);
        let next = crate::renewal::next_after_renewal(&auth.token, Utc::now());
        ctx.api.set_token(auth.token.clone());
        // The open socket (if any) then lives as long as the new token. Set
        // first: a socket that read the old token to connect gets this frame
        // once it is up (frames wait in the channel meanwhile), and one the
        // frame misses (dropped while waiting to reconnect) opens with the
        // new token.
        let _ = live
            .to_socket
            .send(ClientFrame::Token { token: auth.token });
        tracing::info!("renewed the session's token");
        if last {
            tracing::info!("the session has reached its longest: it ends with this token");
            return;
        }
        let Some(next) = next else { return };
        due = next;
    }
}
