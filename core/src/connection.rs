//! The session's one socket: connect, wait for `ready`, catch up, send the
//! outbox, then live; when the link drops, wait (backoff with jitter) and
//! do it all again. Runs as one task per session until logout.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use natter_shared::api::Chat;
use natter_shared::{ClientFrame, ServerFrame};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::api::Page;
use crate::behind::Behind;
use crate::cache::{ChatHeld, Outgoing, Stored};
use crate::context::{Arrival, Context, lock};
use crate::error::{CoreError, CoreResult};
use crate::resends::{Due, Resends};
use crate::views::{ConnectionState, Event, MessageView, Notification};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Catch-up reads history in pages this large.
const CATCH_UP_PAGE: u32 = 200;
/// A chat never seen before starts with its newest page.
const FIRST_PAGE: u32 = 50;
/// The server pings every 20 s by default; silence this long means the link is dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(60);
/// How many catch-ups in a row take every chat failing (500) for the
/// server's trouble and fail; later ones go online with the chats behind.
const ALL_FAILING_TRIES: u32 = 10;
/// How long `ready` may take after the upgrade.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// New messages change the chat list (order, preview, unread counts): it is
/// sent to the UI at most this often, the newest one. A burst (a busy group
/// after a while away) would otherwise read the list and re-render it once
/// per message.
const CHAT_LIST_EVERY: Duration = Duration::from_millis(50);

/// Why a connection ended.
enum Ended {
    /// The server refused the token: the session is over.
    Unauthorized(String),
    /// The link dropped after being online this long, or never came up
    /// (`attempt_after`).
    Dropped { online_for: Option<Duration> },
    /// The server turned the socket away (429): the account has as many
    /// open as it may. The next try waits at least `wait`, as it asked.
    Crowded { wait: Option<Duration> },
}

/// The longest wait a server's `Retry-After` gets: past it the app tries
/// anyway (a wrong or hostile header must not keep it away for days).
const MOST_WAIT_ASKED: Duration = Duration::from_secs(300);

/// What a refusal's `Retry-After` asks for, in seconds (the server's form;
/// an HTTP date is left to the backoff), at most `MOST_WAIT_ASKED`.
fn wait_asked(headers: &tungstenite::http::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(tungstenite::http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MOST_WAIT_ASKED))
}

/// How long a link must have been online for its drop to start the backoff
/// again: links to a node that drops its sockets soon after `ready` (its
/// broker link flapping, a crash loop) go on backing off, or every app would
/// reconnect, and catch up, every half second.
const STEADY: Duration = Duration::from_secs(10);

/// The attempt the next wait is for, after one that ended having been
/// online for `online_for`.
fn attempt_after(attempt: u32, online_for: Option<Duration>) -> u32 {
    match online_for {
        Some(online_for) if online_for >= STEADY => 0,
        _ => attempt,
    }
}

/// Runs until the task is aborted (logout) or the session ends; returns
/// why the server ended it (`None`: the engine is gone).
pub(crate) async fn run(
    ctx: Arc<Context>,
    mut outgoing: mpsc::UnboundedReceiver<ClientFrame>,
) -> Option<String> {
    // The backoff's count (`attempt_after`), and the links that failed
    // since the last one that came online, whose catch-ups may take every
    // chat failing for the server's trouble (`ALL_FAILING_TRIES`).
    let (mut attempt, mut since_online): (u32, u32) = (0, 0);
    let mut crowded = false;
    loop {
        // Turned away before, the app says so until a link comes up, not
        // "connecting" at every try.
        if !crowded {
            ctx.set_state(ConnectionState::Connecting);
        }
        // The token as it is now: renewed meanwhile, the new one.
        let token = ctx.api.token().unwrap_or_default();
        let ended = connect_and_serve(&ctx, &token, &mut outgoing, since_online).await;
        crowded = matches!(ended, Ended::Crowded { .. });
        ctx.set_state(if crowded {
            ConnectionState::Crowded
        } else {
            ConnectionState::Offline
        });
        clear_typing(&ctx).await;
        // Which chats are behind is the next catch-up's to say.
        if ctx.clear_behind()
            && let Err(err) = ctx.emit_chats().await
        {
            tracing::warn!(error = %err, "reading the chat list for the UI");
        }
        let mut wait = None;
        match ended {
            Ended::Unauthorized(reason) => {
                tracing::info!(%reason, "the server ended the session");
                return Some(reason);
            }
            Ended::Dropped { online_for } => {
                attempt = attempt_after(attempt, online_for);
                since_online = match online_for {
                    Some(_) => 0,
                    None => since_online.saturating_add(1),
                };
            }
            Ended::Crowded { wait: asked } => {
                tracing::info!(
                    ?asked,
                    "the server turned the socket away: this account has as many open as it may"
                );
                wait = asked;
            }
        }
        let delay = ctx
            .backoff
            .delay(attempt, &mut rand::rng())
            .max(wait.unwrap_or_default());
        attempt = attempt.saturating_add(1);
        tracing::debug!(?delay, attempt, "reconnecting after a pause");
        // Frames written meanwhile are dropped: sends wait in the outbox,
        // and typing is stale by the time we are back.
        let pause = tokio::time::sleep(delay);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                () = &mut pause => break,
                // None: the engine is gone.
                frame = outgoing.recv() => { frame?; }
            }
        }
    }
}

