use std::time::Duration;

use futures_util::StreamExt;
use natter_shared::ServerFrame;
use natter_shared::limits::FRAME_MAX_BYTES;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use crate::helpers::{
    TestApp, TestSocket, TestUser, claims_of, renewed, spawn_app, spawn_app_with, until_past,
};

async fn handshake_status(url: String) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Ok(_) => 101,
        Err(other) => panic!("unexpected handshake failure: {other}"),
    }
}

#[tokio::test]
async fn the_socket_needs_a_valid_token() {
    let app = spawn_app().await;
    let ann = app.sign_up("Ann").await;
    assert_eq!(handshake_status(format!("ws://{}/ws", app.addr)).await, 401);
    assert_eq!(
        handshake_status(format!("ws://{}/ws?token=garbage", app.addr)).await,
        401
    );
    assert_eq!(
        handshake_status(format!("ws://{}/ws?token={}", app.addr, ann.token)).await,
        101
    );

    let mut request = format!("ws://{}/ws", app.addr)
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", ann.token).parse().expect("header"),
    );
    assert!(
        tokio_tungstenite::connect_async(request).await.is_ok(),
        "a bearer header works too"
    );
}

/// Sends 100 messages on one socket without waiting for acks (more than
/// the server lets a socket have on their way), then checks that each is
/// acked and that they took their seqs in the order they were sent.
pub async fn a_burst_of_sends_keeps_its_order(app: &TestApp) {
    let (ann, _, chat) = app.ann_and_bob().await;
    let mut socket = app.socket(&ann).await;
    const SENT: usize = 100;
    for n in 0..SENT {
        socket
            .send_json(json!({"type": "send", "chatId": chat.id, "content": format!("m{n}"), "clientId": format!("c{n}")}))
            .await;
    }
    let mut acked = Vec::new();
    while acked.len() < SENT {
        match socket.next_frame().await {
            ServerFrame::Ack { client_id, message } => {
                assert_eq!(
                    client_id,
                    format!("c{}", message.seq - 1),
                    "seqs follow the order sent"
                );
                acked.push(message.seq);
            }
            ServerFrame::Message { .. } => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
    acked.sort_unstable();
    assert_eq!(acked, (1..=SENT as i64).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_burst_of_sends_on_one_socket_is_acked_in_full_and_in_order() {
    a_burst_of_sends_keeps_its_order(&spawn_app().await).await;
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_socket_stays_open() {
    let app = spawn_app().await;
    let (ann, _, chat) = app.ann_and_bob().await;
    let mut socket = app.socket(&ann).await;

    let bad_frames = [
        json!("not an object"),
        json!({"type": "dance"}),
        json!({"type": "send", "chatId": chat.id}),
        json!({"type": "send", "chatId": chat.id, "content": "   ", "clientId": "k1"}),
        json!({"type": "send", "chatId": chat.id, "content": "x".repeat(4097), "clientId": "k2"}),
        json!({"type": "send", "chatId": chat.id, "content": "hi", "clientId": "has spaces"}),
        json!({"type": "send", "chatId": "no-such-chat", "content": "hi", "clientId": "k3"}),
        json!({"type": "typing", "chatId": "no-such-chat", "isTyping": true}),
        // PostgreSQL cannot hold NUL: refused, never a batch that cannot be stored.
        json!({"type": "send", "chatId": chat.id, "content": "a\u{0}b", "clientId": "k4"}),
        json!({"type": "send", "chatId": "x\u{0}", "content": "hi", "clientId": "k5"}),
        json!({"type": "typing", "chatId": "x\u{0}", "isTyping": true}),
    ];
    for frame in bad_frames {
        socket.send_json(frame.clone()).await;
        let answer = socket.next_frame().await;
        let ServerFrame::Error { error, .. } = answer else {
            panic!("{frame} should be refused, got {answer:?}")
        };
        assert!(!error.is_empty());
    }

    use futures_util::SinkExt;
    socket
        .ws
        .send(WsMessage::Text("{".repeat(FRAME_MAX_BYTES + 1).into()))
        .await
        .expect("sent");
    let ServerFrame::Error { error, .. } = socket.next_frame().await else {
        panic!("an oversized frame is refused")
    };
    assert!(error.contains("larger than"), "{error}");
    socket
        .ws
        .send(WsMessage::Binary(vec![1, 2, 3].into()))
        .await
        .expect("sent");
    assert!(matches!(
        socket.next_frame().await,
        ServerFrame::Error { .. }
    ));

    // Still usable afterwards.
    socket
        .send_json(
            json!({"type": "send", "chatId": chat.id, "content": "still here", "clientId": "ok"}),
        )
        .await;
    // The sender's own socket hears of the new message, then gets its ack.
    let ServerFrame::Message { message } = socket.next_frame().await else {
        panic!("expected the message")
    };
    let ServerFrame::Ack {
        client_id,
        message: acked,
    } = socket.next_frame().await
    else {
        panic!("expected an ack")
    };
    assert_eq!((client_id.as_str(), &acked), ("ok", &message));
}

#[tokio::test]
async fn the_server_pings_and_drops_a_socket_that_stops_answering() {
    let app = spawn_app_with(|config| {
        config.ws_ping_ms = 50;
        config.ws_timeout_ms = 2000;
    })
    .await;
    let ann = app.sign_up("Ann").await;

    // A live client answers pings (tungstenite does so as it reads on).
    let mut live = app.socket(&ann).await;
    let (pinged, ping) = tokio::sync::oneshot::channel();
    let reading = tokio::spawn(async move {
        let mut pinged = Some(pinged);
        while let Some(frame) = live.ws.next().await {
            if let Ok(WsMessage::Ping(_)) = frame
                && let Some(pinged) = pinged.take()
            {
                let _ = pinged.send(());
            }
        }
    });
    let ping = tokio::time::timeout(crate::helpers::PATIENCE, ping).await;
    assert!(matches!(ping, Ok(Ok(()))), "the server pings");

    // A client that never reads never answers: the server drops it.
    let _silent = app.socket(&ann).await;
    app.wait_for_connections(2).await;
    app.wait_for_connections(1).await;
    assert!(!reading.is_finished(), "the live socket is still open");
    reading.abort();
}

/// A client that keeps talking but stops reading fills its TCP window, and
/// the server's writes to it wait. They have a deadline: the socket is
/// dropped, not held with its task and file for good.
#[tokio::test]
async fn a_socket_whose_client_stops_reading_is_dropped_when_a_write_waits_too_long() {
    dropped_once_it_stops_reading(500).await;
}

/// The same client with the default deadline (a minute): the hub's
/// slow-consumer drop, once 1,024 frames wait for it, cuts the waiting
/// write short and the socket goes long before that.
#[tokio::test]
async fn a_socket_whose_client_stops_reading_is_dropped_when_its_queue_fills() {
    dropped_once_it_stops_reading(60_000).await;
}

/// Ann's socket stops reading while Bob writes to her, until the server
/// drops it (her next ping fails); fails after 30 s.
async fn dropped_once_it_stops_reading(ws_timeout_ms: u64) {
    use futures_util::SinkExt;
    let app = spawn_app_with(|config| {
        config.ws_ping_ms = 50;
        config.ws_timeout_ms = ws_timeout_ms;
    })
    .await;
    let (ann, bob, chat) = app.ann_and_bob().await;
    // A small receive buffer: the window is full after a few frames.
    let tcp = tokio::net::TcpSocket::new_v4().expect("socket");
    tcp.set_recv_buffer_size(4096).expect("buffer size");
    let stream = tcp.connect(app.addr).await.expect("connected");
    let url = format!("ws://{}/ws?token={}", app.addr, ann.token);
    let (ann_ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("socket opens");
    let (mut ann_out, _never_read) = ann_ws.split();
    // Ann's app reads nothing from here on, but pings on its own clock, so
    // the server never finds it silent.
    let pinging = async {
        let mut every = tokio::time::interval(Duration::from_millis(50));
        loop {
            every.tick().await;
            if ann_out
                .send(WsMessage::Ping(Default::default()))
                .await
                .is_err()
            {
                return;
            }
        }
    };
    let text = "x".repeat(4000);
    let writing = async {
        loop {
            let sends = (0..8).map(|_| app.send(&bob, &chat, &text));
            futures_util::future::join_all(sends).await;
        }
    };
    let dropped = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::select! {
            () = pinging => {}
            () = writing => {}
        }
    })
    .await;
    assert!(
        dropped.is_ok(),
        "the server still holds a socket whose client does not read"
    );
}

/// The close frame the server ends `socket` with, skipping what comes
/// before it.
async fn close_frame(socket: &mut TestSocket) -> CloseFrame {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.ws.next().await {
                Some(Ok(WsMessage::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("closed without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("closed in time")
    .expect("a close frame")
}

/// A socket renewed on the spot lives as long as its new token: the client
/// sends the renewed token (`token` frame) and the socket outlives the one
/// it was opened with, then closes when the new one expires. Another
/// user's token, another session's, or no good token at all, is refused
/// and changes nothing.
#[tokio::test]
async fn a_socket_given_a_renewed_token_lives_as_long_as_it() {
    let app = spawn_app_with(|config| {
        config.token_ttl_secs = 4;
        config.ws_ping_ms = 100;
    })
    .await;
    let ann = app.sign_up("Ann").await;
    let bob = app.sign_up("Bob").await;
    let mut socket = app.socket(&ann).await;
    let first = claims_of(&ann.token);
    let first_end = first["exp"].as_i64().expect("exp");
    // Renewed two seconds on: it outlives the first by as much.
    until_past(first["iat"].as_i64().expect("iat") + 1).await;
    let renewed = renewed(&app, &ann.token).await;
    let renewed_end = claims_of(&renewed)["exp"].as_i64().expect("exp");
    assert!(renewed_end >= first_end + 2);

    let other_session = app.log_in(&ann).await;
    for (token, refusal) in [
        (bob.token.as_str(), "another user's"),
        (other_session.as_str(), "another session's"),
        ("garbage", "token not taken"),
    ] {
        socket
            .send_json(json!({"type": "token", "token": token}))
            .await;
        match socket.next_frame().await {
            ServerFrame::Error { error, .. } => assert!(error.contains(refusal), "{error}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    socket
        .send_json(json!({"type": "token", "token": renewed}))
        .await;

    // The first token would have it closed at the first ping (every 0.1 s)
    // once the clock is past `first_end`: reading on until a second after
    // that, only pings come.
    while chrono::Utc::now().timestamp() <= first_end + 1 {
        match tokio::time::timeout(Duration::from_secs(10), socket.ws.next()).await {
            Ok(Some(Ok(WsMessage::Ping(_)))) => {}
            Ok(Some(Ok(WsMessage::Text(text)))) => panic!("unexpected frame: {text}"),
            other => panic!("the socket did not outlive its first token: {other:?}"),
        }
    }

    let closed = close_frame(&mut socket).await;
    assert_eq!(u16::from(closed.code), 1008);
    assert!(
        chrono::Utc::now().timestamp() > renewed_end,
        "closed when the renewed token expired, not before"
    );
}

/// Nor longer than its session: a token good for an hour, of a session
/// allowed two seconds, has its socket closed when the session ends.
#[tokio::test]
async fn a_socket_closes_when_its_session_reaches_its_longest() {
    let app = spawn_app_with(|config| {
        config.token_ttl_secs = 3600;
        config.session_max_secs = 2;
        config.ws_ping_ms = 100;
    })
    .await;
    let ann = app.sign_up("Ann").await;
    let session_end = claims_of(&ann.token)["auth_time"]
        .as_i64()
        .expect("auth_time")
        + 2;
    let mut socket = app.socket(&ann).await;
    let closed = close_frame(&mut socket).await;
    assert_eq!(u16::from(closed.code), 1008);
    assert!(chrono::Utc::now().timestamp() > session_end, "not before");
}

/// Nor past a logout of its session: it closes at its next ping, saying
/// why, and the token is refused when the app reconnects; a socket of the
/// user's other session stays open.
#[tokio::test]
async fn a_socket_closes_when_its_session_is_logged_out() {
    let app = spawn_app_with(|config| config.ws_ping_ms = 100).await;
    let ann = app.sign_up("Ann").await;
    let other_device = TestUser {
        token: app.log_in(&ann).await,
        ..ann.clone()
    };
    let mut socket = app.socket(&ann).await;
    let mut other_socket = app.socket(&other_device).await;
    assert_eq!(app.log_out(&ann.token).await.status(), 204);
    closed_for_good(
        &app,
        &mut socket,
        &ann.token,
        "the session was logged out: log in again",
    )
    .await;

    // The other session's socket still carries what is sent to Ann.
    let bob = app.sign_up("Bob").await;
    let chat = app.open_direct(&bob, &other_device).await;
    let sent = app.send(&bob, &chat, "still here?").await;
    let heard = other_socket
        .next_where(|frame| matches!(frame, ServerFrame::Message { .. }))
        .await;
    assert_eq!(heard, ServerFrame::Message { message: sent });
}

/// A socket lives no longer than its token: at the first ping after expiry
/// it closes, saying why, and the same token is refused when the app
/// reconnects.
#[tokio::test]
async fn a_socket_closes_when_its_token_expires() {
    let app = spawn_app_with(|config| {
        config.token_ttl_secs = 2;
        // Expiry is checked at each ping.
        config.ws_ping_ms = 100;
    })
    .await;
    let ann = app.sign_up("Ann").await;
    let mut socket = app.socket(&ann).await;
    closed_for_good(
        &app,
        &mut socket,
        &ann.token,
        "the session has expired: log in again",
    )
    .await;
}

/// Asserts the server closed `socket` as its session's end (1008, saying
/// `reason`) and refuses `token` when the app reconnects with it.
async fn closed_for_good(app: &TestApp, socket: &mut TestSocket, token: &str, reason: &str) {
    let closed = close_frame(socket).await;
    assert_eq!(u16::from(closed.code), 1008);
    assert_eq!(closed.reason.as_str(), reason);
    let again = format!("ws://{}/ws?token={token}", app.addr);
    assert_eq!(handshake_status(again).await, 401);
}

/// How an attempt to open a socket ended.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Opened {
    /// Open, and `ready` came.
    Ready,
    /// Refused at the upgrade, with this status.
    Refused(u16),
    /// Upgraded, then closed with this code before `ready`.
    Closed(u16),
}

/// Tries to open a socket for `user`: how it ended, and the socket when
/// it is open.
async fn try_socket(app: &TestApp, user: &TestUser) -> (Opened, Option<TestSocket>) {
    let url = format!("ws://{}/ws?token={}", app.addr, user.token);
    let ws = match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => ws,
        Err(WsError::Http(response)) => return (Opened::Refused(response.status().as_u16()), None),
        Err(other) => panic!("unexpected handshake failure: {other}"),
    };
    let mut socket = TestSocket { ws };
    match socket.ws.next().await {
        Some(Ok(WsMessage::Text(_))) => (Opened::Ready, Some(socket)),
        Some(Ok(WsMessage::Close(Some(frame)))) => (Opened::Closed(frame.code.into()), None),
        other => panic!("neither ready nor a close: {other:?}"),
    }
}

/// A user holds at most `NATTER_SOCKETS_PER_USER` sockets on a node (two
/// here): another is answered 429 at the upgrade, saying why, or, when
/// upgrades at once all passed that count, closed 1013 right after; once
/// one goes, its place is free again, for one of several trying at once.
#[tokio::test]
async fn a_user_holds_at_most_so_many_sockets_open() {
    let app = spawn_app_with(|config| config.sockets_per_user = 2).await;
    let ann = app.sign_up("Ann").await;
    let bob = app.sign_up("Bob").await;
    let first = app.socket(&ann).await;
    let _second = app.socket(&ann).await;
    let url = format!("ws://{}/ws?token={}", app.addr, ann.token);
    match tokio_tungstenite::connect_async(url).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status().as_u16(), 429);
            let body =
                String::from_utf8(response.body().clone().unwrap_or_default()).expect("utf-8");
            assert!(body.contains("as many as it may"), "{body}");
        }
        other => panic!("a third socket was not refused: {other:?}"),
    }
    let _bob = app.socket(&bob).await;

    drop(first);
    app.wait_for_connections(2).await;
    let (attempts, _open): (Vec<Opened>, Vec<Option<TestSocket>>) =
        futures_util::future::join_all((0..6).map(|_| try_socket(&app, &ann)))
            .await
            .into_iter()
            .unzip();
    let opened = attempts.iter().filter(|&&attempt| attempt == Opened::Ready);
    assert_eq!(opened.count(), 1, "{attempts:?}");
    let refused = [Opened::Ready, Opened::Refused(429), Opened::Closed(1013)];
    assert!(
        attempts.iter().all(|attempt| refused.contains(attempt)),
        "{attempts:?}"
    );
    app.wait_for_connections(3).await;
}
