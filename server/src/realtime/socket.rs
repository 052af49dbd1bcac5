//! One WebSocket connection: authenticate the upgrade, register with the hub,
//! then run a reader (frames from the client) and a writer (frames to it, and
//! keep-alive pings) side by side until either ends.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::Response;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use natter_shared::limits::FRAME_MAX_BYTES;
use natter_shared::{ClientFrame, ServerFrame};
use tokio::sync::mpsc;

use super::Registration;
use super::hub::encode;
use crate::auth::bearer_token;
use crate::auth::sessions::SessionKey;
use crate::chats::{self, ClientTag};
use crate::domain::{ClientId, Content};
use crate::error::ApiError;
use crate::state::AppState;

/// The transport refuses messages past this size outright (dropping the
/// connection, without a close frame: docs/protocol.md);
/// between `FRAME_MAX_BYTES` and this, a frame is answered with an error frame.
const HARD_FRAME_LIMIT: usize = 4 * FRAME_MAX_BYTES;

/// Per-socket read and write buffer. tungstenite's default (128 KiB each)
/// would be most of an idle socket's memory; chat frames are small, and a
/// bigger one just takes more reads.
const SOCKET_BUFFER: usize = 1024;

/// `GET /ws`: the token comes as `?token=` (browsers cannot set headers on a
/// WebSocket) or as `Authorization: Bearer`.
pub async fn upgrade(
    State(state): State<AppState>,
    caller: Caller,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let Caller {
        user_id,
        good_until,
        session,
    } = caller;
    let ws =
        ws.map_err(|rejection| ApiError::Rejected(rejection.status(), rejection.body_text()))?;
    // Counted again when the socket is added (`run`): upgrades at once
    // may all pass here.
    if state.hub.sockets_of(&user_id) >= state.settings.sockets_per_user {
        return Err(too_many_sockets(&state));
    }
    Ok(ws
        .read_buffer_size(SOCKET_BUFFER)
        .write_buffer_size(SOCKET_BUFFER)
        .max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        .on_upgrade(move |socket| run(state, user_id, Clock::new(good_until, session), socket)))
}

/// The user a socket upgrade is for, the last second their token is good
/// for (seconds since the epoch), and its session (ended by a logout).
pub struct Caller {
    user_id: String,
    good_until: i64,
    session: Option<SessionKey>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts)
            .map(str::to_owned)
            .or_else(|| query_token(parts.uri.query()))
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "not logged in: pass ?token=<token> or a bearer token".into(),
                )
            })?;
        let claims = state.tokens.claims(&token)?;
        Ok(Caller {
            good_until: state.tokens.good_until(&claims),
            session: claims.session(),
            user_id: claims.sub,
        })
    }
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "token")
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty())
}

async fn run(state: AppState, user_id: String, clock: Clock, socket: WebSocket) {
    // `ready` goes first, ahead of anything sent to the user meanwhile: the
    // app takes any other first frame as a broken link.
    let ready = ServerFrame::Ready {
        user_id: user_id.clone(),
    };
    let most = state.settings.sockets_per_user;
    let (mut sink, stream) = socket.split();
    let Some(registration) = state.hub.register(&user_id, Some(encode(&ready)), most) else {
        // A close reason has at most 123 bytes: the short of the 429's.
        close(
            &mut sink,
            1013,
            "too many connections for this account: try again later",
        )
        .await;
        tracing::debug!(user = %user_id, "socket refused: the user has as many open as they may");
        return;
    };
    let id = registration.id;
    if !state.events.ready_for_sockets() {
        close_unready(&state, &user_id, id, sink).await;
        return;
    }
    tracing::debug!(user = %user_id, socket = id, "socket opened");
    let Registration {
        frames,
        reply,
        kick,
        ..
    } = registration;
    tokio::select! {
        () = write(&state, sink, frames, &kick, &clock) => {}
        () = read(&state, &user_id, stream, &reply, &clock) => {}
    }
    state.hub.unregister(&user_id, id);
    tracing::debug!(user = %user_id, socket = id, "socket closed");
}

/// The refusal of a socket past the user's (`NATTER_SOCKETS_PER_USER`):
/// come back once one of the others has gone (a dead one goes within
/// `NATTER_WS_TIMEOUT_MS` and a ping).
fn too_many_sockets(state: &AppState) -> ApiError {
    let settings = &state.settings;
    ApiError::TooManyTries(
        format!(
            "this account has {} connections open to this server, as many as it may: \
             close Natter on another computer, or try again in a minute",
            settings.sockets_per_user
        ),
        settings.ws_timeout + settings.ws_ping_interval,
    )
}