/// One link, `since_online` counting the failed ones since the last that
/// came online.
async fn connect_and_serve(
    ctx: &Context,
    token: &str,
    outgoing: &mut mpsc::UnboundedReceiver<ClientFrame>,
    since_online: u32,
) -> Ended {
    let url = format!("{}?token={token}", ctx.api.base().socket());
    let connector = match ctx.api.socket_connector() {
        Ok(connector) => connector,
        Err(err) => {
            tracing::warn!(error = %err, "cannot connect");
            return Ended::Dropped { online_for: None };
        }
    };
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(url.as_str(), None, false, connector);
    // A server or proxy that takes the connection and never answers (or a
    // network gone mid-handshake) would otherwise hold this attempt, and
    // the app "connecting", for as long as TCP takes to give up.
    let Ok(connected) = tokio::time::timeout(ctx.connect_timeout, connecting).await else {
        tracing::debug!("no answer to the socket's upgrade in time");
        return Ended::Dropped { online_for: None };
    };
    let mut socket = match connected {
        Ok((socket, _)) => socket,
        Err(tungstenite::Error::Http(response)) if response.status() == 401 => {
            return Ended::Unauthorized("the server no longer accepts this login".into());
        }
        Err(tungstenite::Error::Http(response)) if response.status() == 429 => {
            return Ended::Crowded {
                wait: wait_asked(response.headers()),
            };
        }
        Err(err) => {
            tracing::debug!(error = %err, "cannot connect");
            return Ended::Dropped { online_for: None };
        }
    };
    if let Err(err) = wait_ready(&mut socket).await {
        tracing::debug!(error = %err, "no ready frame");
        return Ended::Dropped { online_for: None };
    }
    // Everything from here on reaches this socket; what happened before is
    // fetched now. Live frames wait in the socket meanwhile.
    // Every chat failing is taken for the server's trouble for the first
    // tries only: a fault in the messages of just the chats to read would
    // otherwise keep the app offline for good.
    let behind = match catch_up(ctx, since_online < ALL_FAILING_TRIES).await {
        Ok(behind) => behind,
        Err(err) if err.is_unauthorized() => return Ended::Unauthorized(err.to_string()),
        Err(err) => {
            tracing::warn!(error = %err, "catching up failed");
            return Ended::Dropped { online_for: None };
        }
    };
    let resent = match send_outbox(ctx, &mut socket).await {
        Ok(resent) => resent,
        Err(err) => {
            tracing::debug!(error = %err, "sending the outbox failed");
            return Ended::Dropped { online_for: None };
        }
    };
    ctx.set_state(ConnectionState::Online);
    let online = Instant::now();
    serve(ctx, &mut socket, outgoing, resent, behind).await;
    Ended::Dropped {
        online_for: Some(online.elapsed()),
    }
}

async fn wait_ready(socket: &mut Socket) -> CoreResult<()> {
    let first = tokio::time::timeout(READY_TIMEOUT, async {
        loop {
            match socket.next().await {
                Some(Ok(WsMessage::Text(text))) => return Ok(text),
                Some(Ok(WsMessage::Close(frame))) => {
                    let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                    return Err(CoreError::Protocol(format!(
                        "closed before ready: {reason}"
                    )));
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(CoreError::Protocol(err.to_string())),
                None => return Err(CoreError::Protocol("closed before ready".into())),
            }
        }
    })
    .await
    .map_err(|_| CoreError::Protocol("no ready frame in time".into()))??;
    match serde_json::from_str::<ServerFrame>(first.as_str())? {
        ServerFrame::Ready { .. } => Ok(()),
        other => Err(CoreError::Protocol(format!(
            "expected ready, got {other:?}"
        ))),
    }
}

/// Brings the cache up to date: the chat list, then every chat's messages
/// after the last one cached. What arrived unseen meanwhile is told in one
/// notification per chat, its newest message (titled with the count).
///
/// Once the new list is in the cache it is told, and so is what was missed,
/// even when a page fails halfway: the next catch-up reads on from what was
/// stored and would neither list nor notify it again.
///
/// A chat whose history the server fails on alone (an internal error) does
/// not fail the catch-up: the others are read, and the chat is returned
/// *behind*, to be read again on the live link after a wait.
pub(crate) async fn catch_up(ctx: &Context, all_failing_fails: bool) -> CoreResult<Behind> {
    // A login's first catch-up finds history, not news.
    let first = !ctx.cache.has_caught_up().await?;
    let (chats, left) = ctx
        .cache
        .replace_chats(ctx.api.chats(), !first, &ctx.me.id)
        .await?;
    for left in left {
        ctx.tell_unsent(&left);
    }
    let mut missed = HashMap::new();
    let mut behind = Behind::new(ctx.backoff);
    let read = read_missed(ctx, &chats, &mut missed, &mut behind, all_failing_fails).await;
    if read.is_ok() {
        ctx.set_behind(&behind);
    }
    ctx.notify_missed(missed).await;
    let told = ctx.emit_chats().await;
    read.and(told)?;
    if first {
        ctx.cache.set_caught_up().await?;
    }
    Ok(behind)
}

/// Reads each chat's messages the cache lacks; a notification for each chat
/// with unseen ones goes into `missed`, the newest per chat. A chat the
/// server fails on alone goes into `behind`.
async fn read_missed(
    ctx: &Context,
    chats: &[Chat],
    missed: &mut HashMap<String, Notification>,
    behind: &mut Behind,
    all_failing_fails: bool,
) -> CoreResult<()> {
    let held = ctx.cache.max_seqs().await?;
    let seen_through = ctx.cache.seen_through().await?;
    let (mut asked, mut failures, mut first_failure) = (0, 0, None);
    for chat in chats {
        let cursor = held.get(&chat.id).copied();
        // A chat whose latest message we already hold, or that has none,
        // needs no request (`None` sorts first).
        let latest = chat.latest_message.as_ref().map(|message| message.seq);
        if cursor >= latest {
            continue;
        }
        let seen = seen_through.get(&chat.id).copied().flatten();
        asked += 1;
        let Err(err) = read_from(ctx, &chat.id, cursor, seen, missed).await else {
            continue;
        };
        match classify(ctx, &chat.id, err).await {
            ChatFailure::Refused(err) => {
                tracing::info!(chat_id = %chat.id, error = %err, "catching up: skipping a chat the server refuses");
            }
            // Its news stays unread until it is read (`read_behind`).
            ChatFailure::Behind(err) => {
                tracing::warn!(chat_id = %chat.id, error = %err, "catching up: a chat's history failed; reading it again later");
                behind.failed(&chat.id);
                failures += 1;
                first_failure.get_or_insert(err);
            }
            // The catch-up fails, and starts again.
            ChatFailure::Everyone(err) => return Err(err),
        }
    }
    // Every chat failing is the server's trouble (a full disk, say), not
    // one chat's: the app stays offline rather than online with every
    // chat behind.
    match first_failure {
        Some(err) if all_failing_fails && failures == asked && failures > 1 => Err(err),
        _ => Ok(()),
    }
}

/// Reads what the cache lacks of a chat: after `cursor`, the highest seq
/// cached, all of it news; with nothing cached, its newest page, news past
/// `seen` (its `seen_through`).
async fn read_from(
    ctx: &Context,
    chat_id: &str,
    cursor: Option<i64>,
    seen: Option<i64>,
    missed: &mut HashMap<String, Notification>,
) -> CoreResult<()> {
    let (page, news_after) = match cursor {
        Some(cursor) => (Page::After(cursor), cursor),
        None => (Page::Newest, seen.unwrap_or(0)),
    };
    read_chat(ctx, chat_id, page, news_after, missed).await
}

/// Reads again the chats left behind whose wait is over, from what the
/// cache holds of each now; one the server fails on again waits longer.
/// Returns whether any was read (the chat list changed). What was missed
/// is told even when a later chat fails otherwise (the link then drops).
async fn read_behind(ctx: &Context, behind: &mut Behind) -> CoreResult<bool> {
    let mut missed = HashMap::new();
    let read = read_due(ctx, behind, &mut missed).await;
    ctx.notify_missed(missed).await;
    read
}

async fn read_due(
    ctx: &Context,
    behind: &mut Behind,
    missed: &mut HashMap<String, Notification>,
) -> CoreResult<bool> {
    let due = behind.take_due();
    if due.is_empty() {
        return Ok(false);
    }
    let seen_through = ctx.cache.seen_through().await?;
    let mut read = false;
    for chat_id in due {
        let cursor = match ctx.cache.chat_held(&chat_id).await? {
            // Deleted meanwhile (a chat left, then deleted).
            ChatHeld::Unknown => {
                behind.done(&chat_id);
                continue;
            }
            ChatHeld::Known { highest_seq } => highest_seq,
        };
        let seen = seen_through.get(&chat_id).copied().flatten();
        let Err(err) = read_from(ctx, &chat_id, cursor, seen, missed).await else {
            let held = match ctx.cache.chat_held(&chat_id).await? {
                ChatHeld::Known { highest_seq } => highest_seq,
                ChatHeld::Unknown => None,
            };
            if behind.read(&chat_id, held) {
                tracing::info!(%chat_id, "a chat left behind is read");
            }
            read = true;
            continue;
        };
        match classify(ctx, &chat_id, err).await {
            ChatFailure::Refused(_) => behind.done(&chat_id),
            ChatFailure::Behind(err) => {
                let wait = behind.failed(&chat_id);
                tracing::warn!(%chat_id, error = %err, ?wait, "a chat's history failed again");
                // A page may have come before the failure.
                read = true;
            }
            ChatFailure::Everyone(err) => return Err(err),
        }
    }
    Ok(read)
}

/// What a failed read of one chat's history means for the others.
enum ChatFailure {
    /// The server refuses us the chat (we were removed since): it is
    /// skipped, and the removal's `chat` frame marks it left.
    Refused(CoreError),
    /// The server failed on this chat alone (a damaged row, a bug): the
    /// others go on, and so does the link; it is read again after a wait.
    Behind(CoreError),
    /// The link, "not now", a proxy failing: it holds for every chat.
    Everyone(CoreError),
}

async fn classify(ctx: &Context, chat_id: &str, err: CoreError) -> ChatFailure {
    // Refused only when the chat itself is refused too: a proxy or
    // firewall refusing history alone must not have every chat skipped.
    if err.is_chat_refused() && chat_refused(ctx, chat_id).await {
        ChatFailure::Refused(err)
    } else if err.is_chat_failure() {
        ChatFailure::Behind(err)
    } else {
        ChatFailure::Everyone(err)
    }
}

/// Whether the server refuses us `chat_id` itself, not only its history.
async fn chat_refused(ctx: &Context, chat_id: &str) -> bool {
    matches!(ctx.api.chat(chat_id).await, Err(err) if err.is_chat_refused())
}

/// Reads one chat from `page` on: after a cursor, page after page until the
/// newest; the newest page alone otherwise. Messages past `news_after` are
/// news (unread and notified when unseen); the others are history.
async fn read_chat(
    ctx: &Context,
    chat_id: &str,
    mut page: Page,
    news_after: i64,
    missed: &mut HashMap<String, Notification>,
) -> CoreResult<()> {
    loop {
        let limit = match page {
            Page::After(_) => CATCH_UP_PAGE,
            Page::Newest | Page::Before(_) => FIRST_PAGE,
        };
        let messages = ctx.api.messages(chat_id, page, limit).await?;
        let mut cursor = None;
        for message in &messages {
            let arrival = if message.seq > news_after {
                Arrival::CatchUp
            } else {
                Arrival::Backfill
            };
            let received = ctx.receive(message, arrival).await?;
            if received.read_up_to {
                missed.remove(&message.chat_id);
            }
            if let Some(notification) = received.missed {
                missed.insert(message.chat_id.clone(), notification);
            }
            cursor = cursor.max(Some(message.seq));
        }
        match (page, cursor) {
            // On while pages come full and move forward: a server (or a
            // proxy's cache) answering the same page again would otherwise
            // be asked for it for ever, and the link never come online.
            (Page::After(after), Some(cursor))
                if messages.len() == limit as usize && cursor > after =>
            {
                page = Page::After(cursor);
            }
            _ => return Ok(()),
        }
    }
}

/// Sends every message still waiting in the outbox, as a resend (it may
/// have left before this connection). Returns their client ids: a send the
/// engine queued meanwhile is among them, and is not sent again. Each is
/// shown as being sent again: one the last link's server refused for now
/// no longer waits for that reason.
async fn send_outbox(ctx: &Context, socket: &mut Socket) -> CoreResult<HashSet<String>> {
    let mut sent = HashSet::new();
    for outgoing in ctx.cache.to_send().await? {
        ctx.emit(Event::Message {
            message: MessageView::outgoing(&outgoing, &ctx.me),
        });
        let client_id = outgoing.client_id.clone();
        feed_resend(socket, outgoing).await?;
        sent.insert(client_id);
    }
    flush(socket).await?;
    Ok(sent)
}

/// Writes `outgoing` as a resend: the server may have it already, and then
/// answers with the stored message rather than storing it twice.
async fn feed_resend(socket: &mut Socket, outgoing: Outgoing) -> CoreResult<()> {
    let frame = ClientFrame::Send {
        chat_id: outgoing.chat_id,
        content: outgoing.content,
        client_id: outgoing.client_id,
        first_try: false,
    };
    socket
        .feed(WsMessage::Text(serde_json::to_string(&frame)?.into()))
        .await
        .map_err(|err| CoreError::Protocol(err.to_string()))
}

async fn flush(socket: &mut Socket) -> CoreResult<()> {
    socket
        .flush()
        .await
        .map_err(|err| CoreError::Protocol(err.to_string()))
}

/// Sends again, in each chat refused for now whose turn has come, its
/// oldest message still to send (a chat with none sends freely again).
async fn resend_due(ctx: &Context, socket: &mut Socket, resends: &mut Resends) -> CoreResult<()> {
    for Due { chat_id, answered } in resends.take_due(tokio::time::Instant::now()) {
        // After the one answered: were it still in the outbox (its answer
        // did not take it out), it would be sent again, answered the same
        // way, and again.
        match ctx
            .cache
            .next_to_send(&chat_id, answered.as_deref())
            .await?
        {
            Some(outgoing) => {
                resends.sending(&chat_id, &outgoing.client_id);
                feed_resend(socket, outgoing).await?;
            }
            None => resends.done(&chat_id),
        }
    }
    flush(socket).await
}

/// Whether `frame` is a send `send_outbox` has already made on this link,
/// or one in a chat whose sends wait their turn in the outbox (`Resends`).
fn not_to_send(frame: &ClientFrame, resent: &HashSet<String>, resends: &Resends) -> bool {
    matches!(frame, ClientFrame::Send { client_id, chat_id, .. }
        if resent.contains(client_id) || resends.holds(chat_id))
}

/// Live: frames from the server, frames from the engine, and a clock for
/// typing expiry and the silence limit; the chats whose sends the server
/// refused for now send again (`Resends`), and chats left `behind` are
/// read again, when their wait is over. A chat list made stale by new
/// messages is sent when `CHAT_LIST_EVERY` has passed since the last one,
/// and before returning; held-back notifications (`Notices`) when their
/// time comes, and all of them before returning.
async fn serve(
    ctx: &Context,
    socket: &mut Socket,
    outgoing: &mut mpsc::UnboundedReceiver<ClientFrame>,
    resent: HashSet<String>,
    mut behind: Behind,
) {
    let mut chat_list = ListThrottle::new();
    serve_frames(ctx, socket, outgoing, resent, &mut behind, &mut chat_list).await;
    chat_list.send_if_stale(ctx).await;
    ctx.notify_waiting(true);
}

/// Whether the UI's chat list is behind, and when it was last sent.
struct ListThrottle {
    stale: bool,
    sent: Option<tokio::time::Instant>,
}

impl ListThrottle {
    fn new() -> Self {
        Self {
            stale: false,
            sent: None,
        }
    }

    /// When it may be sent next.
    fn due(&self) -> tokio::time::Instant {
        self.sent
            .map_or_else(tokio::time::Instant::now, |sent| sent + CHAT_LIST_EVERY)
    }

    async fn send_if_stale(&mut self, ctx: &Context) {
        if !self.stale {
            return;
        }
        if let Err(err) = ctx.emit_chats().await {
            tracing::warn!(error = %err, "reading the chat list for the UI");
        }
        self.stale = false;
        self.sent = Some(tokio::time::Instant::now());
    }
}

async fn serve_frames(
    ctx: &Context,
    socket: &mut Socket,
    outgoing: &mut mpsc::UnboundedReceiver<ClientFrame>,
    resent: HashSet<String>,
    behind: &mut Behind,
    chat_list: &mut ListThrottle,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut resends = Resends::new(ctx.backoff);
    loop {
        let notice_due = lock(&ctx.notices).due().map(tokio::time::Instant::from_std);
        let resend_due_at = resends.next_due();
        let behind_due_at = behind.next_due();
        tokio::select! {
            incoming = socket.next() => {
                let Some(Ok(message)) = incoming else { return };
                last_heard = Instant::now();
                match message {
                    WsMessage::Text(text) => {
                        // A frame we cannot read is skipped (a newer server's, say).
                        let frame = match serde_json::from_str::<ServerFrame>(text.as_str()) {
                            Ok(frame) => frame,
                            Err(err) => {
                                tracing::warn!(error = %err, "a frame from the server was not understood");
                                continue;
                            }
                        };
                        match handle(ctx, frame, &mut resends, behind).await {
                            Ok(stale) => chat_list.stale |= stale | ctx.set_behind(behind),
                            // One we could not keep (the cache or the server
                            // failed us, a read for it answered with what is
                            // not JSON) would leave a hole that catch-up, which
                            // reads from the newest seq held, never fills: the
                            // link goes, and the next one catches up from here.
                            Err(err) => {
                                tracing::warn!(error = %err, "a frame from the server was not kept; reconnecting");
                                return;
                            }
                        }
                    }
                    WsMessage::Close(frame) => {
                        tracing::debug!(?frame, "the server closed the socket");
                        return;
                    }
                    _ => {}
                }
            }
            frame = outgoing.recv() => {
                let Some(frame) = frame else { return };
                if not_to_send(&frame, &resent, &resends) {
                    continue;
                }
                let Ok(text) = serde_json::to_string(&frame) else { continue };
                if socket.send(WsMessage::Text(text.into())).await.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(chat_list.due()), if chat_list.stale => {
                chat_list.send_if_stale(ctx).await;
            }
            _ = sleep_until_some(notice_due), if notice_due.is_some() => {
                ctx.notify_waiting(false);
            }
            _ = sleep_until_some(resend_due_at), if resend_due_at.is_some() => {
                if let Err(err) = resend_due(ctx, socket, &mut resends).await {
                    // The next link sends the whole outbox again.
                    tracing::debug!(error = %err, "sending again failed; reconnecting");
                    return;
                }
            }
            _ = sleep_until_some(behind_due_at), if behind_due_at.is_some() => {
                match read_behind(ctx, behind).await {
                    Ok(read) => chat_list.stale |= read | ctx.set_behind(behind),
                    // The next link catches up with every chat again.
                    Err(err) => {
                        tracing::warn!(error = %err, "reading a chat left behind failed; reconnecting");
                        return;
                    }
                }
            }
            _ = tick.tick() => {
                if last_heard.elapsed() > SILENCE_LIMIT {
                    tracing::info!("the server went silent; reconnecting");
                    return;
                }
                let expired = lock(&ctx.typing).expire(Instant::now());
                for chat_id in expired {
                    ctx.emit_typing(&chat_id).await;
                }
            }
        }
    }
}

/// Sleeps until `when`; never returns for `None` (a `select!` branch
/// guarded by `is_some` never polls it then).
async fn sleep_until_some(when: Option<tokio::time::Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when).await,
        None => std::future::pending().await,
    }
}