/// Closes a socket that cannot get every event yet (the broker is down):
/// 1013, try again later.
async fn close_unready(
    state: &AppState,
    user_id: &str,
    id: u64,
    mut sink: SplitSink<WebSocket, WsMessage>,
) {
    state.hub.unregister(user_id, id);
    close(
        &mut sink,
        1013,
        "events are unavailable for a moment: reconnect",
    )
    .await;
    tracing::debug!(user = %user_id, socket = id, "socket refused: no link to the other nodes");
}

/// When the client was last heard from (any frame, pongs included), and
/// until when its session token is good (the reader moves it on when the
/// client sends a renewed token; the writer closes the socket past it, or
/// once the session it was opened with is logged out).
struct Clock {
    start: Instant,
    last_heard_ms: AtomicU64,
    /// Seconds since the epoch: the last second the token is good for.
    good_until: AtomicI64,
    /// The session of the token the socket was opened with.
    session: Option<SessionKey>,
}

impl Clock {
    fn new(good_until: i64, session: Option<SessionKey>) -> Self {
        Clock {
            start: Instant::now(),
            last_heard_ms: AtomicU64::new(0),
            good_until: AtomicI64::new(good_until),
            session,
        }
    }

    fn heard(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_heard_ms.store(now, Ordering::Relaxed);
    }

    /// Whether the token has expired. Tokens are refused from the second
    /// after the one they are good until (their checks count whole
    /// seconds): the socket closes then, so that the app, reconnecting,
    /// is refused too.
    fn token_expired(&self) -> bool {
        chrono::Utc::now().timestamp() > self.good_until.load(Ordering::Relaxed)
    }