/// Handles one frame; returns whether it changed the chat list (sent to the
/// UI by `serve`, at most every `CHAT_LIST_EVERY`). A send refused for now
/// holds its chat's sends in `resends`; a chat whose gap the server fails
/// to give goes `behind`.
async fn handle(
    ctx: &Context,
    frame: ServerFrame,
    resends: &mut Resends,
    behind: &mut Behind,
) -> CoreResult<bool> {
    match frame {
        ServerFrame::Ready { .. } => {}
        ServerFrame::Message { message } => {
            let mut filled = false;
            let held = ctx.cache.chat_held(&message.chat_id).await?;
            // A chat left behind is read whole when its wait is over:
            // stored now, this would leave a hole before it.
            if let ChatHeld::Known { highest_seq } = held
                && behind.skips(&message.chat_id, highest_seq, message.seq)
            {
                return Ok(false);
            }
            match held {
                ChatHeld::Unknown => {
                    // A chat we have not heard of (its `chat` frame was
                    // missed). Seen through the message before this one at
                    // most, though the server may list this one as its
                    // latest: should storing it fail, the catch-up that
                    // follows reads it as news, not as history.
                    let chat = ctx.api.chat(&message.chat_id).await?;
                    let seen_through = chat
                        .latest_message
                        .as_ref()
                        .map(|latest| latest.seq.min(message.seq - 1));
                    ctx.cache.put_chat_seen_through(&chat, seen_through).await?;
                }
                ChatHeld::Known {
                    highest_seq: Some(held),
                } if message.seq > held + 1 => {
                    match fill_gap(ctx, &message.chat_id, held).await {
                        Ok(()) => filled = true,
                        Err(err) if err.is_chat_failure() => {
                            tracing::warn!(chat_id = %message.chat_id, error = %err, "reading a gap failed; reading the chat again later");
                            behind.failed(&message.chat_id);
                            behind.skip(&message.chat_id, message.seq);
                            // A page may have come before the failure.
                            return Ok(true);
                        }
                        Err(err) => return Err(err),
                    }
                }
                ChatHeld::Known { .. } => {}
            }
            let stored = ctx.receive(&message, Arrival::Live).await?.stored;
            return Ok(filled || stored != Stored::Known);
        }
        // The `message` frame comes first and has cached it (and told the
        // UI); the ack says it is stored, so it leaves the outbox, and
        // matters too when that frame was lost.
        ServerFrame::Ack { message, client_id } => {
            resends.answered(&client_id);
            // In a chat left behind it stays in the outbox, set aside as
            // stored, until the chat's read reaches it (history holds it,
            // and takes it out), unless it follows on from the cache:
            // cached now, it would leave a hole before it. Set aside, it is
            // not sent again, nor reported unsent if the chat goes meanwhile.
            if behind.contains(&message.chat_id)
                && let ChatHeld::Known { highest_seq } =
                    ctx.cache.chat_held(&message.chat_id).await?
                && behind.skips(&message.chat_id, highest_seq, message.seq)
            {
                ctx.cache.outgoing_stored(&client_id, &message).await?;
                // Stored: shown as sent, above the hole; the list no
                // longer counts it unsent.
                ctx.emit(Event::Message {
                    message: MessageView::sent(&message, &ctx.me.id),
                });
                return Ok(true);
            }
            ctx.receive(&message, Arrival::Ack).await?;
            // It left the outbox: the list may have shown it as unsent.
            return Ok(true);
        }
        // It stays in the outbox, shown as waiting and why, and is sent
        // again after a while.
        ServerFrame::Error {
            error,
            client_id: Some(client_id),
            retry: true,
        } => {
            // Gone from the outbox (another copy acked) or refused for
            // good since (another copy's answer): nothing to send again.
            let Some(outgoing) = ctx
                .cache
                .outgoing(&client_id)
                .await?
                .filter(|outgoing| outgoing.error.is_none())
            else {
                resends.answered(&client_id);
                return Ok(false);
            };
            // Its chat's later sends wait behind it, so that none is
            // stored before it (one on its way already may be).
            let now = tokio::time::Instant::now();
            let wait = resends.refused(&outgoing.chat_id, &client_id, now, &mut rand::rng());
            tracing::info!(%error, ?wait, "the server cannot take a message now; sending it again");
            ctx.emit(Event::Message {
                message: MessageView::waiting(&outgoing, &ctx.me, &error),
            });
        }
        ServerFrame::Error {
            error,
            client_id: Some(client_id),
            retry: false,
        } => {
            resends.answered(&client_id);
            if ctx.cache.fail_outgoing(&client_id, &error).await?
                && let Some(outgoing) = ctx.cache.outgoing(&client_id).await?
            {
                ctx.emit(Event::Message {
                    message: MessageView::outgoing(&outgoing, &ctx.me),
                });
                // The list may show it as its chat's last message.
                return Ok(true);
            }
        }
        ServerFrame::Error {
            error,
            client_id: None,
            ..
        } => {
            tracing::warn!(%error, "the server refused a frame");
        }
        ServerFrame::Chat { chat } => {
            let rejoined = chat.has_member(&ctx.me.id)
                && ctx
                    .cache
                    .chat(&chat.id)
                    .await?
                    .is_some_and(|(cached, _)| !cached.has_member(&ctx.me.id));
            ctx.chat_changed(&chat).await?;
            // Back in a group left before: its cache stops where one left,
            // and no catch-up reads on from there while the link holds.
            // What was said meanwhile is read now, as history (not news),
            // so that a view open on it goes on without a hole; with
            // nothing of it cached, its newest page (which also brings
            // one's own sends set aside while it was behind).
            if rejoined
                && let ChatHeld::Known { highest_seq } = ctx.cache.chat_held(&chat.id).await?
            {
                let page = highest_seq.map_or(Page::Newest, Page::After);
                let mut history = HashMap::new();
                match read_chat(ctx, &chat.id, page, i64::MAX, &mut history).await {
                    Ok(()) => {}
                    // As a gap read's failure: the chat is left behind, read
                    // again later, and the link stays up.
                    Err(err) if err.is_chat_failure() => {
                        tracing::warn!(chat_id = %chat.id, error = %err, "reading a group one is back in failed; reading it again later");
                        behind.failed(&chat.id);
                    }
                    Err(err) => return Err(err),
                }
                return Ok(true);
            }
        }
        ServerFrame::Typing {
            chat_id,
            user_id,
            is_typing,
        } => {
            if ctx.typing_changed(&chat_id, &user_id, is_typing) {
                ctx.emit_typing(&chat_id).await;
            }
        }
    }
    Ok(false)
}