    /// A renewed token is good until `second`.
    fn renewed(&self, second: i64) {
        self.good_until.fetch_max(second, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_heard_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// How long a close frame may take to leave: a socket being dropped whose
/// client does not read must not hold up its task (or a shutdown).
const CLOSE_PATIENCE: Duration = Duration::from_secs(2);

/// Writes the socket's queued frames and pings, and closes it when kicked
/// or, at the first ping after, when its token expires, unless the client
/// renewed it on this socket (the app then reconnects, is refused, and asks
/// the user to log in again, as any request with that token would be), or
/// when its session is logged out.
/// Every write has a deadline (`ws_timeout`) and gives way to a kick: a
/// client that stops reading fills the TCP window, and a write without
/// either would then hold this task, and the socket, for good.
async fn write(
    state: &AppState,
    mut sink: SplitSink<WebSocket, WsMessage>,
    mut frames: mpsc::Receiver<Utf8Bytes>,
    kick: &tokio::sync::Notify,
    clock: &Clock,
) {
    let limit = state.settings.ws_timeout;
    let mut ping = tokio::time::interval(state.settings.ws_ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        let written = tokio::select! {
            biased;
            () = kick.notified() => {
                let (code, reason) = if state.hub.is_closing() {
                    (1001, "server shutting down")
                } else {
                    (1013, "reconnect and catch up")
                };
                close(&mut sink, code, reason).await;
                return;
            }
            // Before the frames: a socket whose queue never empties (a
            // busy chat, a slow reader) still gets its pings and its
            // expiry and logout checks. It is ready once per interval, so
            // frames hardly wait for it.
            _ = ping.tick() => {
                // Checked at each ping, not with a timer of its own: one
                // per socket would cost every idle socket its memory.
                if clock.token_expired() {
                    close(&mut sink, 1008, "the session has expired: log in again").await;
                    return;
                }
                if state.tokens.is_ended(clock.session) {
                    close(&mut sink, 1008, "the session was logged out: log in again").await;
                    return;
                }
                if clock.silent_for() > state.settings.ws_timeout {
                    tracing::debug!("dropping a socket that stopped answering pings");
                    return;
                }
                written_in_time(sink.send(WsMessage::Ping(Default::default())), limit, kick).await
            }
            frame = frames.recv() => {
                let Some(frame) = frame else { return };
                // What is queued now, no more: a client that reads, fed
                // faster than the deadline, is not taken for one that does not.
                let queued = frames.len();
                written_in_time(write_queued(&mut sink, frame, &mut frames, queued), limit, kick).await
            }
        };
        if !written {
            tracing::debug!("dropping a socket whose client does not read");
            return;
        }
    }
}

/// Sends a close frame, waiting for it at most `CLOSE_PATIENCE`.
async fn close(sink: &mut SplitSink<WebSocket, WsMessage>, code: u16, reason: &'static str) {
    let close = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(CLOSE_PATIENCE, sink.send(WsMessage::Close(Some(close)))).await;
}

/// Whether `write` finished, and in time. Most writes finish at once, and
/// pay for no timer; one that waits gets `limit`, and gives way to a kick
/// (which it tells again, for the writer's loop to close the socket).
async fn written_in_time(
    write: impl Future<Output = Result<(), axum::Error>>,
    limit: Duration,
    kick: &tokio::sync::Notify,
) -> bool {
    let mut write = std::pin::pin!(write);
    if let Some(done) = (&mut write).now_or_never() {
        return done.is_ok();
    }
    tokio::select! {
        done = tokio::time::timeout(limit, write) => matches!(done, Ok(Ok(()))),
        () = kick.notified() => {
            kick.notify_one();
            true
        }
    }
}

/// Writes `first` and up to `more` frames queued behind it, in one flush.
async fn write_queued(
    sink: &mut SplitSink<WebSocket, WsMessage>,
    first: Utf8Bytes,
    frames: &mut mpsc::Receiver<Utf8Bytes>,
    more: usize,
) -> Result<(), axum::Error> {
    sink.feed(WsMessage::Text(first)).await?;
    for _ in 0..more {
        let Ok(frame) = frames.try_recv() else { break };
        sink.feed(WsMessage::Text(frame)).await?;
    }
    sink.flush().await
}

/// Sends one socket may have on their way at once; past it, the socket
/// reads nothing more until one is answered.
const SENDS_IN_FLIGHT: usize = 64;

/// An answer still to come (a sent message's ack or error), encoded.
type Later = BoxFuture<'static, Utf8Bytes>;

/// Reads the client's frames and answers them. A sent message is handed to
/// its chat's partition before the next frame is read (so a client's
/// messages keep their order), but its ack is not waited for: the client
/// may have many on their way, each acked when it is safe.
async fn read(
    state: &AppState,
    user_id: &str,
    mut stream: SplitStream<WebSocket>,
    reply: &mpsc::Sender<Utf8Bytes>,
    clock: &Clock,
) {
    let mut in_flight = FuturesUnordered::<Later>::new();
    let mut typing = TypingAllowance::new(Instant::now());
    loop {
        let answer = tokio::select! {
            Some(answer) = in_flight.next(), if !in_flight.is_empty() => Some(answer),
            message = stream.next(), if in_flight.len() < SENDS_IN_FLIGHT => {
                let Some(Ok(message)) = message else { return };
                clock.heard();
                match message {
                    WsMessage::Text(text) => match handle_text(state, user_id, clock, &mut typing, text.as_str()).await {
                        Handled::Now(answer) => answer,
                        Handled::Later(answer) => {
                            in_flight.push(answer);
                            None
                        }
                    },
                    WsMessage::Binary(_) => Some(encode(&error_frame(
                        "binary frames are not supported: send JSON text",
                        None,
                    ))),
                    WsMessage::Close(_) => return,
                    WsMessage::Ping(_) | WsMessage::Pong(_) => None,
                }
            }
        };
        if let Some(answer) = answer
            && reply.send(answer).await.is_err()
        {
            return;
        }
    }
}

/// How a client frame is answered.
enum Handled {
    /// At once (encoded), or not at all.
    Now(Option<Utf8Bytes>),
    /// Once the message it sent is safe (or failed).
    Later(Later),
}

/// A refusal of a frame that was wrong: sending it again cannot help.
fn error_frame(error: impl Into<String>, client_id: Option<String>) -> ServerFrame {
    refusal(&ApiError::bad_request(error), client_id)
}

/// A refusal for `err`, which says whether the same frame may be sent
/// again later (a service we depend on is down or behind for now).
fn refusal(err: &ApiError, client_id: Option<String>) -> ServerFrame {
    err.log_if_internal();
    ServerFrame::Error {
        error: err.to_string(),
        client_id,
        retry: err.is_temporary(),
    }
}

/// How long a typing signal may wait for the chat's members. The socket
/// reads nothing meanwhile (not its pongs, not its sends): a database that
/// stops answering must not stall it, for a signal worth nothing late.
const TYPING_PATIENCE: Duration = Duration::from_secs(2);

/// Typing signals a socket may send at once, and then one per
/// `TYPING_EVERY`: an app sends one every few seconds per chat it is typing
/// in, and one when it stops. Each costs a members query and a frame to
/// every member, so a client sending them in a loop would fill its chat
/// members' socket queues, and they would be dropped as too slow.
const TYPING_BURST: u32 = 10;
const TYPING_EVERY: Duration = Duration::from_millis(500);

/// How many typing signals a socket may send now (a token bucket): past
/// them, the signals are dropped unanswered, as they are worth nothing late.
struct TypingAllowance {
    left: u32,
    /// When the next one is added.
    next: Instant,
}

impl TypingAllowance {
    fn new(now: Instant) -> Self {
        TypingAllowance {
            left: TYPING_BURST,
            next: now + TYPING_EVERY,
        }
    }

    /// Takes one, if one is left at `now`.
    fn take(&mut self, now: Instant) -> bool {
        while self.left < TYPING_BURST && self.next <= now {
            self.left += 1;
            self.next += TYPING_EVERY;
        }
        if self.left == 0 {
            return false;
        }
        if self.left == TYPING_BURST {
            // Full until now: the next one comes a period after this.
            self.next = now + TYPING_EVERY;
        }
        self.left -= 1;
        true
    }
}

/// Acts on one client frame; the answer, if any, goes back on this socket.
async fn handle_text(
    state: &AppState,
    user_id: &str,
    clock: &Clock,
    typing: &mut TypingAllowance,
    text: &str,
) -> Handled {
    let now = |frame: Option<ServerFrame>| Handled::Now(frame.as_ref().map(encode));
    if text.len() > FRAME_MAX_BYTES {
        return now(Some(error_frame(
            format!("frame is larger than {FRAME_MAX_BYTES} bytes"),
            None,
        )));
    }
    let frame = match serde_json::from_str::<ClientFrame>(text) {
        Ok(frame) => frame,
        Err(err) => return now(Some(error_frame(format!("invalid frame: {err}"), None))),
    };
    match frame {
        ClientFrame::Typing { chat_id, is_typing } => {
            if !typing.take(Instant::now()) {
                return now(None);
            }
            let typing = chats::typing(state, user_id, &chat_id, is_typing);
            match tokio::time::timeout(TYPING_PATIENCE, typing).await {
                Ok(told) => now(told.err().map(|err| refusal(&err, None))),
                // Worth nothing late: dropped.
                Err(_) => now(None),
            }
        }
        ClientFrame::Send {
            chat_id,
            content,
            client_id,
            first_try,
        } => send(state, user_id, &chat_id, &content, client_id, first_try).await,
        ClientFrame::Token { token } => now(renewed_token(state, user_id, clock, &token)),
    }
}

/// Takes a renewed token of this socket's session: the socket lives until
/// it expires. Anything else (another user's, another session's: a logout
/// of that one would not reach this socket) is refused, and the socket's
/// expiry stays.
fn renewed_token(
    state: &AppState,
    user_id: &str,
    clock: &Clock,
    token: &str,
) -> Option<ServerFrame> {
    match state.tokens.claims(token) {
        Ok(claims) if claims.sub == user_id && claims.session() == clock.session => {
            clock.renewed(state.tokens.good_until(&claims));
            None
        }
        Ok(claims) if claims.sub == user_id => {
            Some(error_frame("that token is another session's", None))
        }
        Ok(_) => Some(error_frame("that token is another user's", None)),
        Err(err) => Some(error_frame(format!("token not taken: {err}"), None)),
    }
}

/// Hands the message over now; its ack (or error) comes later.
async fn send(
    state: &AppState,
    user_id: &str,
    chat_id: &str,
    content: &str,
    client_id: String,
    first_try: bool,
) -> Handled {
    let parsed =
        Content::parse(content).and_then(|content| Ok((content, ClientId::parse(&client_id)?)));
    let submitted = match parsed {
        Ok((content, id)) => {
            let tag = ClientTag { id, first_try };
            chats::submit_message(state, user_id, chat_id, content, Some(tag)).await
        }
        Err(err) => Err(ApiError::from(err)),
    };
    let outcome = match submitted {
        Ok(outcome) => outcome,
        Err(err) => return Handled::Now(Some(encode(&refusal(&err, Some(client_id))))),
    };
    Handled::Later(Box::pin(async move {
        let answer = match outcome.await {
            Ok(stored) => ServerFrame::Ack {
                client_id,
                message: stored.into_message(),
            },
            Err(err) => refusal(&ApiError::from(err), Some(client_id)),
        };
        encode(&answer)
    }))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{TYPING_BURST, TYPING_EVERY, TypingAllowance, query_token};

    /// A burst, then one per period; a socket quiet for long has its whole
    /// burst again, no more.
    #[test]
    fn typing_signals_come_in_a_burst_then_one_per_period() {
        let start = Instant::now();
        let mut allowance = TypingAllowance::new(start);
        let taken = |allowance: &mut TypingAllowance, at: Instant| {
            (0..3 * TYPING_BURST)
                .take_while(|_| allowance.take(at))
                .count()
        };
        assert_eq!(taken(&mut allowance, start), TYPING_BURST as usize);
        assert_eq!(taken(&mut allowance, start + TYPING_EVERY / 2), 0);
        assert_eq!(taken(&mut allowance, start + TYPING_EVERY), 1);
        assert_eq!(taken(&mut allowance, start + 3 * TYPING_EVERY), 2);
        let later = start + Duration::from_secs(3600);
        assert_eq!(taken(&mut allowance, later), TYPING_BURST as usize);
        assert_eq!(taken(&mut allowance, later + TYPING_EVERY), 1);
    }

    #[test]
    fn finds_the_token_among_query_parameters() {
        assert_eq!(query_token(Some("a=1&token=abc")), Some("abc".into()));
        assert_eq!(query_token(Some("token=")), None);
        assert_eq!(query_token(None), None);
    }
}