/// A live message came past a gap: the cache holds a chat up to `held`,
/// and messages between never came. The last link may have dropped as they
/// were sent, and the chat list that catch-up read from the database did
/// not have them yet (the server delivers before it stores). The cache
/// keeps one run of seqs per chat and catch-up reads on from its top, so
/// the gap is read now, from history, which has every message delivered.
/// What was missed counts and notifies as a catch-up's would.
async fn fill_gap(ctx: &Context, chat_id: &str, held: i64) -> CoreResult<()> {
    tracing::info!(
        chat_id,
        held,
        "a live message came past a gap; reading the gap"
    );
    let mut missed = HashMap::new();
    let read = read_chat(ctx, chat_id, Page::After(held), held, &mut missed).await;
    // What came before a failure is stored, and told.
    ctx.notify_missed(missed).await;
    read
}

async fn clear_typing(ctx: &Context) {
    let chats = lock(&ctx.typing).clear();
    for chat_id in chats {
        ctx.emit_typing(&chat_id).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link online for a while starts the backoff again; one that drops
    /// soon after it came up, or never came up, goes on from where it was.
    #[test]
    fn only_a_link_online_for_a_while_starts_the_backoff_again() {
        assert_eq!(attempt_after(4, Some(STEADY)), 0);
        assert_eq!(attempt_after(4, Some(Duration::from_secs(3600))), 0);
        assert_eq!(attempt_after(4, Some(Duration::from_millis(200))), 4);
        assert_eq!(attempt_after(4, None), 4);
    }

    /// A refusal's `Retry-After` in seconds is waited, up to five minutes;
    /// a date or nonsense leaves the wait to the backoff.
    #[test]
    fn a_refusal_is_waited_out_as_asked_within_reason() {
        let asked = |value: &str| {
            let mut headers = tungstenite::http::HeaderMap::new();
            if let Ok(value) = value.parse() {
                headers.insert(tungstenite::http::header::RETRY_AFTER, value);
            }
            wait_asked(&headers)
        };
        assert_eq!(asked("80"), Some(Duration::from_secs(80)));
        assert_eq!(asked(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(asked("86400"), Some(MOST_WAIT_ASKED));
        assert_eq!(asked("Wed, 21 Oct 2026 07:28:00 GMT"), None);
        assert_eq!(asked("-3"), None);
        assert_eq!(asked(""), None);
        assert_eq!(wait_asked(&tungstenite::http::HeaderMap::new()), None);
    }

    /// A send goes unless the outbox made it already on this link, or its
    /// chat's sends wait their turn there; nothing else is held.
    #[test]
    fn a_send_made_already_or_in_a_held_chat_is_dropped_and_nothing_else() {
        let resent: HashSet<String> = ["c1".to_owned()].into();
        let mut resends = Resends::new(crate::Backoff::default());
        let send = |chat_id: &str, client_id: &str| ClientFrame::Send {
            chat_id: chat_id.into(),
            content: "hi".into(),
            client_id: client_id.into(),
            first_try: true,
        };
        let typing = ClientFrame::Typing {
            chat_id: "held".into(),
            is_typing: true,
        };
        assert!(not_to_send(&send("chat", "c1"), &resent, &resends));
        assert!(!not_to_send(&send("chat", "c2"), &resent, &resends));
        resends.refused("held", "c0", tokio::time::Instant::now(), &mut rand::rng());
        assert!(not_to_send(&send("held", "c3"), &resent, &resends));
        assert!(!not_to_send(&send("chat", "c2"), &resent, &resends));
        assert!(!not_to_send(&typing, &resent, &resends));
    }
}
